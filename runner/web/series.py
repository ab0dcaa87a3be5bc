"""A metric's points for a chart: read in one pass, downsampled on the server to keep the shape.

A series longer than `points` is cut into points/2 buckets of equal count; each bucket gives its
lowest and its highest point in the order they came (min/max decimation: spikes and dips survive,
which an average would hide). The first and last points are always kept.
"""

from __future__ import annotations

MAX_POINTS = 4000


def read(store, job_id: str, name: str) -> tuple[list, list, list]:
    """(steps, epochs, values) of one metric, in the order they were recorded (plain tuples: a
    100,000-point series costs what SQLite costs, not a dict per row)."""
    cur = store.conn.cursor()
    cur.row_factory = None
    rows = cur.execute("SELECT step, epoch, value FROM metrics WHERE job_id=? AND name=? ORDER BY id", (job_id, name)).fetchall()
    if not rows:
        return [], [], []
    steps, epochs, values = zip(*rows)
    return list(steps), list(epochs), list(values)


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


def series(store, job_id: str, name: str, points: int = MAX_POINTS) -> dict:
    """The JSON a chart reads: x, y (downsampled when long), the axis and the stored count."""
    steps, epochs, values = read(store, job_id, name)
    axis, xs = x_axis(steps, epochs)
    values = [None if v is None or v != v else v for v in values]  # NaN -> null (JSON has no NaN)
    x, y = downsample(xs, values, points)
    return {"job": job_id, "name": name, "axis": axis, "total": len(values), "points": len(x), "downsampled": len(x) < len(values),
            "x": x, "y": y}
