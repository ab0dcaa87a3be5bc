"""The daemon: takes jobs from the spool, schedules, prepares, launches, watches and reaps.

Persisted state lives in SQLite; process handles live in memory only. Jobs run under a shim in
sessions of their own and report through files, so the daemon can be killed and restarted at any
moment: on start it reconciles every row against reality and keeps running jobs running.

The parts, by role: `intake` (the spool), `launch` (scheduling, preparing, starting), `follow`
(logs, limits, GPUs, the end of each job); this module holds the lifecycle and the loop. Where a
prepared job runs is the configured backend's (runner/backends/), handed what it needs as a Host.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .. import backends, defaults, diskspace, fairshare, gpus as gpus_mod, preempt
from ..atomic import write_json
from ..envs import EnvManager, masked, uv_environ, uv_settings
from ..exceptions import InvalidTransition, RunnerError
from ..home import Home
from ..exporters import Exporters
from ..prepare import ShimLauncher
from ..registry import load as load_registry
from ..retention import Retention
from ..spool import user_name
from ..states import JobState
from ..watch import LogWatcher
from .faults import Backoff, own_trouble, rollback
from .follow import Follow
from .intake import Intake
from .launch import Launch
from .preemption import Preemption

log = logging.getLogger("runner.daemon")


class Daemon(Intake, Launch, Follow, Preemption):
    """One daemon per $RUNNER_HOME."""

    def __init__(self, home: Home, http: str | None = defaults.HTTP_BIND, max_running: int | None = None):
        self.home = home.ensure()
        cfg = home.config.get("daemon", {})
        self.max_running = max_running or cfg.get("max_running", defaults.MAX_RUNNING)
        self.per_user_running = cfg.get("per_user_running")
        if self.per_user_running is not None and (isinstance(self.per_user_running, bool) or not isinstance(self.per_user_running, int)
                                                  or self.per_user_running < 1):
            raise RunnerError(f"[daemon] per_user_running: given {self.per_user_running!r}; expected a whole number of jobs, 1 or more")
        self.http_bind = http
        self.store = home.store()
        self._registry, self._registry_stamp = None, None
        self.envs = EnvManager(home.envs, self.store, home.config.get("envs"))
        self.inventory = gpus_mod.inventory(home.config)
        self.user_gpu_limit = home.config.get("gpus", {}).get("per_user_limit")
        self.backfill_limit = home.config.get("gpus", {}).get("backfill_limit", defaults.BACKFILL_LIMIT)
        self.release_wait = home.config.get("gpus", {}).get("release_wait_seconds", defaults.GPU_RELEASE_WAIT_SECONDS)
        self.fairshare = fairshare.settings(home.config)  # a bad [scheduler] stops the daemon here, in one line
        self.ledger = fairshare.Ledger(self.store, self.fairshare)
        self.preempt = preempt.settings(home.config)  # a bad preempt_* key stops the daemon here, in one line
        self.exporters = Exporters(self.home, self.store, home.config)  # those whose table the config has; a bad one stops the daemon here
        diskspace.settings(home.config)  # a bad [jobs] log_max_mb or min_free_mb stops the daemon here, in one line
        self.retention = Retention(self.home, self.store)  # a bad [retention] stops the daemon here, in one line
        self.launcher = ShimLauncher()  # forks shims from a warm interpreter (the local backend's)
        # Where jobs run ([backend] kind; a bad key stops the daemon here, in one line), handed what it needs
        self.backend = backends.make(home.config, backends.Host(
            store=self.store, home=self.home, launcher=self.launcher, schedule_here=self.schedule_here,
            prepare=self._prepare_in_worker, fail_preparing=self._fail_preparing, follow_log=self._follow_log,
            close_log=self._close_log, reap=self._reap, end=self._end, cancel=self.request_cancel, changed=self._changed))
        self.pool = ThreadPoolExecutor(max_workers=cfg.get("prepare_workers", defaults.PREPARE_WORKERS), thread_name_prefix="prepare")
        self.wake = threading.Event()
        self.stopping = False
        self.started_at = time.time()
        self.watchers: dict[str, LogWatcher] = {}
        self.killing = {}  # job_id -> when to escalate to SIGKILL
        self._vanished = {}  # job_id -> when (monotonic) its processes were first seen gone without an exit.json
        self.skipped = {}  # job_id -> times a smaller job started ahead of it (backfill bound)
        self._born = {}  # spool file name -> its ctime when taken (intake: no backdated job)
        self.releasing = {}  # job_id -> deadline for its processes to leave its GPUs
        self._gpus_seen = {}  # uuid -> GPU: every GPU the inventory showed since the start (never_fits)
        self._reserved = None  # {"job", "gpus", "until"}: GPUs a preemption frees, kept for the job it was made for
        self._reasons_at = None  # when the last decision gave every queued job its reason (launch.REASONS_EVERY)
        self._last_gpu_sample = 0.0
        self._dirty = True  # something happened that may let a queued job start
        self._last_schedule = 0.0
        self._stop_watch = threading.Event()
        self._lock_fd = None
        self.http_server = None
        self.last_tick = time.time()  # when the loop last completed a pass (for /healthz)
        self._unmovable = set()  # spool names the daemon may not move (another user's, with a non-root daemon)
        self._later = Backoff()  # spool names (and loop parts) waiting out the daemon's own trouble (a full disk)
        self._held = {}  # spool name -> its path in .taking, when it could not go back to the spool
        self._trouble = {}  # part of the loop -> the error it last met (logged once per change)

    @property
    def registry(self):
        """The merged registry, re-read when one of its files changes (e.g. `runner repo add`)."""
        from ..registry import registry_files

        stamp = tuple((str(f), f.stat().st_mtime_ns if f.exists() else None) for f in registry_files(self.home))
        if stamp != self._registry_stamp:
            self._registry, self._registry_stamp = load_registry(self.home), stamp
        return self._registry

    def _prepare_in_worker(self, job: dict):
        """A claimed job is prepared in a worker thread, then handed to the backend's start()."""
        self.pool.submit(self._prepare_and_launch, job)

    def _changed(self):
        """Something happened that may let a queued job start: schedule on the next pass, and soon."""
        self._dirty = True
        self.wake.set()

    def _take_pidfile(self):
        fd = os.open(self.home.pidfile, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode().strip()
            os.close(fd)
            raise RunnerError(f"a daemon already runs for {self.home.root} (pid {other}); stop it first")
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def run(self):
        """Run in the foreground until SIGTERM/SIGINT; running jobs are left running."""
        self._take_pidfile()
        # Root's Python processes (import checks, compileall, uv) import from the folder they start
        # in: never a folder that the admin happened to start the daemon in (/tmp, a user's).
        os.chdir("/")
        sock = self._bind_http() if self.http_bind else None  # at once, and before daemon.json names it
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack into the log
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("runner daemon %s: home %s, %s (%s backend; %d slots, gpus: %s)", os.getpid(), self.home.root,
                 self.backend.describe(), self.backend.kind, self.max_running, self.inventory.reason)
        self._own_taking()
        from .. import tokens

        tokens.ensure_dir(self.home)
        from ..secrets import _dir as secrets_dir

        secrets_dir(self.home)
        settings = uv_settings(uv_environ(self.home.config.get("envs")))  # what its env builds give uv: `runner doctor` shows and tries them
        info = {"pid": os.getpid(), "uid": os.geteuid(), "user": user_name(os.geteuid()), "http": self.http_bind,
                "python": sys.executable, "started_at": self.started_at, "uv_settings": masked(settings)}
        try:  # whole, for doctor as root: a proxy's or an index's password is not for every user's eyes
            write_json(self.home.root / "uv-settings.json", {"pid": os.getpid(), "uv_settings": settings}, mode=0o600)
        except OSError as e:
            log.error("cannot write uv-settings.json: %s", e.strerror)
        try:
            write_json(self.home.root / "daemon.json", info)
        except OSError as e:  # a full disk: the daemon serves without it (the CLI falls back to the pidfile)
            log.error("cannot write daemon.json: %s", e.strerror)
        self._guarded("reconcile", self.reconcile, time.time())
        self._guarded("spool intake", self._resume_intake, time.time())
        threading.Thread(target=self._watch_files, name="watch", daemon=True).start()
        if sock is not None:
            self._start_http(sock)
        self.exporters.start(self._stop_watch)  # a thread each; none without their config tables
        self.retention.start(self._stop_watch)  # its own thread, at most one pass an hour; none without [retention]
        try:
            while not self.stopping:
                self.tick()
                self.wake.wait(defaults.POLL_SECONDS)
                self.wake.clear()
        finally:
            self._stop_watch.set()
            if self.http_server:
                self.http_server.should_exit = True
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.backend.close()
            self.launcher.close()
            log.info("runner daemon stopped; %d job(s) left running", len(self.store.list_jobs(states=["running"])))
            os.close(self._lock_fd)

    def _own_taking(self):
        """spool/.taking must be the daemon's own folder, closed to everyone else."""
        t = self.home.taking
        try:
            st = os.lstat(t)
        except FileNotFoundError:
            os.mkdir(t, 0o700)
        else:
            import stat as st_

            if not st_.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                os.rename(t, self.home.quarantine / f".taking.{time.time_ns()}")
                os.mkdir(t, 0o700)
        os.chmod(t, 0o700)

    def _on_signal(self, signum, _frame):
        self.stopping = True
        self.wake.set()

    def _watch_files(self):
        import watchfiles

        try:
            for _ in watchfiles.watch(self.home.spool, self.home.run, stop_event=self._stop_watch, debounce=20, step=2,
                                      rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False):
                self.wake.set()
        except Exception:  # inotify limits etc.: the poll interval still drives the loop
            log.exception("file watching failed; polling every %.2fs", defaults.POLL_SECONDS)

    def _bind_http(self):
        """The listening socket of http_bind, made here in the main thread: a port that cannot be
        had stops the daemon with one line (uvicorn, left to bind in its thread, logs the error and
        ends only that thread: the daemon ran on without HTTP). A bind with port 0 becomes the port
        the kernel chose."""
        import socket

        from ..web.guard import BACKLOG

        host, _, port = self.http_bind.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except (OSError, ValueError) as e:
            raise RunnerError(f"cannot serve HTTP on {self.http_bind}: {getattr(e, 'strerror', None) or e} "
                              "(expected HOST:PORT; set --http or [daemon] http)") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart while old connections linger
            sock.bind(address)
            sock.listen(BACKLOG)
        except OSError as e:
            sock.close()
            import errno

            why = (e.strerror or str(e)).lower()
            hint = "another daemon? " if e.errno == errno.EADDRINUSE else ""
            raise RunnerError(f"cannot serve HTTP on {self.http_bind}: {why} ({hint}set --http or [daemon] http)") from None
        if int(port) == 0:
            self.http_bind = f"{self.http_bind.rpartition(':')[0]}:{sock.getsockname()[1]}"
        return sock

    def _start_http(self, sock):
        from ..http import create_app
        from ..web.guard import server

        app = create_app(self.home, daemon=self)
        self.http_server = server(app, self.http_bind, self.home.config.get("server", {}))  # bounded connections
        t = threading.Thread(target=self.http_server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
        t.start()

    def tick(self, now: float | None = None):
        """One pass: take the spool, follow and reap running jobs, start what fits.

        Each part is guarded: an error costs the file or the job it came from (each part sees to
        that), never the daemon; one the part could not pin on anything is logged and the next
        pass tries again.
        """
        now = time.time() if now is None else now
        self._guarded("spool intake", self.ingest, now)
        self._guarded("following jobs", self.follow, now)
        # Scheduling reads the whole queue: do it when something changed (a submit, a job that
        # ended), and once a second for what changes unseen (GPUs used by others, a GPU back).
        if not self.stopping and (self._dirty or now - self._last_schedule >= 1.0):
            self._dirty = False
            self._last_schedule = now
            error = self._guarded("scheduling", self.schedule, now)
            if error is not None and not own_trouble(error):
                self._guarded("finding what scheduling fails on", self._fail_unschedulable, now)
        self.last_tick = time.time()

    def _guarded(self, part: str, fn, now: float):
        """fn(now); an Exception it raises is logged (once while it repeats) and returned, never raised."""
        try:
            fn(now)
        except Exception as e:  # signals and SystemExit are not Exceptions: they still stop the daemon
            rollback(self.store)
            said = f"{type(e).__name__}: {e}"
            if self._trouble.get(part) != said:
                self._trouble[part] = said
                why = own_trouble(e)
                if why:
                    log.error("%s: the daemon's own trouble (%s); it goes on and tries again", part, why)
                else:
                    log.exception("%s failed; the daemon goes on", part)
            return e
        self._trouble.pop(part, None)
        return None

    def _fail_unschedulable(self, now: float):
        """Scheduling raised: fail each queued job that makes the scheduler raise on its own, so
        that one bad row (written by hand, or by an older runner) never holds up the queue."""
        from ..scheduler import plan
        from ..states import Reason

        for job in self.store.queued_jobs(limit=max(32, 8 * self.max_running)):
            try:
                after = job["after"] or []
                if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
                    raise ValueError(f"after: given {str(after)[:80]}; expected a list of job ids")
                for gpus_available in (True, False):
                    plan([job], 0, 1, [], 0, gpus_available, {}, self.user_gpu_limit, {}, self.backfill_limit,
                         {a: "succeeded" for a in after}, now=now, ends={})
            except Exception as e:
                note = f"the daemon could not schedule this job: {type(e).__name__}: {e}"[:500]
                log.warning("job %s: %s", job["id"], note)
                try:
                    self.store.transition(job["id"], JobState.FAILED, Reason.DAEMON_ERROR.value, now=now,
                                          expect=JobState.QUEUED, note=note)
                except InvalidTransition:
                    continue  # it left the queue meanwhile (cancelled)
                self._dirty = True

    def reconcile(self, now: float | None = None):
        """After a (re)start: put every row that was mid-way right against what is on disk."""
        now = time.time() if now is None else now
        self.backend.reconcile(now)  # jobs it took before the restart but the store did not record
        for job in self.store.list_jobs(states=["preparing"]):
            d = self.home.run_dir(job["id"])
            if (d / "child.json").exists() or (d / "exit.json").exists():
                self.store.transition(job["id"], JobState.RUNNING, "launched before a daemon restart", now=now)
            else:
                self.store.transition(job["id"], JobState.QUEUED, "daemon_restarted", now=now)
        for job in self.store.list_jobs(states=["running"]):
            log.info("job %s: still running from before; following from offset %s", job["id"], job["log_offset"])
            if job.get("preempt_requested"):  # stopped before the restart: its grace runs from now
                self.killing[job["id"]] = time.monotonic() + self.preempt["grace"]
