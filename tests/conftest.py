"""Shared fixtures: a temporary RUNNER_HOME, the real daemon as a subprocess, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import envcache

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    # The whole matrix (learns included) takes about an hour on 2 cores: its evidence is the reports
    # under docs/checks/ (scripts/check-reports.sh); CI runs a slice of it.
    parser.addoption("--full-checks", action="store_true", default=False,
                     help="run `runner check` over every model of each framework (about an hour on 2 CPU cores)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before any fixture of the test is made (a module's daemon included): may its homes share envs?
    envcache.wanted = item.get_closest_marker("shared_envs") is not None and item.get_closest_marker("no_shared_envs") is None


def pytest_sessionfinish(session):
    envcache.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    """Poll until predicate() is truthy; returns its value or fails the test."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Runner:
    """The real CLI against one RUNNER_HOME."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}

    def run(self, *args, check=True, input=None, cwd=None) -> subprocess.CompletedProcess:
        # `runner check` trains models: 600 s ran out for two Transformers models on a loaded 2-core host
        r = subprocess.run([sys.executable, "-m", "runner", *map(str, args)], capture_output=True, text=True,
                           env=self.env, input=input, cwd=cwd, timeout=1500 if args and args[0] == "check" else 600)
        if check and r.returncode != 0:
            raise AssertionError(f"runner {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def json(self, *args):
        return json.loads(self.run(*args, "--json").stdout)

    def submit(self, *args, cwd=None) -> str:
        return self.run("submit", *args, cwd=cwd).stdout.strip().splitlines()[-1]

    def show(self, job_id):
        return self.json("show", job_id)

    def token(self) -> str:
        return self.run("token").stdout.strip()

    def wait_state(self, job_id, states=("succeeded", "failed", "cancelled"), timeout=60.0):
        states = (states,) if isinstance(states, str) else states
        return wait_for(lambda: (lambda j: j if j["state"] in states else None)(self.show(job_id)), timeout, 0.2,
                        f"job {job_id} to reach {states}")


def assert_oom_policy(runner, spec_path, auto: bool):
    """Submit a job whose training start raises torch.OutOfMemoryError above batch 4
    (FAULT_OOM_ABOVE_BATCH=4 in its env_vars, batch_size 8): with auto_batch_size it retries once
    with half the batch and succeeds; without, it fails with reason oom."""
    job = runner.wait_state(runner.submit(spec_path), timeout=600)
    log = runner.run("logs", job["id"]).stdout
    if auto:
        assert "out of memory at batch_size=8; retrying once with batch_size=4" in log, log[-3000:]
        assert job["state"] == "succeeded", job.get("log_tail")
    else:
        assert (job["state"], job["reason"]) == ("failed", "oom"), job.get("log_tail")


# The daemon listens on loopback: never through a proxy the environment names (http_proxy and
# friends are set on some machines and urllib honours them for 127.0.0.1 too).
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DaemonProc:
    """`runner daemon` as a real subprocess."""

    def __init__(self, home: Path, env: dict, http=True, extra=()):
        self.home, self.env = home, env
        self.port = free_port() if http else None
        self.args = ["--http", f"127.0.0.1:{self.port}" if http else "none", *extra]
        self.proc = None
        self.log = home / "daemon-test.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.home.mkdir(parents=True, exist_ok=True)
        envcache.seed(self.home)
        self.proc = subprocess.Popen([sys.executable, "-m", "runner", "daemon", *self.args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        def mine():  # this daemon's pid in the pidfile (one left by an earlier daemon of the home does not count)
            try:
                return (self.home / "daemon.pid").read_text().strip() == str(self.proc.pid) and (self.home / "runner.db").exists()
            except FileNotFoundError:
                return False
        wait_for(mine, 20, what="daemon start")
        if self.port:
            def up():
                try:
                    return LOOPBACK.open(self.url + "/healthz", timeout=1).status == 200
                except OSError:
                    return False
            try:
                wait_for(up, 30, 0.1, "HTTP up")
            except AssertionError as e:
                state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
                raise AssertionError(f"{e}; daemon {state}; its log ends:\n{self.log.read_text()[-3000:]}") from None
        return self

    def kill(self, sig=signal.SIGKILL):
        self._stop(sig)
        envcache.harvest(self.home)

    def _stop(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # stuck: its threads' stacks (faulthandler on SIGUSR1) say where
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(1)
                self.proc.kill()
                self.proc.wait(timeout=30)
                raise AssertionError(f"the daemon did not stop within 30 s of signal {sig}; its log ends:\n"
                                     f"{self.log.read_text()[-6000:]}") from None

    def stop(self):
        self.kill(signal.SIGTERM)

    def request(self, method, path, token=None, body=None):
        """(status, JSON or text) of one HTTP request, with a personal token when given."""
        import urllib.error
        import urllib.request

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with LOOPBACK.open(req, timeout=30) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if r.headers.get_content_type() == "application/json" else text)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def get(self, path, token=None):
        return self.request("GET", path, token)

    def post(self, path, token=None, body=None):
        return self.request("POST", path, token, body)


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    envcache.seed(h)
    yield h
    envcache.harvest(h)  # (what `runner check`'s own daemon built there, too)


@pytest.fixture
def runner(home) -> Runner:
    return Runner(home)


@pytest.fixture
def daemon(home, runner):
    d = DaemonProc(home, runner.env).start()
    yield d
    d.kill(signal.SIGTERM)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    from runner.synth import make_shapes

    return make_shapes(tmp_path_factory.mktemp("data") / "shapes", per_class=6, val_per_class=3)
