"""An optional time is missing only when it is None (#32): 0.0 is a time (a test clock, an epoch), never
taken for "not yet" and replaced by now."""

from __future__ import annotations

from runner import check, fairshare
from runner.cli import jobs


def test_a_job_that_ended_at_time_zero_is_ended_for_fair_share():
    rows = [{"user": "alice", "gpus": [0], "started_at": 0.0, "finished_at": 0.0}]
    assert fairshare.decayed_use(rows, now=1000.0, half_life_s=100.0) == {"alice": 0.0}  # not 1000 s of use
    ended = {"user": "bob", "gpus": [0], "started_at": 0.0, "finished_at": 50.0, "prior_use": 10.0, "prior_ended_at": 0.0}
    assert fairshare._ended_parts(ended) == [(50.0, 50.0), (10.0, 0.0)]  # the earlier run ended at 0, not at 50


def test_a_check_job_started_at_time_zero_ran_from_then():
    job = {"created_at": -5.0, "started_at": 0.0, "finished_at": 10.0}
    assert check._seconds(job) == 10.0
    assert check._seconds({"created_at": 0.0, "started_at": None, "finished_at": 0.0}, now=99.0) == 0.0


def test_runner_ls_shows_a_run_from_time_zero_as_its_duration():
    assert jobs._when({"started_at": 0.0, "finished_at": 60.0, "created_at": 0.0}) == "1m00s"


def test_a_time_limit_runs_from_a_start_at_time_zero():
    from runner.daemon.schedule import limit_ends
    jobs = [{"spec": {"resources": {"time_limit": 60}}, "gpu_uuids": ["GPU-a"], "started_at": 0.0},
            {"spec": {"resources": {"time_limit": 60}}, "gpu_uuids": ["GPU-b"], "started_at": None},
            {"spec": {}, "gpu_uuids": ["GPU-c"], "started_at": 0.0}]
    assert limit_ends(jobs, now=1000.0) == {"GPU-a": 60.0, "GPU-b": 1060.0, "GPU-c": None}  # not 1060 for GPU-a


def test_a_preempted_run_started_at_time_zero_used_its_gpus_since_then():
    from runner.daemon.preemption import run_use
    assert run_use({"gpus": [0], "started_at": 0.0}, ended=50.0) == 50.0  # not 0: 0.0 is a start
    assert run_use({"gpus": [0], "started_at": None}, ended=50.0) == 0.0


def test_the_api_gives_a_run_from_time_zero_its_duration():
    from types import SimpleNamespace

    from runner.queries import job_view

    store = SimpleNamespace(latest_metrics=lambda jid: {})
    job = {"id": "j", "started_at": 0.0, "finished_at": 60.0, "spec": {}}
    assert job_view(store, job)["duration"] == 60.0  # not None: 0.0 is a start
    assert job_view(store, {**job, "finished_at": 0.0})["duration"] == 0.0  # not now - 0: 0.0 is an end
    assert job_view(store, {**job, "started_at": None})["duration"] is None
