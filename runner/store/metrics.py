"""Metric points, packed: a job's points of one metric are stored a pack at a time (a row of
metric_packs holding up to PACK_POINTS of them as arrays: their ids, values, steps, epochs and
when each was stored), written with the log offset they came from (or alone: GPU samples), summed
up in chunks for charts (metric_chunks, in the same transaction), read back, and compacted once old.

Why packs: one SQLite row a point, with its (job_id, name, id) index, took points in at ~0.5 M a
second of one core here, the index costing more than the table (docs/bench/metrics-ingest.md: the
forms); a row a pack is written ~6x faster in a third of the space, its indexes cost a row a pack.

A point keeps what its row had: an id (one sequence over every job's points, in the order they were
stored: the MLflow mirror's ranges and the live charts read on from one), its name, value, step,
epoch and when it was stored (`at`). Values read back as a REAL column gave them (a float; NaN as
None), steps and epochs as an INTEGER column (a whole float as an int, NaN as None).

The arrays are `marshal`ed tuples of numbers (and None) that runner made itself: never a user's bytes."""

from __future__ import annotations

import json
import marshal
import time
from itertools import groupby
from math import isnan
from typing import Optional

from ..states import ENDED

PACK_POINTS = 8192
"""Points a pack holds at most (a batch of more is cut into packs of this many)."""

MERGE_BELOW = 512
"""A series' newest pack with fewer points than this takes the next points in (rewritten whole),
so that a job printing a line a second does not leave a pack a point; a larger one is left as it is."""

PACKS_TABLE = """CREATE TABLE IF NOT EXISTS metric_packs (job_id TEXT NOT NULL, name TEXT NOT NULL,
    first_id INTEGER NOT NULL, last_id INTEGER NOT NULL, n INTEGER NOT NULL, ids BLOB NOT NULL, vals BLOB NOT NULL,
    steps BLOB NOT NULL, epochs BLOB NOT NULL, ats BLOB NOT NULL, last_value REAL, epoch_at REAL)"""
PACKS_INDEXES = (
    "CREATE INDEX IF NOT EXISTS idx_packs_series ON metric_packs (job_id, name, last_id)",
    "CREATE INDEX IF NOT EXISTS idx_packs_job_last ON metric_packs (job_id, last_id)",
    "CREATE INDEX IF NOT EXISTS idx_packs_last ON metric_packs (last_id)",
)
_PUT_PACK = "INSERT INTO metric_packs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_COLS = "rowid, job_id, name, first_id, last_id, n, ids, vals, steps, epochs, ats, last_value, epoch_at"


# -- a pack's columns ------------------------------------------------------------------------

def _real(vals) -> tuple:
    """Values as a REAL column keeps them: floats, a NaN as None."""
    try:
        out = tuple(map(float, vals))
    except TypeError:  # a None among them
        return tuple(None if v is None or v != v else float(v) for v in vals)
    return tuple(None if v != v else v for v in out) if any(map(isnan, out)) else out


def _integer1(x):
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, float):
        if x != x:
            return None
        if x.is_integer() and -2**63 <= x < 2**63:
            return int(x)
    return x


def _integer(seq) -> tuple:
    """Steps or epochs as an INTEGER column keeps them: a whole float as an int, a NaN as None."""
    return tuple(seq) if set(map(type, seq)) <= {int, type(None)} else tuple(map(_integer1, seq))


def _runs(ats) -> list:
    """[(at, count), ...] of a sequence of times (they come a batch at a time: a run each)."""
    return [(at, len(list(g))) for at, g in groupby(ats)]


def _expand(runs) -> list:
    out: list = []
    for at, k in runs:
        out += [at] * k
    return out


def _epoch_at(epochs, ats):
    """When the first point that names an epoch was stored (None: none does)."""
    if epochs[0] is not None:
        return ats[0]
    if epochs.count(None) == len(epochs):  # (a log that prints no epoch: counted in C, not looped over)
        return None
    for e, at in zip(epochs, ats):
        if e is not None:
            return at
    return None


def _pack_rows(job_id: str, name: str, ids, vals, steps, epochs, ats) -> list[tuple]:
    """The metric_packs rows of one series' points (columns in id order), PACK_POINTS a row at most."""
    out = []
    for i in range(0, len(ids), PACK_POINTS):
        j = i + PACK_POINTS
        pi, pv, ps, pe, pa = tuple(ids[i:j]), vals[i:j], steps[i:j], epochs[i:j], ats[i:j]
        out.append((job_id, name, pi[0], pi[-1], len(pi), marshal.dumps(pi), marshal.dumps(tuple(pv)), marshal.dumps(tuple(ps)),
                    marshal.dumps(tuple(pe)), marshal.dumps(_runs(pa)), pv[-1], _epoch_at(pe, pa)))
    return out


def _decode(row) -> tuple:
    """(ids, values, steps, epochs, ats) of a pack row read with _COLS (a tuple)."""
    return (marshal.loads(row[6]), marshal.loads(row[7]), marshal.loads(row[8]), marshal.loads(row[9]), _expand(marshal.loads(row[10])))


def _cur(c):
    cur = c.cursor()
    cur.row_factory = None
    return cur


def _packs(cur, job_id: str, name: Optional[str] = None, where: str = "", args=()) -> list:
    sql, a = f"SELECT {_COLS} FROM metric_packs WHERE job_id=?", [job_id]
    if name is not None:
        sql += " AND name=?"
        a.append(name)
    return cur.execute(f"{sql}{where} ORDER BY last_id", [*a, *args]).fetchall()


def _flat(rows) -> list[tuple]:
    """(id, name, value, step, epoch, at) of every point of these packs, in id order."""
    out: list = []
    for r in rows:
        ids, vals, steps, epochs, ats = _decode(r)
        out += zip(ids, [r[2]] * len(ids), vals, steps, epochs, ats)
    out.sort()
    return out


def _between(cur, job_id: str, lo: int, hi: int, name: Optional[str] = None) -> list[tuple]:
    """(id, name, value, step, epoch, at) of a job's points (of one metric, when named) with ids
    lo..hi, in id order: only the packs that hold such ids are read."""
    return [p for p in _flat(_packs(cur, job_id, name, " AND last_id>=? AND first_id<=?", (lo, hi))) if lo <= p[0] <= hi]


def _next_id(cur) -> int:
    return (cur.execute("SELECT MAX(last_id) FROM metric_packs").fetchone()[0] or 0) + 1


# -- writes ----------------------------------------------------------------------------------

def _append(cur, job_id: str, name: str, ids, vals, steps, epochs, now: float):
    """Add one series' new points (ids above its others) as packs; into its newest pack when that is small."""
    ats = [now] * len(ids)
    last = cur.execute(f"SELECT {_COLS} FROM metric_packs WHERE job_id=? AND name=? ORDER BY last_id DESC LIMIT 1",
                       (job_id, name)).fetchone()
    if last is not None and last[5] < MERGE_BELOW and last[5] + len(ids) <= PACK_POINTS:
        oi, ov, os_, oe, oa = _decode(last)
        ids, vals, steps, epochs, ats = oi + tuple(ids), ov + tuple(vals), os_ + tuple(steps), oe + tuple(epochs), oa + ats
        cur.execute("DELETE FROM metric_packs WHERE rowid=?", (last[0],))
    cur.executemany(_PUT_PACK, _pack_rows(job_id, name, ids, vals, steps, epochs, ats))


class Columns:
    """Points as columns (a log-parsing helper's batch: runner/logbatches.py): names, values, steps,
    epochs, lists of one length; len() is how many points."""

    __slots__ = ("names", "vals", "steps", "epochs")

    def __init__(self, names, vals, steps, epochs):
        self.names, self.vals, self.steps, self.epochs = names, vals, steps, epochs

    def __iter__(self):
        return iter((self.names, self.vals, self.steps, self.epochs))

    def __len__(self):
        return len(self.names)

    def points(self) -> list:
        return list(zip(self.names, self.vals, self.steps, self.epochs))


def _insert_points(c, job_id: str, points, now: float):
    """Store points (name, value, step, epoch), or Columns of them, or a batch held in C, in the order
    given (their ids in that order, above every id stored), and extend their series' chunks."""
    from ..metric_chunks import by_columns

    if hasattr(points, "insert_batch"):  # a batch held in C (store/packed.py: Packed) stores itself the same way
        return points.insert_batch(c, job_id, now)
    if isinstance(points, Columns):
        if not points.names:
            return
        cols = points
    else:
        if set(map(len, points)) - {4}:
            raise ValueError("a metric point is (name, value, step, epoch)")
        if not points:
            return
        cols = zip(*points)
    cur = _cur(c)
    by = by_columns(*cols, _next_id(cur))
    cols = {name: (ids, _real(v), _integer(s), _integer(e)) for name, (ids, v, s, e) in by.items()}
    for name, (ids, v, s, e) in cols.items():
        _append(cur, job_id, name, ids, v, s, e, now)
    _roll_up(cur, job_id, cols)


_PUT_CHUNK = f"INSERT OR REPLACE INTO metric_chunks VALUES (?,?,{','.join('?' * 22)})"


def _roll_up(cur, job_id: str, cols: dict):
    """The chunks of the series that new points extend ({name: (ids, values, steps, epochs)}, the
    newest of their series); in the inserting transaction."""
    from ..metric_chunks import extend

    rows = []
    for name, pts in cols.items():
        last = cur.execute("SELECT * FROM metric_chunks WHERE job_id=? AND name=? ORDER BY k DESC LIMIT 1", (job_id, name)).fetchone()
        rows += [(job_id, name, *r) for r in extend(None if last is None else last[2:], *pts)]
    cur.executemany(_PUT_CHUNK, rows)


def _rebuild_chunks(c, job_id: str):
    """A job's chunks made again from its points (after some of them were deleted: compaction)."""
    from ..metric_chunks import build

    cur = _cur(c)
    cur.execute("DELETE FROM metric_chunks WHERE job_id=?", (job_id,))
    pts = _flat(_packs(cur, job_id))
    pts.sort(key=lambda p: (p[1], p[0]))
    for name, grp in groupby(pts, key=lambda p: p[1]):
        cur.executemany(_PUT_CHUNK, [(job_id, name, *r) for r in build([(p[0], p[2], p[3], p[4]) for p in grp])])


def _rewrite_series(cur, job_id: str, name: str, keep, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """Write one series' packs that hold ids in lo..hi again with only the points `keep(id, value,
    step, epoch, at)` says to keep (same ids); returns how many went."""
    rows = _packs(cur, job_id, name, " AND last_id>=? AND first_id<=?", (lo, hi))
    pts = _flat(rows)
    kept = [p for p in pts if keep(*p[:1], *p[2:])]
    if len(kept) == len(pts):
        return 0
    cur.executemany("DELETE FROM metric_packs WHERE rowid=?", [(r[0],) for r in rows])
    if kept:
        ids, _, vals, steps, epochs, ats = zip(*kept)
        cur.executemany(_PUT_PACK, _pack_rows(job_id, name, ids, vals, steps, epochs, ats))
    return len(pts) - len(kept)


def _drop_ranges(cur, job_id: str, ranges: list) -> None:
    """Remove the points of each (name, after_id, before_id) range (those strictly between), a
    series' touched packs written again once."""
    import bisect

    for name, grp in groupby(sorted(ranges), key=lambda r: r[0]):
        spans = [(a, b) for _, a, b in grp]
        starts = [a for a, _ in spans]

        def keep(i, *_):
            k = bisect.bisect_left(starts, i) - 1
            return not (k >= 0 and spans[k][0] < i < spans[k][1])
        _rewrite_series(cur, job_id, name, keep, spans[0][0], spans[-1][1])


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
            cur, gone = _cur(c), 0
            again: dict = {}
            if hasattr(points, "insert_batch"):  # (a batch held in C, store/packed.py: as lists here)
                points = points.columns()
            for (n, _, s, e) in (points.points() if isinstance(points, Columns) else points):
                if s is not None or e is not None:
                    again.setdefault(n, set()).add((_integer1(s), _integer1(e)))
            for name, keys in again.items():
                gone += _rewrite_series(cur, job_id, name, lambda i, v, s, e, at: not (at < redo_before and (s, e) in keys))
            if gone:
                _rebuild_chunks(c, job_id)
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


# -- reads -----------------------------------------------------------------------------------

def _dicts(pts, keys=("name", "value", "step", "epoch", "at")) -> list[dict]:
    """Points (id, name, value, step, epoch, at) as the dicts a row of the point table read as."""
    if keys[0] == "id":
        return [dict(zip(keys, p)) for p in pts]
    return [dict(zip(keys, p[1:])) for p in pts]


def metrics(store, job_id: str, name: Optional[str] = None, limit: Optional[int] = None, offset: int = 0) -> list[dict]:
    """A job's metric points, in the order they were recorded: dicts of name, value, step, epoch, at."""
    cur = _cur(store.conn)
    if name is not None and limit is not None:
        # one series' packs follow each other in id order: read only those the page needs
        heads = cur.execute("SELECT rowid, n FROM metric_packs WHERE job_id=? AND name=? ORDER BY last_id", (job_id, name)).fetchall()
        want, first, seen = [], None, 0
        for rowid, n in heads:
            if seen + n > offset and seen < offset + limit:
                want.append(rowid)
                first = seen if first is None else first
            seen += n
        rows = [cur.execute(f"SELECT {_COLS} FROM metric_packs WHERE rowid=?", (r,)).fetchone() for r in want]
        skip = offset - (first or 0)
        return _dicts(_flat(rows)[skip:skip + limit])
    pts = _flat(_packs(cur, job_id, name))
    if limit is not None:
        pts = pts[offset:offset + limit]
    return _dicts(pts)


def latest_metrics_many(store, job_ids: list[str]) -> dict:
    """{job_id: {name: latest value}} for many jobs in one query (a page of `ls` or GET /jobs)."""
    out: dict = {j: {} for j in job_ids}
    if not job_ids:
        return out
    marks = ",".join("?" * len(job_ids))
    # (SQLite's bare columns: last_value is that of the row whose last_id is the MAX)
    for job_id, name, value, _ in _cur(store.conn).execute(
            f"SELECT job_id, name, last_value, MAX(last_id) FROM metric_packs WHERE job_id IN ({marks}) GROUP BY job_id, name", job_ids):
        out[job_id][name] = value
    return out


def has_metrics(store, job_id: str) -> bool:
    """Whether a job has any point (one index probe, whatever its count)."""
    return store.conn.execute("SELECT 1 FROM metric_packs WHERE job_id=? LIMIT 1", (job_id,)).fetchone() is not None


def count_metrics(store, job_id: str, name: Optional[str] = None) -> int:
    """How many points a job has (of one metric, when named)."""
    sql, args = "SELECT COALESCE(SUM(n), 0) FROM metric_packs WHERE job_id=?", [job_id]
    if name:
        sql += " AND name=?"
        args.append(name)
    return _cur(store.conn).execute(sql, args).fetchone()[0]


def latest_metrics(store, job_id: str) -> dict:
    """{name: latest value} for a job."""
    return latest_metrics_many(store, [job_id])[job_id]


def metric_rows_after(store, job_id: str, after_id: int, upto_id: Optional[int] = None, limit: int = 1000) -> list[dict]:
    """A job's metric points with ids above `after_id` (and at most `upto_id`), in id order, `limit`
    at most: dicts of id, name, value, step, epoch, at. Reads its packs in the order of their first
    ids and stops once no further pack can hold one of the first `limit`."""
    hi = 2**63 - 1 if upto_id is None else upto_id
    cur = _cur(store.conn)
    rows = cur.execute(f"SELECT {_COLS} FROM metric_packs WHERE job_id=? AND last_id>? AND first_id<=? ORDER BY first_id",
                       (job_id, after_id, hi))
    out: list = []
    for r in rows:
        if len(out) >= limit:
            out.sort()
            del out[limit:]
            if out[-1][0] < r[3]:
                break
        ids, vals, steps, epochs, ats = _decode(r)
        out += [p for p in zip(ids, [r[2]] * len(ids), vals, steps, epochs, ats) if after_id < p[0] <= hi]
    out.sort()
    return _dicts(out[:limit], ("id", "name", "value", "step", "epoch", "at"))


def metric_count_upto(store, job_id: str, upto_id: int) -> int:
    """How many of a job's points have ids up to `upto_id` (how far its export is)."""
    cur = _cur(store.conn)
    whole = cur.execute("SELECT COALESCE(SUM(n), 0) FROM metric_packs WHERE job_id=? AND last_id<=?", (job_id, upto_id)).fetchone()[0]
    cut = cur.execute("SELECT ids FROM metric_packs WHERE job_id=? AND last_id>? AND first_id<=?", (job_id, upto_id, upto_id)).fetchall()
    return whole + sum(sum(1 for i in marshal.loads(b) if i <= upto_id) for (b,) in cut)


def compact_metrics(store, job_id: str, bucket: int, now: float, apply: bool) -> Optional[dict]:
    """Compact one ended job's points (runner/compaction.py) in one transaction, and mark the job
    so; with apply False only count. Returns {"points", "kept", "bytes"} (bytes: what the removed
    points held in their packs, in proportion), or None when the job is no longer one to compact."""
    from ..compaction import DELETE_CHUNK, gaps

    def unmarked(c) -> bool:
        row = c.execute("SELECT state, metrics_compacted_at FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is not None and row["state"] in ENDED and row["metrics_compacted_at"] is None

    # read and decided under a read snapshot: the write lock is held only to write (an ended
    # job's points no longer change)
    with store.snapshot() as c:
        if not unmarked(c):
            return None
        cur = _cur(c)
        pts = _flat(_packs(cur, job_id))
        held = cur.execute("SELECT COALESCE(SUM(length(ids) + length(vals) + length(steps) + length(epochs) + length(ats) "
                           "+ length(job_id) + length(name) + 40), 0) FROM metric_packs WHERE job_id=?", (job_id,)).fetchone()[0]
    pts.sort(key=lambda p: (p[1], p[0]))
    kept, ranges = gaps([p[:5] for p in pts], bucket)
    gone = len(pts) - kept
    est = held * gone // max(1, len(pts))
    if apply:
        # A metric bucketed by steps loses its ranges a chunk a transaction (the packs they touch
        # written again: the daemon's own writes wait a fraction of a second, not the seconds a
        # million-point job takes): what a crash between chunks leaves gives the same ranges again
        # (each bucket keeps its extremes, which are what is left of it). A metric bucketed by its
        # points' order (no steps) would not, so its ranges go in the last transaction, with the job's mark.
        stepped = {name for name, grp in groupby(pts, key=lambda p: p[1]) if all(p[3] is not None for p in grp)}
        del pts
        early = [r for r in ranges if r[0] in stepped]
        last = [r for r in ranges if r[0] not in stepped]
        while len(early) > DELETE_CHUNK:
            chunk, early = early[:DELETE_CHUNK], early[DELETE_CHUNK:]
            with store.transaction() as c:
                if not unmarked(c):  # compacted meanwhile by another pass (runner gc beside the daemon's)
                    return None
                _drop_ranges(_cur(c), job_id, chunk)
        with store.transaction() as c:
            if not unmarked(c):
                return None
            _drop_ranges(_cur(c), job_id, early + last)
            c.execute("UPDATE jobs SET metrics_compacted_at=?, metrics_bucket=?, metrics_points_before=? WHERE id=?",
                      (now, bucket, kept + gone, job_id))
            _rebuild_chunks(c, job_id)
    return {"points": gone, "kept": kept, "bytes": est}


def first_epoch_point_at(store, job_id: str):
    """When the job's first point that names an epoch was stored (its first epoch's metrics), or None."""
    return _cur(store.conn).execute("SELECT MIN(epoch_at) FROM metric_packs WHERE job_id=?", (job_id,)).fetchone()[0]


def metric_points(store, job_id: Optional[str] = None) -> list[dict]:
    """Every stored point (of one job, when named) as the row of a point table read: dicts of id,
    job_id, name, value, step, epoch, at, in id order (for tests and inspection; a page reads less)."""
    cur = _cur(store.conn)
    jobs = [job_id] if job_id else [r[0] for r in cur.execute("SELECT DISTINCT job_id FROM metric_packs")]
    pts = sorted((p[0], j, *p[1:]) for j in jobs for p in _flat(_packs(cur, j)))
    return [dict(zip(("id", "job_id", "name", "value", "step", "epoch", "at"), p)) for p in pts]
