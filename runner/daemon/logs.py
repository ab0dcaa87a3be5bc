"""A job's log: runner's own lines written into it (while it is prepared, stopped, queued again),
and the watchers that read a running job's new lines into metrics and its checkpoints into
artifacts, from the offset its row holds (so a restarted daemon reads each line once)."""

from __future__ import annotations

import os

from ..proctl import read_json
from ..logbatches import HelperWatcher


def job_log(home, job: dict):
    """A writer of `runner: ...` lines into the job's log while it is prepared (the log is its user's to read)."""
    from ..identity import drops_privileges
    from ..prepare import log_mode

    run = home.run_dir(job["id"])
    run.mkdir(parents=True, exist_ok=True)
    os.chmod(run, 0o711)
    path = run / "output.log"
    mode = log_mode(home)

    def write(line: str):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
        try:
            if drops_privileges(job["uid"]):
                os.fchown(fd, job["uid"], -1)
            os.write(fd, (line.rstrip("\n") + "\n").encode())
        finally:
            os.close(fd)
    return write


class Logs:
    """One HelperWatcher per followed job (its log parsed by a helper as its user: runner.logparse), made on
    first use; the daemon's memory only (the offsets are in the store)."""

    def __init__(self, store, home):
        self.store = store
        self.home = home
        self.watchers: dict[str, HelperWatcher] = {}

    def watcher(self, job: dict) -> HelperWatcher:
        """The job's log watcher, made on first use from its watch.json and stored offset."""
        w = self.watchers.get(job["id"])
        if w is None:
            run_dir = self.home.run_dir(job["id"])
            meta = read_json(run_dir / "watch.json") or {}
            w = self.watchers[job["id"]] = HelperWatcher(job["id"], self.home.job_dir(job["id"]), meta.get("parser"),
                                                          job["log_offset"] or 0, job["parser_state"], meta.get("checkpoints"),
                                                          log_path=run_dir / "output.log", owner=job["uid"],
                                                          max_offset=self._read_limit(),
                                                          redo_before=job["started_at"] if job.get("restarts") else None)
        return w

    def let_go_but(self, running):
        """Let go of the parse helpers of jobs not among `running` (ids): a job that left `running` by
        a way that did not finish its watcher keeps no helper (its watcher stays for finish())."""
        keep = set(running)
        for jid, w in list(self.watchers.items()):
            if jid not in keep and w.helper is not None:
                w.close()

    def wake_on_batches(self, stop, wake):
        """Wake the loop when a helper has sent a batch (until `stop` is set): a printed line is
        stored within a pass of its parse, not at the next timed pass."""
        import select

        while not stop.is_set():
            helpers = [w.helper for w in list(self.watchers.values())]  # (the loop may let one go meanwhile)
            fds = [h.fd for h in helpers if h is not None]
            if not fds:
                stop.wait(0.05)
                continue
            try:
                ready = select.select(fds, [], [], 0.05)[0]
            except (OSError, ValueError):  # a helper let go meanwhile
                ready = []
            if ready:
                wake.set()
                stop.wait(0.01)  # (the loop reads them: at most a wake a pass, not a spin)

    def follow_log(self, job: dict, final: bool = False):
        """Read the job's new log lines into metrics (final: all of them, its end is known)."""
        self.watcher(job).poll(self.store, final=final)

    def close_log(self, jid: str):
        """Stop following a job's log without ending it (its last lines read first): it runs again elsewhere."""
        w = self.watchers.pop(jid, None)
        if w:
            w.poll(self.store, final=True)
            w.close()

    def finish(self, jid: str):
        """A job's run has ended: its last checkpoints recorded, its watcher closed."""
        w = self.watchers.pop(jid, None)
        if w:
            if w.checkpoints:
                w.scan_artifacts(self.store)
            w.close()

    def drop(self, jid: str):
        """Stop following a job without reading it again (reading it is what raised)."""
        w = self.watchers.pop(jid, None)
        if w:
            w.close()

    def _read_limit(self) -> int | None:
        """The most bytes of a log worth reading: the shim writes at most the cap, its cut notes and a tail."""
        from ..diskspace import settings
        from ..shim import TAIL_MAX

        cap = settings(self.home.config)["log_max_bytes"]
        return cap + TAIL_MAX + (1 << 20) if cap else None
