"""What a job's launch is made of, shared by framework jobs (runner/prepare.py) and repo jobs
(runner/repos/): launch.json for the shim, the env build, the translation run as the job's user
(runner.privsep's translate verb), the dataset cache and report, the job's person and modes. Apart
from prepare.py so that runner/repos/ can use it without importing prepare, which dispatches to it.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import diskspace, sandbox
from .exceptions import EnvBuildError, RunnerError
from .identity import Person, drops_privileges, person

def _write_json(path: Path, data, mode: int = 0o644):
    from .atomic import write_json

    write_json(path, data, mode, indent=1)


def save_launch(run_dir: Path, launch: dict):
    """RUN_DIR/launch.json (0600: it holds the env_vars values), atomically but not flushed to disk: a
    copy that is made again. After a crash of the machine the job it started is gone, and a
    launch.json that did not reach the disk (empty, or missing) makes its job prepared anew
    (daemon/preemption.relaunch); an fsync cost each start ~0.3 ms of CPU on 2 cores and the
    prepare thread a wait for the disk."""
    from .atomic import write_json

    write_json(run_dir / "launch.json", launch, 0o600, indent=1, fsync=False)


def job_secrets(home, job: dict) -> dict:
    """The job's env_vars with their values (kept apart from the store, readable by the daemon only)."""
    from .secrets import read

    return read(home, job["id"], job["spec"].get("env_vars") or {})


def build_env(req, envmgr, job: dict, log) -> Path:
    """The job's env, built now if missing (uv's lines go to the job's log)."""
    log(f"runner: env {req.name} ({req.key}){' ready' if envmgr.ready(req.key) else ': building with uv'}")
    try:
        return envmgr.ensure(req, job_id=job["id"], log=log)
    except EnvBuildError as e:
        raise EnvBuildError(f"env {req.name}: {e}") from None


def write_launch(job: dict, home, argv: list, cwd: Path, path_dirs: list, extra_env: dict, network: bool,
                 writable: list, log, resume_args: list | None = None) -> dict:
    """JOB_DIR/launch.json for the shim: the environment built from nothing (offline settings,
    the job's GPUs, the spec's variables), resource limits, and the sandbox around argv."""
    spec = job["spec"]
    job_dir = home.job_dir(job["id"])
    who = job_person(job)
    cache = home.user_cache(who.name)
    cache.mkdir(parents=True, exist_ok=True)
    if drops_privileges(who.uid):
        os.lchown(cache, who.uid, who.gid)
        os.chmod(cache, 0o700)
    writable = [cache if Path(p) == home.cache else p for p in writable]
    extra_env = dict(extra_env)
    if not network:
        extra_env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    uuids = job.get("gpu_uuids") or []
    extra_env.update({
        "CUDA_VISIBLE_DEVICES": ",".join(uuids),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "RUNNER_NUM_GPUS": str(len(uuids)),
        "RUNNER_JOB_ID": job["id"],
    })
    if spec.get("check"):
        extra_env["RUNNER_CHECK"] = "1"
        if spec["check"].get("keep"):
            extra_env["RUNNER_CHECK_KEEP"] = "1"
    extra_env.update(job_secrets(home, job))
    environ = sandbox.job_environment(job_dir, path_dirs, extra_env, who.name, cache)
    wrapped, sandboxed = sandbox.wrap(argv, job_dir, writable, network=network, cwd=cwd, protect=[home.root])
    if not sandboxed and not network:
        log("runner: warning: bubblewrap is not available here, so network: false cannot be enforced")
    launch = {"argv": wrapped, "program": argv[0], "env": environ, "cwd": str(cwd),
              "rlimits": sandbox.rlimits(spec.get("resources", {})), "sandboxed": sandboxed, "log_mode": log_mode(home),
              "log_max_bytes": diskspace.settings(home.config)["log_max_bytes"]}  # the shim keeps the log under it
    if drops_privileges(who.uid):
        launch["user"] = {"uid": who.uid, "gid": who.gid, "groups": list(who.groups)}
    if resume_args:  # a repo's args.resume: what a run after a preemption adds, {checkpoint} filled then
        launch["resume_args"] = list(resume_args)
    save_launch(home.run_dir(job["id"]), launch)
    return launch


class Prepared:
    """What prepare() found: the launch spec plus what the watcher needs (parser, checkpoints)."""

    def __init__(self, launch: dict, parser, checkpoints: list, env_hash: str | None, results_file: dict | None = None):
        self.launch, self.parser, self.checkpoints, self.env_hash = launch, parser, checkpoints, env_hash
        self.results_file = results_file  # a repo's own per-epoch file, compared with the parsed log


def log_dataset_report(spec: dict, rep: dict, log):
    """Say in the job's log what was converted: images, objects per class, what was skipped and why."""
    from config_translators.dataset_formats import summary_lines

    what = f"dataset {spec['dataset']['format']} -> {rep['target']}" + (" (converted before: reused)" if rep["reused"] else "")
    for line in summary_lines(rep, what):
        log(f"runner: {line}")


def datasets_cache(home, who: Person) -> Path:
    """Where converted datasets of this user are kept: hers alone (0700). The translation helper
    writes them as her; the daemon only makes the folder."""
    d = home.root / "datasets"
    d.mkdir(exist_ok=True)
    mine = d / str(who.uid)
    try:
        mine.mkdir(mode=0o700)
    except FileExistsError:
        pass
    if drops_privileges(who.uid):
        st = os.lstat(mine)
        if not os.path.isdir(mine) or os.path.islink(mine):
            raise RunnerError(f"{mine}: not a folder; remove it")
        if st.st_uid != who.uid:  # made by an older runner as the daemon's: hers now
            os.lchown(mine, who.uid, who.gid)
        os.chmod(mine, 0o700)
    return mine


USER_SIDE_PREFIX = "preparing the job's data"
"""How an error of the translation helper (her dataset, her files) begins: its details are hers."""


def translate_as(who: Person, kind: str, job: dict, job_dir: Path, **extra) -> dict:
    """Run a translator as the job's user (runner.privsep's translate verb): it reads her dataset and writes what
    the job needs into her job folder; nothing of hers is read by the daemon. Returns what the
    translator says (argv, env, the dataset report)."""
    from .privdrop import run_as

    try:
        answer = run_as(who, "translate", {"kind": kind, "job": job, "job_dir": str(job_dir), **extra}, here=translate_here)
    except RunnerError as e:  # her data's problems: the whole message goes to her log, a short note to the views
        raise RunnerError(f"{USER_SIDE_PREFIX}: {e}") from None
    if not isinstance(answer, dict):
        raise RunnerError("translation: the helper gave no answer")
    return answer


def translate_here(payload: dict) -> dict:
    """The translation helper's work (as the job's user): a framework job's job.json, or a repo
    job's files, data placement and argv; returns what the daemon needs, checked by its caller."""
    job_dir = Path(payload["job_dir"])
    job = payload["job"]
    if payload["kind"] == "framework":
        from config_translators import for_framework

        settings = for_framework(payload["framework"]).translate(job, str(job_dir))
        report = settings.pop("dataset_report", None)
        _write_json(job_dir / "job.json", settings, mode=0o600)
        return {"dataset_report": report}
    from config_translators import repo as translator

    t = translator.translate(job, str(job_dir), payload["src"], payload["python"])
    for rel, content in t["files"].items():
        target = job_dir / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise RunnerError(f"translation: {rel!r} is outside the job folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_text(target, content)
    (job_dir / "out").mkdir(exist_ok=True)  # {output_dir} exists before the script starts
    for link in t.get("links", []):
        place_dataset_part(job_dir, link)
    return {"argv": t["argv"], "env": t["env"], "dataset_report": t.get("dataset_report"), "resume": t.get("resume")}


def place_dataset_part(job_dir: Path, link: dict):
    """Put a part of the dataset where the repo's script reads it (its table's dataset.place): a
    symbolic link, or a copy when the table asks. As the job's user: she reads her dataset and
    writes her job folder. An empty folder there (a placeholder in the repo) gives way."""
    import shutil

    rel = Path(link["path"])
    if rel.is_absolute() or ".." in rel.parts:
        raise RunnerError(f"dataset.place: {link['path']!r} is outside the job folder")
    target, source = job_dir / rel, Path(link["source"])
    if not source.exists():
        raise RunnerError(f"dataset.place: {source} does not exist (the dataset lacks the part {rel} is to show)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        target.rmdir()
    elif os.path.lexists(target):
        raise RunnerError(f"dataset.place: {rel} already exists in the checkout (the table would hide the repo's own file)")
    if not link.get("copy"):
        os.symlink(source, target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)


def _write_text(path: Path, text: str):
    from .atomic import write_bytes

    write_bytes(path, text.encode(), mode=0o644)


def checked_report(answer: dict):
    """The dataset report of a translation answer, if it looks like one (it came from the user's side)."""
    rep = answer.get("dataset_report")
    return rep if isinstance(rep, dict) and isinstance(rep.get("target"), str) else None


def job_person(job: dict) -> Person:
    """The user a job runs as (its submitter)."""
    try:
        return person(job["uid"])
    except (KeyError, TypeError):
        raise RunnerError(f"user {job.get('user')} (uid {job.get('uid')}) no longer exists on this machine") from None


def log_mode(home) -> int:
    """Mode of a job's log: its user's alone, or readable by all with [server] share_logs = true."""
    return 0o644 if home.config.get("server", {}).get("share_logs") else 0o600


def job_dir_mode(home) -> int:
    """Mode of a job's folder once it is handed to its user (see log_mode)."""
    return 0o755 if home.config.get("server", {}).get("share_logs") else 0o700
