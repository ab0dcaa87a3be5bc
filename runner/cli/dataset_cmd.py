"""runner dataset check|convert: look at a DOTA, HRSC2016 or Pascal VOC dataset before training on it."""

from __future__ import annotations

from .common import print_json

TASK_TARGET = {"obb_detection": "yolo-obb", "object_detection": "yolo"}


def _cut_tiles(plan: str):
    """Cut the planned tiles with the data plane's cropper (Pillow), in a process of its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from runner.exceptions import RunnerError

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "adapters.crop", plan], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(root)})
    if r.returncode != 0:
        why = "Pillow is not installed here (pip install pillow)" if "No module named 'PIL'" in r.stderr else r.stderr.strip()[-300:]
        raise RunnerError(f"--tile: the labels are written but the tiles were not cut: {why}; "
                          f"cut them with: python -m adapters.crop {plan} (in any framework env)")


def dataset(args):
    """runner dataset check PATH --format F [--task T] | runner dataset convert PATH --from F --to G --out DIR"""
    from config_translators import dataset_formats as df
    from runner.exceptions import RunnerError, SpecError

    fmt = args.format or args.from_
    if not fmt:
        raise SpecError(["--format: missing; give dota, hrsc2016 or voc"])
    if fmt not in df.FORMATS:
        raise SpecError([f"--format: given {fmt!r}; expected one of {', '.join(df.FORMATS)}"])
    if args.task and args.task not in TASK_TARGET:
        raise SpecError([f"--task: given {args.task!r}; a {fmt} dataset holds boxes for {', '.join(TASK_TARGET)}"])
    try:
        ds = df.read(args.path, fmt, args.split)
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
    from pathlib import Path

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise RunnerError(f"--out: {out} is not empty; give a new folder")
    try:
        report = df.write_yolo(ds, out, args.to, args.keep_difficult, args.tile, args.overlap)
    except (df.DatasetError, ValueError) as e:
        raise SpecError(getattr(e, "problems", None) or [str(e)]) from None
    if report.get("crops"):
        _cut_tiles(report["crops"])
    if args.json:
        print_json(report)
    else:
        for line in df.summary_lines(report, f"wrote {out} ({args.to})"):
            print(line)
        print(f"train with: dataset: {{path: {out / 'data.yaml'}, format: yolo}}")
    return 0
