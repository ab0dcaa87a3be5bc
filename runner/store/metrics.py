"""Metric points: written with the log offset they came from (or alone: GPU samples), summed up in
chunks for charts (metric_chunks, in the same transaction), read back, and compacted once old."""

from __future__ import annotations

import json
import time
from itertools import chain, groupby
from typing import Optional

from ..states import ENDED

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


_PUT_CHUNK = f"INSERT OR REPLACE INTO metric_chunks VALUES (?,?,{','.join('?' * 22)})"


def _roll_up(c, job_id: str, points: list):
    """The chunks of the series that points (name, value, step, epoch), just inserted in that order
    as the newest rows of the table, extend; in the inserting transaction. A reader checks a
    series' chunks against its points' count and newest id, and reads the points where they differ."""
    from ..metric_chunks import by_name, extend

    cur = c.cursor()
    cur.row_factory = None
    last_id = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
    if not points or cur.execute("SELECT MAX(id) FROM metrics").fetchone()[0] != last_id:
        return  # (not the newest rows: their ids are not known here; the reader sees it)
    by = by_name(points, last_id - len(points) + 1)  # one statement's rows get consecutive ids
    rows = []
    for name, pts in by.items():
        last = cur.execute("SELECT * FROM metric_chunks WHERE job_id=? AND name=? ORDER BY k DESC LIMIT 1", (job_id, name)).fetchone()
        rows += [(job_id, name, *r) for r in extend(None if last is None else last[2:], *pts)]
    cur.executemany(_PUT_CHUNK, rows)


def _rebuild_chunks(c, job_id: str):
    """A job's chunks made again from its points (after some of them were deleted: compaction)."""
    from ..metric_chunks import build

    cur = c.cursor()
    cur.row_factory = None
    cur.execute("DELETE FROM metric_chunks WHERE job_id=?", (job_id,))
    rows = cur.execute("SELECT name, id, value, step, epoch FROM metrics WHERE job_id=? ORDER BY name, id", (job_id,)).fetchall()
    for name, grp in groupby(rows, key=lambda r: r[0]):
        cur.executemany(_PUT_CHUNK, [(job_id, name, *r) for r in build([p[1:] for p in grp])])


def record_progress(store, job_id: str, points: list[tuple], log_offset: int, parser_state=None, now: Optional[float] = None,
                    redo_before: Optional[float] = None):
    """Store parsed metric points and the log offset they came from, in one transaction.

    Points are (name, value, step, epoch). Because the offset moves with the rows, a daemon
    killed at any moment neither loses nor duplicates a point when it reads on from the offset.
    `redo_before` (a job resumed after preemption: when this run started): a point of the same
    name, step and epoch recorded before then is the earlier run's, which this one did again
    from its checkpoint; it is replaced, so each epoch (or step) is kept once.
    """
    now = time.time() if now is None else now
    with store.transaction() as c:
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


def add_metrics(store, job_id: str, points: list[tuple], now: Optional[float] = None):
    """Store metric points (name, value, step, epoch) not tied to the log (GPU samples, ...)."""
    now = time.time() if now is None else now
    with store.transaction() as c:
        _insert_points(c, job_id, points, now)


def metrics(store, job_id: str, name: Optional[str] = None, limit: Optional[int] = None, offset: int = 0) -> list[dict]:
    """A job's metric points, in the order they were recorded."""
    sql, args = "SELECT name, value, step, epoch, at FROM metrics WHERE job_id=?", [job_id]
    if name:
        sql += " AND name=?"
        args.append(name)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    return store.conn.execute(sql, args).fetchall()


def latest_metrics_many(store, job_ids: list[str]) -> dict:
    """{job_id: {name: latest value}} for many jobs in one query (a page of `ls` or GET /jobs)."""
    out: dict = {j: {} for j in job_ids}
    if not job_ids:
        return out
    marks = ",".join("?" * len(job_ids))
    rows = store.conn.execute(
        f"SELECT job_id, name, value FROM metrics WHERE id IN "
        f"(SELECT MAX(id) FROM metrics WHERE job_id IN ({marks}) GROUP BY job_id, name)", job_ids).fetchall()
    for r in rows:
        out[r["job_id"]][r["name"]] = r["value"]
    return out


def has_metrics(store, job_id: str) -> bool:
    """Whether a job has any point (one index probe, whatever its count)."""
    return store.conn.execute("SELECT 1 FROM metrics WHERE job_id=? LIMIT 1", (job_id,)).fetchone() is not None


def count_metrics(store, job_id: str, name: Optional[str] = None) -> int:
    """How many points a job has (of one metric, when named)."""
    sql, args = "SELECT COUNT(*) AS n FROM metrics WHERE job_id=?", [job_id]
    if name:
        sql += " AND name=?"
        args.append(name)
    return store.conn.execute(sql, args).fetchone()["n"]


def latest_metrics(store, job_id: str) -> dict:
    """{name: latest value} for a job."""
    rows = store.conn.execute(
        "SELECT name, value FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics WHERE job_id=? GROUP BY name)",
        (job_id,),
    ).fetchall()
    return {r["name"]: r["value"] for r in rows}


def metric_rows_after(store, job_id: str, after_id: int, upto_id: Optional[int] = None, limit: int = 1000) -> list[dict]:
    """A job's metric rows with ids above `after_id` (and at most `upto_id`), in id order.

    A range scan of the rowid from `after_id`: the rows of other jobs recorded since are read
    and skipped, few when the export keeps up (no extra index slows the parser's inserts)."""
    sql, args = "SELECT id, name, value, step, epoch, at FROM metrics WHERE job_id=? AND id>?", [job_id, after_id]
    if upto_id is not None:
        sql += " AND id<=?"
        args.append(upto_id)
    return store.conn.execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()


def metric_count_upto(store, job_id: str, upto_id: int) -> int:
    """How many of a job's metric rows have ids up to `upto_id` (how far its export is)."""
    return store.conn.execute("SELECT COUNT(*) AS n FROM metrics WHERE job_id=? AND id<=?", (job_id, upto_id)).fetchone()["n"]


def compact_metrics(store, job_id: str, bucket: int, now: float, apply: bool) -> Optional[dict]:
    """Compact one ended job's points (runner/compaction.py) in one transaction, and mark the job
    so; with apply False only count. Returns {"points", "kept", "bytes"} (bytes: an estimate of
    what the removed points held), or None when the job is no longer one to compact."""
    from ..compaction import DELETE_CHUNK, ROW_OVERHEAD_BYTES, gaps

    def unmarked(c) -> bool:
        row = c.execute("SELECT state, metrics_compacted_at FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is not None and row["state"] in ENDED and row["metrics_compacted_at"] is None

    # read and decided under a read snapshot: the write lock is held only to delete (an ended
    # job's points no longer change)
    with store.snapshot() as c:
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
            with store.transaction() as c:
                if not unmarked(c):  # compacted meanwhile by another pass (runner gc beside the daemon's)
                    return None
                c.executemany("DELETE FROM metrics WHERE job_id=? AND name=? AND id>? AND id<?", chunk)
        with store.transaction() as c:
            if not unmarked(c):
                return None
            c.executemany("DELETE FROM metrics WHERE job_id=? AND name=? AND id>? AND id<?", early + last)
            c.execute("UPDATE jobs SET metrics_compacted_at=?, metrics_bucket=?, metrics_points_before=? WHERE id=?",
                      (now, bucket, kept + gone, job_id))
            _rebuild_chunks(c, job_id)
    return {"points": gone, "kept": kept, "bytes": est}


def first_epoch_point_at(store, job_id: str):
    """When the job's first point that names an epoch was stored (its first epoch's metrics), or None."""
    row = store.conn.execute("SELECT MIN(at) AS at FROM metrics WHERE job_id = ? AND epoch IS NOT NULL", (job_id,)).fetchone()
    return row["at"] if row else None
