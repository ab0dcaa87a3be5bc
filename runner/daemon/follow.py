"""Following running jobs, each pass: their new log lines into metrics, their time limits, their
processes (seen gone: lost), and their ends handed to the reaper (daemon/reap.py) once their GPUs are
free (the backend's GpuWatch, runner/backends/local_gpus.py). A backend that knows its jobs' ends
itself (owns_end) is asked first."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from .. import defaults
from ..proctl import alive, kill_tree, read_json
from ..states import JobState, Reason
from .faults import own_trouble, rollback

log = logging.getLogger("runner.daemon.follow")

LOST_AFTER_SECONDS = 15.0
"""How long a running job's processes must look gone, with no exit.json, before it is `lost` (the
shim writes exit.json after the job's last process: orphans get up to 10 s, the log pipe 5 s)."""


def time_limit_reached(limit, started_boot: float | None, now_boot: float, started_wall: float | None, now_wall: float) -> bool:
    """Whether a job has run longer than its time limit (seconds).

    Measured on the boot clock (CLOCK_BOOTTIME: seconds since boot, which nobody sets and which
    a daemon restart does not reset) from its shim's start, so a wall clock set ahead or back
    neither ends a job early nor keeps it past its limit. Only when the shim's start is not known
    does the wall clock decide, from the job's recorded start.
    """
    if not limit:
        return False
    if started_boot is not None:
        return now_boot - started_boot > limit
    return started_wall is not None and now_wall - started_wall > limit


def _started_on_boot_clock(job: dict, run_dir: Path) -> float | None:
    """When the job's shim (or else its child) started, in seconds on the boot clock; None if unknown.

    A pid that was reused since belongs to a later process: it can only make the job seem younger."""
    child = read_json(run_dir / "child.json") or {}
    for pid in (job.get("shim_pid"), child.get("pid") if isinstance(child, dict) else None):
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime: clock ticks after boot
        except (OSError, IndexError, ValueError):
            continue
    return None


class Follow:
    """The following of running jobs, one pass at a time."""

    def __init__(self, store, home, backend, logs, kills, gpus, reaper, guard):
        self.store = store
        self.home = home
        self.backend = backend  # poll(now) each pass; owns_end(job): the backend says when it ended
        self.logs = logs  # daemon.logs.Logs
        self.kills = kills  # the backend's Kills (runner/backends/local_kills.py): time limits and escalations
        self.gpus = gpus  # the backend's GpuWatch (runner/backends/local_gpus.py): samples, GPUs freed before an end
        self.reaper = reaper  # daemon.reap.Reaper: reap(job, exit record, now), end(job, state, reason, now, **fields)
        self.guard = guard  # daemon.faults.Guard: the daemon's own trouble with a job, said once
        self._vanished = {}  # job_id -> when (monotonic) its processes were first seen gone without an exit.json
        self.behind = False  # the last pass left log lines unread: the next one should not wait

    def follow(self, now: float):
        """Read new log output of running jobs; reap the ones that ended.

        One pass spends about FOLLOW_PASS_SECONDS reading logs, shared among the running jobs: a
        job printing faster than its lines are stored is read on in the next pass (which comes at
        once: `behind`), and every other job's new lines are read in each pass, so a line printed
        is in the store within about a pass however many jobs flood their logs."""
        self.backend.poll(now)
        jobs = self.store.list_jobs(states=["running"])
        share = max(defaults.FOLLOW_PASS_SECONDS / max(len(jobs), 1), 0.005)
        self.behind = False
        for job in jobs:
            try:
                self._follow_one(job, now, share)
            except Exception as e:  # one job's bad value costs that job, never the loop
                self._cannot_follow(job, e, now)
        self.logs.let_go_but(j["id"] for j in jobs)
        self.gpus.sample(now)

    def _follow_one(self, job: dict, now: float, seconds: float | None = None):
        jid = job["id"]
        run_dir = self.home.run_dir(jid)
        w = self.logs.watcher(job)
        if self.backend.owns_end(job):
            w.poll(self.store, seconds=seconds)  # its end comes from the backend's own view (its poll)
            self.behind |= w.behind
            return
        exit_info = read_json(run_dir / "exit.json")
        if exit_info is not None:
            if not self._read_to_end(w, seconds):
                return
            if self._vanished.pop(jid, None) is not None:
                log.warning("job %s: its exit.json came after its processes looked gone", jid)
            if not self.gpus.released(job, now):
                return
            self.reaper.reap(job, exit_info, now)
            return
        w.poll(self.store, seconds=seconds)
        self.behind |= w.behind
        limit = (job["spec"].get("resources") or {}).get("time_limit")
        mono = time.monotonic()  # kill deadlines too are on a clock nobody sets
        if limit and jid not in self.kills and time_limit_reached(
                limit, _started_on_boot_clock(job, run_dir), time.clock_gettime(time.CLOCK_BOOTTIME), job["started_at"], now):
            self.store.update_job(jid, timed_out=1, note=f"stopped at its time limit of {limit:g}s")
            self.kills.term(run_dir, jid, defaults.CANCEL_GRACE_SECONDS, mono=mono)
        self.kills.escalate(run_dir, jid, mono)
        if not self._running_somewhere(job, run_dir):
            exit_info = read_json(run_dir / "exit.json")  # the shim may have just finished
            if exit_info is not None:
                self._vanished.pop(jid, None)
                if self._read_to_end(w, seconds):  # its last lines (this pass read it as running)
                    self.reaper.reap(job, exit_info, now)
                return
            # Lost only when exit.json stays missing a while: under load, four `runner check` jobs
            # in a row ended "lost" milliseconds before their shim's exit.json (exit code 0) appeared.
            first = self._vanished.setdefault(jid, mono)
            if mono - first < LOST_AFTER_SECONDS:
                return
            self._vanished.pop(jid, None)
            w.poll(self.store, final=True)
            self.reaper.end(job, JobState.FAILED, Reason.LOST.value, now, note="the job's processes vanished without an exit status")
        elif jid in self._vanished:
            log.warning("job %s: its processes looked gone for %.1fs, then were seen again", jid, mono - self._vanished.pop(jid))

    def _read_to_end(self, w, seconds) -> bool:
        """An ended job's last lines, within this pass's share: whether all are read (else the next
        pass reads on, and reaps the job after them)."""
        w.poll(self.store, final=True, seconds=seconds)
        self.behind |= not w.done
        return w.done

    def _cannot_follow(self, job: dict, e: Exception, now: float):
        """Following a job raised. The daemon's own trouble (its disk, its store): the job runs on and
        is followed again on the next pass. Anything else is the job's (a bad value in its files or
        row): it is ended and fails with the error as its note, alone."""
        rollback(self.store)
        jid = job["id"]
        why = own_trouble(e)
        if why:
            if self.guard.first(f"job {jid}", why):
                log.error("job %s: cannot follow it now (%s); it runs on", jid, why)
            return
        note = f"the daemon could not follow this job: {type(e).__name__}: {e}"[:500]
        log.exception("job %s: %s", jid, note)
        self.logs.drop(jid)  # not scanned again on its way out: it is what raised
        kill_tree(self.home.run_dir(jid), signal.SIGKILL)
        self.reaper.end(job, JobState.FAILED, Reason.DAEMON_ERROR.value, now, note=note)

    def _running_somewhere(self, job, run_dir) -> bool:
        if alive(job["shim_pid"], job["shim_started"]):
            return True
        child = read_json(run_dir / "child.json")
        return bool(child) and alive(child["pid"])
