"""A long job's charts are reduced from its metric chunks (runner/metric_chunks.py, #30): every
spike and dip stays, a zoomed range gives every point it holds when few enough, the chunks stay
right as points arrive a few at a time, and a compacted job's charts keep their extremes."""

from __future__ import annotations

import json
import random

import pytest
from fastapi.testclient import TestClient

from runner import metric_chunks, queries
from runner.home import Home
from runner.http import create_app
from runner.web import metricsview, series

N = 100_000  # points of the long job's loss


def _job(store, jid: str, finished_at: float = 1_000.0):
    store.insert_job({"id": jid, "name": jid, "user": "alice", "uid": 0, "kind": "command", "spec": {}, "gpus": [], "after": [],
                      "state": "succeeded", "reason": "exit_code", "created_at": finished_at - 10, "started_at": finished_at - 9,
                      "finished_at": finished_at, "exit_code": 0}, now=finished_at - 10)


def _loss(n: int, spikes: dict) -> list[tuple]:
    """n points (name, value, step, epoch) of a noisy falling loss, spikes {step: value} in it."""
    rnd = random.Random(7)
    return [("loss", spikes.get(s, 2.0 / (s + 1) + rnd.random() / 50), s, s // 1000) for s in range(n)]


def _write(store, jid: str, pts: list, batches=(1, 3000)):
    """As the watcher writes them: batches of random sizes, each with its log offset."""
    rnd, i = random.Random(11), 0
    while i < len(pts):
        b = rnd.randint(*batches)
        store.record_progress(jid, pts[i:i + b], i + b)
        i += b


SPIKES = {61_803: 40.0, 70_001: -3.0, 5: 9.0, 99_998: 7.5, 31_999: 12.0, 32_000: -1.5}
"""Single points far off the curve (a spike, dips; two at a chunk's edge) that a chart must show."""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    h = Home(tmp_path_factory.mktemp("chunks")).ensure()
    store = h.store()
    _job(store, "long")
    pts = _loss(N, SPIKES)
    pts[4_242] = ("loss", float("nan"), 4_242, 4)  # a NaN (NULL) and an infinity: gaps, never an extreme
    pts[88_888] = ("loss", float("inf"), 88_888, 88)
    _write(store, "long", pts)
    store.add_metrics("long", [("lr", 0.1, None, e) for e in range(50)])  # a short metric beside it
    return TestClient(create_app(h), base_url="http://127.0.0.1:8765"), store, pts


def _stored(pts) -> dict:
    return {s: (None if v != v or abs(v) == float("inf") else v) for _, v, s, _ in pts}


def test_a_100000_point_chart_keeps_every_spike_and_shows_only_stored_points(site):
    c, store, pts = site
    stored = _stored(pts)
    for got, points in ((c.get("/ui/jobs/long/charts").json()["series"]["loss"], metricsview.CHART_POINTS),
                        (c.get("/jobs/long/series", params={"name": "loss", "points": 2000}).json(), 2000),
                        (c.get("/ui/jobs/long/charts", params={"points": 400}).json()["series"]["loss"], 400)):
        assert got["total"] == N and got["axis"] == "step" and 100 < len(got["x"]) <= points
        shown = dict(zip(got["x"], got["y"]))
        for step, value in SPIKES.items():
            assert shown.get(step) == value, (points, step)
        assert all(stored[x] == y for x, y in shown.items())  # each one a point the job printed, where it printed it
        assert got["x"] == sorted(set(got["x"])) and got["x"][0] == 0 and got["x"][-1] == N - 1
        assert 4_242 not in shown and 88_888 not in shown  # (no NaN nor infinity drawn as an extreme)
    got = c.get("/jobs/long/series", params={"name": "loss", "points": 2000}).json()
    assert max(y for y in got["y"] if y is not None) == 40.0 and min(y for y in got["y"] if y is not None) == -3.0
    full = c.get("/jobs/long/metrics", params={"name": "loss", "limit": 1000, "offset": N - 1000}).json()  # every point stays
    assert full["total"] == N and [m["step"] for m in full["metrics"]] == list(range(N - 1000, N))
    json.dumps(got, allow_nan=False)


def test_a_zoomed_range_gives_every_point_when_few_and_keeps_its_spikes_when_many(site):
    c, store, pts = site
    stored = _stored(pts)
    # 1,500 points, from the middle of one chunk to the middle of another: each one
    z = c.get("/jobs/long/series", params={"name": "loss", "points": 2000, "lo": 61_007, "hi": 62_506}).json()
    assert z["x"] == list(range(61_007, 62_507)) and z["y"] == [stored[s] for s in z["x"]] and z["total"] == N
    assert z["range"] == [61_007, 62_506] and (61_803, 40.0) in zip(z["x"], z["y"])
    # 40,000 points: reduced again, within the range, its spikes kept
    w = c.get("/jobs/long/series", params={"name": "loss", "points": 2000, "lo": 40_003, "hi": 80_002.5}).json()
    assert len(w["x"]) <= 2000 and w["x"][0] == 40_003 and w["x"][-1] == 80_002 and all(40_003 <= x <= 80_002 for x in w["x"])
    assert {(61_803, 40.0), (70_001, -3.0)} <= set(zip(w["x"], w["y"])) and all(stored[x] == y for x, y in zip(w["x"], w["y"]))
    # a short metric's range (read whole), a range with nothing in it, and the whole series as before
    lr = c.get("/jobs/long/series", params={"name": "lr", "lo": 10, "hi": 12}).json()
    assert lr["axis"] == "epoch" and lr["x"] == [10, 11, 12] and lr["total"] == 50
    assert c.get("/jobs/long/series", params={"name": "loss", "lo": 2e6}).json()["x"] == []
    assert c.get("/jobs/long/series", params={"name": "loss", "lo": "inf"}).status_code == 422


def test_chunks_written_a_few_points_at_a_time_are_those_of_the_whole_series(tmp_path):
    """Live: points arrive a few a batch (several metrics interleaved); the chunks are always
    those of every point so far, and the chart shows the newest point."""
    h = Home(tmp_path).ensure()
    store = h.store()
    _job(store, "live")
    rnd = random.Random(3)
    names = ("loss", "acc", "gpu0_mem", "inner")  # inner: steps counted within an epoch of 96 (6 chunks): by epoch
    steps = {"loss": lambda s: s, "acc": lambda s: s, "gpu0_mem": lambda s: None, "inner": lambda s: s % 96}
    pts = [(n, rnd.random() if n != "acc" or s % 97 else float("nan"), steps[n](s), s // 96 if n == "inner" else s // 100)
           for s in range(12_000) for n in names]
    cur = store.conn.cursor()
    cur.row_factory = None
    i, seen = 0, 0
    while i < len(pts):
        b = rnd.choice((1, 2, 5, 31, 33, 64, 200))
        store.record_progress("live", pts[i:i + b], i + b)
        i += b
        if i >= seen + 6_000 or i >= len(pts):
            seen = i
            rows = store.metric_points("live")
            for name in names:
                mine = [(r["id"], r["value"], r["step"], r["epoch"]) for r in rows if r["name"] == name]
                assert queries.series_chunks(cur, "live", name) == metric_chunks.build(mine), (name, i)
                got = series.reduced(cur, "live", name, 1000)
                assert got["total"] == len(mine) and got["y"][-1] == mine[-1][1]
                axis = series.x_axis([m[2] for m in mine], [m[3] for m in mine])[0]
                assert got["axis"] == axis == ("step" if name in ("loss", "acc") else "epoch"), (name, i)
                assert got["x"][-1] == (mine[-1][2] if axis == "step" else mine[-1][3])


def test_a_compacted_jobs_charts_keep_their_extremes_read_from_chunks_made_again(tmp_path):
    h = Home(tmp_path).ensure()
    store = h.store()
    _job(store, "old")
    spikes = {12_345: 50.0, 23_456: -4.0, 40_000: 9.0}
    pts = _loss(N // 2, spikes)
    _write(store, "old", pts, (500, 5000))
    done = store.compact_metrics("old", 10, now=2_000.0, apply=True)
    assert done["kept"] < N // 2 and store.count_metrics("old") == done["kept"] > series.RAW_MAX
    cur = store.conn.cursor()
    cur.row_factory = None
    assert series._whole(queries.series_chunks(cur, "old", "loss"), *queries.series_extent(cur, "old", "loss"))  # not stale
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")
    for got in (c.get("/ui/jobs/old/charts").json()["series"]["loss"], c.get("/jobs/old/series", params={"name": "loss"}).json()):
        shown = dict(zip(got["x"], got["y"]))
        assert got["total"] == done["kept"] and all(shown.get(s) == v for s, v in spikes.items())
        assert shown[0] == pts[0][1] and shown[N // 2 - 1] == pts[-1][1]


def test_a_store_without_chunks_reads_every_point_as_before(tmp_path):
    """A store written before the chunks (or a series whose chunks do not sum up its points): the
    chart is every point read and downsampled, as it was."""
    h = Home(tmp_path).ensure()
    store = h.store()
    _job(store, "j")
    pts = _loss(20_000, {7_777: 30.0})
    _write(store, "j", pts)
    store.conn.execute("DROP TABLE metric_chunks")
    got = TestClient(create_app(h), base_url="http://127.0.0.1:8765").get("/ui/jobs/j/charts").json()["series"]["loss"]
    x, y = series.downsample([p[2] for p in pts], [p[1] for p in pts], metricsview.CHART_POINTS)
    assert (got["x"], got["y"], got["total"]) == (x, y, 20_000) and (7_777, 30.0) in zip(x, y)


def test_a_resumed_jobs_redone_points_replace_the_earlier_runs_in_its_chart(tmp_path):
    """Preempted and resumed: the steps it does again replace the earlier run's (store.record_progress's
    redo_before); the chunks no longer sum up the points, so the chart reads the points: the
    earlier run's spike, gone from the store, is gone from the chart."""
    h = Home(tmp_path).ensure()
    store = h.store()
    _job(store, "resumed")
    first = _loss(20_000, {15_000: 99.0})
    for i in range(0, len(first), 1000):
        store.record_progress("resumed", first[i:i + 1000], i, now=100.0)
    again = [("loss", 0.5, s, s // 1000) for s in range(14_000, 20_000)]
    store.record_progress("resumed", again, 1, now=300.0, redo_before=200.0)
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")
    for got in (c.get("/ui/jobs/resumed/charts").json()["series"]["loss"], c.get("/jobs/resumed/series", params={"name": "loss"}).json()):
        shown = dict(zip(got["x"], got["y"]))
        assert got["total"] == 20_000 and 99.0 not in got["y"] and shown[19_999] == 0.5
        assert max(got["y"]) == max(v for _, v, s, _ in first if s < 14_000)


@pytest.mark.parametrize("made_by_a_write", [False, True])
def test_a_store_from_before_the_chunks_migration_upgrades_in_place(tmp_path, made_by_a_write):
    """metric_chunks is a numbered migration (_m_chunks, #32): a store from before it, whether the first write of
    points had made the table (as runner did then, with its rows) or not, is upgraded in place when opened; the
    chunks of 32 (_m_chunks32, after it) make every series' chunks again from its points, those without any too:
    its chart keeps the spike; points written since extend the chunks."""
    import sqlite3

    import sqlite_utils

    from runner.store import MIGRATIONS, SCHEMA_VERSION, Store, _m_chunks
    from runner.store.schema import CHUNKS_TABLE

    path, k = tmp_path / "runner.db", MIGRATIONS.index(_m_chunks)
    raw = sqlite3.connect(path, isolation_level=None)
    for m in MIGRATIONS[:k]:  # a store as the runner before it left it
        m(sqlite_utils.Database(raw))
    raw.execute(f"PRAGMA user_version={k}")
    old = _loss(10_000, {1_234: 50.0})
    _job(Store(path, migrate=False), "old")
    raw.executemany("INSERT INTO metrics (job_id, name, value, step, epoch, at) VALUES ('old',?,?,?,?,1.0)", old)
    if made_by_a_write:  # runner then made the table with the first write of points, and their chunks
        raw.execute(CHUNKS_TABLE)
        ids = [r[0] for r in raw.execute("SELECT id FROM metrics ORDER BY id")]
        raw.executemany(f"INSERT INTO metric_chunks VALUES ('old','loss',{','.join('?' * 22)})",
                        metric_chunks.build([(i, v, st, e) for i, (_, v, st, e) in zip(ids, old)]))
    raw.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    cur = store.conn.cursor()
    cur.row_factory = None
    stats = queries.series_chunk_stats(cur, "old", "loss", metric_chunks.CHUNK)
    assert stats[1] == 10_000  # made again from the points, whether the write had made them or not
    new = [("loss", 0.1, s, s // 1000) for s in range(10_000, 10_100)]
    store.record_progress("old", new, 2)
    got = metricsview.charts(store, "old")["series"]["loss"]
    assert got["total"] == 10_100 and dict(zip(got["x"], got["y"]))[1_234] == 50.0 and got["x"][-1] == 10_099
    stats = queries.series_chunk_stats(cur, "old", "loss", metric_chunks.CHUNK)
    assert stats[1] == 10_100
    assert series._whole(queries.series_chunks(cur, "old", "loss"), *queries.series_extent(cur, "old", "loss"))


def test_chunks_of_16_become_chunks_of_32_when_the_store_is_opened(tmp_path, monkeypatch):
    """A store whose chunks were written 16 points a chunk (before _m_chunks32) is upgraded in place: each
    series' chunks are what metric_chunks.build makes of its points now (32 a chunk), whole, so its
    charts come from them again, spike and dip where they were; one without chunks gets them too."""
    import sqlite3

    from runner.store import MIGRATIONS, SCHEMA_VERSION, Store
    from runner.store.schema import _m_chunks32

    path, k = tmp_path / "runner.db", MIGRATIONS.index(_m_chunks32)
    monkeypatch.setattr(metric_chunks, "CHUNK", 16)
    raw = sqlite3.connect(path, isolation_level=None)
    import sqlite_utils

    for m in MIGRATIONS[:k]:
        m(sqlite_utils.Database(raw))
    raw.execute(f"PRAGMA user_version={k}")
    raw.close()
    old = Store(path, migrate=False)
    for jid in ("a", "b"):
        _job(old, jid)
    old.record_progress("a", _loss(40_000, {1_234: 50.0, 30_001: -9.0}), 1)
    old.record_progress("b", _loss(20_000, {7: 3.0}), 1)
    old.conn.execute("DELETE FROM metric_chunks WHERE job_id='b'")  # a series without chunks
    assert {r["n"] for r in old.conn.execute("SELECT DISTINCT n FROM metric_chunks")} == {16}
    old.close()
    monkeypatch.setattr(metric_chunks, "CHUNK", 32)
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    cur = store.conn.cursor()
    cur.row_factory = None
    for jid, n in (("a", 40_000), ("b", 20_000)):
        pts = [(p["id"], p["value"], p["step"], p["epoch"]) for p in store.metric_points(jid)]
        assert queries.series_chunks(cur, jid, "loss") == metric_chunks.build(pts) and len(pts) == n
        assert series._whole(queries.series_chunks(cur, jid, "loss"), *queries.series_extent(cur, jid, "loss"))
    got = metricsview.charts(store, "a")["series"]["loss"]
    shown = dict(zip(got["x"], got["y"]))
    assert got["total"] == 40_000 and shown[1_234] == 50.0 and shown[30_001] == -9.0 and len(got["x"]) < 2_000


def test_the_charts_of_a_job_of_many_metrics_are_bounded_and_keep_each_ones_spike(tmp_path, monkeypatch):
    """A job of many metrics gets fewer points a chart, CHARTS_MAX_POINTS in all (a hostile pass's job
    of 1,000 metrics of 3,000 steps answered 34 MB): every metric is still there, each with its
    highest point (min/max decimation), and `points` says how many each got."""
    h = Home(tmp_path).ensure()
    store = h.store()
    _job(store, "wide")
    pts = [(f"class_{k:02d}/ap", 100.0 if s == 777 + k else 0.5 + (s % 7) / 100, s, s // 100) for s in range(1_000) for k in range(40)]
    _write(store, "wide", pts, batches=(500, 4000))
    monkeypatch.setattr(metricsview, "CHARTS_MAX_POINTS", 4_000)
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")
    body = c.get("/ui/jobs/wide/charts?points=1000").json()
    assert body["points"] == 100 and len(body["series"]) == 40
    for k in range(40):
        one = body["series"][f"class_{k:02d}/ap"]
        assert one["total"] == 1_000 and len(one["x"]) <= 100 and max(one["y"]) == 100.0 and one["x"][one["y"].index(100.0)] == 777 + k
    few = c.get("/ui/jobs/wide/charts?points=50").json()  # within the bound: as asked
    assert few["points"] == 50


def test_a_chart_of_many_points_reads_at_most_whole_max_points_whole(tmp_path, monkeypatch):
    """A chart asked for many points reads a series whole up to CHUNK points a bucket, so that it is not
    short of points for want of chunks, but never past WHOLE_MAX (GET /jobs/{id}/series takes 20,000
    points: 320,000 points read for one request); past it, whole chunks, the extremes kept."""
    from runner.store import Store

    store = Store(tmp_path / "runner.db")
    _job(store, "j")
    store.record_progress("j", _loss(40_000, {17_001: 9.0}), 1)
    read = []
    real = queries.series_points
    monkeypatch.setattr(queries, "series_points", lambda *a, **k: read.append(1) or real(*a, **k))
    got = series.series(store, "j", "loss", 2_000)  # 32 x 999 = 31,968 < 40,000: from chunks
    assert not read and got["points"] <= 2_000
    got = series.series(store, "j", "loss", 4_000)  # 63,968 >= 40,000: read whole, every point asked for
    assert read and got["points"] == 4_000 and 9.0 in got["y"]
    monkeypatch.setattr(series, "WHOLE_MAX", 20_000)
    read.clear()
    got = series.series(store, "j", "loss", 4_000)
    assert not read and 1_000 < got["points"] <= 2_600 and 9.0 in got["y"] and got["total"] == 40_000
