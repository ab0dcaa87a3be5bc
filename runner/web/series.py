"""A metric's points for a chart: read in one pass, downsampled on the server to keep the shape.

A series longer than `points` is cut into points/2 buckets of equal count; each bucket gives its
lowest and its highest point in the order they came (min/max decimation: spikes and dips survive,
which an average would hide). The first and last points are always kept.

A series longer than RAW_MAX is reduced from its chunks (runner/metric_chunks.py: each CHUNK
points' min and max, kept with the points), buckets of whole chunks: the same min and max a read
of every point would give, from CHUNK times fewer rows. A range (lo..hi on the series' x axis: a zoomed
chart) gives that range's points, every one where they are few enough, else reduced again; the
store keeps every point (GET /jobs/{id}/metrics and its CSV give them all).
"""

from __future__ import annotations

from .. import queries
from ..metric_chunks import CHUNK

MAX_POINTS = 4000


def x_axis(steps: list, epochs: list) -> tuple[str, list]:
    """Steps where every point has one and they increase, else epochs where every point has one,
    else the point's index (a per-epoch metric whose step counts within the epoch is by epoch)."""
    # (in C: `None in`, sorted() of a sorted list and set() cost a pass each, not a Python loop)
    if steps and None not in steps and steps == sorted(steps) and len(set(steps)) == len(steps):
        return "step", steps
    if epochs and None not in epochs:
        return "epoch", epochs
    return "index", list(range(len(steps)))


def downsample(xs: list, ys: list, points: int = MAX_POINTS) -> tuple[list, list]:
    """At most `points` (x, y) pairs with the series' shape (min and max of each bucket); ys holds
    numbers and None (NaN given as None: both callers do, as SQLite does)."""
    n = len(xs)
    if n <= points or points < 4:
        return list(xs), list(ys)
    buckets = (points - 2) // 2
    out_x, out_y = [xs[0]], [ys[0]]
    size = (n - 2) / buckets
    for b in range(buckets):
        lo, hi = 1 + int(b * size), 1 + int((b + 1) * size)
        if hi <= lo:
            continue
        seg = ys[lo:hi]
        if None in seg:  # a gap (null: callers pass NaN as null) in this bucket: the slow way
            finite = [i for i in range(lo, hi) if ys[i] is not None and ys[i] == ys[i]]
            if not finite:
                continue
            i_min = min(finite, key=ys.__getitem__)
            i_max = max(finite, key=ys.__getitem__)
        else:  # min, max and index() run in C
            i_min, i_max = lo + seg.index(min(seg)), lo + seg.index(max(seg))
        for i in sorted({i_min, i_max}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    out_x.append(xs[-1])
    out_y.append(ys[-1])
    return out_x, out_y


def series(store, job_id: str, name: str, points: int = MAX_POINTS, lo: float | None = None, hi: float | None = None) -> dict:
    """The JSON a chart reads: x, y (downsampled when long; only lo..hi of the x axis when given),
    the axis and the stored count (of the whole series)."""
    with store.snapshot() as c:
        cur = c.cursor()
        cur.row_factory = None
        got = reduced(cur, job_id, name, points, lo, hi) or {"axis": "index", "x": [], "y": [], "total": 0}
    out = {"job": job_id, "name": name, "axis": got["axis"], "total": got["total"], "points": len(got["x"]),
           "downsampled": len(got["x"]) < got["total"], "x": got["x"], "y": got["y"]}
    if lo is not None or hi is not None:
        out["range"] = [lo, hi]
    return out


RAW_MAX = 16384
"""A series of at most this many points is read whole and downsampled (the buckets above); a longer
one is reduced from its chunks (a zoomed range of one reads its points when few). 512 chunks at
least: the buckets of a chart of 1,000 points (499) are each whole chunks of that series' points; a
chart of more points reads whole up to CHUNK points a bucket (2,000 points: 31,968; 4,000: 63,968),
so that it never gets fewer points than asked for want of chunks, up to WHOLE_MAX."""

WHOLE_MAX = 65536
"""The most points a chart reads whole (65,536 drawn as 20,000: 37 ms here): GET /jobs/{id}/series takes up to 20,000 points,
whose CHUNK points a bucket would be 320,000 points read for one request (a hostile reader's
repeated asks); past it a chart of that many points draws fewer, from whole chunks."""

_INF = float("inf")


def reduced(cur, job_id: str, name: str, points: int, lo: float | None = None, hi: float | None = None) -> dict | None:
    """{"axis", "x", "y", "total"} of one metric for a chart of at most `points` points (lo..hi of
    its x axis only, when given), or None when the job has no such metric. `cur`: a cursor of a
    read snapshot (the chunks and the points as of one moment)."""
    total, newest = queries.series_extent(cur, job_id, name)
    if not total:
        return None
    ranged = lo is not None or hi is not None
    # at most this many points are read whole (fewer chunks than buckets would draw fewer points than asked), WHOLE_MAX at most
    whole = min(WHOLE_MAX, max(RAW_MAX, CHUNK * ((points - 2) // 2)))
    if total > whole and not ranged:
        got = _whole_series(cur, job_id, name, points, total, newest)
        if got is not None:
            return got
    lo_x, hi_x = (-_INF if lo is None else lo), (_INF if hi is None else hi)
    chunks = queries.series_chunks(cur, job_id, name) if ranged else None
    if not chunks or not _whole(chunks, total, newest):
        rows = queries.series_points(cur, job_id, name)
        axis, xs = x_axis([r[2] for r in rows], [r[3] for r in rows])
        ys = [r[1] for r in rows]
        if ranged:
            keep = [i for i, x in enumerate(xs) if lo_x <= x <= hi_x]
            xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        x, y = downsample(xs, ys, points)
        return {"axis": axis, "x": x, "y": y, "total": total}
    axis = _axis(chunks)
    units, spans = [], []  # units: (n, first, last, min, max), a point (position, x, y) each; spans: the chunks' ids
    for ch in chunks if ranged else ():
        a, b = _bounds(ch, axis)
        if b < lo_x or a > hi_x:
            continue
        spans.append((ch[0], ch[2], ch[3]))
        if lo_x <= a and b <= hi_x:
            units.append(_unit(ch, axis))
        else:  # a chunk across an end of the range: its points in the range
            units += [(1, p, p, *(((p,) if p[2] is not None else (None,)) * 2)) for p in _points(cur, job_id, name, ch[0], ch[2], ch[3], axis)
                      if lo_x <= p[1] <= hi_x]
    if not ranged:  # the whole series
        spans = [(chunks[0][0], chunks[0][2], chunks[-1][3])]
        units = _units(chunks, axis)
    n = sum(u[0] for u in units)
    if not n:
        return {"axis": axis, "x": [], "y": [], "total": total}
    if n <= max(points, whole):  # few enough to read: every point of the range (downsampled past `points`)
        pts = [p for p in _points(cur, job_id, name, spans[0][0], spans[0][1], spans[-1][2], axis) if lo_x <= p[1] <= hi_x]
        x, y = downsample([p[1] for p in pts], [p[2] for p in pts], points)
        return {"axis": axis, "x": x, "y": y, "total": total}
    pts = _decimate(units, n, points)
    return {"axis": axis, "x": [p[1] for p in pts], "y": [None if p[2] is None or not -_INF < p[2] < _INF else p[2] for p in pts],
            "total": total}


def _whole_series(cur, job_id: str, name: str, points: int, total: int, newest: int) -> dict | None:
    """A long series' chart from its chunks, grouped into (points - 2) // 2 buckets of whole chunks
    by SQLite (a few hundred rows come back, not a row a chunk): the first and last point, and each
    bucket's lowest and highest point in order. None when its chunks do not sum up its points."""
    stats = queries.series_chunk_stats(cur, job_id, name, CHUNK)
    if stats is None:
        return None
    m, n, max_k, last_id, short, short_k, steps_ok, epochs_ok = stats
    if not m or n != total or last_id != newest or max_k != m - 1 or short > 1 or (short == 1 and short_k != max_k):
        return None
    axis = "step" if steps_ok else "epoch" if epochs_ok else "index"

    def x_of(step, epoch, i):
        return step if axis == "step" else epoch if axis == "epoch" else i

    lows, highs, first, last = queries.series_buckets(cur, job_id, name, max(1, (points - 2) // 2), m, CHUNK)
    by: dict = {}
    for b, v, i, step, epoch in lows + highs:
        by.setdefault(b, {})[i] = (i, x_of(step, epoch, i), v)
    ends = {0, last[3]}
    pts = [(0, x_of(first[1], first[2], 0), first[0])]
    for b in sorted(by):
        pts += [p for i, p in sorted(by[b].items()) if i not in ends]
    if last[3] != 0:
        pts.append((last[3], x_of(last[1], last[2], last[3]), last[0]))
    return {"axis": axis, "x": [p[1] for p in pts], "y": [None if p[2] is None or not -_INF < p[2] < _INF else p[2] for p in pts],
            "total": total}


def _whole(chunks: list, total: int, newest: int) -> bool:
    """Whether a series' chunks sum up exactly its points (else it is read point by point: a store
    of before the chunks, points deleted by a resumed job's redo, a write that did not make them)."""
    return (sum(c[1] for c in chunks) == total and chunks[-1][3] == newest and chunks[-1][0] == len(chunks) - 1
            and all(c[1] == CHUNK for c in chunks[:-1]))


def _axis(chunks: list) -> str:
    """x_axis of the whole series from its chunks: steps when every point has one and they
    increase, else epochs when every point has one, else the point's index."""
    if all(c[6] for c in chunks) and all(a[5] < b[4] for a, b in zip(chunks, chunks[1:])):
        return "step"
    return "epoch" if all(c[11] for c in chunks) else "index"


def _bounds(ch: tuple, axis: str) -> tuple:
    """The lowest and highest x of a chunk's points."""
    if axis == "step":
        return ch[4], ch[5]
    if axis == "epoch":
        return ch[9], ch[10]
    return ch[0] * CHUNK, ch[0] * CHUNK + ch[1] - 1


def _unit(ch: tuple, axis: str) -> tuple:
    """A whole chunk: (n, first, last, min, max), each point (position, x, y); min and max None when
    it has no finite value."""
    start = ch[0] * CHUNK
    col = {"step": 0, "epoch": 1}.get(axis)

    def x(i, step, epoch):
        return i if col is None else (step, epoch)[col]

    first = (start, x(start, ch[4], ch[7]), ch[12])
    last = (start + ch[1] - 1, x(start + ch[1] - 1, ch[5], ch[8]), ch[13])
    mn = None if ch[14] is None else (ch[15], x(ch[15], ch[16], ch[17]), ch[14])
    mx = None if ch[18] is None else (ch[19], x(ch[19], ch[20], ch[21]), ch[18])
    return ch[1], first, last, mn, mx


def _units(chunks: list, axis: str) -> list[tuple]:
    """_unit of each chunk (the loop inlined: a 100,000-point series has 3,125 chunks)."""
    col = {"step": 0, "epoch": 1}.get(axis)
    out = []
    for (k, n, _, _, s0, s1, _, e0, e1, _, _, _, v0, v1, mn_v, mn_i, mn_s, mn_e, mx_v, mx_i, mx_s, mx_e) in chunks:
        i0, i1 = k * CHUNK, k * CHUNK + n - 1
        if col is None:
            x0, x1, mn_x, mx_x = i0, i1, mn_i, mx_i
        elif col == 0:
            x0, x1, mn_x, mx_x = s0, s1, mn_s, mx_s
        else:
            x0, x1, mn_x, mx_x = e0, e1, mn_e, mx_e
        out.append((n, (i0, x0, v0), (i1, x1, v1), None if mn_v is None else (mn_i, mn_x, mn_v), None if mx_v is None else (mx_i, mx_x, mx_v)))
    return out


def _points(cur, job_id: str, name: str, k: int, lo_id: int, hi_id: int, axis: str) -> list[tuple]:
    """The points (position, x, y) of a series from chunk k's first id to hi_id."""
    rows = queries.series_points(cur, job_id, name, lo_id, hi_id)
    if axis == "step":
        return [(k * CHUNK + j, r[2], r[1]) for j, r in enumerate(rows)]
    if axis == "epoch":
        return [(k * CHUNK + j, r[3], r[1]) for j, r in enumerate(rows)]
    return [(k * CHUNK + j, k * CHUNK + j, r[1]) for j, r in enumerate(rows)]


def _decimate(units: list, n: int, points: int) -> list[tuple]:
    """downsample over units (whole chunks or single points) of n points in all: the first and the
    last point, and each bucket's lowest and highest finite point in order; a bucket is whole
    units, ~n / ((points - 2) // 2) points, so that min and max are those of its points."""
    buckets = max(1, (points - 2) // 2)
    size = n / buckets
    first, last = units[0][1], units[-1][2]
    out, cum, b_now, lo, hi = [first], 0, None, None, None

    def flush():
        for p in sorted({lo, hi} - {None}):
            if p[0] not in (first[0], last[0]):
                out.append(p)

    for u in units:
        b = min(buckets - 1, int(cum / size))
        cum += u[0]
        if b != b_now:
            flush()
            b_now, lo, hi = b, None, None
        if u[3] is not None and (lo is None or u[3][2] < lo[2]):
            lo = u[3]
        if u[4] is not None and (hi is None or u[4][2] > hi[2]):
            hi = u[4]
    flush()
    if last[0] != first[0]:
        out.append(last)
    return out
