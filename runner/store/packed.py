"""A parse helper's batch stored the fast way: its fixed-width columns (runner/logbatches.py) held in C
(runner/_packs_c.c, built by setup.py where a compiler was found), each metric's packs and chart
chunks made there: the same rows as store/metrics.py makes of the same points in Python, at a
fraction of the cost (docs/bench/metrics-ingest.md). tests/test_packs.py holds the two to each other."""

from __future__ import annotations

import marshal

from .metrics import _COLS, _PUT_CHUNK, _PUT_PACK, MERGE_BELOW, PACK_POINTS, Columns, _append, _cur, _insert_points, _next_id, _real

try:
    from .. import _packs_c
except ImportError:  # (then no batch is Packed: logbatches.decode keeps its columns as lists)
    _packs_c = None


class Packed:
    """Points as a helper's batch of fixed-width columns (runner/logbatches.py), held in C
    (runner/_packs_c.c: Batch, which checked each point's key index): the batch's metric names
    (`keys`, each once) and the batch; `raw`: its columns' bytes (k, v, s, e; None: all null),
    from which columns() makes Columns where a path needs them as lists."""

    __slots__ = ("keys", "batch", "raw")

    def __init__(self, keys: list, raw: dict):
        self.keys, self.raw = keys, raw
        self.batch = _packs_c.Batch(len(keys), raw["k"], raw["v"], raw["s"], raw["e"])

    def __len__(self):
        return self.batch.n

    def present(self) -> set:
        """The names that have points in the batch."""
        return {name for name, n in zip(self.keys, self.batch.counts()) if n}

    def insert_batch(self, c, job_id: str, now: float):
        """store.metrics._insert_points of this batch: insert_packed."""
        insert_packed(c, job_id, self, now)

    def columns(self) -> Columns:
        k, v, s, e = raw_lists(self.raw, self.batch.n)
        return Columns(list(map(self.keys.__getitem__, k)), v, s, e)


def raw_lists(raw: dict, n: int) -> tuple:
    """(k, v, s, e) as lists of a batch's fixed-width columns' bytes (uint32, double, int64, int64; None: n nulls)."""
    from array import array

    return tuple(array(code, raw[col]).tolist() if raw[col] is not None else [None] * n
                 for col, code in (("k", "I"), ("v", "d"), ("s", "q"), ("e", "q")))


def insert_packed(c, job_id: str, pk: Packed, now: float):
    """_insert_points of a Packed batch: each metric's packs and chart chunks made in C
    (runner/_packs_c.c), the same rows as the Python path makes; a metric whose newest pack takes
    the points in (MERGE_BELOW), or whose chunks the C path declines, through the Python path."""
    from ..metric_chunks import CHUNK, K, N, STEP_LAST, extend, merge, summarize

    cur, b = _cur(c), pk.batch
    first = _next_id(cur)
    if first + b.n >= 2**62:  # (ids that far up: the Python path's ints, not C's int64 sums)
        return _insert_points(c, job_id, pk.columns(), now)
    packs, chunks = [], []
    epoch_at = None if pk.raw["e"] is None else now
    for j, (name, cnt) in enumerate(zip(pk.keys, b.counts())):
        if not cnt:
            continue
        last = cur.execute(f"SELECT {_COLS} FROM metric_packs WHERE job_id=? AND name=? ORDER BY last_id DESC LIMIT 1",
                           (job_id, name)).fetchone()
        if last is not None and last[5] < MERGE_BELOW and last[5] + cnt <= PACK_POINTS:  # into its newest pack
            ids, v, s, e = b.lists(j, 0, cnt, first)
            _append(cur, job_id, name, ids, _real(v), s, e, now)
        else:
            for a in range(0, cnt, PACK_POINTS):
                lo, hi, *blobs, last_v = b.pack(j, a, a + PACK_POINTS, first)
                n = min(cnt, a + PACK_POINTS) - a
                packs.append((job_id, name, lo, hi, n, *blobs, marshal.dumps([(now, n)]), last_v, epoch_at))
        top = cur.execute("SELECT * FROM metric_chunks WHERE job_id=? AND name=? ORDER BY k DESC LIMIT 1", (job_id, name)).fetchone()
        top = None if top is None else top[2:]
        rows, i, k, start, prev = [], 0, 0, 0, None
        if top is not None:
            k, start, prev = top[K], top[K] * CHUNK + top[N], top[STEP_LAST]
            if top[N] < CHUNK:  # the open chunk filled up first, as extend does
                i = min(CHUNK - top[N], cnt)
                ids, v, s, e = b.lists(j, 0, i, first)
                got = merge(top, summarize(k, start, ids, _real(v), s, e, prev))
                rows.append((job_id, name, *got))
                prev = got[STEP_LAST]
            k += 1
        rest = []
        if i < cnt:  # the rest in C, or None: not the usual points (or a stored step that is not an int)
            rest = b.chunks(j, i, k, start + i, prev, CHUNK, first, job_id, name) if prev is None or type(prev) is int else None
        if rest is None:  # every chunk the Python way
            ids, v, s, e = b.lists(j, 0, cnt, first)
            rows = [(job_id, name, *r) for r in extend(top, ids, _real(v), s, e)]
            rest = []
        chunks += rows
        chunks += rest
    cur.executemany(_PUT_PACK, packs)
    cur.executemany(_PUT_CHUNK, chunks)
