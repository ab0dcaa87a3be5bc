"""[retention] metrics_days: an old job's metric points compacted, its charts keeping their extremes."""

from __future__ import annotations

import json
import os
import random
import time
import tomllib

import pytest
from fastapi.testclient import TestClient

from test_users import ALICE, users  # noqa: F401  (fixture)

DAY = 86400.0
STEPS = 6000  # loss: one point a step, 6 epochs
SAMPLES = 3990  # gpu0_memory_mb: no step, no epoch (a GPU sample's points)
EPOCHS = 10  # val_acc: one point an epoch, no step


def _points(seed: int) -> list[tuple]:
    """10,000 points over 3 metrics, their extremes placed where a careless downsampling loses them:
    a spike and a dip of loss mid-run, a NaN, a GPU sample's peak and trough."""
    rnd = random.Random(seed)
    loss = [(("loss", 3.0 * (1 - s / STEPS) + rnd.random() * 0.2, s, s // 1000)) for s in range(STEPS)]
    loss[2717] = ("loss", 9.5, 2717, 2)  # spike: the global max (the first point is ~3.1)
    loss[4243] = ("loss", -1.25, 4243, 4)  # dip: the global min
    loss[3001] = ("loss", None, 3001, 3)  # NaN (SQLite keeps it as NULL)
    gpu = [("gpu0_memory_mb", 1000.0 + rnd.random() * 50, None, None) for _ in range(SAMPLES)]
    gpu[1234] = ("gpu0_memory_mb", 22000.0, None, None)
    gpu[3333] = ("gpu0_memory_mb", 12.0, None, None)
    val = [("val_acc", 0.1 + 0.08 * e, None, e) for e in range(EPOCHS)]
    # recorded as a job's watcher records them: interleaved, in batches
    out, gi = [], 0
    for s in range(STEPS):
        out.append(loss[s])
        while gi < SAMPLES and gi * STEPS < s * SAMPLES:
            out.append(gpu[gi])
            gi += 1
        if s % 1000 == 999 and s // 1000 < EPOCHS:
            out.append(val[s // 1000])
    out += gpu[gi:] + val[STEPS // 1000:]
    assert len(out) == 10_000
    return out


def _job(store, jid: str, uid: int, user: str, ended_days_ago: float | None, now: float, job_dir=None):
    """A job with 10,000 points that ended `ended_days_ago` days ago (None: still running)."""
    t = now - (ended_days_ago or 0) * DAY - 7200
    store.insert_job({"id": jid, "name": jid, "user": user, "uid": uid, "kind": "command", "spec": {"command": ["x"]},
                      "created_at": t, "job_dir": str(job_dir) if job_dir else None}, now=t)
    store.transition(jid, "running", now=t + 60)
    pts = _points(len(jid))
    for i in range(0, len(pts), 500):
        store.add_metrics(jid, pts[i:i + 500], now=t + 120 + i)
    if ended_days_ago is not None:
        store.transition(jid, "succeeded", now=now - ended_days_ago * DAY)
    return pts


def _extremes(pts: list[tuple]) -> dict:
    """{name: {(x, value), ...}}: each metric's first and last point and its global min and max."""
    out = {}
    for name in {p[0] for p in pts}:
        ser = [p for p in pts if p[0] == name]
        vals = [p for p in ser if p[1] is not None]
        lo, hi = min(vals, key=lambda p: p[1]), max(vals, key=lambda p: p[1])
        out[name] = {(p[2], p[3], p[1]) for p in (ser[0], ser[-1], lo, hi)}
    return out


def _dump(store) -> list:
    jobs = {r["id"]: (r["metrics_compacted_at"], r["metrics_bucket"]) for r in store.conn.execute("SELECT * FROM jobs")}
    return [(*r.values(), *jobs[r["job_id"]]) for r in store.metric_points()]


def test_a_compacted_job_keeps_its_extremes_in_runner_metrics_the_api_and_its_charts(home, runner, users):  # noqa: F811
    from runner.home import Home
    from runner.http import create_app

    alice = users[ALICE]
    h = Home(home).ensure()
    store = h.store()
    now = time.time()
    pts = _job(store, "oldroot", 0, "root", 40, now)
    her_dir = home / "jobs" / "oldalice"  # hers, closed to everyone: compaction reads only the store
    her_dir.mkdir(parents=True)
    (her_dir / "output.log").write_text("epoch 1 loss 0.5\n")
    os.chown(her_dir, alice.pw_uid, alice.pw_gid)
    os.chmod(her_dir, 0o700)
    her_pts = _job(store, "oldalice", alice.pw_uid, ALICE, 31, now, job_dir=her_dir)
    _job(store, "recent", 0, "root", 2, now)  # within metrics_days: every point stays
    _job(store, "running", 0, "root", None, now)  # not ended: every point stays, however old its points
    (home / "config.toml").write_text("[retention]\nmetrics_days = 30\nmetrics_bucket = 100\n")
    before = _dump(store)
    her_before = os.stat(her_dir), (her_dir / "output.log").stat()

    preview = runner.json("gc", "--dry-run")
    assert _dump(store) == before  # a dry run changes nothing
    going = {i["job_id"]: i for i in preview["items"]}
    assert set(going) == {"oldroot", "oldalice"}, going
    for i in going.values():
        assert i["what"] == "metric points" and 9000 < i["points"] < 10_000 and i["points"] + i["kept"] == 10_000
        assert 10 * i["points"] < i["bytes"] < 100 * i["points"]  # the estimate: tens of bytes a point (~21 packed)
    text = runner.run("gc", "--dry-run").stdout
    assert f"{going['oldroot']['points']} of 10000 points" in text and "would compact the metrics of 2 job(s)" in text, text
    assert "nothing was changed" in text and _dump(store) == before

    applied = runner.json("gc")
    assert {i["job_id"]: i["points"] for i in applied["items"]} == {j: i["points"] for j, i in going.items()}
    assert applied["metric_points"] == sum(i["points"] for i in going.values())
    assert json.loads((home / "retention.json").read_text())["compacted_points"] == applied["metric_points"]
    for jid, p in (("oldroot", pts), (("oldalice"), her_pts)):
        assert store.count_metrics(jid) == going[jid]["kept"] < 1000
        kept = store.metrics(jid)
        assert [m["value"] for m in kept if m["name"] == "val_acc"] == [p[1] for p in p if p[0] == "val_acc"]  # once an epoch: all kept
        assert any(m["value"] is None for m in kept if m["name"] == "loss")  # the NaN, kept
    for jid in ("recent", "running"):
        assert store.count_metrics(jid) == 10_000 and store.get_job(jid)["metrics_compacted_at"] is None
    assert (os.stat(her_dir), (her_dir / "output.log").stat()) == her_before
    job = store.get_job("oldalice")
    assert job["metrics_bucket"] == 100 and job["metrics_points_before"] == 10_000 and job["metrics_compacted_at"] >= now

    want = _extremes(pts)
    # runner metrics --json: every kept point, the extremes among them, and the word that it was compacted
    got = runner.json("metrics", "oldroot")
    assert got["compacted"]["points_before"] == 10_000 and got["compacted"]["bucket_steps"] == 100
    for name, ext in want.items():
        have = {(p["step"], p["epoch"], p["value"]) for p in got["series"][name]}
        assert ext <= have, (name, ext - have)
    assert sum(len(v) for v in got["series"].values()) == going["oldroot"]["kept"]
    assert "compacted on " in runner.run("metrics", "oldroot").stdout and "compacted on " in runner.run("show", "oldroot").stdout
    assert "compacted" not in runner.run("show", "recent").stdout

    # the HTTP API and the charts' own endpoints: the same points, the extremes where they were drawn
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")
    body = c.get("/jobs/oldroot/metrics?limit=10000").json()
    assert body["total"] == going["oldroot"]["kept"] and body["compacted"]["points_before"] == 10_000
    for name, ext in want.items():
        assert ext <= {(p["step"], p["epoch"], p["value"]) for p in body["metrics"] if p["name"] == name}, name
    charts = c.get("/ui/jobs/oldroot/charts").json()
    assert charts["compacted"]["at"] == job["metrics_compacted_at"] or charts["compacted"]["points_before"] == 10_000
    for name, ext in want.items():
        s = c.get(f"/jobs/oldroot/series?name={name}").json()
        assert s["compacted"] and not s["downsampled"] and s["total"] == len(s["x"])
        ys = [y for y in s["y"] if y is not None]
        finite = [v for _, _, v in ext if v is not None]
        assert min(ys) == min(finite) and max(ys) == max(finite), name
        assert s["y"][0] == [p for p in pts if p[0] == name][0][1] and s["y"][-1] == [p for p in pts if p[0] == name][-1][1]
        page = charts["series"][name]
        assert min(v for v in page["y"] if v is not None) == min(finite) and max(v for v in page["y"] if v is not None) == max(finite)
        if name == "loss":  # drawn by step: each kept point where it was
            assert s["axis"] == "step" and {(x, y) for x, y in zip(s["x"], s["y"])} >= {(st, v) for st, _, v in ext}
    assert "compacted on" in c.get("/ui/jobs/oldroot").text

    # a second pass changes nothing
    done = _dump(store)
    again = runner.json("gc")
    assert again["items"] == [] and again["metric_points"] == 0 and _dump(store) == done
    assert runner.json("gc", "--dry-run")["items"] == []


def test_the_daemons_pass_compacts_and_bad_values_are_one_line(home, runner):
    from runner import retention
    from runner.exceptions import RunnerError
    from runner.home import Home

    h = Home(home).ensure()
    store = h.store()
    now = time.time()
    _job(store, "old", 0, "root", 10, now)
    (home / "config.toml").write_text("[retention]\nmetrics_days = 7\n")  # the bucket: 100 steps unless said
    r = retention.Retention(Home(home), store)
    done = r.run_once(now)
    assert done and done["compacted_points"] > 9000 and store.get_job("old")["metrics_bucket"] == 100
    assert r.run_once(now + 60) is None  # at most once an hour

    for text, said in (("metrics_bucket = 'ten'", "[retention] metrics_bucket: given 'ten'; expected a whole number of steps, 2 or more"),
                       ("metrics_bucket = 1", "[retention] metrics_bucket: given 1; expected a whole number of steps"),
                       ("metrics_days = 0", "[retention] metrics_days: given 0; expected a number of days above 0"),
                       ("metrics_dayz = 3", "[retention] metrics_dayz: not a key of [retention]")):
        with pytest.raises(RunnerError) as e:
            retention.settings(tomllib.loads(f"[retention]\n{text}\n"))
        assert said in str(e.value), (text, str(e.value))
        (home / "config.toml").write_text(f"[retention]\n{text}\n")
        p = runner.run("gc", "--dry-run", check=False)
        assert p.returncode == 1 and said in p.stderr and "Traceback" not in p.stderr, p.stderr
    (home / "config.toml").write_text("")
    p = runner.run("gc", "--dry-run", "--metrics-days", "1", "--metrics-bucket", "0", check=False)
    assert p.returncode == 1 and "--metrics-bucket: given 0; expected a whole number of steps" in p.stderr, p.stderr


@pytest.mark.parametrize("seed", range(20))
def test_each_bucket_keeps_its_first_last_min_max_and_a_second_pass_keeps_all(seed):
    """The rule itself on random series (steps that restart each epoch, ties, NaNs, no steps at all),
    against a plain reading of it."""
    from runner.compaction import gaps

    rnd = random.Random(seed)
    rows, i = [], 0
    for name in ("a", "b", "c"):
        kind = rnd.choice(["step", "step_in_epoch", "none", "epoch"])
        for k in range(rnd.randint(1, 900)):
            i += rnd.randint(1, 3)
            v = None if rnd.random() < 0.02 else float(rnd.randint(0, 30))
            step = k if kind == "step" else (k % 97 if kind == "step_in_epoch" else None)
            epoch = k // 97 if kind in ("step_in_epoch", "epoch") else None
            rows.append((i, name, v, step, epoch))
    bucket = rnd.choice([2, 10, 100])
    by_name = {n: {r[0] for r in rows if r[1] == n} for n in ("a", "b", "c")}
    kept_n, ranges = gaps(rows, bucket)
    gone = set()
    for n, a, b in ranges:
        gone |= set(range(a + 1, b)) & by_name[n]
    kept = [r for r in rows if r[0] not in gone]
    assert len(kept) == kept_n
    kept_ids = {r[0] for r in kept}
    # a plain reading: per metric, its points cut into buckets (steps, or runs of points in an epoch)
    for name in ("a", "b", "c"):
        ser = [r for r in rows if r[1] == name]
        by_step = all(r[3] is not None for r in ser)
        buckets, key, run = [], None, 0
        for r in ser:
            run = run + 1 if key is not None and not by_step and r[4] == key[0] else 0
            k = (r[4], r[3] // bucket) if by_step else (r[4], run // bucket)
            if k != key:
                buckets.append([])
            buckets[-1].append(r)
            key = k
        for b in buckets:
            vals = [r for r in b if r[2] is not None]
            must = {b[0][0], b[-1][0]}
            if vals:
                must |= {min(vals, key=lambda r: r[2])[0], max(vals, key=lambda r: r[2])[0]}
            if len(vals) < len(b):
                must.add(next(r for r in b if r[2] is None)[0])
            ids = {r[0] for r in b}
            assert must <= kept_ids, (name, b)
            assert len(ids & kept_ids) <= 5
        if by_step:  # by steps, a second pass keeps every point
            assert gaps([r for r in kept if r[1] == name], bucket)[1] == []


def test_a_job_compacted_a_chunk_at_a_time_and_interrupted_ends_as_one_compacted_at_once(tmp_path, monkeypatch):
    """The deletes go a chunk of ranges a transaction (the daemon's writes never wait seconds): the
    points left equal those of a job compacted in one go, and a pass stopped between two chunks (a
    crash) leaves the job unmarked; the next pass ends with exactly the same points."""
    from runner import compaction
    from runner.store import Store

    now = time.time()
    kept = {}
    for name, chunk, crash in (("whole", 10**9, False), ("chunked", 3, False), ("crashed", 3, True)):
        s = Store(tmp_path / f"{name}.db")
        _job(s, "j1", os.getuid(), "u", 400, now)
        monkeypatch.setattr(compaction, "DELETE_CHUNK", chunk)
        if crash:
            real, calls = s.transaction, []

            def dying():  # the third write transaction never happens: the process died before it
                calls.append(1)
                if len(calls) == 3:
                    raise KeyboardInterrupt
                return real()
            monkeypatch.setattr(s, "transaction", dying)
            with pytest.raises(KeyboardInterrupt):
                s.compact_metrics("j1", 100, now, apply=True)
            monkeypatch.setattr(s, "transaction", real)
            left = len(s.metric_points())
            assert 10_000 > left and s.get_job("j1")["metrics_compacted_at"] is None  # some gone, not marked
        done = s.compact_metrics("j1", 100, now, apply=True)
        assert done is not None and s.get_job("j1")["metrics_compacted_at"] is not None
        kept[name] = [(r["id"], r["name"], r["value"], r["step"], r["epoch"]) for r in s.metric_points()]
        assert s.compact_metrics("j1", 100, now, apply=True) is None  # marked: a later pass leaves it
    assert kept["chunked"] == kept["whole"] == kept["crashed"] and 0 < len(kept["whole"]) < 10_000
