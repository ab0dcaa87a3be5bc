"""All of runner's SQL, behind one small interface: `Store`.

SQLite in WAL mode with a busy timeout; one `transaction()` that rolls back on error and takes
the write lock up front (BEGIN IMMEDIATE), so a read-then-write such as a state transition can
never interleave with another writer. A schema version (PRAGMA user_version) and an ordered list
of migrations: an old database is upgraded in place when opened by the daemon.

Store is one class whose methods are plain functions of the modules beside this one, each taking
the store first (so that they read and write through its connection and its `transaction()`):
schema (tables, migrations), jobs (rows, transitions, the queue, GPU claims, fair share's reads),
metrics (points, their chunks, compaction), outbox (the exporters'), envs (artifacts, envs, builds),
operate (/metrics, retention, backup) and pages (the dashboard's and the CLI's own reads). No module
outside this package holds SQL (tests/test_layout.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .. import defaults
from . import envs as _envs, jobs as _jobs, metrics as _metrics, operate as _operate, outbox as _outbox, schema as _schema
from .metrics import _insert_points, _rebuild_chunks, _roll_up  # noqa: F401 (their names as before)
from .schema import JSON_COLUMNS, MIGRATIONS, SCHEMA_VERSION, _m_backend, _m_chunks, _row  # noqa: F401


class Store:
    """The runner's SQLite store. One connection per thread; safe to share across threads."""

    def __init__(self, path: str | Path, migrate: bool = True):
        self.path = str(path)
        self._local = threading.local()
        if migrate:
            self.migrate()

    # -- connections and transactions ------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            for attempt in range(21):
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=defaults.BUSY_TIMEOUT_MS / 1000)
                conn.execute(f"PRAGMA busy_timeout={defaults.BUSY_TIMEOUT_MS}")
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    conn.close()
                    # A teammate's reader of a daemon's store (read-only -shm) can fail for a moment
                    # while the daemon writes: with its -wal there, the live store is in it, and the
                    # main file alone may not even hold the tables yet: try again (1 s at most)
                    if attempt < 20 and os.path.exists(self.path + "-wal"):
                        time.sleep(0.05)
                        continue
                    # the daemon is down: the database is in WAL mode already (the daemon set it) but
                    # its -wal/-shm files are gone and she may not make them. With no writer about,
                    # the file is read as it is.
                    from urllib.parse import quote

                    conn = sqlite3.connect(f"file:{quote(self.path)}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
                    break
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = _row
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any error (shutdown signals included)."""
        conn = self.conn
        if conn.in_transaction:  # nested: join the outer one
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def snapshot(self):
        """A read transaction: every query inside sees the store as of one moment (a writer goes on)."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def rollback_open(self):
        """End a transaction an error left open on this thread's connection (a COMMIT that failed); a store
        that cannot even do that is left as it is (sqlite3.Error ignored): the caller reports its error."""
        try:
            conn = self.conn
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self):
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (PRAGMA data_version): a cheap
        way for a reader to know that what it read before is still what is there."""
        return self.conn.execute("PRAGMA data_version").fetchone()["data_version"]

    def schema_version(self) -> int:
        """The version of the open database (PRAGMA user_version)."""
        return self.conn.execute("PRAGMA user_version").fetchone()["user_version"]

    def write_probe(self):
        """A real write of the store's first page that changes nothing (PRAGMA application_id set to what it
        is): raises sqlite3.OperationalError where the store cannot be written now (runner/http.py's check)."""
        conn = self.conn
        current = conn.execute("PRAGMA application_id").fetchone()["application_id"]
        conn.execute(f"PRAGMA application_id={int(current)}")  # a real write of page 1, nothing changed

    migrate = _schema.migrate

    # -- jobs (store/jobs.py) ---------------------------------------------------------------
    insert_job = _jobs.insert_job
    update_job = _jobs.update_job
    transition = _jobs.transition
    get_job = _jobs.get_job
    count_jobs = _jobs.count_jobs
    list_jobs = _jobs.list_jobs
    active_by_user = _jobs.active_by_user
    count_by_state = _jobs.count_by_state
    queued_jobs = _jobs.queued_jobs
    queued_heads = _jobs.queued_heads
    usage_rows = _jobs.usage_rows
    ended_use = _jobs.ended_use
    ended_usage_rows = _jobs.ended_usage_rows
    transitions = _jobs.transitions
    gpu_allocations = _jobs.gpu_allocations
    claim = _jobs.claim
    referenced_by_active = _jobs.referenced_by_active
    job_owners = _jobs.job_owners
    waiting_specs = _jobs.waiting_specs

    # -- metrics (store/metrics.py) ---------------------------------------------------------
    record_progress = _metrics.record_progress
    add_metrics = _metrics.add_metrics
    metrics = _metrics.metrics
    latest_metrics_many = _metrics.latest_metrics_many
    has_metrics = _metrics.has_metrics
    count_metrics = _metrics.count_metrics
    latest_metrics = _metrics.latest_metrics
    metric_rows_after = _metrics.metric_rows_after
    metric_count_upto = _metrics.metric_count_upto
    compact_metrics = _metrics.compact_metrics
    first_epoch_point_at = _metrics.first_epoch_point_at
    metric_points = _metrics.metric_points

    # -- the exporters' outbox (store/outbox.py) --------------------------------------------
    export_enrol = _outbox.export_enrol
    export_row = _outbox.export_row
    mlflow_row = _outbox.mlflow_row
    export_due = _outbox.export_due
    export_set = _outbox.export_set
    export_lag = _outbox.export_lag

    # -- artifacts and envs (store/envs.py) -------------------------------------------------
    add_artifact = _envs.add_artifact
    artifacts = _envs.artifacts
    upsert_env = _envs.upsert_env
    touch_env = _envs.touch_env
    envs = _envs.envs
    delete_env = _envs.delete_env
    add_env_build = _envs.add_env_build
    env_builds = _envs.env_builds
    env_builds_during = _envs.env_builds_during
    env_build_stats = _envs.env_build_stats
    env_totals = _envs.env_totals

    # -- operating: /metrics, retention, backup (store/operate.py) ---------------------------
    job_stats = _operate.job_stats
    last_transition_id = _operate.last_transition_id
    ended_stats = _operate.ended_stats
    oldest_queued_at = _operate.oldest_queued_at
    ended_jobs = _operate.ended_jobs
    ended_checkpoints = _operate.ended_checkpoints
    compactable_jobs = _operate.compactable_jobs
    backup = _operate.backup
