"""The interface of a backend: where a prepared job runs, and how its end is known.

The daemon takes the spool, prepares each job (env, checkout, launch.json in its folder), follows
its log into metrics and records its end; a backend decides when a queued job goes, starts the
prepared launch somewhere, says when it ended and cancels it. Jobs report through files in their
folder (output.log, exit.json) on storage the daemon reads either way, so nothing else in runner
knows where a job ran.

A backend is one module in runner/backends/ and one line of the table in
runner/backends/__init__.py, chosen by the config's `[backend] kind`. It gets what it needs at
construction, as a `Host` (the store, the home, and the few things only the daemon can do for a
job), keeps its own state (poll schedules, error counts, its client) in its own attributes, and
records in each job's row which backend took it (`backend`) and its own name for it there
(`backend_ref`: Slurm's job id; NULL when it has none). A queued job with a `backend_ref` waits in
that backend's own queue, not in runner's (the store's queue reads leave it out).

The methods are called from the daemon's loop thread, except `start`, which a prepare worker
thread calls. Every method takes `now` where it needs a time, so tests need no sleeps.
tests/test_backend_contract.py holds every backend to this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .local_gpus import GpuWatch
from .local_kills import Kills


@dataclass(frozen=True)
class Host:
    """What the daemon hands a backend; a backend reaches nothing of the daemon's but these."""

    store: Any  # runner.store.Store: rows, transitions (the one path of every state change)
    home: Any  # runner.home.Home: run_dir(job id) is the job's folder (launch.json, output.log, exit.json)
    schedule_here: Callable[[float], None]  # runner's own scheduler: start the queued jobs that fit this machine now
    prepare: Callable[[dict], None]  # prepare a claimed (`preparing`) job in a worker; it then calls start()
    fail_preparing: Callable[..., None]  # (job id, Reason, message, write): a job that could not start fails, its log says why
    follow_log: Callable[[dict, bool], None]  # (job, final): read its new log lines into metrics; final: up to the end
    close_log: Callable[[str], None]  # stop following a job's log (its last lines read first) without ending it
    reap: Callable[[dict, dict, float], None]  # (job, exit record, now): end a running job by its exit (runner.outcome)
    end: Callable[..., None]  # (job, JobState, reason, now, **fields): end a running job so
    cancel: Callable[[dict, float], None]  # the daemon's cancel of a job (its own kill path on this machine)
    changed: Callable[[], None]  # something happened that may let a queued job start: schedule again soon
    inventory: Any = None  # runner.gpus inventory: this machine's GPUs (for the backend's GpuWatch)
    release_wait: float = 0.0  # [gpus] release_wait_seconds: how long an ended job's processes may stay on its GPUs


class Backend:
    """Where jobs run. Subclasses set `kind` (its name in the table) and override what they do;
    the defaults are those of a backend with no queue, no view and no cancel of its own."""

    kind = ""

    @classmethod
    def settings(cls, config: dict) -> dict | None:
        """Its `[backend]` settings from the config, checked: a bad value raises RunnerError with
        one line saying which key and what is expected (the daemon stops there, at its start)."""
        return None

    def __init__(self, host: Host, conf: dict | None = None):
        self.host = host
        self.conf = conf
        # The bookkeeping of jobs whose processes run here under a shim: every backend's, since a daemon
        # with another backend still follows, kills and frees the GPUs of shim-run jobs it does not own.
        self.kills = Kills()  # local_kills.py: SIGTERM -> SIGKILL deadlines (cancels, time limits, preemptions)
        self.gpus = GpuWatch(host.store, host.inventory, host.release_wait)  # local_gpus.py: samples, stragglers

    def describe(self) -> str:
        """Where jobs go, in a few words, for the daemon's start line."""
        return self.kind

    def schedule(self, now: float):
        """Decide which queued jobs go now: claim each (store.claim) and hand it to host.prepare."""
        raise NotImplementedError

    def start(self, job: dict, prepared, offset: int, write: Callable[[str], None]):
        """Run a prepared job (launch.json in its folder), called from a prepare worker. It leaves
        `preparing`: to `running` (started here), to `queued` with a `backend_ref` (waiting in the
        backend's own queue), or failed through host.fail_preparing. `offset`: its log's size before
        it starts (recorded as its log_offset); `write`: a line into its log."""
        raise NotImplementedError

    def poll(self, now: float):
        """Look at the jobs this backend holds and move them on (started, ended); called each pass.
        A backend whose ends are read from the shim's exit.json has nothing to do here."""

    def owns_end(self, job: dict) -> bool:
        """Whether this backend, by poll(), decides when the running job has ended; False: the
        daemon reads its shim's exit.json and watches its processes here."""
        return False

    def cancel(self, job: dict, now: float) -> bool:
        """Cancel the job where this backend must; False leaves it to the daemon's own kill path."""
        return False

    def reconcile(self, now: float):
        """After a daemon (re)start, before anything else: settle the jobs a dying daemon left
        half-handed to this backend (e.g. `preparing` ones it had already submitted)."""

    def close(self):
        """The daemon stops: let go of what this backend holds (its jobs run on)."""
