"""All of runner's SQL, behind one small interface.

SQLite in WAL mode with a busy timeout; one `transaction()` that rolls back on error and takes
the write lock up front (BEGIN IMMEDIATE), so a read-then-write such as a state transition can
never interleave with another writer. A schema version (PRAGMA user_version) and an ordered list
of migrations: an old database is upgraded in place when opened by the daemon.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from itertools import chain, groupby
from pathlib import Path
from typing import Iterable, Optional

from . import defaults
from .exceptions import InvalidTransition, JobNotFound
from .states import ENDED, JobState, allowed

JSON_COLUMNS = ("spec", "gpus", "after", "parser_state", "gpu_uuids", "ts_state", "tags")


def _m1(db):
    """Jobs, their transitions, metrics, artifacts, envs and env builds."""
    db["jobs"].create(
        {
            "id": str, "seq": int, "name": str, "user": str, "uid": int, "kind": str, "model": str,
            "state": str, "reason": str, "exit_code": int, "signal": int, "priority": int,
            "spec": str, "env": str, "env_hash": str, "gpus": str, "after": str,
            "created_at": float, "queued_at": float, "started_at": float, "finished_at": float,
            "job_dir": str, "shim_pid": int, "shim_started": float, "pid": int, "pgid": int,
            "log_offset": int, "parser_state": str, "cancel_requested": int, "log_tail": str,
            "retry_of": str, "note": str,
        },
        pk="id",
        defaults={"log_offset": 0, "cancel_requested": 0, "priority": 0},
    )
    db["jobs"].create_index(["state", "priority", "created_at"])
    db["jobs"].create_index(["seq"], unique=True)
    db["transitions"].create(
        {"id": int, "job_id": str, "from_state": str, "to_state": str, "at": float, "reason": str},
        pk="id", foreign_keys=[("job_id", "jobs", "id")],
    )
    db["transitions"].create_index(["job_id"])
    db["metrics"].create(
        {"id": int, "job_id": str, "name": str, "value": float, "step": int, "epoch": int, "at": float},
        pk="id", foreign_keys=[("job_id", "jobs", "id")],
    )
    db["metrics"].create_index(["job_id", "name", "id"])
    db["artifacts"].create(
        {"id": int, "job_id": str, "path": str, "kind": str, "size": int, "at": float},
        pk="id", foreign_keys=[("job_id", "jobs", "id")],
    )
    db["artifacts"].create_index(["job_id", "path"], unique=True)
    db["envs"].create(
        {"hash": str, "name": str, "python": str, "path": str, "size": int, "built_at": float,
         "last_used": float, "build_seconds": float},
        pk="hash",
    )
    db["env_builds"].create(
        {"id": int, "hash": str, "name": str, "job_id": str, "started_at": float,
         "finished_at": float, "seconds": float, "ok": int, "error": str},
        pk="id",
    )


def _m2(db):
    """GPU allocations as rows, taken and freed with the job's state change; peak GPU memory."""
    db["gpu_allocations"].create(
        {"gpu_uuid": str, "job_id": str, "gpu_index": int, "at": float}, pk="gpu_uuid",
    )
    db["jobs"].add_column("gpu_uuids", str)
    db["jobs"].add_column("peak_gpu_mem_mb", float)


def _m3(db):
    """The job's own peak memory and CPU time, from the shim's exit record; jobs of a state by seq."""
    db["jobs"].add_column("max_rss_kb", int)
    db["jobs"].add_column("cpu_seconds", float)
    db["jobs"].add_column("timed_out", int)  # its own flag: a later note (GPU stragglers killed) must not hide it
    db["jobs"].create_index(["state", "seq"])


def _m4(db):
    """Where each job's mirror in MLflow stands: its run, the last metric row acknowledged, the
    batch in flight (a crash between sending and acknowledging is settled against MLflow), what
    else was sent, and the retry schedule."""
    db["mlflow_export"].create(
        {"job_id": str, "experiment": str, "experiment_id": str, "run_id": str, "exported_id": int,
         "inflight_id": int, "ts_state": str, "params_done": int, "status_sent": str, "artifacts_done": int,
         "done": int, "error": str, "attempts": int, "next_try": float, "enrolled_at": float, "updated_at": float},
        pk="job_id",
        defaults={"exported_id": 0, "params_done": 0, "artifacts_done": 0, "done": 0, "attempts": 0, "next_try": 0.0},
    )
    db["mlflow_export"].create_index(["done", "next_try"])


def _m5(db):
    """Jobs run by Slurm: its job id, the node, and how often runner submitted it again after a node failure."""
    db["jobs"].add_column("slurm_job_id", str)
    db["jobs"].add_column("node", str)
    db["jobs"].add_column("requeues", int)


def _m6(db):
    """A failed job's last log lines are no longer kept in the store, which every user may read: the
    views read them from the log, for those who may read it. Tails stored before are dropped."""
    db.execute("PRAGMA secure_delete = ON")  # the old text is overwritten in the file, not only unlinked
    db.execute("UPDATE jobs SET log_tail = NULL WHERE log_tail IS NOT NULL")


def _m7(db):
    """Jobs by the time they ended (fair share weighs the recent ones on every scheduling pass), and
    each user's queue in scheduling order (fair share reads the head of each)."""
    db["jobs"].create_index(["finished_at"], if_not_exists=True)
    # In the scheduler's own order (priority high first, then age): a page of a deep queue is read
    # off the index, not sorted (with 100,000 queued, the old index left a sort of them all).
    db.execute("CREATE INDEX IF NOT EXISTS idx_jobs_queue_order ON jobs (state, priority DESC, created_at ASC, seq ASC)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_jobs_user_queue_order ON jobs (state, user, priority DESC, created_at ASC, seq ASC)")


def _m8(db):
    """A job's tags and notes, its owner's words about it (`runner tag`, the job page): tags a JSON
    list of short words, notes free text. Unlike `note` (runner's own line on how a job ended)."""
    db["jobs"].add_column("tags", str)
    db["jobs"].add_column("notes", str)


def _m9(db):
    """Preemption: how many times a job went back to the queue to resume later (`restarts`), when
    the daemon asked it to stop for that (`preempt_requested`), and the slot-seconds its earlier
    runs used with when the last of them ended (fair share weighs them as it weighs ended jobs)."""
    db["jobs"].add_column("restarts", int, not_null_default=0)
    db["jobs"].add_column("preempt_requested", float)
    db["jobs"].add_column("prior_use", float)
    db["jobs"].add_column("prior_ended_at", float)


def _m10(db):
    """Compaction of an old job's metric points ([retention] metrics_days, runner/compaction.py):
    when it was compacted, the bucket (steps) and how many points it had before."""
    db["jobs"].add_column("metrics_compacted_at", float)
    db["jobs"].add_column("metrics_bucket", int)
    db["jobs"].add_column("metrics_points_before", int)


def _m11(db):
    """One outbox for every exporter (runner/exporters/), keyed by exporter and job: where each job's
    export stands (the target it was enrolled for, its run on the other side, the last metric row
    acknowledged, the batch in flight, the job state last sent, done, the error and retry schedule)
    and, in `extra` (a JSON object), the exporter's own fields. MLflow's table (_m4) moves into it."""
    db.execute(_OUTBOX_TABLE)
    db.execute("CREATE INDEX IF NOT EXISTS idx_export_outbox_due ON export_outbox (exporter, done, next_try)")
    if "mlflow_export" in db.table_names():
        db.execute(
            "INSERT INTO export_outbox (exporter, job_id, target, run_id, exported_id, inflight_id, status_sent, done, "
            "error, attempts, next_try, enrolled_at, updated_at, extra) "
            "SELECT 'mlflow', job_id, experiment, run_id, COALESCE(exported_id, 0), inflight_id, status_sent, COALESCE(done, 0), "
            "error, COALESCE(attempts, 0), COALESCE(next_try, 0.0), enrolled_at, updated_at, "
            "json_object('experiment_id', experiment_id, 'ts_state', json(COALESCE(ts_state, 'null')), "
            "'params_done', COALESCE(params_done, 0), 'artifacts_done', COALESCE(artifacts_done, 0)) FROM mlflow_export")
        db.execute("DROP TABLE mlflow_export")


_OUTBOX_TABLE = """CREATE TABLE IF NOT EXISTS export_outbox (
    exporter TEXT NOT NULL, job_id TEXT NOT NULL, target TEXT, run_id TEXT,
    exported_id INTEGER NOT NULL DEFAULT 0, inflight_id INTEGER, status_sent TEXT, done INTEGER NOT NULL DEFAULT 0,
    error TEXT, attempts INTEGER NOT NULL DEFAULT 0, next_try FLOAT NOT NULL DEFAULT 0.0, enrolled_at FLOAT, updated_at FLOAT,
    extra TEXT, PRIMARY KEY (exporter, job_id))"""
_OUTBOX_COLUMNS = frozenset(("target", "run_id", "exported_id", "inflight_id", "status_sent", "done", "error", "attempts",
                             "next_try", "enrolled_at", "updated_at"))


def _m_backend(db):
    """Where a job ran, any backend: `backend` (local, slurm...) and `backend_ref` (its id there) replace slurm_job_id,
    kept as a read-only column derived from them for SQL of the old schema (written as backend and ref by insert_job)."""
    db.execute("ALTER TABLE jobs ADD COLUMN backend TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN backend_ref TEXT")
    db.execute("UPDATE jobs SET backend = CASE WHEN slurm_job_id IS NOT NULL OR requeues > 0 THEN 'slurm' ELSE 'local' END, "
               "backend_ref = slurm_job_id")
    db.execute("ALTER TABLE jobs DROP COLUMN slurm_job_id")
    db.execute("ALTER TABLE jobs ADD COLUMN slurm_job_id TEXT GENERATED ALWAYS AS (CASE WHEN backend = 'slurm' THEN backend_ref END)")


MIGRATIONS = [_m1, _m2, _m3, _m4, _m5, _m6, _m7, _m8, _m9, _m10, _m11, _m_backend]
SCHEMA_VERSION = len(MIGRATIONS)


POINTS_PER_INSERT = 100
"""Metric points one INSERT statement carries (VALUES (...), (...), ...; 402 parameters, under the
999 of older SQLite builds)."""

_INSERT_POINT = "INSERT INTO metrics (job_id, name, value, step, epoch, at) VALUES (?,?,?,?,?,?)"
_INSERT_POINTS = ("INSERT INTO metrics (job_id, name, value, step, epoch, at) VALUES "
                  + ",".join(f"(?1,?{3 + 4 * k},?{4 + 4 * k},?{5 + 4 * k},?{6 + 4 * k},?2)" for k in range(POINTS_PER_INSERT)))


def _insert_points(c, job_id: str, points: list, now: float):
    """Insert points (name, value, step, epoch) in the order given (their ids in that order).

    Python's sqlite3 pays for every statement it steps, whatever its size: POINTS_PER_INSERT
    points a statement, each point's four values bound straight from its tuple and the job id and
    time once (?1, ?2), take a parsed log in at 1.6x the rate of one row a statement
    (executemany)."""
    if set(map(len, points)) - {4}:
        raise ValueError("a metric point is (name, value, step, epoch)")
    per = POINTS_PER_INSERT
    full = len(points) - len(points) % per
    for i in range(0, full, per):
        c.execute(_INSERT_POINTS, [job_id, now, *chain.from_iterable(points[i:i + per])])
    if full < len(points):
        c.executemany(_INSERT_POINT, [(job_id, n, v, s, e, now) for (n, v, s, e) in points[full:]])
    _roll_up(c, job_id, points)


_CHUNKS_DDL = """CREATE TABLE IF NOT EXISTS metric_chunks (job_id TEXT NOT NULL, name TEXT NOT NULL, k INTEGER NOT NULL,
    n INTEGER NOT NULL, first_id INTEGER NOT NULL, last_id INTEGER NOT NULL, step_first INTEGER, step_last INTEGER,
    steps_ok INTEGER NOT NULL, epoch_first INTEGER, epoch_last INTEGER, epoch_min INTEGER, epoch_max INTEGER,
    epochs_ok INTEGER NOT NULL, first_v REAL, last_v REAL, min_v REAL, min_i INTEGER, min_step INTEGER, min_epoch INTEGER,
    max_v REAL, max_i INTEGER, max_step INTEGER, max_epoch INTEGER, PRIMARY KEY (job_id, name, k)) WITHOUT ROWID"""
"""Each metric's points summed up a chunk of metric_chunks.CHUNK (runner/metric_chunks.py), for charts.
Derived from the points and written with them; made where missing by the first write (a reader
of a store without it reads the points, as before)."""

_PUT_CHUNK = f"INSERT OR REPLACE INTO metric_chunks VALUES (?,?,{','.join('?' * 22)})"


def _roll_up(c, job_id: str, points: list):
    """The chunks of the series that points (name, value, step, epoch), just inserted in that order
    as the newest rows of the table, extend; in the inserting transaction. A reader checks a
    series' chunks against its points' count and newest id, and reads the points where they differ."""
    from .metric_chunks import by_name, extend

    cur = c.cursor()
    cur.row_factory = None
    last_id = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
    if not points or cur.execute("SELECT MAX(id) FROM metrics").fetchone()[0] != last_id:
        return  # (not the newest rows: their ids are not known here; the reader sees it)
    by = by_name(points, last_id - len(points) + 1)  # one statement's rows get consecutive ids
    for attempt in (0, 1):
        try:
            rows = []
            for name, pts in by.items():
                last = cur.execute("SELECT * FROM metric_chunks WHERE job_id=? AND name=? ORDER BY k DESC LIMIT 1", (job_id, name)).fetchone()
                rows += [(job_id, name, *r) for r in extend(None if last is None else last[2:], *pts)]
            cur.executemany(_PUT_CHUNK, rows)
            return
        except sqlite3.OperationalError as e:
            if attempt or "no such table" not in str(e):
                raise
            cur.execute(_CHUNKS_DDL)


def _rebuild_chunks(c, job_id: str):
    """A job's chunks made again from its points (after some of them were deleted: compaction)."""
    from .metric_chunks import build

    cur = c.cursor()
    cur.row_factory = None
    cur.execute(_CHUNKS_DDL)
    cur.execute("DELETE FROM metric_chunks WHERE job_id=?", (job_id,))
    rows = cur.execute("SELECT name, id, value, step, epoch FROM metrics WHERE job_id=? ORDER BY name, id", (job_id,)).fetchall()
    for name, grp in groupby(rows, key=lambda r: r[0]):
        cur.executemany(_PUT_CHUNK, [(job_id, name, *r) for r in build([p[1:] for p in grp])])


def _row(cursor, row):
    d = {col[0]: row[i] for i, col in enumerate(cursor.description)}
    for key in JSON_COLUMNS:
        if key in d and isinstance(d[key], str):
            d[key] = json.loads(d[key])
    return d


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

    def migrate(self):
        """Bring the database to SCHEMA_VERSION, one migration per transaction."""
        import sqlite_utils

        if self.schema_version() >= SCHEMA_VERSION:
            return
        raw = sqlite3.connect(self.path, isolation_level=None, timeout=defaults.BUSY_TIMEOUT_MS / 1000)
        try:
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("BEGIN IMMEDIATE")
            try:
                version = raw.execute("PRAGMA user_version").fetchone()[0]
                db = sqlite_utils.Database(raw)
                for i in range(version, SCHEMA_VERSION):
                    MIGRATIONS[i](db)
                raw.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
        finally:
            raw.close()

    # -- jobs -----------------------------------------------------------------------------
    def insert_job(self, row: dict, now: Optional[float] = None) -> bool:
        """Record a new queued job. False if a job with that id is already there (idempotent ingest)."""
        now = time.time() if now is None else now
        row = dict(row)
        sid = row.pop("slurm_job_id", None)  # an older caller's row (the column is derived now): Slurm's job id
        if sid is not None:
            row["backend"], row["backend_ref"] = "slurm", sid
        for key in JSON_COLUMNS:
            if key in row and not isinstance(row[key], (str, type(None))):
                row[key] = json.dumps(row[key])
        row.setdefault("state", JobState.QUEUED.value)
        row.setdefault("queued_at", now)
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM jobs WHERE id=?", (row["id"],)).fetchone():
                return False
            row["seq"] = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM jobs").fetchone()["n"]
            cols = ",".join(row)
            c.execute(f"INSERT INTO jobs ({cols}) VALUES ({','.join('?' * len(row))})", list(row.values()))
            c.execute(
                "INSERT INTO transitions (job_id, from_state, to_state, at, reason) VALUES (?,?,?,?,?)",
                (row["id"], None, row["state"], now, row.get("reason") or "submitted"),
            )
        return True

    def update_job(self, job_id: str, **fields):
        """Set plain (non-state) fields of a job."""
        if not fields:
            return
        for key in JSON_COLUMNS:
            if key in fields and not isinstance(fields[key], (str, type(None))):
                fields[key] = json.dumps(fields[key])
        sets = ",".join(f"{k}=?" for k in fields)
        with self.transaction() as c:
            c.execute(f"UPDATE jobs SET {sets} WHERE id=?", [*fields.values(), job_id])

    def transition(self, job_id: str, to: JobState | str, reason: Optional[str] = None, now: Optional[float] = None, expect=None, **fields) -> dict:
        """Move a job to state `to`, checked against the transition table, with time and reason.

        `expect`, if given, is the state (or states) the caller believes the job is in; a job that
        moved meanwhile raises InvalidTransition rather than being changed twice. Extra keyword
        fields are written in the same transaction.
        """
        to = JobState(to)
        now = time.time() if now is None else now
        with self.transaction() as c:
            cur = c.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if cur is None:
                raise JobNotFound(f"job {job_id}: no such job")
            src = JobState(cur["state"])
            if expect is not None:
                expected = {JobState(expect)} if isinstance(expect, (str, JobState)) else {JobState(e) for e in expect}
                if src not in expected:
                    raise InvalidTransition(f"job {job_id}: is {src.value}, not {'/'.join(sorted(e.value for e in expected))}")
            if not allowed(src, to):
                raise InvalidTransition(f"job {job_id}: cannot go from {src.value} to {to.value}")
            if to == JobState.PREPARING:
                fields.setdefault("started_at", None)
            if to == JobState.RUNNING:
                fields.setdefault("started_at", now)
            if to in ENDED:
                fields.setdefault("finished_at", now)
            fields["state"] = to.value
            fields["reason"] = reason if to != JobState.RUNNING else None
            for key in JSON_COLUMNS:
                if key in fields and not isinstance(fields[key], (str, type(None))):
                    fields[key] = json.dumps(fields[key])
            sets = ",".join(f"{k}=?" for k in fields)
            c.execute(f"UPDATE jobs SET {sets} WHERE id=?", [*fields.values(), job_id])
            c.execute(
                "INSERT INTO transitions (job_id, from_state, to_state, at, reason) VALUES (?,?,?,?,?)",
                (job_id, src.value, to.value, now, reason),
            )
            if to in ENDED or to == JobState.QUEUED:
                c.execute("DELETE FROM gpu_allocations WHERE job_id=?", (job_id,))
        return {"from": src.value, "to": to.value}

    def get_job(self, ref: str) -> dict:
        """A job by id, unique id prefix, or `#seq`. Raises JobNotFound."""
        c = self.conn
        if ref.startswith("#") and ref[1:].isdigit() or ref.isdigit():
            row = c.execute("SELECT * FROM jobs WHERE seq=?", (int(ref.lstrip("#")),)).fetchone()
            if row:
                return row
        row = c.execute("SELECT * FROM jobs WHERE id=?", (ref,)).fetchone()
        if row:
            return row
        rows = c.execute("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (ref.replace("%", "") + "%",)).fetchall()
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise JobNotFound(f"job {ref}: ambiguous prefix (give more characters)")
        raise JobNotFound(f"job {ref}: no such job (see `runner ls --all`)")

    @staticmethod
    def _job_filter(states: Iterable[str], user: Optional[str], model: Optional[str], tag: Optional[str] = None) -> tuple[str, list]:
        where, args = [], []
        if tag:
            from .tags import sql_filter

            cond, arg = sql_filter(tag)
            where.append(cond)
            args.append(arg)
        states = list(states)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        for column, value in (("user", user), ("model", model)):
            if value:
                where.append(f"{column}=?")
                args.append(value)
        return (" WHERE " + " AND ".join(where) if where else ""), args

    def count_jobs(self, states: Iterable[str] = (), user: Optional[str] = None, model: Optional[str] = None,
                   tag: Optional[str] = None) -> int:
        """How many jobs list_jobs would give without a limit."""
        where, args = self._job_filter(states, user, model, tag)
        return self.conn.execute(f"SELECT COUNT(*) AS n FROM jobs{where}", args).fetchone()["n"]

    def list_jobs(self, states: Iterable[str] = (), user: Optional[str] = None, limit: Optional[int] = None,
                  offset: int = 0, newest_first: bool = True, columns: Optional[Iterable[str]] = None,
                  model: Optional[str] = None, tag: Optional[str] = None) -> list[dict]:
        """Jobs filtered by state, user, model and tag, newest first by default (only `columns`, when given)."""
        where, args = self._job_filter(states, user, model, tag)
        sql = f"SELECT {', '.join(columns) if columns else '*'} FROM jobs" + where
        sql += " ORDER BY seq " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        return self.conn.execute(sql, args).fetchall()

    def active_by_user(self) -> dict:
        """{user: {state: count}} of the queued, preparing and running jobs."""
        out: dict = {}
        for r in self.conn.execute("SELECT user, state, COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'preparing', 'running') "
                                   "GROUP BY user, state").fetchall():
            out.setdefault(r["user"], {})[r["state"]] = r["n"]
        return out

    def count_by_state(self) -> dict:
        """{state: count} over all jobs."""
        rows = self.conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}

    def queued_jobs(self, limit: int | None = None) -> list[dict]:
        """Queued jobs in scheduling order: highest priority, then oldest (the first `limit`); not
        those already handed to a backend that keeps its own queue (Slurm's), which wait there."""
        sql = ("SELECT id, user, priority, created_at, queued_at, after, spec, reason FROM jobs WHERE state='queued' "
               "AND backend_ref IS NULL ORDER BY priority DESC, created_at ASC, seq ASC")
        return self.conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()

    def queued_heads(self, per_user: int) -> list[dict]:
        """The first `per_user` queued jobs of each user (as queued_jobs orders them), in that order:
        enough of everyone's queue for fair share, without re-reading a deep queue on each pass
        (index _m7: each user's head is a short range of it)."""
        users = [r["user"] for r in self.conn.execute(  # one index seek per user, not a scan of the queue
            "WITH RECURSIVE u(user) AS (SELECT MIN(user) FROM jobs WHERE state='queued' UNION ALL SELECT (SELECT MIN(user) FROM jobs "
            "WHERE state='queued' AND user > u.user) FROM u WHERE u.user IS NOT NULL) SELECT user FROM u WHERE user IS NOT NULL").fetchall()]
        rows = []
        for user in users:
            rows += self.conn.execute(
                "SELECT id, user, priority, created_at, queued_at, after, spec, reason, seq FROM jobs WHERE state='queued' AND user=? "
                "AND backend_ref IS NULL ORDER BY priority DESC, created_at ASC, seq ASC LIMIT ?", (user, per_user)).fetchall()
        rows.sort(key=lambda r: (-(r["priority"] or 0), r["created_at"] or 0.0, r["seq"]))
        return rows

    _USAGE_COLUMNS = "user, gpus, started_at, finished_at, prior_use, prior_ended_at"

    def usage_rows(self, since: float, running: bool = False) -> list[dict]:
        """What fair share weighs: (user, gpus, started_at, finished_at, prior_use, prior_ended_at)
        of the jobs that ended after `since` (running: of the jobs that run or prepare now)."""
        cols = self._USAGE_COLUMNS
        if running:
            # and the jobs back in the queue after preemption, for what their earlier runs used
            sql = (f"SELECT {cols} FROM jobs WHERE state IN ('running', 'preparing') AND (started_at IS NOT NULL OR restarts > 0) "
                   f"UNION ALL SELECT {cols} FROM jobs WHERE state='queued' AND restarts > 0")
            return self.conn.execute(sql).fetchall()
        sql = (f"SELECT {cols} FROM jobs WHERE finished_at >= ? AND state IN ('succeeded','failed','cancelled') "
               "AND (started_at IS NOT NULL OR prior_use > 0)")  # (index _m7)
        return self.conn.execute(sql, (since,)).fetchall()

    _UNITS = "MAX(1, CASE WHEN json_valid(gpus) AND json_type(gpus)='array' THEN json_array_length(gpus) ELSE 0 END)"

    def ended_use(self, t0: float, half_life_s: float) -> dict:
        """{user: sum over ended jobs of slot-seconds x 2^((end - t0) / half_life)} for the jobs that
        ended at or after t0, each earlier run (a preempted job's) weighed at its own end: fair
        share's decayed use is this times 2^(-(now - t0) / half_life), summed in SQL (no row comes
        to Python). None when this SQLite has no pow() (built without its math functions)."""
        sql = (f"SELECT user, TOTAL(CASE WHEN started_at IS NOT NULL THEN {self._UNITS} * MAX(0, finished_at - started_at) "
               "* pow(2.0, (finished_at - :t0) / :hl) END) + TOTAL(COALESCE(prior_use, 0) * pow(2.0, (COALESCE(prior_ended_at, "
               "finished_at) - :t0) / :hl)) AS use FROM jobs WHERE finished_at >= :t0 AND state IN ('succeeded','failed','cancelled') "
               "GROUP BY user")  # (index _m7 on finished_at)
        try:
            rows = self.conn.execute(sql, {"t0": t0, "hl": half_life_s}).fetchall()
        except sqlite3.OperationalError as e:
            if "no such function" in str(e):
                return None
            raise
        return {r["user"]: r["use"] for r in rows if r["use"]}

    def ended_usage_rows(self, after_id: int, upto_id: int) -> list[dict]:
        """usage_rows of the jobs that ended by a transition with an id in (after_id, upto_id]."""
        return self.conn.execute(
            f"SELECT {self._USAGE_COLUMNS} FROM jobs WHERE id IN (SELECT job_id FROM "
            "transitions WHERE id > ? AND id <= ? AND to_state IN ('succeeded','failed','cancelled'))", (after_id, upto_id)).fetchall()

    def transitions(self, job_id: str) -> list[dict]:
        """The job's state history, oldest first."""
        return self.conn.execute("SELECT * FROM transitions WHERE job_id=? ORDER BY id", (job_id,)).fetchall()

    # -- metrics and artifacts ------------------------------------------------------------
    def record_progress(self, job_id: str, points: list[tuple], log_offset: int, parser_state=None, now: Optional[float] = None,
                        redo_before: Optional[float] = None):
        """Store parsed metric points and the log offset they came from, in one transaction.

        Points are (name, value, step, epoch). Because the offset moves with the rows, a daemon
        killed at any moment neither loses nor duplicates a point when it reads on from the offset.
        `redo_before` (a job resumed after preemption: when this run started): a point of the same
        name, step and epoch recorded before then is the earlier run's, which this one did again
        from its checkpoint; it is replaced, so each epoch (or step) is kept once.
        """
        now = time.time() if now is None else now
        with self.transaction() as c:
            if points and redo_before is not None:
                c.executemany("DELETE FROM metrics WHERE job_id=? AND name=? AND step IS ? AND epoch IS ? AND at < ? "
                              "AND (step IS NOT NULL OR epoch IS NOT NULL)",
                              [(job_id, n, s, e, redo_before) for (n, _, s, e) in points])
            if points:
                _insert_points(c, job_id, points, now)
            c.execute(
                "UPDATE jobs SET log_offset=?, parser_state=? WHERE id=?",
                (log_offset, json.dumps(parser_state) if parser_state is not None else None, job_id),
            )

    def add_metrics(self, job_id: str, points: list[tuple], now: Optional[float] = None):
        """Store metric points (name, value, step, epoch) not tied to the log (GPU samples, ...)."""
        now = time.time() if now is None else now
        with self.transaction() as c:
            _insert_points(c, job_id, points, now)

    def metrics(self, job_id: str, name: Optional[str] = None, limit: Optional[int] = None, offset: int = 0) -> list[dict]:
        """A job's metric points, in the order they were recorded."""
        sql, args = "SELECT name, value, step, epoch, at FROM metrics WHERE job_id=?", [job_id]
        if name:
            sql += " AND name=?"
            args.append(name)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        return self.conn.execute(sql, args).fetchall()

    def latest_metrics_many(self, job_ids: list[str]) -> dict:
        """{job_id: {name: latest value}} for many jobs in one query (a page of `ls` or GET /jobs)."""
        out: dict = {j: {} for j in job_ids}
        if not job_ids:
            return out
        marks = ",".join("?" * len(job_ids))
        rows = self.conn.execute(
            f"SELECT job_id, name, value FROM metrics WHERE id IN "
            f"(SELECT MAX(id) FROM metrics WHERE job_id IN ({marks}) GROUP BY job_id, name)", job_ids).fetchall()
        for r in rows:
            out[r["job_id"]][r["name"]] = r["value"]
        return out

    def has_metrics(self, job_id: str) -> bool:
        """Whether a job has any point (one index probe, whatever its count)."""
        return self.conn.execute("SELECT 1 FROM metrics WHERE job_id=? LIMIT 1", (job_id,)).fetchone() is not None

    def count_metrics(self, job_id: str, name: Optional[str] = None) -> int:
        """How many points a job has (of one metric, when named)."""
        sql, args = "SELECT COUNT(*) AS n FROM metrics WHERE job_id=?", [job_id]
        if name:
            sql += " AND name=?"
            args.append(name)
        return self.conn.execute(sql, args).fetchone()["n"]

    def latest_metrics(self, job_id: str) -> dict:
        """{name: latest value} for a job."""
        rows = self.conn.execute(
            "SELECT name, value FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics WHERE job_id=? GROUP BY name)",
            (job_id,),
        ).fetchall()
        return {r["name"]: r["value"] for r in rows}

    # -- the exporters' outbox (runner/exporters/) ------------------------------------------
    def export_enrol(self, exporter: str, job_ids: Iterable[str], target: str, now: Optional[float] = None) -> int:
        """Export these jobs with `exporter` to `target` (a job already enrolled keeps its place); how many are new."""
        now = time.time() if now is None else now
        with self.transaction() as c:
            before = c.total_changes
            c.executemany("INSERT OR IGNORE INTO export_outbox (exporter, job_id, target, enrolled_at, updated_at) VALUES (?,?,?,?,?)",
                          [(exporter, j, target, now, now) for j in job_ids])
            return c.total_changes - before

    def export_row(self, exporter: str, job_id: str) -> Optional[dict]:
        """A job's export position with `exporter` (its own fields of `extra` beside the columns), or None."""
        row = self.conn.execute("SELECT * FROM export_outbox WHERE exporter=? AND job_id=?", (exporter, job_id)).fetchone()
        if row is None:
            return None
        extra = json.loads(row.pop("extra") or "{}")
        return {**extra, **row}

    def mlflow_row(self, job_id: str) -> Optional[dict]:
        """export_row of the MLflow exporter (the name its tests and bench read it by)."""
        return self.export_row("mlflow", job_id)

    def export_due(self, exporter: str, now: float, limit: int = 100) -> list[dict]:
        """An exporter's jobs with work left whose retry time has come, the longest waiting first."""
        return self.conn.execute(
            "SELECT job_id FROM export_outbox WHERE exporter=? AND done=0 AND next_try<=? ORDER BY next_try, enrolled_at LIMIT ?",
            (exporter, now, limit)).fetchall()

    def export_set(self, exporter: str, job_id: str, **fields):
        """Record progress of a job's export, all `fields` in one statement: an outbox column by its
        name, any other name as the exporter's own field (in `extra`; None is kept as null)."""
        fields.setdefault("updated_at", time.time())
        sets, args = [], []
        for k, v in fields.items():
            if k in _OUTBOX_COLUMNS:
                sets.append(f"{k}=?")
                args.append(v)
        own = {k: v for k, v in fields.items() if k not in _OUTBOX_COLUMNS}
        if own:
            if not all(k.isidentifier() for k in own):
                raise ValueError(f"an exporter's field is a name: given {sorted(own)}")
            sets.append("extra=json_set(COALESCE(extra, '{}')" + ", ?, json(?)" * len(own) + ")")
            for k, v in own.items():
                args += [f"$.{k}", json.dumps(v)]
        with self.transaction() as c:
            c.execute(f"UPDATE export_outbox SET {','.join(sets)} WHERE exporter=? AND job_id=?", [*args, exporter, job_id])

    def metric_rows_after(self, job_id: str, after_id: int, upto_id: Optional[int] = None, limit: int = 1000) -> list[dict]:
        """A job's metric rows with ids above `after_id` (and at most `upto_id`), in id order.

        A range scan of the rowid from `after_id`: the rows of other jobs recorded since are read
        and skipped, few when the export keeps up (no extra index slows the parser's inserts)."""
        sql, args = "SELECT id, name, value, step, epoch, at FROM metrics WHERE job_id=? AND id>?", [job_id, after_id]
        if upto_id is not None:
            sql += " AND id<=?"
            args.append(upto_id)
        return self.conn.execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()

    def metric_count_upto(self, job_id: str, upto_id: int) -> int:
        """How many of a job's metric rows have ids up to `upto_id` (how far its export is)."""
        return self.conn.execute("SELECT COUNT(*) AS n FROM metrics WHERE job_id=? AND id<=?", (job_id, upto_id)).fetchone()["n"]

    def add_artifact(self, job_id: str, path: str, kind: str, size: int, now: Optional[float] = None) -> bool:
        """Record a checkpoint or other file; a path already known only has its size refreshed."""
        now = time.time() if now is None else now
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO artifacts (job_id, path, kind, size, at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(job_id, path) DO UPDATE SET size=excluded.size, at=excluded.at",
                (job_id, path, kind, size, now),
            )
            return cur.rowcount > 0

    def artifacts(self, job_id: str) -> list[dict]:
        """A job's recorded files."""
        return self.conn.execute("SELECT path, kind, size, at FROM artifacts WHERE job_id=? ORDER BY id", (job_id,)).fetchall()

    # -- envs -----------------------------------------------------------------------------
    def upsert_env(self, row: dict):
        """Record a built env (or refresh its row)."""
        cols = ",".join(row)
        updates = ",".join(f"{k}=excluded.{k}" for k in row if k != "hash")
        with self.transaction() as c:
            c.execute(
                f"INSERT INTO envs ({cols}) VALUES ({','.join('?' * len(row))}) ON CONFLICT(hash) DO UPDATE SET {updates}",
                list(row.values()),
            )

    def touch_env(self, env_hash: str, now: Optional[float] = None):
        """Mark an env as just used."""
        with self.transaction() as c:
            c.execute("UPDATE envs SET last_used=? WHERE hash=?", (time.time() if now is None else now, env_hash))

    def envs(self) -> list[dict]:
        """Every recorded env, with how many jobs used it."""
        return self.conn.execute(
            "SELECT e.*, (SELECT COUNT(*) FROM jobs j WHERE j.env_hash=e.hash) AS jobs, "
            "(SELECT COUNT(*) FROM jobs j WHERE j.env_hash=e.hash AND j.state IN ('queued','preparing','running')) AS active "
            "FROM envs e ORDER BY name, built_at"
        ).fetchall()

    def delete_env(self, env_hash: str):
        """Forget an env row."""
        with self.transaction() as c:
            c.execute("DELETE FROM envs WHERE hash=?", (env_hash,))

    def add_env_build(self, row: dict):
        """Record one env build attempt and its duration."""
        cols = ",".join(row)
        with self.transaction() as c:
            c.execute(f"INSERT INTO env_builds ({cols}) VALUES ({','.join('?' * len(row))})", list(row.values()))

    def env_builds(self, limit: int = 100) -> list[dict]:
        """Recent env builds, newest first."""
        return self.conn.execute("SELECT * FROM env_builds ORDER BY id DESC LIMIT ?", (limit,)).fetchall()

    # -- GPUs -----------------------------------------------------------------------------
    def gpu_allocations(self) -> dict:
        """{gpu_uuid: job_id} for every GPU held by a job."""
        return {r["gpu_uuid"]: r["job_id"] for r in self.conn.execute("SELECT gpu_uuid, job_id FROM gpu_allocations").fetchall()}

    def claim(self, job_id: str, gpus: list[tuple[int, str]], now: Optional[float] = None) -> dict:
        """queued -> preparing and the job's GPUs taken, in one transaction.

        Raises InvalidTransition if the job is no longer queued or a GPU was taken meanwhile.
        """
        now = time.time() if now is None else now
        with self.transaction() as c:
            for index, uuid in gpus:
                held = c.execute("SELECT job_id FROM gpu_allocations WHERE gpu_uuid=?", (uuid,)).fetchone()
                if held:
                    raise InvalidTransition(f"GPU {uuid} is held by job {held['job_id']}")
                c.execute("INSERT INTO gpu_allocations (gpu_uuid, job_id, gpu_index, at) VALUES (?,?,?,?)", (uuid, job_id, index, now))
            return self.transition(
                job_id, JobState.PREPARING, "scheduled", now=now, expect=JobState.QUEUED,
                gpus=[i for i, _ in gpus], gpu_uuids=[u for _, u in gpus],
            )

    # -- operating: /metrics, retention, du (reads only) -------------------------------------
    @staticmethod
    def _job_aggregates(wait_buckets: Iterable[float]) -> str:
        """The columns job_stats and ended_stats group by and sum: the wait's bucket (the index of the
        first bound it is within; -1: never started; len(bounds): above them all), the wait, GPUs
        held and GPU-seconds (a job still running: up to the bound parameter `now`)."""
        bounds = " ".join(f"WHEN started_at - queued_at <= {float(b)!r} THEN {i}" for i, b in enumerate(wait_buckets))
        ngpus = "(CASE WHEN json_valid(gpus) AND json_type(gpus)='array' THEN json_array_length(gpus) ELSE 0 END)"
        return (f"CASE WHEN started_at IS NULL OR queued_at IS NULL OR started_at < queued_at THEN -1 {bounds} "
                f"ELSE {len(list(wait_buckets))} END AS bucket, COUNT(*) AS n, "
                "TOTAL(CASE WHEN started_at >= queued_at THEN started_at - queued_at END) AS wait_sum, "
                f"TOTAL(CASE WHEN state IN ('preparing','running') THEN {ngpus} END) AS gpus_held, "
                f"TOTAL(CASE WHEN started_at IS NOT NULL THEN MAX(0, COALESCE(finished_at, :now) - started_at) * {ngpus} END) AS gpu_seconds")

    def job_stats(self, wait_buckets: Iterable[float], now: float) -> list[dict]:
        """Jobs not yet ended, aggregated per (user, state, wait bucket): how many, their waits from
        queued to started, GPUs held and GPU-seconds used up to `now`. Read through the state index:
        the cost follows the queue, not the history."""
        return self.conn.execute(f"SELECT user, state, {self._job_aggregates(wait_buckets)} FROM jobs "
                                 "WHERE state IN ('queued','preparing','running') GROUP BY user, state, bucket", {"now": now}).fetchall()

    def last_transition_id(self) -> int:
        """The id of the newest transition (0: none yet): a mark for ended_stats."""
        return self.conn.execute("SELECT COALESCE(MAX(id), 0) AS n FROM transitions").fetchone()["n"]

    def ended_stats(self, wait_buckets: Iterable[float], after_id: int, upto_id: int) -> list[dict]:
        """Jobs that ended by a transition with an id in (after_id, upto_id], aggregated per (user,
        state, reason, wait bucket) as job_stats does. An ended job never changes, so a reader adds
        these to what it summed before and reads only the jobs that ended since (a range of the
        transitions' primary key), not the whole history."""
        return self.conn.execute(
            f"SELECT user, state, reason, {self._job_aggregates(wait_buckets)} FROM jobs WHERE id IN "
            "(SELECT job_id FROM transitions WHERE id > :after AND id <= :upto AND to_state IN ('succeeded','failed','cancelled')) "
            "GROUP BY user, state, reason, bucket", {"after": after_id, "upto": upto_id, "now": 0.0}).fetchall()

    def oldest_queued_at(self) -> Optional[float]:
        """When the job that has waited longest in the queue was queued (None when none waits)."""
        return self.conn.execute("SELECT MIN(queued_at) AS t FROM jobs WHERE state='queued'").fetchone()["t"]

    def env_build_stats(self) -> list[dict]:
        """Env builds counted by outcome (ok 1 or 0), with their seconds summed."""
        return self.conn.execute("SELECT COALESCE(ok, 0) AS ok, COUNT(*) AS n, TOTAL(seconds) AS seconds "
                                 "FROM env_builds GROUP BY COALESCE(ok, 0)").fetchall()

    def env_totals(self) -> dict:
        """How many envs are recorded and their bytes as measured when built."""
        return self.conn.execute("SELECT COUNT(*) AS n, TOTAL(size) AS bytes FROM envs").fetchone()

    def export_lag(self, exporter: str) -> dict:
        """An exporter's backlog: jobs not yet fully exported, those whose last try failed, and
        when the longest waiting was enrolled."""
        return self.conn.execute(
            "SELECT COUNT(*) AS behind, SUM(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END) AS failing, "
            "MIN(enrolled_at) AS oldest FROM export_outbox WHERE exporter=? AND done=0", (exporter,)).fetchone()

    def ended_jobs(self, before: float, after: Optional[float] = None) -> list[dict]:
        """Jobs that ended before `before` (and after `after`): id, user, uid, state, finished_at."""
        sql, args = ("SELECT id, user, uid, state, finished_at FROM jobs WHERE state IN ('succeeded','failed','cancelled') "
                     "AND finished_at IS NOT NULL AND finished_at < ?"), [before]
        if after is not None:
            sql += " AND finished_at >= ?"
            args.append(after)
        return self.conn.execute(sql + " ORDER BY finished_at", args).fetchall()

    def ended_checkpoints(self, before: float, after: Optional[float] = None) -> list[dict]:
        """Recorded checkpoints of jobs that ended before `before` (and after `after`), in the order
        they were recorded: job_id, uid, path, id, at."""
        sql, args = ("SELECT a.job_id, j.uid, a.path, a.id, a.at FROM artifacts a JOIN jobs j ON j.id=a.job_id "
                     "WHERE a.kind='checkpoint' AND j.state IN ('succeeded','failed','cancelled') "
                     "AND j.finished_at IS NOT NULL AND j.finished_at < ?"), [before]
        if after is not None:
            sql += " AND j.finished_at >= ?"
            args.append(after)
        return self.conn.execute(sql + " ORDER BY a.job_id, a.id", args).fetchall()

    def compactable_jobs(self, before: float) -> list[dict]:
        """Jobs that ended before `before`, have metric points and were not compacted yet, oldest
        first: id, user, finished_at."""
        return self.conn.execute(
            "SELECT id, user, finished_at FROM jobs WHERE state IN ('succeeded','failed','cancelled') AND finished_at IS NOT NULL "
            "AND finished_at < ? AND metrics_compacted_at IS NULL AND EXISTS (SELECT 1 FROM metrics m WHERE m.job_id=jobs.id) "
            "ORDER BY finished_at", (before,)).fetchall()

    def compact_metrics(self, job_id: str, bucket: int, now: float, apply: bool) -> Optional[dict]:
        """Compact one ended job's points (runner/compaction.py) in one transaction, and mark the job
        so; with apply False only count. Returns {"points", "kept", "bytes"} (bytes: an estimate of
        what the removed points held), or None when the job is no longer one to compact."""
        from .compaction import DELETE_CHUNK, ROW_OVERHEAD_BYTES, gaps

        def unmarked(c) -> bool:
            row = c.execute("SELECT state, metrics_compacted_at FROM jobs WHERE id=?", (job_id,)).fetchone()
            return row is not None and row["state"] in ENDED and row["metrics_compacted_at"] is None

        # read and decided under a read snapshot: the write lock is held only to delete (an ended
        # job's points no longer change)
        with self.snapshot() as c:
            if not unmarked(c):
                return None
            cur = c.cursor()
            cur.row_factory = None
            # the (job_id, name, id) index gives them in this order, without a sort
            rows = cur.execute("SELECT id, name, value, step, epoch FROM metrics WHERE job_id=? ORDER BY name, id", (job_id,)).fetchall()
        kept, ranges = gaps(rows, bucket)
        gone = len(rows) - kept
        # each point holds its job id and name twice (row and index) and ROW_OVERHEAD_BYTES more
        held = sum(2 * len(r[1]) for r in rows) + len(rows) * (2 * len(job_id) + ROW_OVERHEAD_BYTES)
        est = held * gone // max(1, len(rows))
        if apply:
            # A metric bucketed by steps loses its ranges a chunk a transaction (the daemon's own writes
            # wait a fraction of a second, not the seconds a million-point job takes): what a crash
            # between chunks leaves gives the same ranges again (each bucket keeps its extremes, which
            # are what is left of it). A metric bucketed by its points' order (no steps) would not, so
            # its ranges go in the last transaction, with the job's mark.
            stepped = {name for name, grp in groupby(rows, key=lambda r: r[1]) if all(r[3] is not None for r in grp)}
            del rows
            early = [(job_id, name, a, b) for name, a, b in ranges if name in stepped]
            last = [(job_id, name, a, b) for name, a, b in ranges if name not in stepped]
            while len(early) > DELETE_CHUNK:
                chunk, early = early[:DELETE_CHUNK], early[DELETE_CHUNK:]
                with self.transaction() as c:
                    if not unmarked(c):  # compacted meanwhile by another pass (runner gc beside the daemon's)
                        return None
                    c.executemany("DELETE FROM metrics WHERE job_id=? AND name=? AND id>? AND id<?", chunk)
            with self.transaction() as c:
                if not unmarked(c):
                    return None
                c.executemany("DELETE FROM metrics WHERE job_id=? AND name=? AND id>? AND id<?", early + last)
                c.execute("UPDATE jobs SET metrics_compacted_at=?, metrics_bucket=?, metrics_points_before=? WHERE id=?",
                          (now, bucket, kept + gone, job_id))
                _rebuild_chunks(c, job_id)
        return {"points": gone, "kept": kept, "bytes": est}

    def referenced_by_active(self) -> set:
        """Ids of jobs that a queued, preparing or running job still names (retry_of, train.resume):
        their folders are not removed from under it."""
        rows = self.conn.execute(
            "SELECT retry_of AS ref FROM jobs WHERE state IN ('queued','preparing','running') AND retry_of IS NOT NULL "
            "UNION SELECT json_extract(spec, '$.train.resume') FROM jobs WHERE state IN ('queued','preparing','running') "
            "AND json_valid(spec) AND json_type(spec, '$.train.resume')='text'").fetchall()
        return {r["ref"] for r in rows if r["ref"]}

    def job_owners(self) -> dict:
        """{job id: user} of every job."""
        return {r["id"]: r["user"] for r in self.conn.execute("SELECT id, user FROM jobs").fetchall()}

    def backup(self, dest) -> dict:
        """A consistent copy of the store in `dest`, made while the daemon writes (SQLite's online
        backup API, in one step: the copy is the store as of one moment), checked
        (PRAGMA integrity_check) and put in place atomically (a temp file beside `dest`, fsynced, then
        renamed), mode 0600. Returns {"path", "bytes", "jobs", "seconds"}."""
        import os

        dest = Path(dest).absolute()
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        t0 = time.time()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        try:
            src = sqlite3.connect(self.path, isolation_level=None, timeout=defaults.BUSY_TIMEOUT_MS / 1000)
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                # pages=-1 (the default): the whole copy in one step, under one read transaction, so it
                # is a snapshot; stepping through pages would restart on every write of the daemon.
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file; the daemon sets WAL again on open
                check = dst.execute("PRAGMA integrity_check").fetchall()
                if [tuple(r) for r in check] != [("ok",)]:
                    raise sqlite3.DatabaseError(f"the copy failed its integrity check: {check[:3]}")
                jobs = dst.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            finally:
                dst.close()
                src.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o600)
            os.replace(tmp, dest)
            dfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return {"path": str(dest), "bytes": dest.stat().st_size, "jobs": jobs, "seconds": round(time.time() - t0, 3)}
