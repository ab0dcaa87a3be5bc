"""The `runner` command: a thin layer, one function per verb, imports loaded per verb.

Shared options live here with RUNNER_* environment fallbacks; no business logic in commands.
"""

from __future__ import annotations

import argparse
import os
import sys

# verb -> (module, function, help). Modules are imported only when their verb runs.
VERBS = {
    "daemon": ("runner.cli.daemon_cmd", "daemon", "run the queue in the foreground"),
    "submit": ("runner.cli.jobs", "submit", "queue a job from a job file or a command"),
    "ls": ("runner.cli.jobs", "ls", "list jobs"),
    "show": ("runner.cli.jobs", "show", "show one job"),
    "logs": ("runner.cli.jobs", "logs", "print (or follow) a job's output"),
    "metrics": ("runner.cli.jobs", "metrics", "a job's metrics per epoch (or step)"),
    "cancel": ("runner.cli.jobs", "cancel", "cancel a job (kills its whole process tree)"),
    "retry": ("runner.cli.jobs", "retry", "queue a copy of an ended job"),
    "tag": ("runner.cli.jobs", "tag", "add or remove a job's tags, or set its notes (yours, or any as root)"),
    "doctor": ("runner.cli.daemon_cmd", "doctor", "what this machine supports"),
    "envs": ("runner.cli.envs_cmd", "envs", "list, build, remove, collect and lock envs"),
    "models": ("runner.cli.models_cmd", "models", "list the registry's models"),
    "schema": ("runner.cli.models_cmd", "schema", "a framework's settings schema"),
    "gpus": ("runner.cli.models_cmd", "gpus", "the GPUs, their processes and holders"),
    "share": ("runner.cli.jobs", "share", "each user's fair-share standing: recent GPU use, share, who goes first"),
    "infer": ("runner.cli.models_cmd", "infer", "run inference with a job's checkpoint"),
    "check": ("runner.cli.check_cmd", "check", "plugin check: train, validate, checkpoint, infer per model"),
    "repo": ("runner.cli.repo_cmd", "repo", "add, list, show and remove pinned GitHub repos"),
    "token": ("runner.cli.jobs", "token", "print your personal token for the HTTP API (made on first use)"),
    "dataset": ("runner.cli.dataset_cmd", "dataset", "check a dataset of any format runner takes; convert DOTA, HRSC2016 or Pascal VOC"),
    "synth": ("runner.cli.dataset_cmd", "synth", "make a tiny synthetic dataset whose labels are known exactly"),
    "web-login": ("runner.cli.jobs", "web_login", "print a one-time link that signs you in to the dashboard"),
    "export": ("runner.cli.export_cmd", "export", "mirror past jobs to the MLflow server of the config"),
    "backup": ("runner.cli.operate_cmd", "backup", "write a consistent copy of the store while the daemon runs"),
    "gc": ("runner.cli.operate_cmd", "gc", "apply the [retention] policy now, or preview it (--dry-run)"),
    "du": ("runner.cli.operate_cmd", "du", "disk used per user (job folders, logs, caches) and per env"),
}


def _columns() -> int:
    """The terminal's width as argparse reads it (shutil.get_terminal_size: COLUMNS, else the
    terminal's, else 80), without importing shutil (with bz2 and lzma, ~4 ms of every command)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


class _Formatter(argparse.HelpFormatter):
    """argparse's own, given the width it would find itself (it makes one per add_argument)."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


def _common(p: argparse.ArgumentParser, json_flag: bool = True):
    p.add_argument("--home", default=os.environ.get("RUNNER_HOME"), help="state folder (env RUNNER_HOME)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: of the one verb that argv starts with (building all ~26 of them cost
    `runner ls` a third of its time), of every verb for help, no verb or an unknown one.

    Either way a command parses, prints and fails alike: the top level's usage names no verb
    (metavar VERB), and its other lines (help, "invalid choice") come only from the full parser.
    """
    p = argparse.ArgumentParser(prog="runner", description="Queue and run training jobs on a shared GPU server.",
                                formatter_class=_Formatter)
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    verbs = [argv[0]] if argv and argv[0] in VERBS else VERBS
    for verb in verbs:
        help_ = VERBS[verb][2]
        sp = sub.add_parser(verb, help=help_, description=help_, formatter_class=_Formatter)
        _common(sp, json_flag=verb not in ("daemon", "logs", "synth"))
        ADD_ARGS.get(verb, lambda _p: None)(sp)
    return p


def _daemon(p):
    p.add_argument("--http", default=os.environ.get("RUNNER_HTTP"),
                   help="HOST:PORT to serve on, or 'none' (env RUNNER_HTTP; default: the config's [daemon] http, else 127.0.0.1:8765)")
    p.add_argument("--max-running", type=int, default=None, help="jobs run at once")
    p.add_argument("--log-level", default=os.environ.get("RUNNER_LOG_LEVEL", "INFO"))


def _submit(p):
    p.add_argument("file", nargs="?", help="job file (YAML or JSON)")
    p.add_argument("--name")
    p.add_argument("--gpus", type=int)
    p.add_argument("--priority", type=int)
    p.add_argument("--env", help="env name from envs/, or 'system'")
    p.add_argument("--after", action="append", default=[], metavar="ID", help="start only when job ID has succeeded")
    p.add_argument("--no-network", action="store_true", help="cut the job off the network")
    p.add_argument("--workdir")
    p.add_argument("--parser", help="log parser: generic or a framework name")
    p.add_argument("--preemptible", action=argparse.BooleanOptionalAction, default=None,
                   help="may be stopped for a user with less recent use and resumed later (a command must handle SIGTERM and "
                        "RUNNER_RESUME_FROM/RUNNER_RESTARTS itself)")
    p.set_defaults(command=[])
    p.epilog = "or: runner submit [options] -- CMD ARGS...  (a command instead of a job file)"


def _ls(p):
    p.add_argument("--state", action="append", default=[], help="only jobs in this state (repeatable)")
    p.add_argument("--user")
    p.add_argument("--all", action="store_true", help="ended jobs too")
    p.add_argument("--limit", type=int, default=None, help="at most N rows (default 50 in the table, every job with --json; 0: every job)")
    p.add_argument("--tag", default=None, help="only jobs with this tag (see `runner tag`)")


def _tag(p):
    _id(p)
    p.add_argument("tags", nargs="*", metavar="TAG", help="tags to add (words of letters, digits and _ . : + = -)")
    p.add_argument("--rm", action="append", default=[], metavar="TAG", help="a tag to remove (repeatable)")
    p.add_argument("--notes", default=None, help="the job's notes, replacing any ('' clears them; - reads them from stdin)")


def _id(p):
    p.add_argument("id", help="job id (a unique prefix will do)")


def _logs(p):
    _id(p)
    p.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    p.add_argument("--raw", action="store_true", help="keep terminal escape sequences (colours) as the job wrote them")


def _metrics(p):
    _id(p)
    p.add_argument("--name", default=None, help="only this metric")


def _envs(p):
    p.add_argument("action", choices=["ls", "build", "rm", "gc", "lock"])
    p.add_argument("target", nargs="?", help="env name (build, lock) or hash (rm)")
    p.add_argument("--days", type=int, default=None, help="gc: remove envs unused this many days")
    p.add_argument("--python", default=None)


def _models(p):
    p.add_argument("--framework")
    p.add_argument("--task")
    p.add_argument("--tags", default="")
    p.add_argument("--filter", default="*")


def _schema(p):
    p.add_argument("framework")


def _infer(p):
    p.add_argument("source", help="job id or checkpoint path")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", help="with a checkpoint path: the model (e.g. timm/resnet18)")
    p.add_argument("--table", choices=["job", "current"], default="job",
                   help="a repo job: infer in its own checkout (job), or in one the registry's table makes now (current)")


def _gpu_count(v):
    if not v.isdigit() or not 0 <= int(v) <= 64:
        raise argparse.ArgumentTypeError(f"given {v!r}; expected a number of GPUs from 0 to 64")
    return int(v)


def _input_size(v):
    if v != "usual" and not (v.isdigit() and 16 <= int(v) <= 4096):
        raise argparse.ArgumentTypeError(f"given {v!r}; expected 'usual' or a size in pixels from 16 to 4096")
    return v if v == "usual" else int(v)


def _check(p):
    p.add_argument("models", nargs="*", help="models, e.g. timm/resnet18 repo/yolov7")
    p.add_argument("--framework")
    p.add_argument("--out", default=None, help="folder for the report (default: ./check-<time>)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for all checks; then the jobs left are "
                   "cancelled and the report says so")
    p.add_argument("--gpus", type=_gpu_count, default=0, help="GPUs each check job (and its control) asks for; "
                   "default 0: the CPU")
    p.add_argument("--input-size", type=_input_size, default=None, metavar="usual|PIXELS",
                   help="train at this size instead of the check table's; 'usual': each model's own (224, 640, ...)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the check jobs' checkpoints (GBs for large models)")
    p.add_argument("--reuse", metavar="REPORT_JSON", default=None,
                   help="take each model's jobs from this earlier report of the same state folder where they (and the "
                        "control) succeeded; run the others again (a report cut short by a crash is finished, not redone); "
                        "a reused job that has no control gets one now")
    p.add_argument("--keep-measured", action="store_true", help="with --reuse: a model whose job is no longer in this state "
                   "folder but passed every check there, with the check table it has now, keeps its row as that report measured it "
                   "(the report names the commit) instead of training again; its control runs now if it has none")
    p.add_argument("--rerun", action="append", default=[], metavar="MODEL", help="with --reuse: train this model (and its "
                   "control) again even where the earlier report's job could be reused or kept (repeatable)")
    p.add_argument("--no-new-controls", action="store_true", help="with --reuse: a reused job without a control keeps none "
                   "(its row says so) instead of getting one now")


def _repo(p):
    p.add_argument("action", choices=["add", "ls", "show", "rm", "lock"])
    p.add_argument("target", nargs="?", help="add: the repo's URL (or a local git folder); show, rm, lock: its name")
    p.add_argument("--task", default=None, help="add: the task of the starter table (default: guessed from the README)")
    p.add_argument("--commit", help="add: the commit SHA (or a tag) to pin; a branch moves and is refused")
    p.add_argument("--name", help="add: the table's name (default: the URL's last part)")
    p.add_argument("--replace", action="store_true", help="add: replace a table of that name, edits and all, with a new starter table")


def _dataset(p):
    p.add_argument("action", choices=["check", "convert"])
    p.add_argument("path", help="the dataset's folder")
    p.add_argument("--format", help="check: any format a job takes (yolo, yolo-obb, coco, masks, captions, imagefolder, dota, "
                                    "hrsc2016, voc); convert: dota, hrsc2016 or voc")
    p.add_argument("--from", dest="from_", help="same as --format (for convert)")
    p.add_argument("--to", choices=["yolo", "yolo-obb"], help="convert: what to write")
    p.add_argument("--out", help="convert: a new folder to write into")
    p.add_argument("--task", help="check: the task it is meant for (e.g. object_detection, pose_estimation; default: the format's usual one)")
    p.add_argument("--annotations", help="check --format coco: the COCO JSON (default: PATH/../annotations.json)")
    p.add_argument("--split", type=float, default=None, help="val fraction when the dataset has no val split (dota, hrsc2016, "
                                                             "voc: default 0.2; imagefolder: none unless given)")
    p.add_argument("--tile", type=int, help="convert: cut larger images into tiles of this size (needs Pillow)")
    p.add_argument("--overlap", type=int, default=0, help="convert: pixels neighbouring tiles share")
    p.add_argument("--keep-difficult", action="store_true", help="convert: keep objects marked difficult")


def _synth(p):
    from runner.synth import add_arguments  # stdlib only: cheap to build with every parser

    add_arguments(p)


def _token(p):
    p.add_argument("--rotate", action="store_true", help="replace your token with a new one (the old one stops working)")


def _export(p):
    from runner.exporters import EXPORTERS

    p.add_argument("target", choices=list(EXPORTERS), help="where to: mlflow (the config's [mlflow] tracking_uri)")
    p.add_argument("ids", nargs="*", help="job ids (unique prefixes will do)")
    p.add_argument("--all", action="store_true", help="every job of yours (root: everyone's) that ran")
    p.add_argument("--since", help="with --all: only jobs submitted since this date (YYYY-MM-DD[THH:MM])")
    p.add_argument("--experiment", help="the MLflow experiment (default: the config's)")
    p.add_argument("--no-wait", action="store_true", help="return once the daemon has the request")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the export")


def _web_login(p):
    p.add_argument("--url", default=os.environ.get("RUNNER_URL"), help="the dashboard's address as your browser reaches it "
                   "(default: the daemon's HTTP bind; env RUNNER_URL)")


def _backup(p):
    p.add_argument("file", help="where to write the copy (replaced atomically; mode 0600)")


def _gc(p):
    p.add_argument("--dry-run", action="store_true", help="list what would be removed and its size; change nothing")
    p.add_argument("--checkpoint-days", type=float, default=None, help="instead of [retention] checkpoint_days")
    p.add_argument("--job-days", type=float, default=None, help="instead of [retention] job_days")
    p.add_argument("--metrics-days", type=float, default=None, help="instead of [retention] metrics_days (compact ended jobs' metric points)")
    p.add_argument("--metrics-bucket", type=int, default=None, help="instead of [retention] metrics_bucket (steps; default 100)")


ADD_ARGS = {"backup": _backup, "gc": _gc, "synth": _synth, "export": _export, "web-login": _web_login, "dataset": _dataset, "token": _token, "daemon": _daemon, "submit": _submit, "ls": _ls, "show": _id, "tag": _tag, "logs": _logs, "metrics": _metrics, "cancel": _id,
            "retry": _id, "envs": _envs, "models": _models, "schema": _schema, "infer": _infer, "check": _check, "repo": _repo}


def main(argv=None) -> int:
    """Entry point of the `runner` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    command = []
    if "--" in argv and argv[:1] == ["submit"]:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    args = parser.parse_args(argv)
    if command:
        args.command = command
    if not args.verb:
        parser.print_help()
        return 2
    module, func, _ = VERBS[args.verb]
    import importlib

    from runner.exceptions import RunnerError, SpecError

    try:
        return importlib.import_module(module).__dict__[func](args) or 0
    except SpecError as e:
        for line in e.problems:
            print(f"runner: {line}", file=sys.stderr)
        return 2
    except RunnerError as e:
        print(f"runner: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
