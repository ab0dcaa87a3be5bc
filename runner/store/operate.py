"""Operating the server: what /metrics aggregates, what retention may remove, and a backup made
while the daemon writes (reads only, but for the backup's copy)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterable, Optional

from .. import defaults
from ..atomic import fill_file


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


def job_stats(store, wait_buckets: Iterable[float], now: float) -> list[dict]:
    """Jobs not yet ended, aggregated per (user, state, wait bucket): how many, their waits from
    queued to started, GPUs held and GPU-seconds used up to `now`. Read through the state index:
    the cost follows the queue, not the history."""
    return store.conn.execute(f"SELECT user, state, {_job_aggregates(wait_buckets)} FROM jobs "
                             "WHERE state IN ('queued','preparing','running') GROUP BY user, state, bucket", {"now": now}).fetchall()


def last_transition_id(store) -> int:
    """The id of the newest transition (0: none yet): a mark for ended_stats."""
    return store.conn.execute("SELECT COALESCE(MAX(id), 0) AS n FROM transitions").fetchone()["n"]


def ended_stats(store, wait_buckets: Iterable[float], after_id: int, upto_id: int) -> list[dict]:
    """Jobs that ended by a transition with an id in (after_id, upto_id], aggregated per (user,
    state, reason, wait bucket) as job_stats does. An ended job never changes, so a reader adds
    these to what it summed before and reads only the jobs that ended since (a range of the
    transitions' primary key), not the whole history."""
    return store.conn.execute(
        f"SELECT user, state, reason, {_job_aggregates(wait_buckets)} FROM jobs WHERE id IN "
        "(SELECT job_id FROM transitions WHERE id > :after AND id <= :upto AND to_state IN ('succeeded','failed','cancelled')) "
        "GROUP BY user, state, reason, bucket", {"after": after_id, "upto": upto_id, "now": 0.0}).fetchall()


def oldest_queued_at(store) -> Optional[float]:
    """When the job that has waited longest in the queue was queued (None when none waits)."""
    return store.conn.execute("SELECT MIN(queued_at) AS t FROM jobs WHERE state='queued'").fetchone()["t"]


def ended_jobs(store, before: float, after: Optional[float] = None) -> list[dict]:
    """Jobs that ended before `before` (and after `after`): id, user, uid, state, finished_at."""
    sql, args = ("SELECT id, user, uid, state, finished_at FROM jobs WHERE state IN ('succeeded','failed','cancelled') "
                 "AND finished_at IS NOT NULL AND finished_at < ?"), [before]
    if after is not None:
        sql += " AND finished_at >= ?"
        args.append(after)
    return store.conn.execute(sql + " ORDER BY finished_at", args).fetchall()


def ended_checkpoints(store, before: float, after: Optional[float] = None) -> list[dict]:
    """Recorded checkpoints of jobs that ended before `before` (and after `after`), in the order
    they were recorded: job_id, uid, path, id, at."""
    sql, args = ("SELECT a.job_id, j.uid, a.path, a.id, a.at FROM artifacts a JOIN jobs j ON j.id=a.job_id "
                 "WHERE a.kind='checkpoint' AND j.state IN ('succeeded','failed','cancelled') "
                 "AND j.finished_at IS NOT NULL AND j.finished_at < ?"), [before]
    if after is not None:
        sql += " AND j.finished_at >= ?"
        args.append(after)
    return store.conn.execute(sql + " ORDER BY a.job_id, a.id", args).fetchall()


def compactable_jobs(store, before: float) -> list[dict]:
    """Jobs that ended before `before`, have metric points and were not compacted yet, oldest
    first: id, user, finished_at."""
    return store.conn.execute(
        "SELECT id, user, finished_at FROM jobs WHERE state IN ('succeeded','failed','cancelled') AND finished_at IS NOT NULL "
        "AND finished_at < ? AND metrics_compacted_at IS NULL AND EXISTS (SELECT 1 FROM metric_packs m WHERE m.job_id=jobs.id) "
        "ORDER BY finished_at", (before,)).fetchall()


def backup(store, dest) -> dict:
    """A consistent copy of the store in `dest`, made while the daemon writes (SQLite's online
    backup API, in one step: the copy is the store as of one moment), checked
    (PRAGMA integrity_check) and put in place atomically (runner/atomic.fill_file: a temp file beside
    `dest`, fsynced, then renamed, the folder fsynced), mode 0600. Returns {"path", "bytes", "jobs", "seconds"}."""
    dest = Path(dest).absolute()
    t0 = time.time()

    def copy(tmp) -> int:
        src = sqlite3.connect(store.path, isolation_level=None, timeout=defaults.BUSY_TIMEOUT_MS / 1000)
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            # pages=-1 (the default): the whole copy in one step, under one read transaction, so it
            # is a snapshot; stepping through pages would restart on every write of the daemon.
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one store-contained file; the daemon sets WAL again on open
            check = dst.execute("PRAGMA integrity_check").fetchall()
            if [tuple(r) for r in check] != [("ok",)]:
                raise sqlite3.DatabaseError(f"the copy failed its integrity check: {check[:3]}")
            return dst.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        finally:
            dst.close()
            src.close()

    jobs = fill_file(dest, copy, 0o600, fsync_dir=True)
    return {"path": str(dest), "bytes": dest.stat().st_size, "jobs": jobs, "seconds": round(time.time() - t0, 3)}


def job_uids(db) -> dict:
    """{job id: uid} of every job with a uid, read from the store's file `db` opened read-only with no
    Store (runner/permissions.py's check reads it as it is, and says so where it cannot be opened)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    jobs = {r[0]: r[1] for r in con.execute("SELECT id, uid FROM jobs WHERE uid IS NOT NULL")}
    con.close()
    return jobs
