"""The store's schema: its tables, made and changed by an ordered list of migrations (PRAGMA
user_version counts those applied; an old database is upgraded in place when the daemon opens it),
and how a row reads (its JSON columns decoded)."""

from __future__ import annotations

import json
import sqlite3

from .. import defaults

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


def _m_backend(db):
    """Where a job ran, any backend: `backend` (local, slurm...) and `backend_ref` (its id there) replace slurm_job_id,
    kept as a read-only column derived from them for SQL of the old schema (written as backend and ref by insert_job)."""
    db.execute("ALTER TABLE jobs ADD COLUMN backend TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN backend_ref TEXT")
    db.execute("UPDATE jobs SET backend = CASE WHEN slurm_job_id IS NOT NULL OR requeues > 0 THEN 'slurm' ELSE 'local' END, "
               "backend_ref = slurm_job_id")
    db.execute("ALTER TABLE jobs DROP COLUMN slurm_job_id")
    db.execute("ALTER TABLE jobs ADD COLUMN slurm_job_id TEXT GENERATED ALWAYS AS (CASE WHEN backend = 'slurm' THEN backend_ref END)")



CHUNKS_TABLE = """CREATE TABLE IF NOT EXISTS metric_chunks (job_id TEXT NOT NULL, name TEXT NOT NULL, k INTEGER NOT NULL,
    n INTEGER NOT NULL, first_id INTEGER NOT NULL, last_id INTEGER NOT NULL, step_first INTEGER, step_last INTEGER,
    steps_ok INTEGER NOT NULL, epoch_first INTEGER, epoch_last INTEGER, epoch_min INTEGER, epoch_max INTEGER,
    epochs_ok INTEGER NOT NULL, first_v REAL, last_v REAL, min_v REAL, min_i INTEGER, min_step INTEGER, min_epoch INTEGER,
    max_v REAL, max_i INTEGER, max_step INTEGER, max_epoch INTEGER, PRIMARY KEY (job_id, name, k)) WITHOUT ROWID"""


def _m_chunks(db):
    """Each metric's points summed up a chunk of metric_chunks.CHUNK (runner/metric_chunks.py), for charts:
    derived from the points and written with them (store/metrics.py). Before this migration the first write
    of points made the table where missing: a store that has it already keeps it and its rows; one without it
    gets it empty, and a series whose points came before has chunks that do not add up to its points, which
    a chart reads point by point, as before (runner/web/series.py checks the count)."""
    db.execute(CHUNKS_TABLE)


def _m_packs(db):
    """Metric points packed (store/metrics.py): a row of metric_packs holds up to PACK_POINTS of one
    series' points. The points of the table `metrics` (a row a point) move into packs with their
    ids, values, steps, epochs and times, a series at a time in id order; then the table goes. In
    this migration's transaction: an upgrade killed half-way leaves the store as it was. The chart
    chunks stay as they are (the points' ids do not change)."""
    from itertools import groupby

    from .metrics import PACKS_INDEXES, PACKS_TABLE, _PUT_PACK, _pack_rows

    db.execute(PACKS_TABLE)
    if "metrics" in db.table_names():
        raw = db.conn
        cur = raw.cursor()
        cur.row_factory = None
        rows = cur.execute("SELECT job_id, name, id, value, step, epoch, at FROM metrics ORDER BY job_id, name, id")
        w = raw.cursor()
        while True:
            block = rows.fetchmany(50_000)
            if not block:
                break
            for (job_id, name), grp in groupby(block, key=lambda r: (r[0], r[1])):
                _, _, ids, vals, steps, epochs, ats = zip(*grp)
                # a series cut by the block's end becomes two packs: what it holds is the same
                w.executemany(_PUT_PACK, _pack_rows(job_id, name, ids, vals, steps, epochs, ats))
        db.execute("DROP TABLE metrics")
    for sql in PACKS_INDEXES:
        db.execute(sql)


def _m_chunks32(db):
    """Chart chunks of 32 points, not 16 (metric_chunks.CHUNK: a chunk row is written with each batch of
    a job's points, and half as many rows let one job's log into the store at 1.2 M lines/s, not 0.95):
    every series' chunks made again from its points, in this migration's transaction (a store of a
    million points: ~1 s here). A series that had none (points from before the chunks) gets them too."""
    from .metrics import _rebuild_chunks

    db.execute(CHUNKS_TABLE)
    jobs = [r[0] for r in db.conn.execute("SELECT DISTINCT job_id FROM metric_packs")]
    db.execute("DELETE FROM metric_chunks")
    for job_id in jobs:
        _rebuild_chunks(db.conn, job_id)


MIGRATIONS = [_m1, _m2, _m3, _m4, _m5, _m6, _m7, _m8, _m9, _m10, _m11, _m_backend, _m_chunks, _m_packs, _m_chunks32]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(store):
    """Bring the database to SCHEMA_VERSION, one migration per transaction."""
    import sqlite_utils

    if store.schema_version() >= SCHEMA_VERSION:
        return
    raw = sqlite3.connect(store.path, isolation_level=None, timeout=defaults.BUSY_TIMEOUT_MS / 1000)
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


def _row(cursor, row):
    d = {col[0]: row[i] for i, col in enumerate(cursor.description)}
    for key in JSON_COLUMNS:
        if key in d and isinstance(d[key], str):
            d[key] = json.loads(d[key])
    return d
