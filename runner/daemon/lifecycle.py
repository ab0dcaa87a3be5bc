"""The daemon's start and stop around its loop: its pidfile, its own intake folder, what it says
of itself (daemon.json), the file watcher that wakes its loop, the reconcile after a (re)start,
and the two small things its parts share: the registry as its files stand, and "schedule soon"."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time

from .. import defaults
from ..atomic import write_json
from ..exceptions import RunnerError
from ..registry import load as load_registry
from ..spool import user_name
from ..states import JobState

log = logging.getLogger("runner.daemon")


class Registry:
    """The merged registry, re-read when one of its files changes (e.g. `runner repo add`); call it."""

    def __init__(self, home):
        self.home = home
        self._registry, self._stamp = None, None

    def __call__(self):
        from ..registry import registry_files

        stamp = tuple((str(f), f.stat().st_mtime_ns if f.exists() else None) for f in registry_files(self.home))
        if stamp != self._stamp:
            self._registry, self._stamp = load_registry(self.home), stamp
        return self._registry


class Dirty:
    """Whether something happened that may let a queued job start (the next pass schedules)."""

    def __init__(self, wake):
        self.wake = wake  # the loop's threading.Event: set, the loop turns now
        self.flag = True
        self._last = 0.0  # when the loop last scheduled

    def due(self, now: float) -> bool:
        """Whether this pass schedules: something changed, or a second went by (for what changes
        unseen: GPUs used by others, a GPU back); if so, it is noted as done now."""
        if not (self.flag or now - self._last >= 1.0):
            return False
        self.flag = False
        self._last = now
        return True

    def mark(self):
        """Schedule on the next pass."""
        self.flag = True

    def changed(self):
        """Schedule on the next pass, and soon (the backend's Host.changed)."""
        self.flag = True
        self.wake.set()


def take_pidfile(home) -> int:
    """The daemon's pidfile, locked for as long as it runs (its fd): one daemon per home."""
    fd = os.open(home.pidfile, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 64).decode().strip()
        os.close(fd)
        raise RunnerError(f"a daemon already runs for {home.root} (pid {other}); stop it first")
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def own_taking(home):
    """spool/.taking must be the daemon's own folder, closed to everyone else."""
    t = home.taking
    try:
        st = os.lstat(t)
    except FileNotFoundError:
        os.mkdir(t, 0o700)
    else:
        import stat as st_

        if not st_.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            os.rename(t, home.quarantine / f".taking.{time.time_ns()}")
            os.mkdir(t, 0o700)
    os.chmod(t, 0o700)


def announce(home, http_bind, started_at: float):
    """The daemon's own folders (tokens, secrets) and what it says of itself: daemon.json for the CLI
    and doctor, uv-settings.json (whole, root's only) for doctor."""
    from .. import tokens
    from ..envs import masked, uv_environ, uv_settings
    from ..secrets import _dir as secrets_dir

    tokens.ensure_dir(home)
    secrets_dir(home)
    settings = uv_settings(uv_environ(home.config.get("envs")))  # what its env builds give uv: `runner doctor` shows and tries them
    info = {"pid": os.getpid(), "uid": os.geteuid(), "user": user_name(os.geteuid()), "http": http_bind,
            "python": sys.executable, "started_at": started_at, "uv_settings": masked(settings)}
    try:  # whole, for doctor as root: a proxy's or an index's password is not for every user's eyes
        write_json(home.root / "uv-settings.json", {"pid": os.getpid(), "uv_settings": settings}, mode=0o600)
    except OSError as e:
        log.error("cannot write uv-settings.json: %s", e.strerror)
    try:
        write_json(home.root / "daemon.json", info)
    except OSError as e:  # a full disk: the daemon serves without it (the CLI falls back to the pidfile)
        log.error("cannot write daemon.json: %s", e.strerror)


def watch_files(home, stop, wake):
    """Wake the loop whenever something lands in the spool or a job's folder (until `stop` is set).

    watchfiles yields after `step` ms without a change, or after `debounce` ms of changes. While
    jobs run their folders change all the time (logs, child.json, exit.json), so it is the
    debounce that says how late a job's end is seen: 5 ms (was 20) made a drain of sandboxed jobs
    8-10 % faster, and the daemon's CPU while 4 jobs each print 1,000 lines a second stayed at
    14-16 % of a core (docs/bench/drain.md)."""
    import watchfiles

    try:
        for _ in watchfiles.watch(home.spool, home.run, stop_event=stop, debounce=5, step=1,
                                  rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False):
            wake.set()
    except Exception:  # inotify limits etc.: the poll interval still drives the loop
        log.exception("file watching failed; polling every %.2fs", defaults.POLL_SECONDS)


def reconcile(store, home, backend, kills, grace: float, now: float):
    """After a (re)start: put every row that was mid-way right against what is on disk."""
    backend.reconcile(now)  # jobs it took before the restart but the store did not record
    for job in store.list_jobs(states=["preparing"]):
        d = home.run_dir(job["id"])
        if (d / "child.json").exists() or (d / "exit.json").exists():
            store.transition(job["id"], JobState.RUNNING, "launched before a daemon restart", now=now)
        else:
            store.transition(job["id"], JobState.QUEUED, "daemon_restarted", now=now)
    for job in store.list_jobs(states=["running"]):
        log.info("job %s: still running from before; following from offset %s", job["id"], job["log_offset"])
        if job.get("preempt_requested"):  # stopped before the restart: its grace runs from now
            kills.after(job["id"], grace)
