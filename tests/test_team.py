"""A team on one server: secrets reach the job and nobody else; every process a job started ends
with it, with or without bubblewrap."""

from __future__ import annotations

import json
import os
import stat
import sys

import psutil
import pytest

from conftest import FIXTURES, DaemonProc, wait_for

JOB = [sys.executable, str(FIXTURES / "jobs.py")]


def test_env_vars_values_reach_the_job_and_no_view(runner, daemon, home, tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(f"command: {json.dumps([*JOB, 'env'])}\nenv_vars: {{API_TOKEN: hunter2-secret, MODE: fast}}\n")
    jid = runner.submit(f)
    job = runner.wait_state(jid)
    assert job["state"] == "succeeded"
    assert "API_TOKEN=hunter2-secret" in runner.run("logs", jid).stdout  # the job has it
    assert job["spec"]["env_vars"] == {"API_TOKEN": "<hidden>", "MODE": "<hidden>"}
    assert "hunter2" not in runner.run("show", jid).stdout and "hunter2" not in runner.run("show", jid, "--json").stdout
    assert "hunter2" not in json.dumps(daemon.get(f"/jobs/{jid}")[1]) and "hunter2" not in json.dumps(daemon.get("/jobs")[1])
    assert b"hunter2" not in (home / "runner.db").read_bytes() + b"".join(p.read_bytes() for p in home.glob("runner.db*"))
    launch = home / "run" / job["id"] / "launch.json"
    assert stat.S_IMODE(launch.stat().st_mode) == 0o600
    secrets = home / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert stat.S_IMODE((secrets / f"{job['id']}.json").stat().st_mode) == 0o600
    # a retry by the same user reuses the values it cannot see
    again = runner.wait_state(runner.run("retry", jid).stdout.strip())
    assert again["state"] == "succeeded" and "API_TOKEN=hunter2-secret" in runner.run("logs", again["id"]).stdout


def test_spool_files_are_private_to_their_submitter(runner, home, tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("command: [true]\nenv_vars: {API_TOKEN: hunter2}\n")
    runner.submit(f)  # no daemon: it waits in the spool
    (p,) = (home / "spool").glob("*.job.json")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_a_hidden_value_is_not_a_way_to_read_someone_elses(runner, daemon, home, tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("command: [true]\nenv_vars: {API_TOKEN: '<hidden>'}\n")
    r = runner.run("submit", f)
    jid = r.stdout.strip()
    reason = home / "spool" / "quarantine"
    wait_for(lambda: list(reason.glob(f"*{jid}.job.json.reason")), 10, what="the job to be refused")
    assert "only a retry of your own job" in next(reason.glob(f"*{jid}.job.json.reason")).read_text()


@pytest.mark.parametrize("bwrap", [True, False], ids=["bubblewrap", "no-bubblewrap"])
def test_cancel_reaches_a_double_forked_daemon(runner, home, bwrap):
    from runner.sandbox import bwrap_path

    if bwrap and not bwrap_path():
        pytest.skip("bubblewrap is not installed or cannot create a sandbox here")
    env = dict(runner.env)
    if not bwrap:
        env["RUNNER_NO_BWRAP"] = "1"
    d = DaemonProc(home, env, http=False).start()
    try:
        jid = runner.submit("--", *JOB, "doublefork")
        full = runner.wait_state(jid, "running")["id"]
        pids = home / "jobs" / full / "pids"
        wait_for(lambda: pids.exists() and pids.read_text(), 20, what="the daemonized grandchild")
        child = json.loads((home / "run" / full / "child.json").read_text())
        # find the grandchild on the host (its own pid may be a namespace's): a sleeper whose
        # session is not the job's
        def sleepers():
            out = []
            for p in psutil.process_iter(["cmdline", "environ"]):
                try:
                    if (p.info["environ"] or {}).get("RUNNER_JOB_ID") == full and "doublefork" in " ".join(p.info["cmdline"] or []):
                        out.append(p)
                except psutil.Error:
                    continue
            return out
        procs = wait_for(lambda: (lambda s: s if len(s) >= 2 else None)(sleepers()), 10, what="job processes")
        assert any(os.getsid(p.pid) != child["pgid"] for p in procs if p.is_running())  # one left the job's session
        runner.run("cancel", jid)
        job = runner.wait_state(jid, timeout=30)
        assert (job["state"], job["reason"]) == ("cancelled", "cancelled_by_user")
        wait_for(lambda: not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 15,
                 what="every process of the job to be gone")
    finally:
        d.stop()


def test_a_job_that_ends_takes_its_daemonized_children_along(runner, home):
    env = {**runner.env, "RUNNER_NO_BWRAP": "1"}
    d = DaemonProc(home, env, http=False).start()
    try:
        jid = runner.submit("--", *JOB, "doublefork", "1")
        job = runner.wait_state(jid, timeout=30)
        assert job["state"] == "succeeded"
        pid = int((home / "jobs" / job["id"] / "pids").read_text())
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 15,
                 what="the daemonized child to be gone")
    finally:
        d.stop()


def served_on(home, bind: str):
    """The API as a daemon bound to `bind` serves it (TestClient, no daemon process)."""
    from fastapi.testclient import TestClient

    from runner.home import Home
    from runner.http import create_app

    class Served:
        http_bind = bind
        last_tick = __import__("time").time()
        store = Home(home).ensure().store()

    return TestClient(create_app(Home(home), daemon=Served()), base_url="http://127.0.0.1:8765")  # a Host the bind serves


def test_beyond_loopback_every_request_needs_a_token(home):
    from runner.home import Home

    c = served_on(home, "0.0.0.0:8765")
    r = c.get("/jobs")
    assert r.status_code == 401 and "beyond loopback" in r.json()["error"]
    assert c.get("/healthz").status_code == 200  # monitoring still sees it
    assert c.get("/jobs", headers={"Authorization": "Bearer rn_wrong"}).status_code == 401
    from runner import tokens

    tokens.ensure_dir(Home(home))
    good = tokens.write(Home(home), os.getuid(), os.getgid())
    assert c.get("/jobs", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_on_loopback_reads_are_open(home):
    c = served_on(home, "127.0.0.1:8765")
    assert c.get("/jobs").status_code == 200
    assert c.post("/jobs", json={"command": ["true"]}).status_code == 401
