"""The HTTP API on its own (FastAPI's TestClient on create_app, no daemon): every route, its
errors and its pagination, against a store filled directly."""

from __future__ import annotations

import json
import os

import pytest
from fastapi.testclient import TestClient

from runner import tokens
from runner.home import Home
from runner.http import create_app


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
    return TestClient(create_app(h)), h, store, {"Authorization": f"Bearer {token}"}


def test_healthz_and_status(served):
    c, *_ = served
    assert c.get("/healthz").json() == {"ok": True}
    st = c.get("/status").json()
    assert st["jobs"]["queued"] >= 6 if isinstance(st.get("jobs"), dict) else st
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
