"""A chart's reads (runner/web/series.py reduces what they give; runner/web/metricsview.py draws
them): one metric's points, its chunks (metric_chunks, written by store/metrics.py) and their
buckets summed up by SQLite. Each takes a cursor, so that a chart's reads share one snapshot."""

from __future__ import annotations

INF = float("inf")

def series_extent(cur, job_id: str, name: str) -> tuple[int, int | None]:
    """(how many points, the newest one's id) of one metric of a job: its packs' heads alone."""
    return tuple(cur.execute("SELECT COALESCE(SUM(n), 0), MAX(last_id) FROM metric_packs WHERE job_id=? AND name=?", (job_id, name)).fetchone())


def series_points(cur, job_id: str, name: str, lo_id: int = 0, hi_id: int = 2**63 - 1) -> list[tuple]:
    """(id, value, step, epoch) of one metric of a job, ids lo_id..hi_id, in the order recorded
    (an infinity given as None: JSON has none; a NaN is stored as None already)."""
    from .metrics import _between

    return [(i, v if v is None or abs(v) < INF else None, st, e) for i, _, v, st, e, _ in _between(cur, job_id, lo_id, hi_id, name)]


def series_chunks(cur, job_id: str, name: str) -> list[tuple] | None:
    """The chunk rows of one metric of a job (runner/metric_chunks.py: COLUMNS), in order; None
    where the store has no chunks table (written before it; the chart reads the points)."""
    import sqlite3

    try:
        return cur.execute("SELECT k, n, first_id, last_id, step_first, step_last, steps_ok, epoch_first, epoch_last, epoch_min, "
                           "epoch_max, epochs_ok, first_v, last_v, min_v, min_i, min_step, min_epoch, max_v, max_i, max_step, max_epoch "
                           "FROM metric_chunks WHERE job_id=? AND name=? ORDER BY k", (job_id, name)).fetchall()
    except sqlite3.OperationalError:
        return None


def series_chunk_stats(cur, job_id: str, name: str, chunk: int) -> tuple | None:
    """What a chart checks of one metric's chunks before it reads them, summed up by SQLite: (chunks,
    points, highest k, newest id, chunks not full, the highest k of those, every steps_ok, every
    epochs_ok); None where the store has no chunks table."""
    import sqlite3

    try:
        return cur.execute("SELECT COUNT(*), SUM(n), MAX(k), MAX(last_id), SUM(n < ?3), MAX(CASE WHEN n < ?3 THEN k END), "
                           "MIN(steps_ok), MIN(epochs_ok) FROM metric_chunks WHERE job_id=?1 AND name=?2", (job_id, name, chunk)).fetchone()
    except sqlite3.OperationalError:
        return None


def series_buckets(cur, job_id: str, name: str, buckets: int, chunks: int, chunk: int) -> tuple[list, list, tuple, tuple]:
    """One metric's chunks grouped by SQLite into `buckets` runs of whole chunks (chunk k in bucket
    k * buckets // chunks; `chunk`: points a chunk): each bucket's lowest and its highest point, (bucket, value, position,
    step, epoch) (the min()/max() row's own columns: SQLite's bare columns), and the series' first
    and last point, (value, step, epoch, position)."""
    out = []
    for agg, col in (("MIN", "min"), ("MAX", "max")):
        out.append(cur.execute(f"SELECT (k * ?3) / ?4, {agg}({col}_v), {col}_i, {col}_step, {col}_epoch FROM metric_chunks "
                               f"WHERE job_id=?1 AND name=?2 AND {col}_v IS NOT NULL GROUP BY 1", (job_id, name, buckets, chunks)).fetchall())
    first = cur.execute("SELECT first_v, step_first, epoch_first, 0 FROM metric_chunks WHERE job_id=? AND name=? AND k=0", (job_id, name)).fetchone()
    last = cur.execute("SELECT last_v, step_last, epoch_last, k * ? + n - 1 FROM metric_chunks WHERE job_id=? AND name=? ORDER BY k DESC LIMIT 1",
                       (chunk, job_id, name)).fetchone()
    return out[0], out[1], first, last


NAMES_SQL = "SELECT DISTINCT name FROM metric_packs WHERE job_id=?1 ORDER BY name"
"""A job's metric names in order, off the (job_id, name, last_id) index: a pack a row, so a
100,000-point job's names are a few hundred index entries."""


def metric_names(cur, job_id: str) -> list[str]:
    """The names of a job's metrics, sorted (`cur`: a cursor whose rows are tuples)."""
    return [r[0] for r in cur.execute(NAMES_SQL, (job_id,)).fetchall()]


def last_metric_id(cur) -> int:
    """The newest point's id, of any job (0: none yet): where a live refresh continues after."""
    return cur.execute("SELECT COALESCE(MAX(last_id), 0) FROM metric_packs").fetchone()[0]


def points_since(cur, job_id: str, after: int, last_id: int, limit: int) -> list[tuple]:
    """(name, step, epoch, value) of a job's points with ids in (after, last_id], `limit` at most, in id order."""
    from .metrics import _between

    return [(n, st, e, v) for _, n, v, st, e, _ in _between(cur, job_id, after + 1, last_id)[:limit]]
