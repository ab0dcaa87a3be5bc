"""The daemon: takes jobs from the spool, schedules, prepares, launches, watches and reaps.

Persisted state lives in SQLite; process handles live in memory only. Jobs run under a shim in
sessions of their own and report through files, so the daemon can be killed and restarted at any
moment: on start it reconciles every row against reality and keeps running jobs running.

`Daemon` is a loop over parts, each made here with what it needs and none reaching into another:
intake (the spool; requests.py's table of handlers by kind), the backend (runner/backends/: where
jobs run; the local one's scheduler is schedule.py), launch (prepare, then the backend starts it),
follow (logs, limits, GPUs) and reap (the end of each job), preemption, the exporters
(runner/exporters/). docs/daemon.md draws them and the way of one job through them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .. import backends, defaults, diskspace, fairshare, gpus as gpus_mod, preempt
from ..backends.local_launcher import ShimLauncher
from ..envs import EnvManager
from ..exceptions import RunnerError
from ..exporters import Exporters
from ..home import Home
from ..retention import Retention
from . import lifecycle, serve
from .faults import Guard, own_trouble
from .follow import Follow
from .intake import Intake
from .kills import Cancel
from .launch import Launch
from .logs import Logs
from .preemption import Preemption
from .reap import Reaper
from .requests import Requests
from .schedule import Scheduler
from .unschedulable import fail_unschedulable

log = logging.getLogger("runner.daemon")


class Daemon:
    """One daemon per $RUNNER_HOME: its parts, and the loop that turns them."""

    def __init__(self, home: Home, http: str | None = defaults.HTTP_BIND, max_running: int | None = None):
        self.home = home.ensure()
        cfg, gpu_cfg = home.config.get("daemon", {}), home.config.get("gpus", {})
        self.max_running = max_running or cfg.get("max_running", defaults.MAX_RUNNING)
        per_user = cfg.get("per_user_running")
        if per_user is not None and (isinstance(per_user, bool) or not isinstance(per_user, int) or per_user < 1):
            raise RunnerError(f"[daemon] per_user_running: given {per_user!r}; expected a whole number of jobs, 1 or more")
        self.http_bind = http
        self.store = store = home.store()
        self._registry = lifecycle.Registry(self.home)
        envs = EnvManager(home.envs, store, home.config.get("envs"))
        self.inventory = gpus_mod.inventory(home.config)
        self._limits = {"max_running": self.max_running, "per_user_running": per_user,
                        "user_gpu_limit": gpu_cfg.get("per_user_limit"),
                        "backfill_limit": gpu_cfg.get("backfill_limit", defaults.BACKFILL_LIMIT)}
        share = fairshare.settings(home.config)  # a bad [scheduler] stops the daemon here, in one line
        ledger = fairshare.Ledger(store, share)
        self.preempt = preempt.settings(home.config)  # a bad preempt_* key stops the daemon here, in one line
        self.exporters = Exporters(self.home, store, home.config)  # those whose table the config has; a bad one stops the daemon here
        diskspace.settings(home.config)  # a bad [jobs] log_max_mb or min_free_mb stops the daemon here, in one line
        self.retention = Retention(self.home, store)  # a bad [retention] stops the daemon here, in one line
        self.pool = ThreadPoolExecutor(max_workers=cfg.get("prepare_workers", defaults.PREPARE_WORKERS), thread_name_prefix="prepare")
        self.wake = threading.Event()
        self.dirty = lifecycle.Dirty(self.wake)
        mark = self.dirty.mark
        self.logs, self.guard = Logs(store, self.home), Guard(store, log)
        self.launch = Launch(store, self.home, self._registry, envs, self.pool, mark)
        self.preemption = Preemption(store, self.home, self._registry, ledger, share, self.preempt, self.max_running,
                                     self.logs, mark, self.launch.submit)
        self.scheduler = Scheduler(store, self.home, self.inventory, self._limits, share, ledger, self.preemption, self.launch.submit)
        self.reaper = Reaper(store, self.home, self.logs, mark, self.preemption.requeue_preempted)
        self.cancel = Cancel(store, self.home, mark)
        # Where jobs run ([backend] kind; a bad key stops the daemon here, in one line), handed what it needs
        self.backend = backends.make(home.config, backends.Host(
            store=store, home=self.home, schedule_here=self.scheduler.schedule_here,
            prepare=self.launch.submit, fail_preparing=self.launch.fail_preparing, follow_log=self.logs.follow_log,
            close_log=self.logs.close_log, reap=self.reaper.reap, end=self.reaper.end, cancel=self.cancel.request,
            changed=self.dirty.changed, inventory=self.inventory,
            release_wait=gpu_cfg.get("release_wait_seconds", defaults.GPU_RELEASE_WAIT_SECONDS)))
        for part in (self.launch, self.cancel, self.preemption, self.reaper):  # made first: they and the backend call
            part.use(self.backend)  # each other; the last three use its kill bookkeeping (backend.kills)
        self.follower = Follow(store, self.home, self.backend, self.logs, self.backend.kills, self.backend.gpus,
                               self.reaper, self.guard)
        self.intake = Intake(store, self.home, Requests(store, self.home, self.exporters, self.cancel.request, mark).table())
        self.stopping = False
        self.started_at = time.time()
        self._stop_watch = threading.Event()
        self.http_server = None
        self.last_tick = time.time()  # when the loop last completed a pass (for /healthz)

    # What the HTTP face and the tests read of a daemon, by its names from before it had parts:
    registry = property(lambda self: self._registry(), doc="The merged registry as its files stand.")
    killing = property(lambda self: self.backend.kills.deadlines, doc="job id -> when its SIGTERM escalates to SIGKILL.")
    _later = property(lambda self: self.intake.later, doc="The spool names waiting out the daemon's own trouble.")
    launcher = property(lambda self: getattr(self.backend, "launcher", None) or ShimLauncher(),
                        doc="The local backend's warm launcher (an idle one for a backend that forks no shims).")
    schedule_here = property(lambda self: self.scheduler.schedule_here, doc="The local backend's scheduling pass (bench_scale).")

    def _own_taking(self):
        lifecycle.own_taking(self.home)

    def ingest(self, now: float):
        """Take every spool file (daemon/intake.py)."""
        self.intake.ingest(now)

    def _take(self, path, now: float):
        self.intake.take(path, now)

    def request_cancel(self, job: dict, now: float):
        """Cancel a job in whatever state it is in (daemon/kills.py)."""
        self.cancel.request(job, now)

    def reconcile(self, now: float | None = None):
        """After a (re)start: put every row that was mid-way right against what is on disk."""
        now = time.time() if now is None else now
        lifecycle.reconcile(self.store, self.home, self.backend, self.backend.kills, self.preempt["grace"], now)

    def run(self):
        """Run in the foreground until SIGTERM/SIGINT; running jobs are left running."""
        lock_fd = lifecycle.take_pidfile(self.home)
        # Root's Python processes (import checks, compileall, uv) import from the folder they start
        # in: never a folder that the admin happened to start the daemon in (/tmp, a user's).
        os.chdir("/")
        sock = None
        if self.http_bind:  # at once, and before daemon.json names it
            sock, self.http_bind = serve.bind_http(self.http_bind)
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack into the log
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("runner daemon %s: home %s, %s (%s backend; %d slots, gpus: %s)", os.getpid(), self.home.root,
                 self.backend.describe(), self.backend.kind, self.max_running, self.inventory.reason)
        lifecycle.own_taking(self.home)
        lifecycle.announce(self.home, self.http_bind, self.started_at)
        self.guard.run("reconcile", self.reconcile, time.time())
        self.guard.run("spool intake", self.intake.resume, time.time())
        threading.Thread(target=lifecycle.watch_files, args=(self.home, self._stop_watch, self.wake), name="watch", daemon=True).start()
        threading.Thread(target=self.logs.wake_on_batches, args=(self._stop_watch, self.wake), name="batches", daemon=True).start()
        if sock is not None:
            self.http_server = serve.start_http(self.home, self, self.http_bind, sock)
        self.exporters.start(self._stop_watch)  # a thread each; none without their config tables
        self.retention.start(self._stop_watch)  # its own thread, at most one pass an hour; none without [retention]
        try:
            while not self.stopping:
                self.tick()
                if not self.follower.behind:  # (log lines left to read: the next pass reads on at once)
                    self.wake.wait(defaults.POLL_SECONDS)
                self.wake.clear()
        finally:
            self._stop_watch.set()
            if self.http_server:
                self.http_server.should_exit = True
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.backend.close()
            log.info("runner daemon stopped; %d job(s) left running", len(self.store.list_jobs(states=["running"])))
            os.close(lock_fd)

    def _on_signal(self, signum, _frame):
        # No wake.set() here: the handler runs in the main thread between two bytecodes, possibly
        # inside wake.wait() while it holds the Event's lock, and set() would wait for that lock
        # forever (CI saw a daemon that never stopped on SIGTERM). The wait ends within POLL_SECONDS.
        self.stopping = True

    def tick(self, now: float | None = None):
        """One pass: take the spool, follow and reap running jobs, start what fits.

        Each part is guarded: an error costs the file or the job it came from (each part sees to
        that), never the daemon; one the part could not pin on anything is logged and the next
        pass tries again.
        """
        now = time.time() if now is None else now
        self.guard.run("spool intake", self.intake.ingest, now)
        self.guard.run("following jobs", self.follower.follow, now)
        # Scheduling reads the whole queue: do it when something changed (a submit, a job that
        # ended), and once a second for what changes unseen (GPUs used by others, a GPU back).
        if not self.stopping and self.dirty.due(now):
            error = self.guard.run("scheduling", self.backend.schedule, now)
            if error is not None and not own_trouble(error):
                self.guard.run("finding what scheduling fails on", self._fail_unschedulable, now)
        self.last_tick = time.time()

    def _fail_unschedulable(self, now: float):
        fail_unschedulable(self.store, self._limits, self.dirty.mark, now)
