"""Slurm's commands, as the Slurm backend (runner/backends/slurm.py) uses them: each runner job
becomes one Slurm batch job that runs the same shim.

The site config's `[backend] kind = "slurm"` turns it on (docs/slurm.md). The daemon still takes
the spool, prepares envs and checkouts on the shared state folder, writes launch.json, follows the
log with the same parsers and records the end; Slurm decides where and when each job runs.
Slurm is driven through its commands only: `sbatch --parsable` (as the job's submitter),
`squeue` once per poll for every job, `scontrol show job` once for those that left squeue,
`scancel`. No call is made per job per poll.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

from ..exceptions import RunnerError
from ..states import JobState, Reason

_FIELD = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
SHIM = Path(__file__).parent.parent / "shim.py"

# Slurm's end states, and what they are to runner (None: the shim's exit.json decides).
ENDS = {
    "COMPLETED": None, "FAILED": None,
    "TIMEOUT": (JobState.FAILED, Reason.TIMEOUT.value),
    "DEADLINE": (JobState.FAILED, Reason.TIMEOUT.value),
    "OUT_OF_MEMORY": (JobState.FAILED, Reason.OOM.value),
    "CANCELLED": (JobState.CANCELLED, Reason.CANCELLED_BY_USER.value),
    "BOOT_FAIL": (JobState.FAILED, Reason.LOST.value),
    "NODE_FAIL": "requeue", "PREEMPTED": "requeue",
}
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


def settings(config: dict) -> dict | None:
    """The `[backend]` table when it says kind = "slurm", checked; None for the local backend."""
    sec = config.get("backend") or {}
    kind = sec.get("kind", "local")
    if kind == "local":
        return None
    if kind != "slurm":
        raise RunnerError(f"[backend] kind: given {kind!r}; expected 'local' or 'slurm'")
    out = {"partition": None, "account": None, "qos": None, "preemptible_qos": None, "sbatch_args": [], "poll_seconds": 2.0,
           "requeue": 1, "signal_seconds": 60, "cpus_per_task": 1}
    py = sec.get("shim_python", sys.executable)
    if not isinstance(py, str) or not os.path.isabs(py):
        raise RunnerError(f"[backend] shim_python: given {py!r}; expected the absolute path of a Python >= 3.11 every user may run")
    out["shim_python"] = py
    for key in ("partition", "account", "qos", "preemptible_qos"):
        v = sec.get(key)
        if v is not None and (not isinstance(v, str) or not _FIELD.match(v)):
            raise RunnerError(f"[backend] {key}: given {v!r}; expected a Slurm name (letters, digits, _ . -)")
        out[key] = v
    args = sec.get("sbatch_args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) and a.startswith("--") for a in args):
        raise RunnerError(f"[backend] sbatch_args: given {args!r}; expected a list of sbatch options, e.g. [\"--exclusive\"]")
    out["sbatch_args"] = args
    for key, lo in (("poll_seconds", 0.1), ("requeue", 0), ("signal_seconds", 0), ("cpus_per_task", 1)):
        v = sec.get(key, out[key])
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo:
            raise RunnerError(f"[backend] {key}: given {v!r}; expected a number >= {lo}")
        out[key] = v
    return out


def job_options(spec: dict, conf: dict) -> list[str]:
    """The sbatch options of one job: resources from the job file, the site's and the job's Slurm settings."""
    res = spec.get("resources") or {}
    own = spec.get("slurm") or {}
    opts = [f"--cpus-per-task={int(own.get('cpus_per_task') or conf['cpus_per_task'])}"]
    if res.get("gpus"):
        opts.append(f"--gres=gpu:{int(res['gpus'])}")
    if res.get("memory_gb"):
        opts.append(f"--mem={max(1, math.ceil(res['memory_gb'] * 1024))}M")
    if res.get("time_limit"):
        opts.append(f"--time={max(1, math.ceil(res['time_limit'] / 60))}")
        if conf["signal_seconds"]:
            opts.append(f"--signal=TERM@{int(conf['signal_seconds'])}")  # ahead of the limit: the adapter may save
    prio = int(spec.get("priority") or 0)
    if prio < 0:
        opts.append(f"--nice={-prio}")  # only an admin may raise a job above others in Slurm
    from ..preempt import preemptible

    for key in ("partition", "account", "qos"):
        v = own.get(key) or conf.get(key)
        if key == "qos" and not own.get(key) and conf.get("preemptible_qos") and preemptible({"spec": spec}):
            v = conf["preemptible_qos"]  # Slurm's own preemption: the site's QOS that others may preempt
        if v:
            opts.append(f"--{key}={v}")
    opts += conf["sbatch_args"] + list(own.get("sbatch_args") or [])
    return opts


def sbatch_argv(job: dict, run_dir: Path, conf: dict) -> list[str]:
    """The whole sbatch command of a job: the shim under Slurm, its output into the job's log."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", job.get("name") or job["id"])[:60]
    script = f"exec {shlex.quote(conf['shim_python'])} -I -S {shlex.quote(str(SHIM))} {shlex.quote(str(run_dir))}"
    return ["sbatch", "--parsable", f"--job-name={name}", f"--comment=runner:{job['id']}", f"--chdir={run_dir}",
            f"--output={run_dir}/slurm.out", "--no-requeue", *job_options(job["spec"], conf), f"--wrap={script}"]


def _run(argv: list[str], user: Optional[tuple] = None, timeout: float = 60) -> str:
    kw = {}
    if user and user[0] != os.geteuid():
        kw = {"user": user[0], "group": user[1], "extra_groups": list(user[2])}
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.SubprocessError) as e:
        raise RunnerError(f"{argv[0]}: {e}") from None
    if out.returncode != 0:
        raise RunnerError(f"{argv[0]}: {(out.stderr or out.stdout).strip()[:500]}")
    return out.stdout


def submit(job: dict, run_dir: Path, conf: dict, user: tuple) -> str:
    """sbatch the job as its submitter (uid, gid, groups); Slurm's job id."""
    out = _run(sbatch_argv(job, run_dir, conf), user=user).strip()
    sid = out.split(";")[0]
    if not sid.isdigit():
        raise RunnerError(f"sbatch answered {out!r}, not a job id")
    return sid


def cancel(slurm_id: str, signal_name: str | None = None):
    """scancel, or send a signal to the job's processes."""
    _run(["scancel", *([f"--signal={signal_name}", "--full"] if signal_name else []), slurm_id])


class SlurmJob(NamedTuple):
    state: str  # Slurm's JobState
    reason: str
    node: str
    exit_code: Optional[int]
    signal: Optional[int]


def _exit(text: str) -> tuple[Optional[int], Optional[int]]:
    code, _, sig = (text or "").partition(":")
    return (int(code) if code.isdigit() else None), (int(sig) if sig.isdigit() and int(sig) else None)


def poll(ids: list[str]) -> dict[str, SlurmJob]:
    """Slurm's view of these jobs: one squeue call for all; one `scontrol show job` for the ones
    squeue no longer lists (ended). A job neither knows is left out."""
    if not ids:
        return {}
    out = {}
    try:
        text = _run(["squeue", "-h", "--noconvert", "-t", "all", "-o", "%i|%T|%r|%N", "-j", ",".join(ids)])
    except RunnerError as e:
        if "Invalid job id" not in str(e):  # squeue's answer when it knows none of them
            raise
        text = ""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 4 and parts[0] in ids:
            out[parts[0]] = SlurmJob(parts[1], parts[2] if parts[2] not in ("None", "(null)") else "", parts[3], None, None)
    ended = [i for i in ids if i not in out or out[i].state not in ACTIVE]
    if ended:
        try:
            text = _run(["scontrol", "-o", "show", "job"])
        except RunnerError:
            text = ""
        for line in text.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            jid = f.get("JobId")
            if jid in ended:
                code, sig = _exit(f.get("ExitCode", ""))
                out[jid] = SlurmJob(f.get("JobState", ""), f.get("Reason", "") if f.get("Reason") != "None" else "",
                                    f.get("NodeList", "") if f.get("NodeList") != "(null)" else "", code, sig)
    return out


def available() -> bool:
    """Whether Slurm's commands answer here (sbatch and squeue on PATH, the controller reachable)."""
    try:
        _run(["squeue", "-h", "-o", "%i", "-j", "0"], timeout=15)
    except RunnerError as e:
        return "Invalid job id" in str(e)
    return True


def wait_for_exit_file(run_dir: Path, seconds: float = 3.0) -> bool:
    """A job Slurm says ended may have its exit.json still in flight on shared storage."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if (run_dir / "exit.json").exists():
            return True
        time.sleep(0.1)
    return (run_dir / "exit.json").exists()
