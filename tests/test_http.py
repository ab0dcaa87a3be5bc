"""The HTTP API on its own (FastAPI's TestClient on create_app, no daemon): every route, its
errors and its pagination, against a store filled directly."""

from __future__ import annotations

import json
import os
import time

import pytest
from fastapi.testclient import TestClient

from runner import tokens
from runner.home import Home
from runner.http import create_app

pytestmark = pytest.mark.shared_envs  # its homes reuse the session's framework envs (tests/envcache.py)


@pytest.fixture
def served(tmp_path):
    h = Home(tmp_path / "home").ensure()
    store = h.store()
    me = os.getuid()
    for i in range(25):
        state = ("queued", "running", "succeeded", "failed")[i % 4]
        store.insert_job({"id": f"job{i:04d}", "name": f"n{i}", "user": "alice" if i % 2 else "bob", "uid": me, "kind": "command",
                          "spec": {"command": ["true"], "env_vars": {}, "name": f"n{i}"}, "gpus": [], "after": [], "state": state,
                          "started_at": 100.0 + i if state != "queued" else None, "finished_at": 200.0 + i if state in ("succeeded", "failed") else None})
    store.add_metrics("job0001", [("loss", 1.0 / (k + 1), k, k // 10) for k in range(250)])
    store.add_metrics("job0001", [("acc", 0.5, 0, 0)])
    run = h.run_dir("job0001")
    run.mkdir(parents=True, exist_ok=True)
    (run / "output.log").write_bytes(b"".join(b"line %d\n" % k for k in range(1000)))
    tokens.ensure_dir(h)
    token = tokens.write(h, me, os.getgid())
    return TestClient(create_app(h), base_url="http://127.0.0.1:8765"), h, store, {"Authorization": f"Bearer {token}"}


def test_healthz_and_status(served):
    c, h, *_ = served
    assert c.get("/healthz").json() == {"ok": True}
    r = c.get("/status")
    assert r.status_code == 200
    st = r.json()
    # 25 jobs cycling queued, running, succeeded, failed: 7 queued, 6 of each other; nothing spooled
    assert st["counts"] == {"queued": 7, "running": 6, "succeeded": 6, "failed": 6, "submitted": 0}
    assert st["home"] == str(h.root) and st["daemon_pid"] is None  # no daemon serves this app
    assert c.get("/openapi.json").status_code == 200


def test_jobs_list_filters_and_pages(served):
    c, *_ = served
    all_ids = [j["id"] for j in c.get("/jobs?limit=1000").json()["jobs"]]
    assert sorted(all_ids) == [f"job{i:04d}" for i in range(25)]
    page1 = c.get("/jobs?limit=10").json()
    page2 = c.get("/jobs?limit=10&offset=10").json()
    page3 = c.get("/jobs?limit=10&offset=20").json()
    assert (page1["limit"], page2["offset"]) == (10, 10)
    ids = [j["id"] for p in (page1, page2, page3) for j in p["jobs"]]
    assert len(ids) == 25 and len(set(ids)) == 25 and ids == all_ids  # pages neither overlap nor skip
    failed = c.get("/jobs?state=failed").json()["jobs"]
    assert failed and {j["state"] for j in failed} == {"failed"}
    two = c.get("/jobs?state=failed&state=queued").json()["jobs"]
    assert {j["state"] for j in two} == {"failed", "queued"}
    alice = c.get("/jobs?user=alice").json()["jobs"]
    assert alice and {j["user"] for j in alice} == {"alice"}
    latest = next(j for j in all_ids and c.get("/jobs?limit=1000").json()["jobs"] if j["id"] == "job0001")["metrics"]
    assert latest["loss"] == pytest.approx(1 / 250) and latest["acc"] == 0.5


def test_a_page_of_jobs_stops_at_its_bytes_and_says_where_to_read_on(served, monkeypatch):
    """A job may keep 1,000 metric names (64 KiB of them): 1,000 such jobs were a 66 MB answer, held
    whole by each connection that asked for it. A page stops short of its limit at
    HTTP_MAX_PAGE_BYTES (at least one job, however large) and next_offset says where to read on;
    following it reads every job once. The spool's jobs stay on the first page, outside the offsets."""
    from runner import defaults, spool

    c, h, store, auth = served
    for i in (3, 7, 8, 20):  # wide jobs, ~40 KB each
        store.add_metrics(f"job{i:04d}", [(f"class_{k:04d}/{'x' * 20}", 0.5, 1, 1) for k in range(1000)])
    every = [j["id"] for j in c.get("/jobs?limit=1000&offset=0&state=failed&state=succeeded&state=queued&state=running").json()["jobs"]]
    assert len(every) == 25
    monkeypatch.setattr(defaults, "HTTP_MAX_PAGE_BYTES", 50_000)
    got, offset, pages = [], 0, []
    while offset is not None:
        r = c.get(f"/jobs?limit=10&offset={offset}&state=failed&state=succeeded&state=queued&state=running")
        assert r.status_code == 200 and len(r.content) <= 50_000 + 2_000 or len(r.json()["jobs"]) == 1, len(r.content)
        body = r.json()
        pages.append(len(body["jobs"]))
        got += [j["id"] for j in body["jobs"]]
        assert body["offset"] == offset and body["limit"] == 10
        offset = body["next_offset"]
    assert got == every and max(pages) == 10 and min(pages[:-1]) < 10, pages  # none skipped, none twice; some cut short
    last = c.get("/jobs?limit=5&offset=20&state=failed&state=succeeded&state=queued&state=running").json()
    assert len(last["jobs"]) == 5 and last["next_offset"] is None
    monkeypatch.setattr(defaults, "HTTP_MAX_PAGE_BYTES", 10)
    one = c.get("/jobs?limit=10&offset=3&state=failed&state=succeeded&state=queued&state=running").json()
    assert [j["id"] for j in one["jobs"]] == [every[3]] and one["next_offset"] == 4  # one job, larger than the page
    spool.submit(h, {"command": ["true"]})
    first = c.get("/jobs?limit=2").json()
    assert first["jobs"][0]["state"] == "submitted" and first["next_offset"] == 1  # the spool's job, then one of the store's


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=1001", "limit"), ("offset=-1", "offset"),
                                          ("state=bogus", "state"), ("limit=ten", "limit")])
def test_jobs_list_refuses_bad_parameters_in_one_line(served, query, field):
    c, *_ = served
    r = c.get(f"/jobs?{query}")
    assert r.status_code == 422
    body = r.json()
    assert body["error"].startswith(field) and "\n" not in body["error"]


def test_one_job_and_unknown_job(served):
    c, *_ = served
    j = c.get("/jobs/job0003").json()
    assert j["id"] == "job0003" and j["state"] == "failed" and j["transitions"][0]["to_state"] == "failed"
    assert j["spec"]["command"] == ["true"] and j["duration"] == pytest.approx(100.0)
    amb = c.get("/jobs/job002")  # job0020..job0024: a prefix that names several jobs names none
    assert amb.status_code == 404 and "job002" in amb.json()["error"], amb.text
    r = c.get("/jobs/nosuchjob")
    assert r.status_code == 404 and "nosuchjob" in r.json()["error"]


def test_metrics_pages_with_total_and_next_offset(served):
    c, *_ = served
    first = c.get("/jobs/job0001/metrics?name=loss&limit=100").json()
    assert (first["total"], len(first["metrics"]), first["next_offset"]) == (250, 100, 100)
    second = c.get(f"/jobs/job0001/metrics?name=loss&limit=100&offset={first['next_offset']}").json()
    last = c.get(f"/jobs/job0001/metrics?name=loss&limit=100&offset={second['next_offset']}").json()
    assert len(last["metrics"]) == 50 and last["next_offset"] is None
    steps = [m["step"] for p in (first, second, last) for m in p["metrics"]]
    assert steps == list(range(250))
    assert c.get("/jobs/job0001/metrics").json()["total"] == 251  # every name
    assert c.get("/jobs/job0001/metrics?limit=10001").status_code == 422
    assert c.get("/jobs/nosuch/metrics").status_code == 404


def test_log_tail_range_and_stream(served):
    c, _h, _s, auth = served
    full = c.get("/jobs/job0001/log", headers=auth)
    assert full.status_code == 200 and full.text.count("\n") == 1000 and full.headers["X-Log-Size"] == str(len(full.content))
    assert c.get("/jobs/job0001/log?tail=2", headers=auth).text.splitlines() == ["line 998", "line 999"]
    part = c.get("/jobs/job0001/log?offset=7&length=7", headers=auth)
    assert part.content == full.content[7:14] and part.headers["X-Log-Offset"] == "7"
    assert c.get("/jobs/job0001/log?tail=100001", headers=auth).status_code == 422
    assert c.get("/jobs/job0001/log").status_code == 401  # a log is its owner's: a token is needed
    assert c.get("/jobs/job0001/log", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/jobs/job0002/log", headers=auth).text == ""  # no log yet: empty, not an error


def test_post_job_needs_a_token_and_a_valid_spec(served):
    c, h, _s, auth = served
    spec = {"command": ["echo", "hi"], "name": "posted", "workdir": str(h.root.parent)}
    assert c.post("/jobs", json=spec).status_code == 401
    r = c.post("/jobs", json=spec, headers=auth)
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    spooled = [json.loads(p.read_text()) for p in h.spool.glob("*.json")]
    assert any(rec["id"] == jid and rec["spec"]["name"] == "posted" for rec in spooled)
    assert any(j["id"] == jid and j["state"] == "submitted" for j in c.get("/jobs").json()["jobs"])
    bad = c.post("/jobs", json={"command": ["x"], "priority": "high"}, headers=auth)
    assert bad.status_code == 422 and "priority" in bad.json()["error"]
    assert c.post("/jobs", content=b"{not json", headers={**auth, "content-type": "application/json"}).status_code == 422


def test_cancel_and_retry(served):
    c, h, store, auth = served
    assert c.post("/jobs/job0000/cancel").status_code == 401
    r = c.post("/jobs/job0000/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    assert any("job0000" in p.read_text() for p in h.spool.glob("*.json"))  # the daemon's to carry out
    assert c.post("/jobs/nosuch/cancel", headers=auth).status_code == 404
    retried = c.post("/jobs/job0003/retry", headers=auth)
    assert retried.status_code == 201 and retried.json()["retry_of"] == "job0003"
    assert c.post("/jobs/job0001/retry", headers=auth).status_code == 409  # running: nothing to retry


def test_envs_gpus_models_schema(served):
    c, *_ = served
    assert set(c.get("/envs").json()) == {"envs", "builds"}
    g = c.get("/gpus").json()
    assert set(g) >= {"source", "available", "gpus"}
    models = c.get("/models?framework=timm").json()["models"]
    assert models and {m["framework"] for m in models} == {"timm"}
    assert any(m["ref"] == "timm/resnet18" for m in models)
    assert c.get("/models?task=object_detection").json()["models"]
    assert c.get("/models/timm/resnet18").json()["ref"] == "timm/resnet18"
    assert c.get("/models/timm/no-such").status_code == 404
    schema = c.get("/frameworks/timm/schema").json()
    assert schema["framework"] == "timm" and any(f["name"] == "lr" or f["name"] == "optimizer" for f in schema["fields"])
    assert c.get("/frameworks/nope/schema").status_code == 404


def test_unknown_route_is_404_json(served):
    c, *_ = served
    r = c.get("/no/such/route")
    assert r.status_code == 404 and "error" in r.json()
    r = c.delete("/jobs")
    assert r.status_code == 405 and "error" in r.json()


# -- what every request passes before a route (runner/web/guard.py) ------------------------------

@pytest.mark.parametrize("host, status", [("127.0.0.1:8765", 200), ("localhost:8765", 200), ("[::1]:8765", 200), ("LOCALHOST", 200),
                                          ("evil.example:8765", 421), ("127.0.0.1.evil.example", 421), ("gpu1.lab:8765", 421)])
def test_host_must_be_a_name_of_this_server(served, host, status):
    c, *_ = served
    r = c.get("/jobs", headers={"Host": host})
    assert r.status_code == status, r.text
    if status == 421:
        assert r.json()["error"].startswith("Host: ") and "\n" not in r.json()["error"] and "[server] hostnames" in r.json()["error"]


def test_a_site_names_more_hosts_and_a_wildcard_bind_takes_its_addresses(tmp_path):
    from runner.web.guard import Hosts

    h = Home(tmp_path / "home").ensure()
    h.config_file.write_text('[server]\nhostnames = ["gpu1.lab"]\n')
    c = TestClient(create_app(h), base_url="http://gpu1.lab:8765")
    assert c.get("/healthz").status_code == 200
    assert c.get("/healthz", headers={"Host": "gpu2.lab"}).status_code == 421
    every = Hosts("0.0.0.0:8765", ["gpu1.lab"])
    assert every.refuse(b"10.1.2.3:8765") is None and every.refuse(b"[fe80::1]:8765") is None and every.refuse(b"gpu1.lab") is None
    assert "not a name of this server" in every.refuse(b"rebound.example:8765")
    assert Hosts("10.0.0.5:8765").refuse(b"10.0.0.5:8765") is None and Hosts("10.0.0.5:8765").refuse(b"localhost") is not None
    assert Hosts("127.0.0.1:8765").refuse(None).startswith("Host: missing")


def test_a_body_over_the_cap_is_refused_in_one_line(served, tmp_path):
    c, h, _s, auth = served
    big = b'{"command": ["true"], "name": "' + b"x" * (2 << 20) + b'"}'
    r = c.post("/jobs", content=big, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"].startswith("request body: larger than 1048576 bytes") and "\n" not in r.json()["error"]
    chunked = c.post("/jobs", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                     headers={**auth, "content-type": "application/json"})  # no Content-Length: counted as it comes
    assert chunked.status_code == 413, chunked.text
    form = c.post("/ui/login", content=b"token=" + b"x" * (2 << 20), headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 413  # the dashboard's forms too
    assert c.post("/jobs", content=big, headers={"content-type": "application/json"}).status_code == 413  # declared: before the token
    h.config_file.write_text("[server]\nmax_body_bytes = 4194304\n")
    c2 = TestClient(create_app(Home(h.root)), base_url="http://127.0.0.1:8765")
    r = c2.post("/jobs", content=big, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 422 and "the spec is" in r.json()["error"], r.text  # read, and judged by the spec check
    bad = c.post("/jobs", content=b"[1, 2]", headers={**auth, "content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["error"] == "body: given a JSON list; expected a job spec as a JSON object"


def test_pages_keep_what_they_show_inert(served):
    c, *_ = served
    r = c.get("/ui/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in c.get("/docs").headers  # FastAPI's own page (inline script), no job's data
    log = c.get("/ui/jobs/job0001/log")
    assert log.headers["content-type"].startswith("text/plain") and log.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("value, expected", [("/ui/jobs/abc", "/ui/jobs/abc"), ("/ui/?state=failed", "/ui/?state=failed"),
                                             ("//evil.example/x", "/ui/"), ("https://evil.example", "/ui/"), ("/\\evil.example", "/ui/"),
                                             ("javascript:alert(1)", "/ui/"), ("/\t/evil.example", "/ui/"), ("", "/ui/"), (None, "/ui/"),
                                             ("ui/jobs", "/ui/")])
def test_next_is_a_path_of_this_site_only(served, value, expected):
    from runner.web.auth import safe_next

    assert safe_next(value) == expected
    c, h, _s, auth = served
    token = auth["Authorization"].split()[1]
    r = c.post("/ui/login", data={"token": token, **({"next": value} if value is not None else {})}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == expected


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"},
                                     {"Referer": "http://evil.example/page"}, {"Sec-Fetch-Site": "same-site"}])
def test_signing_in_or_out_from_another_site_is_refused(served, headers):
    c, h, _s, auth = served
    token = auth["Authorization"].split()[1]
    r = c.post("/ui/login", data={"token": token}, headers=headers, follow_redirects=False)
    assert r.status_code == 403 and "cross-site request refused" in r.text and "set-cookie" not in r.headers
    c.cookies.clear()
    ok = c.post("/ui/login", data={"token": token}, headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False)
    assert ok.status_code == 303 and "runner_session=" in ok.headers["set-cookie"]
    out = c.post("/ui/logout", headers=headers, follow_redirects=False)
    assert out.status_code == 403 and "set-cookie" not in out.headers
    assert c.post("/ui/logout", headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False).status_code == 303


def test_healthz_writes_the_store_at_most_every_few_seconds(served):
    from runner import http

    _c, h, store, _a = served
    w = http._Writable(h, store)
    assert w.probe(now=1000.0) is None and not (h.root / ".healthz-probe").exists()
    real = w.home
    w.home = type("Gone", (), {"root": h.root / "no-such-folder"})()  # its folder can no longer be written
    assert w.probe(now=1001.0) is None  # within STORE_PROBE_SECONDS: the last verdict, no write
    problem = w.probe(now=1000.0 + http.STORE_PROBE_SECONDS)
    assert problem.startswith("the store's folder cannot be written") and "\n" not in problem
    w.home = real
    assert w.probe(now=1000.0 + 2 * http.STORE_PROBE_SECONDS) is None


def test_the_runs_tables_queue_is_a_page_in_start_order_with_each_jobs_place(tmp_path):
    """120 queued jobs of two users at two priorities: /ui/ shows the first 50 to start with their
    places, says how many more; filtered by user, each row keeps its place in the whole queue."""
    import re

    h = Home(tmp_path / "home").ensure()
    store = h.store()
    me = os.getuid()
    for i in range(120):
        store.insert_job({"id": f"q{i:04d}", "name": f"n{i}", "user": ("ann", "ben")[i % 2], "uid": me, "kind": "command",
                          "spec": {"command": ["true"]}, "gpus": [], "after": [], "priority": 5 if i % 10 == 0 else 0,
                          "created_at": 1000.0 + i}, now=1000.0 + i)
    store.insert_job({"id": "slurm001", "name": "held", "user": "ben", "uid": me, "kind": "command", "spec": {"command": ["true"]},
                      "gpus": [], "after": [], "priority": 9, "created_at": 1.0, "slurm_job_id": "4242"}, now=1.0)  # in Slurm's queue
    expected = sorted(range(120), key=lambda i: (-(5 if i % 10 == 0 else 0), i))  # priority first, then age
    place = {f"q{i:04d}": k + 1 for k, i in enumerate(expected)}
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")

    def rows(query=""):
        page = c.get("/ui/" + query).text
        return re.findall(r'<tr class="queued" data-job="(q\d+)">.*?<td>queue (\d+)</td>', page, re.S), page

    got, page = rows()
    assert [j for j, _ in got] == [f"q{i:04d}" for i in expected[:50]] and all(place[j] == int(p) for j, p in got)
    assert "and 71 more queued" in page  # (Slurm's job among them, with no place in runner's queue)
    got, page = rows("?user=ben")
    assert [j for j, _ in got] == [f"q{i:04d}" for i in expected if i % 2][:50] and all(place[j] == int(p) for j, p in got)
    assert "and 11 more queued" in page
    got, page = rows("?state=queued")
    assert len(got) == 120 and all(place[j] == int(p) for j, p in got) and 'data-job="slurm001"' in page


@pytest.mark.parametrize("path, module, function", [
    ("/jobs?all=true", "runner.queries", "list_jobs"),
    ("/ui/jobs/job0001/charts", "runner.web.metricsview", "charts"),
    ("/jobs/job0001/series?name=loss", "runner.web.series", "series"),
])
def test_a_big_read_is_made_off_the_event_loop_and_holds_no_other_request(served, monkeypatch, path, module, function):
    """GET /jobs of 1,000 jobs with 1,000 metric names each is 66 MB of JSON and ~2 s, the charts of
    a job of 1,000 metrics of 4,000 points ~1-2 s: made on the event loop, each held every other
    request that long (/healthz 2.0 s measured); now they are made in worker threads. Here the read
    is held until /healthz has been answered (10 s at most): on the loop, /healthz would wait 10 s."""
    import importlib
    import threading
    import time

    c, h, store, auth = served
    mod = importlib.import_module(module)
    answered, real = threading.Event(), getattr(mod, function)

    def held(*a, **kw):
        answered.wait(10)
        return real(*a, **kw)
    monkeypatch.setattr(mod, function, held)
    got = []
    with c:  # one event loop for both requests, as the daemon's server has
        t = threading.Thread(target=lambda: got.append(c.get(path, headers=auth)))
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        health = c.get("/healthz")
        took = time.monotonic() - t0
        answered.set()
        t.join(20)
    assert health.status_code == 200 and took < 5, f"/healthz waited {took:.1f}s behind {path}"
    assert got[0].status_code == 200, got[0].text
    body = got[0].json()
    if function == "list_jobs":
        assert len(body["jobs"]) == 25 and body["limit"] == 100
    elif function == "charts":
        assert set(body["series"]) == {"loss", "acc"} and body["series"]["loss"]["total"] == 250 and body["job"] == "job0001"
    else:
        assert body["total"] == 250


def _held_reads(block: str):
    """(a web.reads.Reads, the tags of the reads made in order, a read of a tag, an Event set once
    the read of `block` is being made, the Event that lets it finish)."""
    import threading

    from runner.web.reads import Reads

    made, started, gate = [], threading.Event(), threading.Event()

    def read(tag):
        if tag == block:
            started.set()
            gate.wait(10)
        made.append(tag)
        return tag
    return Reads(), made, read, started, gate


def test_long_reads_take_turns_among_the_people_asking():
    """The one thread of long reads is shared among people, not first come first served: bob keeps
    five 2 s pages waiting (any teammate can make such pages), alice's read is made right after the
    one of his in the making, not after all of them; past WAITING of his, one more is refused (429);
    a read whose client went away is never made."""
    import asyncio

    from fastapi import HTTPException

    from runner.web.reads import Reads as _Reads

    reads, order, read, started, gate = _held_reads("bob0")

    async def main():
        first = asyncio.ensure_future(reads(read, "bob0", who="bob"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        bobs = [asyncio.ensure_future(reads(read, f"bob{i}", who="bob")) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(reads(read, "carol-gone", who="carol"))
        hangs_up = asyncio.Event()

        class Request:  # dave's: its client closes the connection while his read waits (ASGI's http.disconnect)
            sent = False

            async def receive(self):
                if not self.sent:
                    self.sent = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                await hangs_up.wait()
                return {"type": "http.disconnect"}
        dave = asyncio.ensure_future(reads(read, "dave-gone", who="dave", request=Request()))
        alice = asyncio.ensure_future(reads(read, "alice", who=1001, request=Request()))
        await asyncio.sleep(0.05)
        gone.cancel()  # carol's request was cancelled: her read is not made
        hangs_up.set()  # dave closed his tab (so did alice's other Request: both gone, neither made)
        await asyncio.sleep(0.05)
        assert dave.done() and dave.exception().status_code == 499 and alice.done()
        alice = asyncio.ensure_future(reads(read, "alice", who=1001))
        more = [asyncio.ensure_future(reads(read, f"bob{i}", who="bob")) for i in range(6, 6 + _Reads.WAITING)]
        await asyncio.sleep(0.05)
        refused = [t for t in more if t.done() and isinstance(t.exception(), HTTPException)]
        assert reads.waiting("bob") == _Reads.WAITING and len(refused) == 5
        assert refused[0].exception().status_code == 429 and "at most 16" in refused[0].exception().detail
        gate.set()
        got = await asyncio.gather(first, *bobs, alice, *(t for t in more if t not in refused))
        return got

    got = asyncio.run(main())
    assert order[:3] == ["bob0", "alice", "bob1"], order
    assert "carol-gone" not in order and "dave-gone" not in order and got[6] == "alice" and len(order) == 1 + 5 + 1 + 11
    assert [t for t in order if t != "alice"] == [f"bob{i}" for i in range(17)]  # his own reads in the order he asked


def test_a_loopback_readers_uid_is_the_owner_of_her_socket():
    """Reads on loopback need no token: the daemon shares its long reads by the uid owning the
    client's socket of that very connection (sock_diag by both ends: IPv4, IPv6, an IPv4 client of
    a dual-stack server as ::ffff:). A port of the client's towards another peer, or a connection
    gone to TIME_WAIT, is no one's (found by a hostile pass: by the socket tables, matched by the
    client's end alone, his connection could look like hers, or root's)."""
    import socket

    from runner.peer import loopback_uid

    pairs = []
    for fam, host, to in ((socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "::1"),
                          (socket.AF_INET6, "::", "127.0.0.1"), (socket.AF_INET6, "::", "::ffff:127.0.0.1")):
        srv = socket.socket(fam)
        if host == "::":
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind((host, 0))
        srv.listen()
        c = socket.create_connection((to, srv.getsockname()[1]))
        conn, peer = srv.accept()
        pairs.append((srv, c, conn))
        here = conn.getsockname()[:2]
        assert loopback_uid(peer[0], peer[1], here) == os.getuid(), peer
        assert loopback_uid(peer[0], peer[1] ^ 1, here) is None  # another port: no such connection
        assert loopback_uid(peer[0], peer[1], (here[0], here[1] ^ 1)) is None  # her port, towards another peer
    srv, c, conn = pairs[0]
    peer, here = c.getsockname(), conn.getsockname()
    c.close()  # the client closes first: its end goes to TIME_WAIT
    conn.close()
    time.sleep(0.1)
    assert loopback_uid(peer[0], peer[1], here) is None
    for p in pairs:
        for s in p:
            s.close()
    assert loopback_uid("10.1.2.3", 8080, ("10.1.2.3", 80)) is None and loopback_uid("not an address", 1, ("127.0.0.1", 2)) is None
    if os.geteuid() == 0:  # a client of another uid: a child that became nobody before it connected
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(65534)
                os.setuid(65534)
                c = socket.create_connection(srv.getsockname())
                c.recv(1)
            finally:
                os._exit(0)
        conn, peer = srv.accept()
        try:
            assert loopback_uid(*peer, conn.getsockname()) == 65534
        finally:
            conn.close()
            os.waitpid(pid, 0)
            srv.close()


def test_reads_of_one_page_asked_at_once_share_one_read():
    """40 clients asking the same page while the thread is busy (200 in test_hostile): one read is
    made and each gets its answer, none refused for the 16 waiting; when the client that asked
    first goes away before it is made, the others ask anew and are answered."""
    import asyncio

    reads, calls, read, started, gate = _held_reads("block")

    async def main():
        first = asyncio.ensure_future(reads(read, "block", who="x"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        same = [asyncio.ensure_future(reads(read, "page", who="bob", key=("jobs", 0))) for _ in range(40)]
        await asyncio.sleep(0.05)
        opener = asyncio.ensure_future(reads(read, "other", who="bob", key=("jobs", 1)))
        await asyncio.sleep(0.02)
        sharers = [asyncio.ensure_future(reads(read, "other", who="alice", key=("jobs", 1))) for _ in range(3)]
        await asyncio.sleep(0.05)
        opener.cancel()  # the first to ask that page went away
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *same, *sharers)

    got = asyncio.run(main())
    assert got == ["block"] + ["page"] * 40 + ["other"] * 3
    assert calls == ["block", "page", "other"]  # one read of each page
