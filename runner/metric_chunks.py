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

Pure functions over tuples here; the SQL is in runner/store/metrics.py (writes) and runner/store/charts.py (reads).
"""

from __future__ import annotations

from itertools import chain, repeat
from operator import add

CHUNK = 32
"""Points a chunk sums up: a 100,000-point series is 3,125 rows, which a chart groups in SQL into its
buckets (a bucket is whole chunks: 32 points at the finest; a series of at most web/series.RAW_MAX
points is read whole). 16 until schema migration _m_chunks32: a chunk row is written with each batch
of points, and half as many rows took one job's log into the store at 1.2 M lines/s, not 0.95
(docs/bench/metrics-ingest.md)."""

COLUMNS = ("k", "n", "first_id", "last_id", "step_first", "step_last", "steps_ok", "epoch_first", "epoch_last", "epoch_min",
           "epoch_max", "epochs_ok", "first_v", "last_v", "min_v", "min_i", "min_step", "min_epoch", "max_v", "max_i", "max_step",
           "max_epoch")
"""A chunk row's columns after (job_id, name), in the order summarize returns them."""

(K, N, FIRST_ID, LAST_ID, STEP_FIRST, STEP_LAST, STEPS_OK, EPOCH_FIRST, EPOCH_LAST, EPOCH_MIN, EPOCH_MAX, EPOCHS_OK, FIRST_V, LAST_V,
 MIN_V, MIN_I, MIN_STEP, MIN_EPOCH, MAX_V, MAX_I, MAX_STEP, MAX_EPOCH) = range(len(COLUMNS))

INF = float("inf")


def _finite(v) -> bool:
    return v is not None and -INF < v < INF  # False for NaN too


def summarize(k: int, start: int, ids, vals, steps, epochs, prev_step=None) -> tuple:
    """Chunk k of a series from its points' columns (ids, values, steps, epochs: sequences, in
    order); `start`: the series position of the first; `prev_step`: the last step of chunk k - 1
    (steps_ok says that every step is there and they increase from it, so that the series' axis
    is steps exactly when every chunk's steps_ok is 1)."""
    # (sorted(set()), min, max and index() run in C: a chunk costs a few calls, not a loop in Python)
    steps_ok = (None not in steps and list(steps) == sorted(set(steps))
                and (k == 0 or (prev_step is not None and prev_step < steps[0])))
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

    return (k, len(vals), ids[0], ids[-1], steps[0], steps[-1], int(steps_ok), epochs[0], epochs[-1],
            min(known) if known else None, max(known) if known else None, int(epochs_ok), vals[0], vals[-1], *ext(i_min), *ext(i_max))


def merge(a: tuple, b: tuple) -> tuple:
    """One chunk of two consecutive ones (a then b, of one series)."""
    steps_ok = a[STEPS_OK] and b[STEPS_OK] and a[STEP_LAST] < b[STEP_FIRST]
    lo = [e for e in (a[EPOCH_MIN], b[EPOCH_MIN]) if e is not None]
    hi = [e for e in (a[EPOCH_MAX], b[EPOCH_MAX]) if e is not None]
    # a's extreme where b has none or a's is as low (high): the first of equals, as summarize keeps
    mn = a[MIN_V:MIN_EPOCH + 1] if b[MIN_V] is None or (a[MIN_V] is not None and a[MIN_V] <= b[MIN_V]) else b[MIN_V:MIN_EPOCH + 1]
    mx = a[MAX_V:MAX_EPOCH + 1] if b[MAX_V] is None or (a[MAX_V] is not None and a[MAX_V] >= b[MAX_V]) else b[MAX_V:MAX_EPOCH + 1]
    return (a[K], a[N] + b[N], a[FIRST_ID], b[LAST_ID], a[STEP_FIRST], b[STEP_LAST], int(bool(steps_ok)), a[EPOCH_FIRST], b[EPOCH_LAST],
            min(lo) if lo else None, max(hi) if hi else None, int(bool(a[EPOCHS_OK] and b[EPOCHS_OK])), a[FIRST_V], b[LAST_V], *mn, *mx)


def extend(last: tuple | None, ids, vals, steps, epochs) -> list[tuple]:
    """The chunk rows to write when points (their columns: ids, values, steps, epochs, in order)
    are added to a series whose last chunk is `last` (None: a new series): the open chunk filled
    up, then new ones."""
    out = []
    k, start, i = 0, 0, 0
    if last is not None:
        k, start = last[K], last[K] * CHUNK + last[N]
        if last[N] < CHUNK:
            i = CHUNK - last[N]
            last = merge(last, summarize(k, start, ids[:i], vals[:i], steps[:i], epochs[:i], last[STEP_LAST]))
            out.append(last)
        k += 1
    prev = None if last is None else last[STEP_LAST]
    if len(vals) - i >= 4 * CHUNK:
        fast = _summarize_clean(k, start + i, ids[i:], vals[i:], steps[i:], epochs[i:], prev)
        if fast is not None:
            return out + fast
    for j in range(i, len(vals), CHUNK):
        out.append(summarize(k, start + j, ids[j:j + CHUNK], vals[j:j + CHUNK], steps[j:j + CHUNK], epochs[j:j + CHUNK], prev))
        prev = out[-1][STEP_LAST]
        k += 1
    return out


def _summarize_clean(k: int, start: int, ids, vals, steps, epochs, prev_step) -> list[tuple] | None:
    """What summarize gives for consecutive chunks k, k + 1, ... of these points, computed a column
    at a time (min, max, index over every chunk's slice in C: a log's metrics arrive thousands at a
    time, and a call of summarize a chunk was half the store's write), or None unless the points
    are the usual kind: every value finite, every epoch given (or none), every step given and
    increasing from `prev_step` (k > 0) on (or none). tests/test_chart_chunks.py holds it to summarize."""
    n = len(vals)
    if None in vals or not (-INF < min(vals) and max(vals) < INF):
        return None
    no_epochs = epochs.count(None) == n  # a log that prints no epoch: every chunk's epochs are None
    no_steps = steps.count(None) == n  # nor a step
    if not no_epochs and None in epochs or not no_steps and None in steps:
        return None
    steps = list(steps)
    if not no_steps and (steps != sorted(set(steps)) or (k > 0 and (prev_step is None or not prev_step < steps[0]))):
        return None
    ok_s, ok_e = int(not no_steps), int(not no_epochs)
    # every column of every chunk row at once, by slices and maps in C, the rows made by zip: a loop
    # in Python a chunk was ~5 us a row, half the store's write of a log's points
    cuts = range(0, n, CHUNK)
    m = len(cuts)
    lasts = range(CHUNK - 1, n, CHUNK)
    lasts = list(lasts) + [n - 1] if len(lasts) < m else lasts
    vs = [vals[j:j + CHUNK] for j in cuts]
    lo, hi = list(map(min, vs)), list(map(max, vs))
    at_lo = list(map(add, cuts, map(_index, vs, lo)))  # the first lowest (highest) of each chunk, as summarize keeps
    at_hi = list(map(add, cuts, map(_index, vs, hi)))
    if no_epochs:
        e_lo = e_hi = repeat(None)
    else:
        es = [epochs[j:j + CHUNK] for j in cuts]
        e_lo, e_hi = map(min, es), map(max, es)
    sizes = repeat(CHUNK, m - 1)
    step_at, epoch_at = steps.__getitem__, epochs.__getitem__
    return list(zip(range(k, k + m), chain(sizes, (n - (m - 1) * CHUNK,)), ids[0::CHUNK], map(ids.__getitem__, lasts), steps[0::CHUNK],
                    map(step_at, lasts), repeat(ok_s), epochs[0::CHUNK], map(epoch_at, lasts), e_lo, e_hi, repeat(ok_e), vals[0::CHUNK],
                    map(vals.__getitem__, lasts), lo, map(add, at_lo, repeat(start)), map(step_at, at_lo), map(epoch_at, at_lo), hi,
                    map(add, at_hi, repeat(start)), map(step_at, at_hi), map(epoch_at, at_hi)))


def _index(seq, x) -> int:
    return seq.index(x)


def build(pts: list) -> list[tuple]:
    """Every chunk of a series from all its points (id, value, step, epoch), in order."""
    return extend(None, *zip(*pts)) if pts else []


def by_name(points: list, first_id: int) -> dict:
    """{name: (ids, values, steps, epochs)} of points (name, value, step, epoch) whose ids are
    first_id, first_id + 1, ... in order (by_columns of their columns)."""
    return by_columns(*zip(*points), first_id)


def by_columns(names, vals, steps, epochs, first_id: int) -> dict:
    """{name: (ids, values, steps, epochs)} of points given as columns, whose ids are first_id,
    first_id + 1, ... in order. A batch of a log's lines usually names its metrics in the same
    order on each line: then each name's columns are slices (in C), else one loop."""
    n = len(names)
    ids = range(first_id, first_id + n)
    p = names.index(names[0], 1) if names.count(names[0]) > 1 else n
    if n % p == 0 and len(set(names[:p])) == p and all(names[j::p].count(names[j]) == n // p for j in range(p)):
        return {names[j]: (ids[j::p], vals[j::p], steps[j::p], epochs[j::p]) for j in range(p)}
    out: dict = {}
    for i, name in enumerate(names):
        out.setdefault(name, []).append(i)
    return {name: tuple([col[i] for i in idx] for col in (ids, vals, steps, epochs)) for name, idx in out.items()}
