"""Metric points packed a row per series and batch (runner/store/metrics.py, #30): every read gives
what the row-a-point table gave (ids, order, values as a REAL column, steps and epochs as INTEGER
ones, times), a page of points reads only its packs, and a store of that table upgrades in place."""

import math
import random
import sqlite3
import sys

import pytest
import sqlite_utils

from runner import metric_chunks
from runner.store import MIGRATIONS, SCHEMA_VERSION, Store
from runner.store import metrics as store_metrics
from runner.store import packed
from runner.store.schema import _m_packs


def _job(store, jid: str):
    store.insert_job({"id": jid, "name": jid, "user": "alice", "uid": 0, "kind": "command", "spec": {}, "gpus": [], "after": [],
                      "state": "running", "created_at": 1.0}, now=1.0)


def _as_rows(path, jobs) -> list[dict]:
    """The same points through a real row-a-point table (the store's schema before packs): what SQLite makes of them."""
    raw = sqlite3.connect(path, isolation_level=None)
    raw.row_factory = sqlite3.Row
    raw.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, job_id TEXT, name TEXT, value REAL, step INTEGER, epoch INTEGER, at REAL)")
    for jid, pts, at in jobs:
        raw.executemany("INSERT INTO metrics (job_id, name, value, step, epoch, at) VALUES (?,?,?,?,?,?)", [(jid, *p, at) for p in pts])
    out = [dict(r) for r in raw.execute("SELECT id, job_id, name, value, step, epoch, at FROM metrics ORDER BY id")]
    raw.close()
    return out


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


ODD = [("loss", float("nan"), 1, 0), ("loss", float("inf"), 2.0, 0.0), ("acc", -float("inf"), 3.5, 1.5), ("acc", 1, True, None),
       ("lr", None, None, None), ("lr", 0.25, float("nan"), 2), ("loss", 7, 2**40, 3)]


def test_points_read_back_as_a_row_a_point_table_kept_them(tmp_path):
    """Odd values (NaN, infinities, None, ints, bools, whole and fractional floats as steps and epochs),
    two jobs interleaved, batches of many sizes: store.metric_points equals what the same inserts
    into SQLite's own table give, id for id, and every reader agrees with it."""
    s = Store(tmp_path / "runner.db")
    _job(s, "a")
    _job(s, "b")
    rnd = random.Random(5)
    names = ("loss", "acc", "lr")
    batches = []
    for k in range(60):
        jid = rnd.choice("ab")
        pts = [(rnd.choice(names), rnd.choice([rnd.random(), 3, 2.0]), rnd.choice([k * 100 + i, None]), k // 7) for i in range(rnd.choice([1, 2, 40, 700]))]
        if k == 30:
            pts = ODD
        batches.append((jid, pts, float(k)))
        s.record_progress(jid, pts, k, now=float(k))
    want = _as_rows(tmp_path / "rows.db", batches)
    got = s.metric_points()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(_same(g[c], w[c]) for c in w), (g, w)
        assert type(g["step"]) is type(w["step"]) and type(g["epoch"]) is type(w["epoch"]), (g, w)
    for jid in "ab":
        mine = [w for w in want if w["job_id"] == jid]
        plain = [{k: w[k] for k in ("name", "value", "step", "epoch", "at")} for w in mine]
        assert _eq(s.metrics(jid), plain)
        for name in names:
            series = [p for p in plain if p["name"] == name]
            assert _eq(s.metrics(jid, name), series) and s.count_metrics(jid, name) == len(series)
            for off, lim in ((0, 1), (3, 5), (len(series) - 2, 10), (len(series) + 5, 3), (1, 10**6)):
                assert _eq(s.metrics(jid, name, lim, off), series[off:off + lim]), (name, off, lim)
        assert s.count_metrics(jid) == len(mine) and s.has_metrics(jid)
        assert s.latest_metrics(jid) == {n: [p for p in plain if p["name"] == n][-1]["value"] for n in {p["name"] for p in plain}}
        ids = [w["id"] for w in mine]
        for after, upto, lim in ((0, None, 10), (ids[len(ids) // 2], None, 10**6), (ids[3], ids[40], 7), (ids[-1], None, 5)):
            expect = [w for w in mine if w["id"] > after and (upto is None or w["id"] <= upto)][:lim]
            expect = [{k: w[k] for k in ("id", "name", "value", "step", "epoch", "at")} for w in expect]
            assert _eq(s.metric_rows_after(jid, after, upto, lim), expect), (after, upto, lim)
        for upto in (0, ids[0], ids[len(ids) // 3], ids[-1], 10**9):
            assert s.metric_count_upto(jid, upto) == sum(1 for i in ids if i <= upto)
        epochs = [w["at"] for w in mine if w["epoch"] is not None]
        assert s.first_epoch_point_at(jid) == (min(epochs) if epochs else None)


def _eq(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_a_line_a_batch_fills_packs_and_a_flood_cuts_them(tmp_path, monkeypatch):
    """A job printing a point a look leaves a pack per MERGE_BELOW points, not a pack a point; a
    batch larger than PACK_POINTS is cut into packs; a page of one series reads only its packs."""
    monkeypatch.setattr(store_metrics, "PACK_POINTS", 100)
    monkeypatch.setattr(store_metrics, "MERGE_BELOW", 30)
    s = Store(tmp_path / "runner.db")
    _job(s, "j")
    for i in range(95):
        s.record_progress("j", [("loss", 1.0 / (i + 1), i, 0)], i)
    packs = [r["n"] for r in s.conn.execute("SELECT n FROM metric_packs ORDER BY last_id").fetchall()]
    assert sum(packs) == 95 and len(packs) == 4 and max(packs) == 30, packs  # 30, 30, 30, 5
    s.record_progress("j", [("loss", 0.5, 95 + i, 1) for i in range(250)], 96)
    packs = [r["n"] for r in s.conn.execute("SELECT n FROM metric_packs ORDER BY last_id").fetchall()]
    assert packs == [30, 30, 30, 5, 100, 100, 50], packs  # (the flood does not fit the open pack: packs of its own)
    assert [p["step"] for p in s.metrics("j", "loss", 20, 140)] == list(range(140, 160))
    reads = []
    s.conn.set_trace_callback(reads.append)
    s.metrics("j", "loss", 10, 200)
    s.conn.set_trace_callback(None)
    assert sum("WHERE rowid=" in q for q in reads) == 1  # one pack of seven read whole


def test_the_fast_chunk_summary_is_summarize_exactly():
    """extend's column-at-a-time path (_summarize_clean, a batch of the usual points) gives the rows
    summarize gives chunk by chunk; on any other batch it steps aside (None)."""
    rnd = random.Random(2)
    fast_used, fast_bare = 0, 0
    for trial in range(2000):
        n = rnd.choice([64, 65, 100, 257, 1000])
        s0 = rnd.randrange(0, 50)
        r = rnd.random()
        steps = list(range(s0, s0 + n)) if r < .7 else [rnd.randrange(100) for _ in range(n)] if r < .85 else [None] * n
        vals = [rnd.choice([rnd.random(), 0.5, 1.0, -2]) for _ in range(n)]
        if rnd.random() < .1:
            vals[rnd.randrange(n)] = float("inf")
        if rnd.random() < .1:
            vals[rnd.randrange(n)] = None
        r = rnd.random()
        epochs = [i // 7 for i in range(n)] if r < .75 else [None] * n  # a log without epochs (or steps) is usual too
        if r > .95:
            epochs[rnd.randrange(n)] = None if epochs[0] is not None else 3  # some given, some not: the slow path
        ids = list(range(1000, 1000 + 3 * n, 3))
        slow = []
        for j in range(0, n, metric_chunks.CHUNK):
            c = slice(j, j + metric_chunks.CHUNK)
            slow.append(metric_chunks.summarize(j // metric_chunks.CHUNK, j, ids[c], vals[c], steps[c], epochs[c],
                                                slow[-1][metric_chunks.STEP_LAST] if slow else None))
        assert metric_chunks.build(list(zip(ids, vals, steps, epochs))) == slow, trial
        fast = metric_chunks._summarize_clean(0, 0, ids, vals, steps, epochs, None)
        assert fast is None or fast == slow, trial
        fast_used += fast is not None
        fast_bare += fast is not None and (steps[0] is None or epochs[0] is None)
        cut = rnd.randrange(1, n)  # a series extended: its open chunk filled, then the rest
        first = metric_chunks.extend(None, ids[:cut], vals[:cut], steps[:cut], epochs[:cut])
        rest = metric_chunks.extend(first[-1], ids[cut:], vals[cut:], steps[cut:], epochs[cut:])
        rows = {r[0]: r for r in first}
        rows.update({r[0]: r for r in rest})
        assert [rows[k] for k in sorted(rows)] == slow, (trial, cut)
    assert fast_used > 500 and fast_bare > 200


@pytest.mark.parametrize("chunks", [False, True])
def test_a_store_of_a_row_a_point_upgrades_to_packs_in_place(tmp_path, chunks):
    """The migration moves every point (ids, values, steps, epochs, times) into packs and drops the
    table; the charts' chunks, whose ids are the points', add up (made again by _m_chunks32, after
    it, for every series: those that had none too); new points go on from the newest id."""
    path, k = tmp_path / "runner.db", MIGRATIONS.index(_m_packs)
    raw = sqlite3.connect(path, isolation_level=None)
    for m in MIGRATIONS[:k]:
        m(sqlite_utils.Database(raw))
    raw.execute(f"PRAGMA user_version={k}")
    _job(Store(path, migrate=False), "old")
    _job(Store(path, migrate=False), "other")
    rnd = random.Random(9)
    pts = [(jid, rnd.choice(("loss", "acc")), rnd.random(), s, s // 100, float(s // 50)) for s in range(30_000) for jid in ("old", "other")]
    pts[7] = ("old", "loss", None, 3, 0, 0.0)
    raw.executemany("INSERT INTO metrics (job_id, name, value, step, epoch, at) VALUES (?,?,?,?,?,?)", pts)
    before = [dict(zip(("id", "job_id", "name", "value", "step", "epoch", "at"), r))
              for r in raw.execute("SELECT id, job_id, name, value, step, epoch, at FROM metrics ORDER BY id")]
    if chunks:
        for jid in ("old", "other"):
            for name in ("loss", "acc"):
                mine = [(b["id"], b["value"], b["step"], b["epoch"]) for b in before if b["job_id"] == jid and b["name"] == name]
                raw.executemany(f"INSERT INTO metric_chunks VALUES (?,?,{','.join('?' * 22)})",
                                [(jid, name, *r) for r in metric_chunks.build(mine)])
    raw.close()
    s = Store(path)
    assert s.schema_version() == SCHEMA_VERSION
    assert "metrics" not in {r["name"] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
    assert s.metric_points() == before
    cur = s.conn.cursor()
    cur.row_factory = None
    from runner.web import series

    for jid in ("old", "other"):
        for name in ("loss", "acc"):
            ch = series.queries.series_chunks(cur, jid, name)
            assert ch and series._whole(ch, *series.queries.series_extent(cur, jid, name))
    s.record_progress("old", [("loss", 0.5, 40_000, 400)], 1, now=99.0)
    newest = s.metric_points("old")[-1]
    assert newest["id"] == before[-1]["id"] + 1 and newest["step"] == 40_000


# -- a helper's batch made into packs and chunks in C (runner/_packs_c.c) ----------------------

from array import array  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_INT64 = st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-3, 3), st.sampled_from([2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**62, -2**63]))
_VAL = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e308, -1e-308]))


def _packed_or_skip():
    if packed._packs_c is None:
        pytest.skip("runner/_packs_c.c is not built here: batches are stored in Python")


@st.composite
def _batch(draw, keys, next_step=0):
    """The raw columns of a helper's batch: points of some of `keys`, in any order; values of every kind;
    steps absent, or increasing (the usual log: on from `next_step`, or back), or with repeats, or
    anything; epochs absent or anything."""
    n = draw(st.integers(0, 150))
    k = draw(st.lists(st.integers(0, len(keys) - 1), min_size=n, max_size=n))
    v = draw(st.lists(st.one_of(_VAL, st.floats(-1, 1)), min_size=n, max_size=n))
    if draw(st.booleans()):
        v = [x if x == x and abs(x) != float("inf") else 0.5 for x in v]  # every value finite: the usual batch
    kind = draw(st.sampled_from(["none", "increasing", "plateau", "any"]))
    base = draw(st.sampled_from([next_step, next_step - 1, next_step - 1000, draw(st.integers(-5, 2**40))]))  # on, back or anywhere
    s = None if kind == "none" else [base + (i * draw(st.integers(1, 3)) if kind == "increasing" else i // 2) if kind != "any"
                                     else draw(_INT64) for i in range(n)]
    e = None if draw(st.booleans()) else [draw(st.one_of(st.integers(0, 3), _INT64)) for _ in range(n)]
    raw = {"k": array("I", k).tobytes(), "v": array("d", v).tobytes(), "s": None if s is None else array("q", s).tobytes(),
           "e": None if e is None else array("q", e).tobytes()}
    return raw


def _stored(store, jid: str) -> tuple:
    """Every pack (decoded: repr, so NaN == NaN and -0.0 != 0.0) and chunk row of a job."""
    cur = store.conn.cursor()
    cur.row_factory = None
    packs = [(r[1:6], repr(store_metrics._decode(r)), r[11:]) for r in store_metrics._packs(cur, jid)]
    chunks = [repr(r) for r in cur.execute("SELECT * FROM metric_chunks WHERE job_id=? ORDER BY name, k", (jid,))]
    return packs, chunks


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_batch_stored_in_c_is_the_batch_stored_in_python(tmp_path_factory, data):
    """A helper's fixed-width batch stored through runner/_packs_c.c (store.metrics.Packed) leaves
    exactly the packs (ids, values with NaN as None and -0.0 kept, steps and epochs past 32 bits,
    the times, the last value) and the chart chunks that the same points stored as Columns leave,
    over several batches of one job (a new series, an open chunk filled up, a small newest pack
    taking points in, a pack cut at PACK_POINTS, steps that stop increasing or are absent)."""
    _packed_or_skip()
    keys = data.draw(st.lists(st.sampled_from(["loss", "acc", "lr", "val/loss"]), min_size=1, max_size=4, unique=True))
    home = tmp_path_factory.mktemp("cs")
    c_store, py_store = Store(home / "c.db"), Store(home / "py.db")
    for s in (c_store, py_store):
        _job(s, "j")
    step = 0
    for t in range(data.draw(st.integers(1, 4))):
        raw = data.draw(_batch(keys, step))
        step = min(max(array("q", raw["s"]), default=step) + 1, 2**62) if raw["s"] else step
        pk = packed.Packed(keys, raw)
        c_store.record_progress("j", pk, t, now=float(t))
        py_store.record_progress("j", pk.columns(), t, now=float(t))
    assert _stored(c_store, "j") == _stored(py_store, "j")


def test_a_pack_past_pack_points_and_ids_past_32_bits_in_c(tmp_path, monkeypatch):
    """Examples at the bounds: PACK_POINTS (a key's points cut into packs), ids above 2**31 (marshal's
    long form), an open chunk filled by the next batch, the C chunk path taken for the usual points."""
    _packed_or_skip()
    monkeypatch.setattr(store_metrics, "PACK_POINTS", 100)
    monkeypatch.setattr(packed, "PACK_POINTS", 100)
    taken = []
    real = packed._packs_c.Batch

    class Spy:
        def __init__(self, *a):
            self.b = real(*a)
            self.n = self.b.n

        def chunks(self, *a):
            got = self.b.chunks(*a)
            taken.append(got is not None)
            return got

        def __getattr__(self, name):
            return getattr(self.b, name)

    monkeypatch.setattr(packed._packs_c, "Batch", Spy)
    stores = [Store(tmp_path / "c.db"), Store(tmp_path / "py.db")]
    for s in stores:
        _job(s, "j")
        s.record_progress("j", [("warm", 1.0, None, None)], 0, now=0.0)
        s.conn.execute("UPDATE metric_packs SET first_id=?, last_id=?", (2**31 + 5, 2**31 + 5))  # the next ids past 2**31
    for t, n in enumerate((37, 250, 3)):
        raw = {"k": array("I", [i % 2 for i in range(n)]).tobytes(), "v": array("d", [math.sin(t * 1000 + i) for i in range(n)]).tobytes(),
               "s": array("q", [t * 1000 + i for i in range(n)]).tobytes(), "e": array("q", [t] * n).tobytes()}
        pk = packed.Packed(["loss", "acc"], raw)
        stores[0].record_progress("j", pk, t + 1, now=float(t))
        stores[1].record_progress("j", pk.columns(), t + 1, now=float(t))
    assert _stored(*stores[:1], "j") == _stored(stores[1], "j")
    packs, _ = _stored(stores[0], "j")
    assert max(p[0][4] for p in packs) == 100 and min(p[0][2] for p in packs if p[0][1] == "loss") > 2**31
    assert taken and all(taken)


def test_the_batch_in_c_checks_its_columns():
    """A key index past the batch's names, columns of the wrong length: refused (ValueError), before
    a point is stored."""
    _packed_or_skip()
    Batch = packed._packs_c.Batch
    k, v, s = array("I", [0, 1]).tobytes(), array("d", [1.0, 2.0]).tobytes(), array("q", [1, 2]).tobytes()
    with pytest.raises(ValueError, match="names no metric"):
        Batch(1, k, v, s, None)
    with pytest.raises(ValueError, match="expected"):
        Batch(2, k, v[:8], s, None)
    with pytest.raises(ValueError, match="expected"):
        Batch(2, k, v, s, s[:-1])
    with pytest.raises(ValueError):
        Batch(2, k[:-1], v, s, None)
    assert Batch(2, k, v, s, None).counts() == [1, 1]
    three = Batch(1, array("I", [0, 0, 0]).tobytes(), array("d", [1.0, 2.0, 3.0]).tobytes(), None, None)
    for a in (0, 1, 2):  # a chunk near PY_SSIZE_T_MAX (a hostile pass: a + chunk wrapped, and C read before its columns)
        for chunk in (sys.maxsize, sys.maxsize - max(0, a - 1), sys.maxsize - a):
            rows = three.chunks(0, a, 0, 0, None, chunk, 7, "j", "n")
            assert [(r[3], r[4], r[5], r[15]) for r in rows] == [(3 - a, 7 + a, 9, 3.0)], (a, chunk)


def test_the_batch_in_c_is_built_where_it_can_be():
    """Where a C compiler and Python's headers are (as in CI), the install builds runner/_packs_c.c:
    a build that failed in silence would store every log's points ~2x slower."""
    import os
    import shutil
    import sysconfig

    if not shutil.which("cc") or not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("no C compiler or no Python.h here: batches are stored in Python")
    assert packed._packs_c is not None, "setup.py did not build runner/_packs_c.c: run scripts/setup.sh (pip install -e .)"


def _row_sizes(rows, n: int):
    """Chunk rows of a chunk as long as the points (a hostile pass: near PY_SSIZE_T_MAX, C's sums wrapped and read before its
    columns): one row of all n points, or none."""
    assert rows is None or [r[3] for r in rows] == ([n] if n > 0 else []), rows
    return rows


def _col(n: int, size: int, code: str):
    """Bytes of a column: n numbers of the right width (any bits), or bytes of any length."""
    return st.one_of(st.binary(min_size=n * size, max_size=n * size), st.binary(max_size=8 * size),
                     st.lists(st.integers(0, 2**(8 * size) - 1) if code in "IQ" else st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)
                     .map(lambda xs: array(code, xs).tobytes()))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_batch_in_c_takes_any_bytes_without_harm(data):
    """Whatever bytes a hostile helper's batch holds (any key count, index bytes, column lengths), the
    daemon's C batch refuses them with ValueError or holds them, and then answers any key and range
    with rows or IndexError: never a crash, never a read past its columns (run under the same
    interpreter as the daemon: a fault here would kill this test run)."""
    n = data.draw(st.integers(0, 12))
    nkeys = data.draw(st.integers(-2, 6))
    k = data.draw(st.one_of(st.lists(st.integers(0, 7), min_size=n, max_size=n).map(lambda xs: array("I", xs).tobytes()), _col(n, 4, "I")))
    v = data.draw(_col(n, 8, "Q"))
    s, e = (data.draw(st.one_of(st.none(), _col(n, 8, "q"))) for _ in "se")
    calls = data.draw(st.lists(st.tuples(st.integers(-3, 8), st.integers(-3, 14), st.integers(-3, 14)), max_size=6))
    _packed_or_skip()
    try:
        b = packed._packs_c.Batch(nkeys, k, v, s, e)
    except ValueError:
        return
    assert b.n == len(k) // 4 and sum(b.counts()) == b.n
    for j, lo, hi in calls:
        for call in (lambda: b.lists(j, lo, hi, 7), lambda: b.pack(j, lo, hi, 7), lambda: b.chunks(j, lo, 0, 0, None, 32, 7, "j", "n"),
                     lambda: b.chunks(j, lo, 2, 5, 3, 4, 7, "j", "n"), lambda: b.chunks(j, lo, 0, 0, None, sys.maxsize - max(0, lo - 1), 7, "j", "n"),
                     lambda: _row_sizes(b.chunks(j, lo, 0, 0, None, sys.maxsize, 7, "j", "n"), b.counts()[j] - lo if 0 <= j < len(b.counts()) else 0)):
            try:
                got = call()
            except (IndexError, ValueError):
                continue
            assert got is None or isinstance(got, (tuple, list))
