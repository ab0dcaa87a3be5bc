"""The sandbox, for real: network off, read-only system, rlimits; and the fallback without bwrap."""

from __future__ import annotations

import json
import socket
import sys
import threading

import pytest

from conftest import FIXTURES, DaemonProc, Runner
from runner import sandbox

JOB = [sys.executable, str(FIXTURES / "jobs.py")]
needs_bwrap = pytest.mark.skipif(sandbox.bwrap_path() is None, reason="bubblewrap is not installed or cannot create a sandbox here")


@pytest.fixture
def server():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    stop = threading.Event()

    def serve():
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                s.accept()[0].close()
            except OSError:
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield s.getsockname()[1]
    stop.set()
    s.close()


@needs_bwrap
def test_network_off_cannot_reach_localhost(runner, daemon, server, tmp_path):
    on = runner.wait_state(runner.submit("--", *JOB, "connect", server))
    assert on["state"] == "succeeded" and "CONNECTED" in runner.run("logs", on["id"]).stdout
    off = runner.wait_state(runner.submit("--no-network", "--", *JOB, "connect", server))
    assert (off["state"], off["exit_code"]) == ("failed", 7)
    assert "NO NETWORK" in runner.run("logs", off["id"]).stdout


@needs_bwrap
def test_system_is_read_only_but_workdir_and_job_dir_are_writable(runner, daemon, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    ro = runner.wait_state(runner.submit("--workdir", work, "--", *JOB, "write", outside / "f"))
    assert (ro["state"], ro["exit_code"]) == ("failed", 9)
    assert not (outside / "f").exists()
    rw = runner.wait_state(runner.submit("--workdir", work, "--", *JOB, "write", work / "f"))
    assert rw["state"] == "succeeded" and (work / "f").read_text() == "x"


def test_resource_limits_apply(runner, daemon, tmp_path):
    spec = tmp_path / "job.yaml"
    code = "import resource; print('NOFILE', resource.getrlimit(resource.RLIMIT_NOFILE)[0]); bytearray(900*1024*1024)"
    spec.write_text(json.dumps({"command": [sys.executable, "-c", code], "resources": {"max_open_files": 64, "memory_gb": 0.5}}))
    job = runner.wait_state(runner.submit(spec))
    log = runner.run("logs", job["id"]).stdout
    assert "NOFILE 64" in log
    assert (job["state"], job["reason"]) == ("failed", "oom")  # MemoryError under the address-space limit


def test_without_bwrap_jobs_still_run_and_doctor_says_so(home, tmp_path):
    r = Runner(home)
    r.env["RUNNER_NO_BWRAP"] = "1"
    d = DaemonProc(home, r.env, http=False).start()
    try:
        job = r.wait_state(r.submit("--no-network", "--", *JOB, "exit", "0"))
        assert job["state"] == "succeeded"
        assert "network: false cannot be enforced" in r.run("logs", job["id"]).stdout
        doc = json.loads(r.run("doctor", "--json", check=False).stdout)  # exits 1 on any problem (e.g. the daemon's Python)
        assert doc["sandbox"]["bubblewrap_works"] is False and "install bubblewrap" in doc["sandbox"]["isolation"]
    finally:
        d.stop()
