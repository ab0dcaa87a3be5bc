"""What the runs table, a job's charts and compare show, pinned against a model of the store (#30):
every page of every sort and filter lists the rows a plain sort of all the jobs gives, with the
same counts and page links, and every chart's series is the whole series downsampled. Written
before the pages were made fast at 100,000 jobs; they must show the same after.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from runner.home import Home
from runner.http import create_app
from runner.web import metricsview, series

ENDED = ("succeeded", "failed", "cancelled")
PAGE = 50
N_ENDED = 173  # 4 pages, the last one short
BIG = 6_000  # points of each job on the compare page (longer than a chart's points: downsampled)


def _jobs():
    """Rows of a small store: ended jobs (several users, models, names, tags, durations, and ties in
    each sortable column), then running and queued ones."""
    out = []
    for i in range(N_ENDED):
        t = 1_000_000.0 + (i * 7919 % N_ENDED) * 60  # creation times out of seq order
        out.append({"id": f"e{i:04d}", "name": f"sweep-{i % 9}" + ("_x" if i % 11 == 0 else ""), "user": f"user{i % 4}",
                    "uid": 0, "kind": "model" if i % 3 else "command",
                    "model": (None, "timm/resnet18", "ultralytics/yolov8n")[i % 3], "spec": {"train": {"lr": i % 5}},
                    "gpus": [], "after": [], "state": ENDED[i % 3], "reason": "exit_code", "created_at": t,
                    "started_at": t + 1, "finished_at": t + 1 + (i % 13) * 10, "exit_code": 0,
                    "tags": json.dumps(["a", "b"] if i % 5 == 0 else ["b"] if i % 5 == 1 else [])})
    for i in range(3):
        out.append({"id": f"r{i:04d}", "name": f"run-{i}", "user": f"user{i}", "uid": 0, "kind": "command", "model": None,
                    "spec": {}, "gpus": [], "after": [], "state": "running", "reason": None, "created_at": 2_000_000.0 + i,
                    "started_at": 2_000_000.0 + i})
    for i in range(70):  # more than a page: the table shows 50 and says how many more
        out.append({"id": f"q{i:04d}", "name": f"wait-{i % 3}", "user": f"user{i % 4}", "uid": 0, "kind": "command", "model": None,
                    "spec": {}, "gpus": [], "after": [], "state": "queued", "reason": None, "created_at": 3_000_000.0 + i,
                    "priority": i % 2})
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    home = tmp_path_factory.mktemp("pinned")
    h = Home(home).ensure()
    store = h.store()
    jobs = _jobs()
    for j in jobs:
        tags = j.pop("tags", None)
        prio = j.pop("priority", 0)
        store.insert_job(j, now=j["created_at"])
        store.update_job(j["id"], tags=tags, priority=prio)
        j["tags"], j["priority"] = tags, prio
    for k, j in enumerate(jobs[:N_ENDED]):  # a main metric on most ended jobs, and none on some
        if k % 7:
            name = "val_accuracy" if j["kind"] == "model" else "loss"
            store.add_metrics(j["id"], [(name, ((k * 37 + s * 11) % 101) / 100, s, s) for s in range(3)])
    big = [f"e{i:04d}" for i in range(0, 30, 3)]  # ten ended jobs with many points each, for compare
    for n, jid in enumerate(big):
        pts = []
        for s in range(BIG):
            pts += [("loss", 2.0 / (s + 1) + ((s * (n + 3)) % 17) / 100, s, s // 100),
                    ("val_loss", (float("nan") if s == 77 else 1.0 / (s // 100 + 1)), s, s // 100)]
        store.add_metrics(jid, pts)
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")
    rows = {j["id"]: dict(store.get_job(j["id"])) for j in jobs}
    return c, store, rows, big


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr class="[a-z]+" data-job="([^"]+)"', html)


def _metric(store, jid):
    return metricsview.main_metrics(store, [store.get_job(jid)]).get(jid)


def _expected_ended(rows, store, f) -> list[str]:
    """The ended jobs a filter matches, in the order the table sorts them (a plain Python sort)."""
    got = [r for r in rows.values() if r["state"] in ([f["state"]] if f.get("state") in ENDED else ENDED)
           and (not f.get("user") or r["user"] == f["user"]) and (not f.get("model") or r["model"] == f["model"])
           and (not f.get("name") or f["name"].lower() in r["name"].lower())
           and (not f.get("tag") or f["tag"] in (r["tags"] or []))]
    got.sort(key=lambda r: -r["seq"])
    key = {"seq": lambda r: r["seq"], "name": lambda r: r["name"], "user": lambda r: r["user"], "model": lambda r: r["model"] or "",
           "state": lambda r: r["state"], "created": lambda r: r["created_at"],
           "time": lambda r: r["finished_at"] - r["started_at"]}.get(f.get("sort"))
    if key:  # then seq newest first among equals (a stable sort of the seq-ordered list)
        got.sort(key=key, reverse=bool(f.get("desc")))
        if f.get("desc"):  # reversed ties: put them back newest first
            groups = {}
            for r in got:
                groups.setdefault(key(r), []).append(r)
            got = [r for k in dict.fromkeys(key(r) for r in got) for r in sorted(groups[k], key=lambda r: -r["seq"])]
    return [r["id"] for r in got]


FILTERS = [{}, {"state": "failed"}, {"user": "user2"}, {"model": "timm/resnet18"}, {"name": "_x"}, {"tag": "a"},
           {"user": "user1", "tag": "b"}, *({"sort": s, "desc": d} for s in ("seq", "name", "user", "model", "state", "created", "time")
                                            for d in (0, 1)), {"sort": "name", "desc": 1, "user": "user3"}]


def _check_page(c, want, f, page):
    """The page of the runs table (whole and its 3 s refresh): these ended rows, the count, the page
    links."""
    pages = max(1, -(-len(want) // PAGE))
    for path in ("/ui/queue/rows", "/ui/"):
        r = c.get(path, params={**f, "page": page})
        assert r.status_code == 200
        shown = [i for i in _ids(r.text) if i.startswith(("e", "h"))]
        assert shown == want[page * PAGE:(page + 1) * PAGE], (path, page)
        assert f"ended jobs: {len(want)} · page {page + 1} of {pages}" in r.text
        query = html.escape(urlencode({k: f.get(k, "") for k in ("user", "state", "model", "name", "tag")}))
        sorted_ = "&" + html.escape(urlencode({"sort": f["sort"], "desc": f["desc"]})) if f.get("sort") else ""
        newer = f'<a href="/ui/?{query}{sorted_}&page={page - 1}">newer</a>'
        older = f'<a href="/ui/?{query}{sorted_}&page={page + 1}" rel="next">older</a>'
        assert (newer in r.text) == (page > 0), (newer, r.text[-600:])
        assert (older in r.text) == (page + 1 < pages), (older, r.text[-600:])


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "plain")
def test_every_page_of_the_runs_table_shows_the_rows_a_plain_sort_gives(site, f):
    c, store, rows, _ = site
    want = _expected_ended(rows, store, f)
    pages = max(1, -(-len(want) // PAGE))
    for page in [*range(pages), pages + 3]:  # every page, and one past the last (empty)
        _check_page(c, want, f, page)


def test_the_runs_table_shows_running_then_the_queue_head_in_order_then_ended(site):
    c, store, rows, _ = site
    r = c.get("/ui/")
    ids = _ids(r.text)
    queue = sorted((x for x in rows.values() if x["state"] == "queued"), key=lambda x: (-x["priority"], x["created_at"], x["seq"]))
    running = sorted((x for x in rows.values() if x["state"] == "running"), key=lambda x: -x["seq"])
    assert ids[:3 + PAGE] == [x["id"] for x in running] + [x["id"] for x in queue[:PAGE]]
    assert "and 20 more queued" in r.text
    for n, x in enumerate(queue[:PAGE]):
        assert re.search(rf'data-job="{x["id"]}">.*?<td>queue {n + 1}</td>', r.text, re.S)
    counts = re.search(r'<p class="counts">(.*?)</p>', r.text).group(1)
    assert "queued 70" in counts and "running 3" in counts and f"succeeded {-(-N_ENDED // 3)}" in counts
    everyone = c.get("/ui/", params={"state": "queued"}).text
    assert [i for i in _ids(everyone)] == [x["id"] for x in queue]


@pytest.mark.parametrize("f", [{"sort": "latest", "desc": 0}, {"sort": "best", "desc": 1}, {"sort": "latest", "desc": 1, "page": 2}])
def test_sorting_by_the_metric_orders_the_rows_of_the_page(site, f):
    c, store, rows, _ = site
    page = f.get("page", 0)
    want = _expected_ended(rows, store, {})[page * PAGE:(page + 1) * PAGE]
    ms = {i: _metric(store, i) for i in want}
    have = [i for i in want if ms[i] and ms[i][f["sort"]] is not None]
    have.sort(key=lambda i: ms[i][f["sort"]], reverse=bool(f["desc"]))
    got = [i for i in _ids(c.get("/ui/queue/rows", params=f).text) if i.startswith("e")]
    assert got == have + [i for i in want if i not in have]
    text = c.get("/ui/", params={"page": page}).text
    for i in want[:10]:  # each row's metric, latest and best as the page prints them
        m = ms[i]
        cells = re.search(rf'data-job="{i}">.*?<td class="metric">(.*?)</td>\s*<td class="num latest">(.*?)</td>\s*<td class="num best">(.*?)</td>',
                          text, re.S).groups()
        assert cells == ((m["name"], "%.4g" % m["latest"], "%.4g" % m["best"]) if m else ("", "", ""))


def _reference_charts(store, jid, points, only=None):
    """A job's chart series as the page drew them when written: every point read, then downsampled."""
    names = sorted({m["name"] for m in store.metrics(jid)})
    out = {}
    for name in names if only is None else [n for n in names if n in only]:
        pts = [m for m in store.metrics(jid, name)]
        values = [None if m["value"] is None or m["value"] != m["value"] or abs(m["value"]) == float("inf") else m["value"] for m in pts]
        axis, xs = series.x_axis([m["step"] for m in pts], [m["epoch"] for m in pts])
        x, y = series.downsample(xs, values, points)
        out[name] = {"axis": axis, "x": x, "y": y, "total": len(values), "lower": metricsview.lower_is_better(name)}
    return out


def test_a_jobs_charts_are_its_whole_series_downsampled(site):
    c, store, rows, big = site
    for points in (metricsview.CHART_POINTS, 400, 7):
        got = c.get(f"/ui/jobs/{big[0]}/charts", params={"points": points}).json()
        assert got["series"] == _reference_charts(store, big[0], points)
        assert got["groups"] == metricsview.groups(list(got["series"])) and got["points"] == points
    small = c.get("/ui/jobs/e0001/charts").json()
    assert small["series"] == _reference_charts(store, "e0001", metricsview.CHART_POINTS)


def test_compare_shows_the_jobs_series_downsampled(site):
    c, store, rows, big = site
    q = ",".join(big)
    page = c.get("/ui/compare", params={"ids": q}).text
    assert f'data-compare="{q}"' in page and 'data-metric="val_loss"' in page
    got = c.get("/ui/compare/charts", params={"ids": q}).json()
    assert got["jobs"] == big and got["labels"] == [rows[j]["name"] + (f" ({j})" if [rows[x]["name"] for x in big].count(rows[j]["name"]) > 1 else "")
                                                    for j in big]
    assert got["groups"] == metricsview.groups(["loss", "val_loss"])
    for n in ("loss", "val_loss"):
        assert got["series"][n] == [_reference_charts(store, j, 400, [n])[n] for j in big]
    for j in big:
        s = c.get(f"/jobs/{j}/series", params={"name": "val_loss", "points": 2000}).json()
        ref = series.series(store, j, "val_loss", 2000)
        assert s["x"] == ref["x"] and s["y"] == ref["y"] and s["total"] == BIG
    mixed = c.get("/ui/compare/charts", params={"ids": f"{big[0]},e0001"}).json()  # a shared metric only
    assert set(mixed["series"]) == set(_reference_charts(store, big[0], 400)) & set(_reference_charts(store, "e0001", 400))


def test_a_100000_job_store_passes_the_same_queries_as_a_small_one(tmp_path):
    """100,000 jobs (90,000 ended, 10,000 queued), written as rows in one transaction (insert_job's
    columns; a commit a job would take minutes): the first, second, a middle, the last and a past
    page of the runs table under several sorts and filters list what a plain sort of all the rows
    gives, as on the small store; the queue's head is in order with its places."""
    h = Home(tmp_path).ensure()
    store = h.store()
    cols = ("id", "seq", "name", "user", "uid", "kind", "model", "spec", "gpus", "after", "state", "reason", "created_at", "queued_at",
            "started_at", "finished_at", "exit_code", "tags", "priority")
    rows = []
    for i in range(100_000):
        t = 1_000_000.0 + (i * 7919 % 100_000) * 60
        if i % 10 == 9:  # a tenth queued, spread through the seqs as a busy queue is
            rows.append((f"q{i:06d}", i + 1, f"wait-{i % 7}", f"user{i % 12}", 0, "command", None, "{}", "[]", "[]", "queued", None, t, t,
                         None, None, None, None, i % 3))
        else:
            rows.append((f"h{i:06d}", i + 1, f"sweep-{i % 97}" + ("_x" if i % 101 == 0 else ""), f"user{i % 12}", 0, "model",
                         ("timm/resnet18", "ultralytics/yolov8n", None)[i % 3], "{}", "[]", "[]", ENDED[i % 3], "exit_code", t, t, t + 1,
                         t + 1 + (i % 13) * 10, 0, json.dumps(["a"] if i % 50 == 0 else []), 0))
    with store.transaction() as cur:
        cur.executemany(f"INSERT INTO jobs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", rows)
    model = {r[0]: dict(zip(cols, r)) for r in rows}
    for m in model.values():
        m["tags"] = json.loads(m["tags"]) if m["tags"] else None
    ended = _expected_ended(model, store, {})
    for k, jid in enumerate(ended[:PAGE] + ended[-PAGE:]):  # main metrics on the first and last pages
        if k % 7:
            store.add_metrics(jid, [("val_accuracy", ((k * 37 + s) % 101) / 100, s, s) for s in range(3)])
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")
    for f in ({}, {"sort": "name", "desc": 1}, {"state": "failed"}, {"user": "user5"}, {"tag": "a"}):
        want = _expected_ended(model, store, f)
        last = -(-len(want) // PAGE) - 1
        # a sort or a tag reads every ended row for a page (no index by name or tag): its first and last
        for page in sorted({0, last} if f.get("sort") or f.get("tag") else {0, 1, last // 2, last, last + 1}):
            _check_page(c, want, f, page)
    r = c.get("/ui/")
    queue = sorted((m for m in model.values() if m["state"] == "queued"), key=lambda m: (-m["priority"], m["created_at"], m["seq"]))
    assert [i for i in _ids(r.text) if i.startswith("q")] == [m["id"] for m in queue[:PAGE]]
    assert "and 9950 more queued" in r.text
    assert "queue 1</td>" in r.text and f"queue {PAGE}</td>" in r.text
    for k, jid in enumerate(ended[:PAGE]):
        m = _metric(store, jid)
        assert (m is None) == (k % 7 == 0)
    cells = re.search(rf'data-job="{ended[1]}">.*?<td class="metric">(.*?)</td>', r.text, re.S).group(1)
    assert cells == "val_accuracy"
