"""A metric's points summed up in chunks, kept beside them, so that a chart reads a few rows, not every point.

Each (job, metric) series is cut, in the order its points were recorded, into chunks of CHUNK points
(the last one open: it grows until full). A chunk row holds what a chart of min/max decimation needs
of its points (runner/web/series.py): how many, their first and last point ids, the first and last
step and epoch, the lowest and highest epoch, whether every step is there and increases (the step
axis) and every epoch is there (the epoch axis), its first and last values, and its lowest and
highest finite value each with its position in the series, step and epoch. Min and max of a bucket
of whole chunks are the min and max of its points: a chart reduced from chunks keeps every spike and
dip exactly where it was, and never drops a point the store holds (the points stay; the chunks are
derived from them, written in the same transaction as the points by store._insert_points).

Pure functions over tuples here; the SQL is in runner/store.py (writes) and runner/queries.py (reads).
"""

from __future__ import annotations

CHUNK = 32
"""Points a chunk sums up: a 100,000-point series is 3,125 rows (a chart's reads fall ~30x)."""

COLUMNS = ("k", "n", "first_id", "last_id", "step_first", "step_last", "steps_ok", "epoch_first", "epoch_last", "epoch_min",
           "epoch_max", "epochs_ok", "first_v", "last_v", "min_v", "min_i", "min_step", "min_epoch", "max_v", "max_i", "max_step",
           "max_epoch")
"""A chunk row's columns after (job_id, name), in the order summarize returns them."""

(K, N, FIRST_ID, LAST_ID, STEP_FIRST, STEP_LAST, STEPS_OK, EPOCH_FIRST, EPOCH_LAST, EPOCH_MIN, EPOCH_MAX, EPOCHS_OK, FIRST_V, LAST_V,
 MIN_V, MIN_I, MIN_STEP, MIN_EPOCH, MAX_V, MAX_I, MAX_STEP, MAX_EPOCH) = range(len(COLUMNS))

INF = float("inf")


def _finite(v) -> bool:
    return v is not None and -INF < v < INF  # False for NaN too


def summarize(k: int, start: int, pts: list) -> tuple:
    """Chunk k of a series from its points pts: (id, value, step, epoch) in order; `start`: the
    series position of pts[0]."""
    ids, vals, steps, epochs = zip(*pts)
    # (sorted(set()), min, max and index() run in C: a chunk costs a few calls, not a loop in Python)
    steps_ok = None not in steps and list(steps) == sorted(set(steps))
    epochs_ok = None not in epochs
    known = epochs if epochs_ok else [e for e in epochs if e is not None]
    if None not in vals and -INF < min(vals) and max(vals) < INF:  # the usual case
        i_min, i_max = vals.index(min(vals)), vals.index(max(vals))
    else:
        fin = [i for i, v in enumerate(vals) if _finite(v)]
        i_min = min(fin, key=vals.__getitem__) if fin else None
        i_max = max(fin, key=vals.__getitem__) if fin else None

    def ext(i):
        return (None, None, None, None) if i is None else (vals[i], start + i, steps[i], epochs[i])

    return (k, len(pts), ids[0], ids[-1], steps[0], steps[-1], int(steps_ok), epochs[0], epochs[-1],
            min(known) if known else None, max(known) if known else None, int(epochs_ok), vals[0], vals[-1], *ext(i_min), *ext(i_max))


def _less(a, b) -> bool:
    return a is not None and a < b


def merge(a: tuple, b: tuple) -> tuple:
    """One chunk of two consecutive ones (a then b, of one series)."""
    steps_ok = a[STEPS_OK] and b[STEPS_OK] and a[STEP_LAST] < b[STEP_FIRST]
    lo = [e for e in (a[EPOCH_MIN], b[EPOCH_MIN]) if e is not None]
    hi = [e for e in (a[EPOCH_MAX], b[EPOCH_MAX]) if e is not None]
    mn = a[MIN_V:MIN_EPOCH + 1] if b[MIN_V] is None or _less(a[MIN_V], b[MIN_V]) or a[MIN_V] == b[MIN_V] else b[MIN_V:MIN_EPOCH + 1]
    mx = a[MAX_V:MAX_EPOCH + 1] if b[MAX_V] is None or _less(b[MAX_V], a[MAX_V]) or a[MAX_V] == b[MAX_V] else b[MAX_V:MAX_EPOCH + 1]
    return (a[K], a[N] + b[N], a[FIRST_ID], b[LAST_ID], a[STEP_FIRST], b[STEP_LAST], int(bool(steps_ok)), a[EPOCH_FIRST], b[EPOCH_LAST],
            min(lo) if lo else None, max(hi) if hi else None, int(bool(a[EPOCHS_OK] and b[EPOCHS_OK])), a[FIRST_V], b[LAST_V], *mn, *mx)


def extend(last: tuple | None, pts: list) -> list[tuple]:
    """The chunk rows to write when pts (id, value, step, epoch), in order, are added to a series
    whose last chunk is `last` (None: a new series): the open chunk filled up, then new ones."""
    out = []
    k, start = 0, 0
    if last is not None:
        k, start = last[K], last[K] * CHUNK + last[N]
        if last[N] < CHUNK:
            room = CHUNK - last[N]
            out.append(merge(last, summarize(k, start, pts[:room])))
            pts, start = pts[room:], start + room
        k += 1
    for i in range(0, len(pts), CHUNK):
        out.append(summarize(k, start + i, pts[i:i + CHUNK]))
        k += 1
    return out


def build(pts: list) -> list[tuple]:
    """Every chunk of a series from all its points (id, value, step, epoch), in order."""
    return extend(None, pts)
