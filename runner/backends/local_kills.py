"""The kill bookkeeping of jobs whose processes run on this machine under a shim: when each job being
killed (cancelled, past its time limit, preempted) is sent SIGKILL after its SIGTERM. Made by every backend
(base.Backend.kills): the local one's jobs all run here, and a daemon with another backend still kills
the shim-run jobs it does not own (started here before the switch)."""

from __future__ import annotations

import signal
import time

from ..proctl import kill_tree


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
