"""Ending processes on this machine: when each job being killed is sent SIGKILL, and a cancel
applied to a job in whatever state it is in (the backend's own cancel first, then runner's kill path)."""

from __future__ import annotations

import signal
import time

from .. import defaults
from ..exceptions import InvalidTransition
from ..proctl import kill_tree
from ..states import JobState, Reason


class Kills:
    """job id -> when (monotonic: a clock nobody sets) its SIGTERM escalates to SIGKILL."""

    def __init__(self):
        self.deadlines: dict[str, float] = {}

    def __contains__(self, jid: str) -> bool:
        return jid in self.deadlines

    def term(self, run_dir, jid: str, grace: float, gentle: bool = False, mono: float | None = None):
        """SIGTERM to the job's process tree now, SIGKILL `grace` seconds after `mono` (now) unless it has
        ended. `gentle` (a preemption's): to the job's own processes, not to bubblewrap around them."""
        kill_tree(run_dir, signal.SIGTERM, gentle=gentle)
        self.deadlines[jid] = (time.monotonic() if mono is None else mono) + grace

    def after(self, jid: str, grace: float):
        """SIGKILL the job's tree `grace` seconds from now (a job followed again after a restart, its SIGTERM sent)."""
        self.deadlines[jid] = time.monotonic() + grace

    def escalate(self, run_dir, jid: str, mono: float):
        """SIGKILL to a job whose grace is over (and again each second while it lingers)."""
        if jid in self.deadlines and mono >= self.deadlines[jid]:
            kill_tree(run_dir, signal.SIGKILL)
            self.deadlines[jid] = mono + 1.0

    def forget(self, jid: str):
        """The job has ended: nothing more to kill."""
        self.deadlines.pop(jid, None)


class Cancel:
    """A cancel of a job, from its owner's spool file, the backend, or a test. Made before the
    backend it asks first (the backend's Host holds `request`), and given it by `use`."""

    def __init__(self, store, home, kills: Kills, mark):
        self.store = store
        self.home = home
        self.kills = kills
        self.mark = mark  # something may start now: schedule on the next pass
        self.backend_cancel = None  # the backend's cancel(job, now) -> whether it did it itself

    def use(self, backend):
        """The backend, once made: its own cancel comes first."""
        self.backend_cancel = backend.cancel

    def request(self, job: dict, now: float):
        """Cancel a job in whatever state it is in; killing a running one takes the whole tree."""
        self.mark()
        state = JobState(job["state"])
        if self.backend_cancel(job, now):
            return
        if state == JobState.QUEUED:
            try:
                self.store.transition(job["id"], JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, now=now, expect=JobState.QUEUED)
                return
            except InvalidTransition:
                job = self.store.get_job(job["id"])
                state = JobState(job["state"])
        if state in (JobState.PREPARING, JobState.RUNNING):
            self.store.update_job(job["id"], cancel_requested=1)
            if state == JobState.RUNNING:
                self.kills.term(self.home.run_dir(job["id"]), job["id"], defaults.CANCEL_GRACE_SECONDS)
