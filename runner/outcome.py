"""How a job ended: one pure decision over everything that is known when its shim has exited.

The daemon gathers the facts (exit.json, the adapter's failure.json, the time limit, a cancel
request, the log's tail) and this function alone turns them into the end state and reason, so
every combination is covered by one table test. Processes left on a job's GPUs are not a fact
here: the daemon kills them before it decides and adds a note; the time limit is a flag of its
own, so that note never hides it (tests/test_gpus.py runs that with a real daemon).
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

from .states import JobState, Reason

_OOM = re.compile(r"(?i)out of memory|OutOfMemoryError|MemoryError|Cannot allocate memory|std::bad_alloc")


def oom_in(lines) -> bool:
    """Whether a log tail shows the job ran out of (GPU or host) memory."""
    return any(_OOM.search(l) for l in lines)


def host_oom_kills(exit_info: dict) -> int:
    """How many processes the kernel's out-of-memory killer killed on the host while the job ran
    (exit.json's `host_oom_kills`, the shim's two looks at /proc/vmstat's oom_kill counter); 0 when
    it says none or nothing usable."""
    n = exit_info.get("host_oom_kills")
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2**31 else 0


def host_oom_note(exit_info: dict) -> Optional[str]:
    """The job's note when the OOM killer was at work on the host while it ran (None: it was not)."""
    n = host_oom_kills(exit_info)
    if not n:
        return None
    if exit_info.get("signal") == 9:
        return (f"killed by the kernel's out-of-memory killer: the host ran out of memory while it ran ({n} process(es) "
                "killed by it meanwhile, this job's among them); ask for less (batch_size, workers) or run it when the host is freer")
    return (f"the kernel's out-of-memory killer killed {n} process(es) on the host while this job ran "
            "(a worker of this job's among them would explain its end)")


class Ending(NamedTuple):
    """The decision: end state and reason (None when it succeeded)."""

    state: JobState
    reason: Optional[str]


def decide(exit_info: dict, failure: dict | None = None, *, cancel_requested: bool = False, timed_out: bool = False,
           oom_in_log: bool = False) -> Ending:
    """End state and reason, in this order of precedence:

    1. a cancel the user asked for is `cancelled`, however the processes ended;
    2. a job the runner stopped at its time limit is `failed/timeout`;
    3. a program that could not start is `failed/spawn_failed`;
    4. exit status 0 is `succeeded`;
    5. a full disk the shim saw (its log could not be written, or the job said "No space left on
       device") is `failed/disk_full` (runner.diskspace.full_note names the folder);
    6. a reason the adapter wrote (failure.json: oom, bad_config, ...) is taken as given;
    7. an out-of-memory message in the log's tail is `failed/oom`, and so is a SIGKILL while the
       kernel's out-of-memory killer killed processes on the host (`host_oom_kills`: the host ran
       out of memory, and nothing else of runner's sends SIGKILL but a cancel or a time limit);
    8. a signal is `failed/killed_by_signal`;
    9. any other status is `failed/exit_code`.
    """
    if cancel_requested:
        return Ending(JobState.CANCELLED, Reason.CANCELLED_BY_USER.value)
    if timed_out:
        return Ending(JobState.FAILED, Reason.TIMEOUT.value)
    if exit_info.get("spawn_error"):
        return Ending(JobState.FAILED, Reason.SPAWN_FAILED.value)
    if exit_info.get("exit_code") == 0 and not exit_info.get("signal"):
        return Ending(JobState.SUCCEEDED, None)
    if isinstance(exit_info.get("disk_full"), dict):
        return Ending(JobState.FAILED, Reason.DISK_FULL.value)
    if failure and isinstance(failure.get("reason"), str) and failure["reason"] in {r.value for r in Reason}:
        return Ending(JobState.FAILED, failure["reason"])
    if oom_in_log or (exit_info.get("signal") == 9 and host_oom_kills(exit_info)):
        return Ending(JobState.FAILED, Reason.OOM.value)
    if exit_info.get("signal"):
        return Ending(JobState.FAILED, Reason.KILLED_BY_SIGNAL.value)
    return Ending(JobState.FAILED, Reason.EXIT_CODE.value)
