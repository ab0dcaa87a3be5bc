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
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from config_translators import dataset_formats as df
    from runner.exceptions import RunnerError, SpecError

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        try:
            report = df.write_yolo(ds, tmp, args.to, args.keep_difficult, args.tile, args.overlap, final=out)
        except (df.DatasetError, ValueError) as e:
            raise SpecError(getattr(e, "problems", None) or [str(e)]) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            os.rename(tmp, out)
        except OSError as e:
            raise RunnerError(f"--out: {out} could not be put in place ({e.strerror}: something was put there "
                              "meanwhile); give a new folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


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
