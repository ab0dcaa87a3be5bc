"""The real daemon, driven through the real CLI: submit, run, logs, metrics, cancel, restart."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import psutil
import pytest

from conftest import FIXTURES, DaemonProc, Runner, wait_for

JOB = [sys.executable, str(FIXTURES / "jobs.py")]


def test_submit_run_metrics_logs(runner, daemon):
    jid = runner.submit("--name", "m", "--parser", "generic", "--", *JOB, "metrics", "3")
    job = runner.wait_state(jid)
    assert job["state"] == "succeeded" and job["exit_code"] == 0
    assert job["metrics"]["val_acc"] == pytest.approx(0.53)
    assert job["metrics"]["lr"] == pytest.approx(0.01 / 3, rel=1e-5)
    # only the last redraw of each progress line counts: one loss point per epoch
    status, body = daemon.get(f"/jobs/{jid}/metrics?name=loss")
    assert status == 200
    assert [(m["epoch"], round(m["value"], 4)) for m in body["metrics"]] == [(1, 0.3333), (2, 0.1667), (3, 0.1111)]
    log = runner.run("logs", jid).stdout
    assert "epoch 3 val_acc: 0.530" in log
    status, body = daemon.get(f"/jobs/{jid}/log?tail=1")
    assert status == 401 and "runner token" in body["error"]  # a log is its owner's: who asks?
    status, text = daemon.get(f"/jobs/{jid}/log?tail=1", token=runner.token())
    assert text.strip() == "epoch 3 val_acc: 0.530 lr=0.00333333"
    assert [t["to_state"] for t in job["transitions"]] == ["queued", "preparing", "running", "succeeded"]


def test_failed_job_keeps_exit_code_and_log_tail(runner, daemon):
    jid = runner.submit("--", *JOB, "exit", "3")
    job = runner.wait_state(jid)
    assert (job["state"], job["reason"], job["exit_code"]) == ("failed", "exit_code", 3)
    assert "exiting with 3" in job["log_tail"]
    oom = runner.wait_state(runner.submit("--", *JOB, "oom"))
    assert (oom["state"], oom["reason"]) == ("failed", "oom")


@pytest.mark.parametrize("sandbox", ["bubblewrap", "none"])
def test_spawn_failure_is_reported(runner, home, tmp_path, sandbox):
    """A program that cannot start is failed/spawn_failed, with why in its log, with or without
    bubblewrap (under it, bwrap's own exit status 1 is not taken for the program's)."""
    from runner.sandbox import bwrap_path

    if sandbox == "bubblewrap" and bwrap_path() is None:
        pytest.skip("bubblewrap cannot make a sandbox on this machine")
    if sandbox == "none":
        runner.env["RUNNER_NO_BWRAP"] = "1"
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    d = DaemonProc(home, runner.env, http=False).start()
    try:
        missing, denied, ran = (runner.submit("--", *argv) for argv in (
            ["/nonexistent/program"], [str(plain)], [sys.executable, "-c", "raise SystemExit(1)"]))
        for jid, prog, why in ((missing, "/nonexistent/program", "No such file or directory"), (denied, str(plain), "Permission denied")):
            job = runner.wait_state(jid)
            assert (job["state"], job["reason"], job["exit_code"]) == ("failed", "spawn_failed", None), (sandbox, job)
            log = runner.run("logs", jid).stdout
            assert f"runner: failed to start {prog!r}: " in log and why in log, log
        # a program that started and exited 1 without a word is that, not a spawn failure
        job = runner.wait_state(ran)
        assert (job["state"], job["reason"], job["exit_code"]) == ("failed", "exit_code", 1), (sandbox, job)
        from runner.home import Home

        assert json.loads((Home(home).run_dir(job["id"]) / "launch.json").read_text())["sandboxed"] == (sandbox == "bubblewrap")
    finally:
        d.stop()


def test_logs_follow_until_end(runner, daemon):
    jid = runner.submit("--parser", "generic", "--", *JOB, "metrics", "3", "0.3")
    r = runner.run("logs", "-f", jid)
    assert "epoch 3 val_acc" in r.stdout
    assert runner.show(jid)["state"] == "succeeded"


def test_cancel_kills_whole_tree(runner, daemon, home):
    jid = runner.submit("--", *JOB, "spawn")
    runner.wait_state(jid, "running")
    pids_file = home / "jobs" / runner.show(jid)["id"] / "pids"
    wait_for(lambda: pids_file.exists() and pids_file.read_text(), 20, what="children spawned")
    # The job's own view of pids may be a namespace's; take the host's from the process tree.
    child_json = home / "run" / pids_file.parent.name / "child.json"
    wait_for(child_json.exists, 10, what="the shim's child.json")  # its fsync may lag behind the job
    child = json.loads(child_json.read_text())
    tree = psutil.Process(child["pid"]).children(recursive=True)
    sleepers = [p.pid for p in tree if "time.sleep(600)" in " ".join(p.cmdline())]
    assert len(sleepers) == 3  # two in the group, one in a session of its own
    pids = [child["pid"], *(p.pid for p in tree)]
    runner.run("cancel", jid)
    job = runner.wait_state(jid)
    assert (job["state"], job["reason"]) == ("cancelled", "cancelled_by_user")

    def gone():
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    wait_for(gone, 15, what="every process of the job to be gone")


def test_cancel_queued_and_only_owner(runner, daemon):
    jid = runner.submit("--after", runner.submit("--", *JOB, "sleep", "30"), "--", "true")
    runner.run("cancel", jid)
    assert runner.wait_state(jid)["state"] == "cancelled"


def test_after_dependency_and_retry(runner, daemon):
    ok = runner.submit("--", *JOB, "sleep", "0.5")
    bad = runner.submit("--", *JOB, "exit", "1")
    child_ok = runner.submit("--after", ok, "--", "true")
    child_bad = runner.submit("--after", bad, "--", "true")
    assert runner.wait_state(child_ok)["state"] == "succeeded"
    j = runner.wait_state(child_bad)
    assert (j["state"], j["reason"]) == ("failed", "dependency_failed")
    assert runner.show(child_ok)["started_at"] >= runner.show(ok)["finished_at"]
    again = runner.run("retry", bad).stdout.strip()
    j2 = runner.wait_state(again)
    assert j2["retry_of"] == runner.show(bad)["id"] and j2["exit_code"] == 1


def test_submit_while_daemon_down_then_start(runner, home):
    jid = runner.submit("--", "echo", "spooled")
    rows = runner.json("ls")
    assert rows[0]["id"] == jid and rows[0]["state"] == "submitted"
    d = DaemonProc(home, runner.env, http=False).start()
    try:
        assert runner.wait_state(jid)["state"] == "succeeded"
    finally:
        d.stop()


def test_sigkill_daemon_mid_job_loses_nothing(runner, home):
    d = DaemonProc(home, runner.env, http=False).start()
    jid = runner.submit("--parser", "generic", "--", *JOB, "metrics", "6", "0.5")
    runner.wait_state(jid, "running")
    time.sleep(1.0)
    d.kill(signal.SIGKILL)
    time.sleep(2.0)  # the job runs on without a daemon
    d2 = DaemonProc(home, runner.env, http=False).start()
    try:
        job = runner.wait_state(jid, timeout=60)
        assert job["state"] == "succeeded" and job["exit_code"] == 0
        from runner.store import Store

        loss = Store(home / "runner.db").metrics(job["id"], "val_acc")
        assert [m["epoch"] for m in loss] == [1, 2, 3, 4, 5, 6]  # none lost, none twice
    finally:
        d2.stop()


def _vanish_while_the_daemon_is_away(runner, home):
    """A running job whose daemon, shim and processes are all SIGKILLed: no exit.json. (job id, run folder)."""
    from runner.store import Store

    d = DaemonProc(home, runner.env, http=False).start()
    jid = runner.submit("--", *JOB, "sleep", "60")
    runner.wait_state(jid, "running")
    d.kill(signal.SIGKILL)
    run_dir = home / "run" / runner.show(jid)["id"]
    wait_for(lambda: (run_dir / "child.json").exists(), 10, what="the shim to start the job")
    child = json.loads((run_dir / "child.json").read_text())
    os.kill(Store(home / "runner.db").get_job(jid)["shim_pid"], signal.SIGKILL)  # the shim dies without writing exit.json
    os.killpg(child["pgid"], signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(child["pid"]) or psutil.Process(child["pid"]).status() == psutil.STATUS_ZOMBIE, 10)
    return jid, run_dir


def test_job_that_vanished_while_daemon_away_is_lost(runner, home):
    jid, _ = _vanish_while_the_daemon_is_away(runner, home)
    d2 = DaemonProc(home, runner.env, http=False).start()
    try:
        job = runner.wait_state(jid)
        assert (job["state"], job["reason"], job["exit_code"]) == ("failed", "lost", None)
    finally:
        d2.stop()


def test_an_exit_status_written_just_after_the_processes_looked_gone_is_not_lost(runner, home):
    """Under load, four check jobs in a row ended `lost` milliseconds before their shim's exit.json
    (exit 0) appeared. A job whose processes look gone is lost only when exit.json stays missing
    for LOST_AFTER_SECONDS; one that comes within them is the job's end."""
    from runner.daemon.follow import LOST_AFTER_SECONDS

    jid, run_dir = _vanish_while_the_daemon_is_away(runner, home)
    d2 = DaemonProc(home, runner.env, http=False).start()
    try:
        time.sleep(3)
        assert runner.show(jid)["state"] == "running"  # not lost at the first look
        now = time.time()
        (run_dir / "exit.json.tmp").write_text(json.dumps({"exit_code": 0, "signal": None, "raw_status": 0,
                                                          "started_at": now - 5, "finished_at": now - 3}))
        os.replace(run_dir / "exit.json.tmp", run_dir / "exit.json")
        job = runner.wait_state(jid, timeout=LOST_AFTER_SECONDS)
        assert (job["state"], job["exit_code"]) == ("succeeded", 0), job
    finally:
        d2.stop()


def test_sigterm_leaves_running_jobs_running(runner, home):
    d = DaemonProc(home, runner.env, http=False).start()
    jid = runner.submit("--", *JOB, "sleep", "3")
    runner.wait_state(jid, "running")
    wait_for(lambda: (home / "run" / runner.show(jid)["id"] / "child.json").exists(), 10, what="the shim to start the job")
    d.stop()
    assert d.proc.returncode == 0
    child = json.loads((home / "run" / runner.show(jid)["id"] / "child.json").read_text())
    assert psutil.pid_exists(child["pid"])
    d2 = DaemonProc(home, runner.env, http=False).start()
    try:
        assert runner.wait_state(jid)["state"] == "succeeded"
    finally:
        d2.stop()


def _submit_many(args):
    home, n, k = args
    r = Runner(home)
    return [r.submit("--name", f"p{k}-{i}", "--", "true") for i in range(n)]


def test_200_concurrent_submits_none_lost_or_duplicated(runner, home):
    d = DaemonProc(home, runner.env, http=False, extra=["--max-running", "8"]).start()
    try:
        with ProcessPoolExecutor(8) as ex:
            ids = [i for chunk in ex.map(_submit_many, [(home, 25, k) for k in range(8)]) for i in chunk]
        assert len(ids) == len(set(ids)) == 200
        from runner.store import Store

        s = Store(home / "runner.db")
        wait_for(lambda: sum(1 for j in s.list_jobs(states=["succeeded"])) == 200, 180, 0.5, "200 jobs done")
        rows = s.list_jobs()
        assert sorted(r["id"] for r in rows) == sorted(ids)
        assert sorted(r["name"] for r in rows) == sorted(f"p{k}-{i}" for k in range(8) for i in range(25))
    finally:
        d.stop()


def test_corrupt_spool_file_is_quarantined(runner, daemon, home):
    (home / "spool" / "0001-broken.job.json").write_text("{not json")
    (home / "spool" / "0002-bad.job.json").write_text(json.dumps({"id": "abcd1234", "spec": {"command": [], "priority": "high"}}))
    wait_for(lambda: (home / "spool" / "quarantine" / "0001-broken.job.json").exists(), 10)
    wait_for(lambda: (home / "spool" / "quarantine" / "0002-bad.job.json").exists(), 10)
    reason = (home / "spool" / "quarantine" / "0002-bad.job.json.reason").read_text()
    assert "priority" in reason and "command" in reason
    assert runner.wait_state(runner.submit("--", "true"))["state"] == "succeeded"  # still serving


def test_http_api(runner, daemon):
    jid = runner.submit("--parser", "generic", "--", *JOB, "metrics", "2")
    runner.wait_state(jid)
    status, body = daemon.get("/healthz")
    assert status == 200 and body["ok"] is True and body["spool_backlog"] == 0 and body["loop_seconds_since_pass"] < 5
    status, body = daemon.get("/status")
    assert body["counts"]["succeeded"] >= 1 and body["uptime_seconds"] > 0 and "gpus" in body
    status, body = daemon.get("/jobs?state=succeeded&limit=1")
    assert status == 200 and body["jobs"][0]["id"] == runner.show(jid)["id"]
    status, body = daemon.get(f"/jobs/{jid}")
    assert body["state"] == "succeeded" and body["metrics"]["val_acc"] == pytest.approx(0.52)
    status, body = daemon.get("/jobs/doesnotexist")
    assert status == 404 and "no such job" in body["error"]
    status, body = daemon.get("/openapi.json")
    assert "/jobs/{job_id}/metrics" in body["paths"]


def test_scrubbed_environment(runner, daemon, monkeypatch):
    runner.env["SECRET_TOKEN"] = "hunter2"
    jid = runner.submit("--", *JOB, "env")
    runner.wait_state(jid)
    out = runner.run("logs", jid).stdout
    assert "SECRET_TOKEN" not in out and "hunter2" not in out
    assert f"RUNNER_JOB_ID={runner.show(jid)['id']}" in out
    assert "CUDA_VISIBLE_DEVICES=\n" in out or "CUDA_VISIBLE_DEVICES=" in out.splitlines()


def test_priority_then_age(runner, home):
    ids = [runner.submit("--priority", str(p), "--name", f"p{p}-{i}", "--", "true") for i, p in enumerate([0, 5, 0, 5])]
    d = DaemonProc(home, runner.env, http=False, extra=["--max-running", "1"]).start()
    try:
        jobs = [runner.wait_state(i) for i in ids]
        order = [j["name"] for j in sorted(jobs, key=lambda j: j["started_at"])]
        assert order == ["p5-1", "p5-3", "p0-0", "p0-2"]
    finally:
        d.stop()


def test_time_limit(runner, daemon, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(f"command: {json.dumps([*JOB, 'sleep', '60'])}\nresources: {{time_limit: 1}}\n")
    job = runner.wait_state(runner.submit(spec), timeout=30)
    assert (job["state"], job["reason"]) == ("failed", "timeout")


def test_only_the_owner_or_root_may_cancel(runner, daemon, home):
    """A cancel request is judged by the owner of its spool file, not by what it says."""
    jid = runner.submit("--", *JOB, "sleep", "30")
    full = runner.wait_state(jid, "running")["id"]
    from runner import spool
    from runner.home import Home

    # as if another user dropped it: owned by uid 12345 before it is in the spool (a chown after
    # the drop raced the daemon, which may take the file first)
    spool.request_cancel(Home(home), full, owner=(12345, 12345))
    reason = lambda: next((home / "spool" / "quarantine").glob("*.cancel.json.reason"), None)  # noqa: E731
    wait_for(lambda: reason() is not None, 10)
    assert "may not cancel" in reason().read_text()
    assert runner.show(jid)["state"] == "running"
    runner.run("cancel", jid)
    assert runner.wait_state(jid)["state"] == "cancelled"


FLOOD = """import pathlib, sys
n = int(sys.argv[1])
for s in range(0, n, 1000):
    sys.stdout.write("".join(f"step={i} loss={i} acc=0.5\\n" for i in range(s, s + 1000)))
sys.stdout.flush()
pathlib.Path(sys.argv[2]).write_text("printed")
"""

PROBE = """import pathlib, sys, time
while not pathlib.Path(sys.argv[1]).exists():
    time.sleep(0.02)
print("probe=1", flush=True)
"""


def test_a_job_flooding_its_log_does_not_hold_up_another_jobs_lines(runner, daemon, tmp_path):
    """One pass of the daemon's loop shares its reading time among the running jobs: a line that a
    job prints while another has just printed 1,000,000 is in the store while the flood is still
    being read, not after all of it; and every point of both is stored once. (The flood must take
    the store several passes: 300,000 lines did until the store took ~1.3 M lines a second.)"""
    from runner.store import Store

    work = tmp_path / "work"
    work.mkdir()
    (work / "flood.py").write_text(FLOOD)
    (work / "probe.py").write_text(PROBE)
    lines = 1_000_000
    common = ("--parser", "generic", "--workdir", work, "--")
    probe = runner.submit(*common, sys.executable, work / "probe.py", work / "printed")
    runner.wait_state(probe, "running")
    flood = runner.submit(*common, sys.executable, work / "flood.py", lines, work / "printed")
    store = Store(daemon.home / "runner.db")
    wait_for(lambda: store.count_metrics(probe, "probe") == 1, 120, 0.01, "the probe's line in the store")
    stored = store.count_metrics(flood)
    assert stored < 2 * lines, "the probe's line waited for the whole flood"
    for jid in (probe, flood):
        assert runner.wait_state(jid, timeout=300)["state"] == "succeeded"
    assert store.count_metrics(flood, "loss") == lines and store.count_metrics(flood, "acc") == lines  # once each
    page = 200_000
    for at in range(0, lines, page):  # each step once, in order (a page at a time: a million dicts at once is ~0.5 GB)
        assert [m["step"] for m in store.metrics(flood, "loss", limit=page, offset=at)] == list(range(at, at + page))


def _memory_cgroup(name: str, limit: int):
    """A memory cgroup of `limit` bytes that root makes here (v1 or v2): its folder; skips where
    the kernel offers none to this process (not root, no memory controller, a read-only cgroupfs)."""
    from pathlib import Path

    if os.geteuid() != 0:
        pytest.skip("making a memory cgroup needs root")
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    try:
        if (v1 / "memory.limit_in_bytes").exists():
            cg = v1 / name
            cg.mkdir(exist_ok=True)
            (cg / "memory.limit_in_bytes").write_text(str(limit))
            if (cg / "memory.memsw.limit_in_bytes").exists():  # no swapping out of it
                (cg / "memory.memsw.limit_in_bytes").write_text(str(limit))
            return cg
        if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.subtree_control").read_text().split():
            cg = v2 / name
            cg.mkdir(exist_ok=True)
            (cg / "memory.max").write_text(str(limit))
            if (cg / "memory.swap.max").exists():
                (cg / "memory.swap.max").write_text("0")
            return cg
    except OSError as e:
        pytest.skip(f"no memory cgroup can be made here: {e}")
    pytest.skip("no memory cgroup controller here")


def test_a_job_the_kernels_oom_killer_ends_is_failed_oom_and_says_why(runner, daemon, home, tmp_path):
    """A real kill by the kernel's out-of-memory killer, not a signal sent by hand: once the job
    runs, the test (root) puts its processes in a 64 MB memory cgroup and lets it allocate 1 GB; the
    kernel kills it with SIGKILL, as it does a job on a host out of memory. runner says so
    (failed/oom, and a note), not `killed_by_signal 9`."""
    cg = _memory_cgroup(f"runner-test-oom-{os.getpid()}", 64 << 20)
    try:
        code = "import os, time\nwhile not os.path.exists('go'): time.sleep(0.02)\nx = b'x' * (1 << 30)\nprint('allocated', flush=True)\n"
        spec = tmp_path / "oom.json"
        spec.write_text(json.dumps({"command": [sys.executable, "-c", code], "workdir": str(tmp_path)}))
        jid = runner.submit(spec)
        runner.wait_state(jid, "running")
        child_json = home / "run" / jid / "child.json"
        wait_for(child_json.exists, 10, what="the shim's child.json")
        top = psutil.Process(json.loads(child_json.read_text())["pid"])
        try:
            for p in [top, *top.children(recursive=True)]:  # (bubblewrap and the job under it)
                (cg / "cgroup.procs").write_text(str(p.pid))
        except OSError as e:  # (a cgroup v2 hierarchy that will not take them from here)
            runner.run("cancel", jid)
            runner.wait_state(jid)
            pytest.skip(f"cannot move the job's processes into {cg}: {e}")
        (tmp_path / "go").touch()
        job = runner.wait_state(jid, timeout=60)
        assert (job["state"], job["reason"], job["signal"]) == ("failed", "oom", 9), job
        assert "killed by the kernel's out-of-memory killer" in job["note"], job["note"]
        assert "allocated" not in runner.run("logs", jid).stdout
    finally:
        for _ in range(100):  # its processes gone, the cgroup goes
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
