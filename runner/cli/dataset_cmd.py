"""runner dataset check|convert: look at a dataset of any format a job takes before training on it;
convert a DOTA, HRSC2016 or Pascal VOC one to YOLO. runner synth: a tiny synthetic dataset."""

from __future__ import annotations

from .common import print_json

TASK_TARGET = {"obb_detection": "yolo-obb", "object_detection": "yolo"}


LAYOUTS = {  # a format a job (or `dataset check`) takes -> the tasks it serves, its usual one first
    "yolo": ("object_detection", "instance_segmentation", "pose_estimation", "obb_detection"),
    "yolo-obb": ("obb_detection",),
    "coco": ("object_detection", "instance_segmentation"),
    "masks": ("semantic_segmentation",),
    "captions": ("image_captioning",),
    "imagefolder": ("image_classification",),
}


def _check_layout(fmt: str, args) -> list[str]:
    """Problems of a dataset in one of LAYOUTS, found by the same checks a job's submit runs."""
    from pathlib import Path

    from config_translators import datasets, transformers, ultralytics
    from runner.exceptions import SpecError

    tasks = LAYOUTS[fmt]
    task = args.task or tasks[0]
    if task not in tasks:
        raise SpecError([f"--task: given {task!r}; a {fmt} dataset is for {', '.join(tasks)}"])
    path = Path(args.path).absolute()
    if fmt in ("yolo", "yolo-obb"):
        return ultralytics.check_yolo(path if path.suffix in (".yaml", ".yml") else path / "data.yaml", ultralytics.TASKS[task])
    if fmt == "imagefolder":
        return datasets.imagefolder_layout(str(path), args.split)[1]
    ds = {"path": str(path), "format": fmt}
    if fmt == "coco":
        if (path / "images").is_dir() and not args.annotations:  # the folder that holds images/ and annotations.json
            path = path / "images"
        ds = {"path": str(path), "format": fmt,
              "annotations": str(Path(args.annotations).absolute() if args.annotations else path.parent / "annotations.json")}
        task = "object_detection"  # the same images and JSON either way
    return transformers.check_dataset(ds, {"task_type": task})


def _check_other(fmt: str, args) -> int:
    """`dataset check` of a format a job takes as it is (no conversion): its problems, one a line."""
    problems = _check_layout(fmt, args)
    task = args.task or LAYOUTS[fmt][0]
    if args.json:
        print_json({"path": args.path, "format": fmt, "task": task, "problems": problems})
    else:
        for p in problems:
            print(p)
        print(f"{args.path} ({fmt}, for {task}): " + ("no problems" if not problems else f"{len(problems)} problem(s), listed above"))
    return 1 if problems else 0


def synth(args):
    """runner synth KIND DIR: a tiny dataset whose labels are known exactly (relative DIRs are from
    the current folder); prints the paths a job names and the job's dataset: line."""
    from runner.exceptions import SpecError
    from runner.synth import FORMAT_OF, make

    try:
        paths = make(args)
    except ValueError as e:
        raise SpecError([str(e)]) from None
    for p in paths:
        print(p)
    annotations = f", annotations: {paths[1]}" if len(paths) > 1 else ""
    print(f"train with: dataset: {{path: {paths[0]}, format: {FORMAT_OF[args.kind]}{annotations}}}")
    return 0


def _cut_tiles(plan: str):
    """Cut the planned tiles with the data plane's cropper (Pillow), in a process of its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from runner.exceptions import RunnerError

    root = Path(__file__).resolve().parents[2]
    # cwd "/": `-m` imports from the folder it runs in first, which may be /tmp or a teammate's folder
    r = subprocess.run([sys.executable, "-m", "adapters.crop", os.path.abspath(plan)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}, cwd="/")
    if r.returncode != 0:
        why = "Pillow is not installed here (pip install pillow)" if "No module named 'PIL'" in r.stderr else r.stderr.strip()[-300:]
        raise RunnerError(f"--tile: the labels are written but the tiles were not cut: {why}; "
                          f"cut them with: python -m adapters.crop {plan} (in any framework env)")


def _check_out(given: str):
    """The --out folder, absolute: a new name, or an empty folder; a symbolic link (one planted in
    a shared folder to send the output elsewhere) is refused."""
    import os
    from pathlib import Path

    from runner.exceptions import RunnerError

    out = Path(os.path.abspath(given))
    if os.path.islink(out):
        raise RunnerError(f"--out: {out} is a symbolic link (to {os.readlink(out)}); give a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunnerError(f"--out: {out} is not empty; give a new folder")
    if not out.parent.is_dir():
        raise RunnerError(f"--out: {out.parent} does not exist; give a folder inside an existing one")
    return out


def _convert_into(ds, out, args) -> dict:
    """Write the conversion into a fresh folder of our own beside `out` (made with O_EXCL, 0700:
    nobody can plant a link in it) and rename it into place; a link or a folder put at `out`
    meanwhile makes the rename fail, it is never followed."""
    from config_translators import dataset_formats as df
    from runner.atomic import NotPlaced, make_dir
    from runner.exceptions import RunnerError, SpecError

    report = {}

    def fill(tmp):
        try:
            report.update(df.write_yolo(ds, tmp, args.to, args.keep_difficult, args.tile, args.overlap, final=out))
        except (df.DatasetError, ValueError) as e:
            raise SpecError(getattr(e, "problems", None) or [str(e)]) from None

    try:
        make_dir(out, fill)  # then given what a plain mkdir would (the umask's)
    except NotPlaced as e:
        raise RunnerError(f"--out: {out} could not be put in place ({e.strerror}: something was put there "
                          "meanwhile); give a new folder") from None
    return report


def dataset(args):
    """runner dataset check PATH --format F [--task T] | runner dataset convert PATH --from F --to G --out DIR"""
    from config_translators import dataset_formats as df
    from runner.exceptions import RunnerError, SpecError

    fmt = args.format or args.from_
    checkable = (*LAYOUTS, *df.FORMATS)
    if not fmt:
        raise SpecError([f"--format: missing; give one of {', '.join(checkable if args.action == 'check' else df.FORMATS)}"])
    if args.action == "check" and fmt in LAYOUTS:
        return _check_other(fmt, args)
    if fmt not in df.FORMATS:
        expected = checkable if args.action == "check" else df.FORMATS
        raise SpecError([f"--format: given {fmt!r}; expected one of {', '.join(expected)}"
                         + ("" if args.action == "check" else " (convert reads these; a job takes yolo, coco, ... as they are)")])
    if args.task and args.task not in TASK_TARGET:
        raise SpecError([f"--task: given {args.task!r}; a {fmt} dataset holds boxes for {', '.join(TASK_TARGET)}"])
    try:
        ds = df.read(args.path, fmt, 0.2 if args.split is None else args.split)
    except df.DatasetError as e:
        raise SpecError(e.problems) from None
    if args.action == "check":
        report = ds.report()
        if args.task:
            report["task"], report["given_as"] = args.task, TASK_TARGET[args.task]
        if args.json:
            print_json(report)
        else:
            for line in df.summary_lines(report, f"{args.path} ({fmt})"):
                print(line)
            print(f"difficult objects: {report['difficult']} (skipped when converting unless --keep-difficult)")
            if args.task:
                print(f"a {args.task} model gets it as {TASK_TARGET[args.task]}")
            print("problems: none" if not report["problems"] else f"problems: {len(report['problems'])} (listed above)")
        return 1 if report["problems"] else 0
    if not args.to or not args.out:
        raise SpecError(["convert needs --to (yolo or yolo-obb) and --out DIR"])
    out = _check_out(args.out)
    report = _convert_into(ds, out, args)
    if report.get("crops"):
        _cut_tiles(report["crops"])
    if args.json:
        print_json(report)
    else:
        for line in df.summary_lines(report, f"wrote {out} ({args.to})"):
            print(line)
        print(f"train with: dataset: {{path: {out / 'data.yaml'}, format: yolo}}")
    return 0
