"""A cancel applied to a job in whatever state it is in (the backend's own cancel first, then runner's kill
path: the backend's Kills, runner/backends/local_kills.py)."""

from __future__ import annotations

from .. import defaults
from ..exceptions import InvalidTransition
from ..states import JobState, Reason


class Cancel:
    """A cancel of a job, from its owner's spool file, the backend, or a test. Made before the
    backend it asks first (the backend's Host holds `request`), and given it by `use`."""

    def __init__(self, store, home, mark):
        self.store = store
        self.home = home
        self.kills = None  # the backend's Kills (runner/backends/local_kills.py), given by use(backend)
        self.mark = mark  # something may start now: schedule on the next pass
        self.backend_cancel = None  # the backend's cancel(job, now) -> whether it did it itself

    def use(self, backend):
        """The backend, once made: its own cancel comes first, then its kill bookkeeping."""
        self.backend_cancel = backend.cancel
        self.kills = backend.kills

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
