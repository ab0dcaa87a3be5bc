"""GPU assignment with the static inventory (the stand-in for NVML): never a busy GPU."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest

from conftest import FIXTURES, DaemonProc, Runner, wait_for
from runner.gpus import GPU, StaticInventory, free_gpus
from runner.scheduler import plan

JOB = [sys.executable, str(FIXTURES / "jobs.py")]


def gpus_file(home, entries):
    f = home / "gpus.json"
    f.write_text(json.dumps(entries))
    (home / "config.toml").write_text(f'[gpus]\nsource = "static"\nstatic_file = "{f}"\nper_user_limit = 3\n')
    return f


def four(mem=16384):
    return [{"uuid": f"GPU-{i}", "name": "Static A100", "memory_mb": mem} for i in range(4)]


def _env_of(runner, jid):
    out = runner.run("logs", jid).stdout
    return dict(l.split("=", 1) for l in out.splitlines() if "=" in l and not l.startswith("runner:"))


@pytest.fixture
def gdaemon(home):
    gpus_file(home, four())
    r = Runner(home)
    d = DaemonProc(home, r.env, http=True).start()
    yield d
    d.stop()


def test_job_sees_only_its_gpus_in_pci_order(runner, gdaemon):
    jid = runner.submit("--gpus", "2", "--", *JOB, "env")
    job = runner.wait_state(jid)
    env = _env_of(runner, jid)
    assert job["gpus"] == [0, 1] and env["CUDA_VISIBLE_DEVICES"] == "GPU-0,GPU-1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["RUNNER_NUM_GPUS"] == "2"
    cpu = runner.submit("--", *JOB, "env")
    runner.wait_state(cpu)
    assert _env_of(runner, cpu)["CUDA_VISIBLE_DEVICES"] == ""  # a CPU job sees no GPU at all


def test_foreign_process_keeps_its_gpu_out_of_use(runner, home, gdaemon):
    entries = four()
    entries[0]["processes"] = [{"pid": 999999, "used_mb": 500, "user": "someone"}]
    entries[1]["used_mb"] = 8000  # memory in use by something NVML cannot name
    gpus_file(home, entries)
    jid = runner.submit("--gpus", "2", "--", *JOB, "env")
    job = runner.wait_state(jid)
    assert job["gpus"] == [2, 3]
    status, body = gdaemon.get("/gpus")
    assert body["gpus"][0]["processes"][0]["user"] == "someone"


def test_gpu_job_waits_until_a_gpu_frees(runner, home, gdaemon):
    gpus_file(home, four()[:1])
    first = runner.submit("--gpus", "1", "--", *JOB, "sleep", "6")
    runner.wait_state(first, "running")
    second = runner.submit("--gpus", "1", "--", *JOB, "env")
    waiting = wait_for(lambda: (lambda j: j if j["reason"] == "waiting_for_gpus" else None)(runner.show(second)), 10,
                       what="second to wait for GPUs")
    assert waiting["state"] == "queued"
    j2 = runner.wait_state(second, timeout=30)
    assert j2["started_at"] >= runner.show(first)["finished_at"]


def test_memory_fit_and_gpu_that_disappears(runner, home, gdaemon):
    entries = [{"uuid": "GPU-small", "memory_mb": 16384}, {"uuid": "GPU-big", "memory_mb": 81920}]
    gpus_file(home, entries)
    spec = home.parent / "big.yaml"
    spec.write_text(json.dumps({"command": [*JOB, "env"], "resources": {"gpus": 1, "gpu_memory_gb": 40}}))
    job = runner.wait_state(runner.submit(spec))
    assert _env_of(runner, job["id"])["CUDA_VISIBLE_DEVICES"] == "GPU-big"
    entries[1]["present"] = False  # the big GPU fell off the bus
    gpus_file(home, entries)
    jid = runner.submit(spec)
    wait_for(lambda: runner.show(jid)["reason"] == "waiting_for_gpus", 10)
    entries[1]["present"] = True
    gpus_file(home, entries)
    assert runner.wait_state(jid)["state"] == "succeeded"


def test_no_gpus_on_this_host(home):
    (home / "config.toml").write_text('[gpus]\nsource = "static"\nstatic = []\n')
    r = Runner(home)
    d = DaemonProc(home, r.env, http=False).start()
    try:
        jid = r.submit("--gpus", "1", "--", "true")
        wait_for(lambda: r.show(jid)["reason"] == "no_gpus_on_this_host", 10)
        assert r.show(jid)["state"] == "queued"
        assert r.wait_state(r.submit("--", "true"))["state"] == "succeeded"  # CPU jobs still run
    finally:
        d.stop()


def test_per_user_limit(runner, home, gdaemon):
    a = runner.submit("--gpus", "2", "--", *JOB, "sleep", "3")
    runner.wait_state(a, "running")
    b = runner.submit("--gpus", "2", "--", *JOB, "sleep", "0")
    wait_for(lambda: runner.show(b)["reason"] == "user_gpu_limit", 10)
    assert runner.wait_state(b, timeout=30)["state"] == "succeeded"


def test_no_double_allocation_under_concurrent_submits(runner, home, gdaemon):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(lambda i: runner.submit("--gpus", "1", "--", *JOB, "sleep", "0.2"), range(40)))
    from runner.store import Store

    s = Store(home / "runner.db")
    wait_for(lambda: s.count_by_state().get("succeeded", 0) == 40, 240, 0.5, "40 GPU jobs")
    spans = {}
    for jid in ids:
        j = s.get_job(jid)
        (uuid,) = j["gpu_uuids"]
        spans.setdefault(uuid, []).append((j["started_at"], j["finished_at"]))
    for uuid, iv in spans.items():
        iv.sort()
        assert all(a[1] <= b[0] for a, b in zip(iv, iv[1:])), f"{uuid} was given to two jobs at once"
    assert s.gpu_allocations() == {}


def test_restart_keeps_allocations_of_running_jobs(runner, home):
    gpus_file(home, four()[:2])
    d = DaemonProc(home, runner.env, http=False).start()
    # (long enough to outlast the restart and two submits on a loaded host: on a 2-core host at load 7
    # a 4 s job had ended before b was placed, and b rightly got GPU-0)
    a = runner.submit("--gpus", "1", "--", *JOB, "sleep", "12")
    runner.wait_state(a, "running")
    d.kill(signal.SIGKILL)
    d2 = DaemonProc(home, runner.env, http=False).start()
    try:
        b = runner.submit("--gpus", "1", "--", *JOB, "env")
        c = runner.submit("--gpus", "1", "--", *JOB, "env")
        jb = runner.wait_state(b)
        assert jb["gpu_uuids"] == ["GPU-1"]  # GPU-0 is still a's
        jc = runner.wait_state(c, timeout=30)
        ja = runner.wait_state(a)
        assert ja["state"] == "succeeded" and ja["gpu_uuids"] == ["GPU-0"]
        holder_end = jb["finished_at"] if jc["gpu_uuids"] == ["GPU-1"] else ja["finished_at"]
        assert jc["started_at"] >= holder_end
    finally:
        d2.stop()


def test_gpu_metrics_are_sampled(runner, home, gdaemon):
    entries = four()
    entries[0]["used_mb"] = 900
    entries[0]["utilization"] = 77
    gpus_file(home, entries)
    jid = runner.submit("--gpus", "1", "--gpus", "1", "--", *JOB, "sleep", "5")
    job = runner.wait_state(jid)
    assert job["metrics"]["gpu0_memory_mb"] == 900 and job["metrics"]["gpu0_utilization"] == 77
    assert job["peak_gpu_mem_mb"] == 900


# -- the scheduler alone --------------------------------------------------------------------------
def _q(jid, gpus, prio=0, t=0.0, user="u", mem=None):
    return {"id": jid, "user": user, "after": [], "spec": {"resources": {"gpus": gpus, **({"gpu_memory_gb": mem} if mem else {})}},
            "priority": prio, "created_at": t}


def _g(n, mem=16384):
    return [GPU(index=i, uuid=f"G{i}", name="x", memory_total_mb=mem) for i in range(n)]


def test_backfill_is_bounded_so_the_large_job_is_not_starved():
    skipped = {}
    big = _q("big", 4, t=0)
    free = _g(4)[:2]  # two GPUs busy elsewhere
    started = []
    for round_ in range(20):
        small = _q(f"s{round_}", 1, t=round_ + 1)
        d = plan([big, small], 0, 10, free, 4, True, skipped=skipped, backfill_limit=3)
        started += [j["id"] for j, _ in d.start]
    assert started[:3] == ["s0", "s1", "s2"] and len(started) == 3  # then the GPUs are held for big
    d = plan([big], 0, 10, _g(4), 4, True, skipped=skipped, backfill_limit=3)
    assert [j["id"] for j, _ in d.start] == ["big"]


def test_priority_then_age_and_cap():
    q = sorted([_q("a", 0, 0, 2), _q("b", 0, 5, 3), _q("c", 0, 5, 1)], key=lambda j: (-j["priority"], j["created_at"]))
    d = plan(q, 0, 2, [], 0, False)
    assert [j["id"] for j, _ in d.start] == ["c", "b"]


def test_free_gpus_rules():
    gs = _g(3)
    gs[1].processes = [{"pid": 42}]
    gs[2].memory_used_mb = 5000
    assert [g.uuid for g in free_gpus(gs, {}, set())] == ["G0"]
    assert [g.uuid for g in free_gpus(gs, {"G0": "j"}, set())] == []
    assert StaticInventory([{"memory_mb": 1, "present": False}, {"memory_mb": 2}]).gpus()[0].memory_total_mb == 2


def test_gpus_are_released_only_when_the_jobs_processes_left_them(runner, home, tmp_path):
    import os
    import subprocess

    gpus_file(home, four()[:1])
    (home / "config.toml").write_text((home / "config.toml").read_text() + "release_wait_seconds = 2\n")
    d = DaemonProc(home, runner.env, http=False).start()
    straggler = None
    try:
        jid = runner.submit("--gpus", "1", "--", *JOB, "sleep", "2")  # long enough to see its straggler (a loaded CI too)
        full = runner.wait_state(jid, "running")["id"]
        # a process of this job that outlived it (its RUNNER_JOB_ID says whose it is) sits on the GPU
        straggler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, "RUNNER_JOB_ID": full})
        entries = four()[:1]
        entries[0]["processes"] = [{"pid": straggler.pid, "used_mb": 100, "user": "root"}]
        gpus_file(home, entries)
        from runner.home import Home

        wait_for(lambda: (Home(home).run_dir(full) / "exit.json").exists(), what="the job's exit")
        assert runner.show(jid)["state"] == "running"  # exited, but not released while its process holds the GPU
        job = runner.wait_state(jid, timeout=20)
        assert straggler.wait(timeout=10) == -signal.SIGKILL
        assert job["state"] == "succeeded" and "killed 1 process(es) left on its GPUs" in job["note"]
        straggler = None
        # a job stopped at its time limit, then its straggler killed: still a timeout, and both noted
        gpus_file(home, four()[:1])  # the GPU free again
        spec = tmp_path / "limited.yaml"
        spec.write_text(f"command: {json.dumps([*JOB, 'sleep', '60'])}\nresources: {{gpus: 1, time_limit: 3}}\n")
        jid = runner.submit(spec)
        full = runner.wait_state(jid, "running")["id"]
        straggler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, "RUNNER_JOB_ID": full})
        entries[0]["processes"] = [{"pid": straggler.pid, "used_mb": 100, "user": "root"}]
        gpus_file(home, entries)
        job = runner.wait_state(jid, timeout=30)
        assert straggler.wait(timeout=10) == -signal.SIGKILL
        assert (job["state"], job["reason"]) == ("failed", "timeout")
        assert "stopped at its time limit" in job["note"] and "killed 1 process(es) left on its GPUs" in job["note"]
    finally:
        if straggler is not None and straggler.poll() is None:
            straggler.kill()
        d.stop()


def test_easy_backfill_uses_time_limits_without_delaying_the_reserved_job():
    big = _q("big", 4, t=0)
    skipped = {"big": 8}  # already passed over enough: it holds a reservation
    free = _g(4)[:2]  # G2, G3 held by a running job expected to end at t=100
    ends = {"G2": 100.0, "G3": 100.0}
    short = _q("short", 1, t=1)
    short["spec"]["resources"]["time_limit"] = 50
    long_ = _q("long", 1, t=2)
    long_["spec"]["resources"]["time_limit"] = 500
    unknown = _q("unknown", 1, t=3)
    d = plan([big, short, long_, unknown], 1, 10, free, 4, True, skipped=skipped, backfill_limit=8, now=10.0, ends=ends)
    assert [j["id"] for j, _ in d.start] == ["short"]  # ends at 60 <= 100; the others would delay big
