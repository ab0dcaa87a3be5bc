"""The store: the transition table, atomic claims, metrics with offsets, migrations."""

from __future__ import annotations

import shutil
import sqlite3
import time

import pytest

from conftest import FIXTURES
from runner.exceptions import InvalidTransition
from runner.states import TRANSITIONS, JobState
from runner.store import SCHEMA_VERSION, Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "runner.db")


def _job(store, jid="job1"):
    store.insert_job({"id": jid, "name": jid, "user": "u", "uid": 1000, "kind": "command", "spec": {"command": "true"},
                      "created_at": 1.0, "gpus": [], "after": []})


# Written out here, not read from runner.states: the store must allow exactly these moves.
ALLOWED = {("queued", "preparing"), ("queued", "cancelled"), ("queued", "failed"),
           ("queued", "running"),  # Slurm started a job it held in its queue
           ("preparing", "running"), ("preparing", "failed"), ("preparing", "cancelled"), ("preparing", "queued"),
           ("running", "succeeded"), ("running", "failed"), ("running", "cancelled"),
           ("running", "queued")}  # submitted to Slurm again after its node failed


def test_every_transition_follows_the_table(store):
    assert {(s.value, d.value) for s, ds in TRANSITIONS.items() for d in ds} == ALLOWED
    for i, src in enumerate(JobState):
        for j, dst in enumerate(JobState):
            jid = f"t{i}{j}"
            _job(store, jid)
            store.conn.execute("UPDATE jobs SET state=? WHERE id=?", (src.value, jid))
            if (src.value, dst.value) in ALLOWED:
                store.transition(jid, dst, "test", now=5)
                assert store.get_job(jid)["state"] == dst.value
                assert store.transitions(jid)[-1]["from_state"] == src.value
            else:
                with pytest.raises(InvalidTransition):
                    store.transition(jid, dst, "test", now=5)
                assert store.get_job(jid)["state"] == src.value  # unchanged
    _job(store)
    with pytest.raises(InvalidTransition):
        store.transition("job1", JobState.SUCCEEDED)  # queued -> succeeded skips running
    store.transition("job1", JobState.PREPARING, "scheduled", now=10)
    store.transition("job1", JobState.RUNNING, now=11)
    store.transition("job1", JobState.FAILED, "exit_code", now=12, exit_code=3)
    with pytest.raises(InvalidTransition):
        store.transition("job1", JobState.RUNNING)
    hist = [(t["from_state"], t["to_state"], t["at"], t["reason"]) for t in store.transitions("job1")]
    assert hist == [(None, "queued", hist[0][2], "submitted"), ("queued", "preparing", 10, "scheduled"),
                    ("preparing", "running", 11, None), ("running", "failed", 12, "exit_code")]
    j = store.get_job("job1")
    assert (j["state"], j["reason"], j["exit_code"], j["started_at"], j["finished_at"]) == ("failed", "exit_code", 3, 11, 12)


def test_expect_guards_against_a_moved_job(store):
    _job(store)
    store.transition("job1", JobState.CANCELLED, "cancelled_by_user")
    with pytest.raises(InvalidTransition):
        store.transition("job1", JobState.PREPARING, expect=JobState.QUEUED)


def test_claim_takes_gpus_once_and_ending_frees_them(store):
    _job(store, "a")
    _job(store, "b")
    store.claim("a", [(0, "GPU-0")])
    with pytest.raises(InvalidTransition):
        store.claim("b", [(0, "GPU-0")])
    assert store.get_job("b")["state"] == "queued"  # the failed claim changed nothing
    assert store.gpu_allocations() == {"GPU-0": "a"}
    store.transition("a", JobState.RUNNING)
    store.transition("a", JobState.SUCCEEDED)
    assert store.gpu_allocations() == {}


def test_progress_is_stored_with_its_offset(store):
    _job(store)
    store.record_progress("job1", [("loss", 0.5, 1, 1), ("acc", 0.9, 1, 1)], 120, {"epoch": 1})
    j = store.get_job("job1")
    assert j["log_offset"] == 120 and j["parser_state"] == {"epoch": 1}
    assert store.latest_metrics("job1") == {"loss": 0.5, "acc": 0.9}


def test_a_batch_of_points_is_stored_whole_and_in_order(store):
    import math

    from runner.store.metrics import PACK_POINTS

    _job(store)
    n = 6 * PACK_POINTS + 37  # (3 metrics) more than two full packs of each, and the rest
    pts = [(f"m{i % 3}", [0.25 * i, float("nan"), float("inf"), -1e-300][i % 4], None if i % 5 == 0 else i, i // 7) for i in range(n)]
    store.record_progress("job1", pts, 999, {"epoch": 5})
    got = [(r["name"], r["value"], r["step"], r["epoch"]) for r in store.metrics("job1")]
    # (SQLite keeps a NaN as NULL, whichever way it is inserted)
    assert got == [(m, None if math.isnan(v) else v, st, e) for (m, v, st, e) in pts]
    with pytest.raises(ValueError):  # a malformed point: nothing of the batch is stored, the offset stays
        store.record_progress("job1", pts[:50] + [("loss", 1.0, 1), ("loss", 1.0, 1, 1, 1)] + pts[:60], 2000)
    assert store.count_metrics("job1") == n and store.get_job("job1")["log_offset"] == 999


def test_prefix_lookup(store):
    _job(store, "abc123")
    _job(store, "abd456")
    assert store.get_job("abc")["id"] == "abc123"
    from runner.exceptions import JobNotFound

    with pytest.raises(JobNotFound, match="ambiguous"):
        store.get_job("ab")
    with pytest.raises(JobNotFound, match="no such job"):
        store.get_job("zzz")


def test_old_database_keeps_loading(tmp_path):
    """A v1 database (checked in) is migrated in place and its jobs survive."""
    db = tmp_path / "runner.db"
    shutil.copy(FIXTURES / "runner-v1.db", db)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 1
    s = Store(db)
    assert s.schema_version() == SCHEMA_VERSION
    j = s.get_job("v1job001")
    assert j["state"] == "succeeded" and s.latest_metrics("v1job001") == {"loss": 0.25}
    assert s.gpu_allocations() == {}


def test_failed_transaction_rolls_back(store):
    _job(store)
    with pytest.raises(RuntimeError):
        with store.transaction() as c:
            c.execute("UPDATE jobs SET name='changed' WHERE id='job1'")
            raise RuntimeError("boom")
    assert store.get_job("job1")["name"] == "job1"


def test_ls_shows_the_running_jobs_first_and_one_page_of_a_long_queue(tmp_path):
    """300 queued after 2 running: `runner ls` prints the running ones, then the newest queued, 50
    rows in all, and says how many more; --limit 0 and --json give every active job."""
    import json
    import os
    import subprocess
    import sys

    from runner.home import Home

    h = Home(tmp_path / "home").ensure()
    s = h.store()
    for i in range(305):
        s.insert_job({"id": f"j{i:04d}", "name": f"n{i}", "user": "u", "uid": 1000, "kind": "command",
                      "spec": {"command": "true"}, "created_at": 1.0 + i, "gpus": [], "after": []}, now=1.0 + i)
    for jid in ("j0001", "j0002"):
        s.transition(jid, "preparing")
        s.transition(jid, "running")
    s.transition("j0000", "cancelled")
    s.transition("j0003", "preparing")
    env = {**os.environ, "RUNNER_HOME": str(h.root)}

    def ls(*args):
        r = subprocess.run([sys.executable, "-m", "runner", "ls", *args], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r

    r = ls()
    ids = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert ids[:3] == ["j0002", "j0001", "j0003"] and ids[3:5] == ["j0304", "j0303"] and len(ids) == 50
    assert "50 shown, 254 more" in r.stderr
    assert len(ls("--limit", "0").stdout.splitlines()) == 1 + 304 and len(json.loads(ls("--json").stdout)) == 304
    r = ls("--limit", "3")
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["j0002", "j0001", "j0003"] and "3 shown, 301 more" in r.stderr
    assert [j["id"] for j in json.loads(ls("--json", "--limit", "5").stdout)] == ["j0002", "j0001", "j0003", "j0304", "j0303"]
    assert ls("--all", "--limit", "2").stdout.split()[8] == "j0304"  # every state: newest first, as before


def test_queued_heads_gives_each_users_first_jobs_in_queue_order(store):
    for i in range(10):
        store.insert_job({"id": f"a{i}", "name": "a", "user": "ann", "uid": 1, "kind": "command", "spec": {}, "created_at": 1.0 + i,
                          "priority": 0, "gpus": [], "after": []})
    store.insert_job({"id": "b0", "name": "b", "user": "bob", "uid": 2, "kind": "command", "spec": {}, "created_at": 50.0,
                      "priority": 0, "gpus": [], "after": []})
    store.insert_job({"id": "c0", "name": "c", "user": "cy", "uid": 3, "kind": "command", "spec": {}, "created_at": 60.0,
                      "priority": 9, "gpus": [], "after": []})
    assert [j["id"] for j in store.queued_heads(3)] == ["c0", "a0", "a1", "a2", "b0"]
    assert [j["id"] for j in store.queued_jobs(limit=3)] == ["c0", "a0", "a1"]  # (without fair share: the head of the queue)
    plan = " ".join(r["detail"] for r in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state='queued' AND slurm_job_id IS NULL ORDER BY priority DESC, created_at ASC, seq ASC LIMIT 3"))
    assert "TEMP B-TREE" not in plan, plan  # a page of a deep queue is read off an index, never sorted whole


def test_a_job_being_taken_in_is_found_not_missing(tmp_path):
    """Between the daemon moving a spool file into .taking and committing its row, the job is in
    neither the spool nor the store: its page (asked for right after the submit) must wait for the
    row, not answer 404. A job in neither place is still not found."""
    import threading

    from runner.exceptions import JobNotFound
    from runner.home import Home
    from runner.queries import find_job

    h = Home(tmp_path / "home").ensure()
    s = h.store()
    h.taking.mkdir(parents=True, exist_ok=True)
    (h.taking / "0001-takenin1.job.json").write_text("{}")

    def commit():
        time.sleep(0.4)
        Store(h.db).insert_job({"id": "takenin1", "name": "t", "user": "u", "uid": 1000, "kind": "command",
                                                "spec": {"command": "true"}, "created_at": 1.0, "gpus": [], "after": []})
    t = threading.Thread(target=commit)
    t.start()
    try:
        assert find_job(h, s, "takenin1")["id"] == "takenin1"
    finally:
        t.join()
    started = time.monotonic()
    with pytest.raises(JobNotFound):
        find_job(h, s, "nosuchjob")
    assert time.monotonic() - started < 0.5  # nothing of it in .taking: no wait
