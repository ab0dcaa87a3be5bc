"""The local backend: jobs run on this machine.

runner's own scheduler (slots, GPUs, fair share, backfill, preemption: the daemon's) decides
which queued job starts; a prepared job's shim is forked by the warm launcher, in a session of
its own; its end is the exit.json its shim writes, read by the daemon, and a cancel kills its
process tree (the daemon's kill path). No reference of its own: the shim's pid is in the row.
"""

from __future__ import annotations

import signal
import time

from ..exceptions import InvalidTransition
from ..proctl import kill_tree, started_at
from ..states import JobState, Reason
from .base import Backend
from .local_launcher import ShimLauncher


class Local(Backend):
    """Jobs run here, under a shim each."""

    kind = "local"

    def __init__(self, host, conf=None):
        super().__init__(host, conf)
        self.launcher = ShimLauncher()  # forks the shims from a warm interpreter, started on first use

    def close(self):
        """The daemon stops: the warm launcher goes (the shims it started run on)."""
        self.launcher.close()

    def describe(self) -> str:
        return "jobs run here"

    def schedule(self, now: float):
        """runner's own scheduler starts the queued jobs that fit now and records why the others wait."""
        self.host.schedule_here(now)

    def start(self, job: dict, prepared, offset: int, write):
        """The job's shim, forked by the warm launcher; the job is running."""
        jid = job["id"]
        run_dir = self.host.home.run_dir(jid)
        try:
            pid = self.launcher.spawn(run_dir)
        except OSError as e:
            self.host.fail_preparing(jid, Reason.SPAWN_FAILED, str(e), write)
            return
        started = started_at(pid)
        store = self.host.store
        try:
            store.transition(jid, JobState.RUNNING, None, expect=JobState.PREPARING, shim_pid=pid, shim_started=started,
                             env_hash=prepared.env_hash, log_offset=offset, backend=self.kind, backend_ref=None)
        except InvalidTransition:  # cancelled or reconciled meanwhile: the shim must not run on
            kill_tree(run_dir, signal.SIGKILL)
            return
        if store.get_job(jid)["cancel_requested"]:
            self.host.cancel(store.get_job(jid), time.time())
        self.host.changed()
