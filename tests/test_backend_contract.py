"""One contract, every backend: what the daemon relies on from where a job runs.

BackendContract is run against the local backend (this machine), the Slurm backend on the real
two-node test cluster (tests/test_slurm.py's `cluster`; skipped without slurm-wlm and munge), and
FakeBackend, written here as a contributor would write a new backend: one class on the interface
of runner/backends/base.py, registered by one entry in runner.backends.BACKENDS, with no edit
anywhere else. Each test drives the real daemon (runner.daemon.Daemon, in this process, its loop
turned by hand) over jobs submitted with the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import Runner
from runner import backends
from runner.backends.base import Backend
from runner.exceptions import InvalidTransition
from runner.states import JobState, Reason
from test_slurm import cluster  # noqa: F401 (the session's Slurm cluster, a fixture)


class FakeBackend(Backend):
    """Runs each prepared job's command in a subprocess of its own, here, without the shim: a thread
    waits for it and writes fake-end.json in its folder; poll() reads those files (so a restarted
    daemon's new backend finds the ends of jobs an earlier one started) and ends the jobs."""

    kind = "fake"

    def schedule(self, now):
        store = self.host.store
        for j in store.queued_jobs(limit=8):
            try:
                store.claim(j["id"], [], now=now)
            except InvalidTransition:
                continue
            self.host.prepare(store.get_job(j["id"]))

    def start(self, job, prepared, offset, write):
        run_dir = self.host.home.run_dir(job["id"])
        launch = prepared.launch
        out = open(run_dir / "output.log", "ab")
        try:
            proc = subprocess.Popen(launch["argv"], env=launch["env"], cwd=launch["cwd"], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            self.host.fail_preparing(job["id"], Reason.SPAWN_FAILED, str(e), write)
            return
        finally:
            out.close()

        def wait():
            code = proc.wait()
            end = {"exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None, "finished_at": time.time()}
            (run_dir / "fake-end.json.tmp").write_text(json.dumps(end))
            os.replace(run_dir / "fake-end.json.tmp", run_dir / "fake-end.json")

        threading.Thread(target=wait, daemon=True).start()
        self.host.store.transition(job["id"], JobState.RUNNING, None, expect=JobState.PREPARING, backend=self.kind,
                                   backend_ref=str(proc.pid), env_hash=prepared.env_hash, log_offset=offset)
        self.host.changed()

    def poll(self, now):
        for job in self.host.store.list_jobs(states=["running"]):
            if not self.owns_end(job):
                continue
            end = self.host.home.run_dir(job["id"]) / "fake-end.json"
            if end.exists():
                self.host.follow_log(job, True)
                self.host.reap(job, json.loads(end.read_text()), now)

    def owns_end(self, job):
        return job.get("backend") == self.kind and bool(job.get("backend_ref"))

    def cancel(self, job, now):
        if not self.owns_end(job) or job["state"] != "running":
            return False
        self.host.store.update_job(job["id"], cancel_requested=1)
        try:
            os.killpg(int(job["backend_ref"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        return True


def tick_until(daemon, predicate, timeout: float, what: str):
    """Turn the daemon's loop until predicate() holds (its value), or fail after timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        daemon.tick()
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class BackendContract:
    """Subclasses give `kind` and `config` (the home's config.toml); every test here must hold for
    every backend in the table."""

    kind = ""
    config = ""

    @pytest.fixture
    def rig(self, tmp_path):
        from runner.daemon import Daemon
        from runner.home import Home

        home = tmp_path / "home"
        home.mkdir()
        (home / "config.toml").write_text(self.config)
        made = []

        def daemon():
            d = Daemon(Home(home), http=None)
            d._own_taking()
            d.reconcile(time.time())  # what run() does first
            made.append(d)
            return d

        yield daemon, Runner(home)
        for d in made:
            d.pool.shutdown(wait=True)
            d.backend.close()
            d.launcher.close()

    def job(self, daemon, jid):
        return daemon.store.get_job(jid)

    def ended(self, daemon, jid, timeout=90):
        return tick_until(daemon, lambda: (lambda j: j if j["state"] in ("succeeded", "failed", "cancelled") else None)(
            self.job(daemon, jid)), timeout, f"job {jid} to end")

    def test_is_chosen_by_its_kind_and_implements_the_interface(self):
        import tomllib

        cls, _ = backends.chosen(tomllib.loads(self.config))
        assert cls is backends.BACKENDS[self.kind] and issubclass(cls, Backend) and cls.kind == self.kind
        for method in ("schedule", "start"):  # the two a backend cannot do without
            assert getattr(cls, method) is not getattr(Backend, method), f"{cls.__name__} must implement {method}"

    def test_a_job_runs_to_its_end_with_its_metrics_and_exit_status(self, rig):
        make, r = rig
        d = make()
        ok = r.submit("--parser", "generic", "--", "sh", "-c", "echo 'epoch 0 loss=0.5'; echo 'epoch 1 loss=0.25'")
        bad = r.submit("--", "sh", "-c", "echo 'about to fail'; exit 3")
        a, b = self.ended(d, ok), self.ended(d, bad)
        assert (a["state"], a["exit_code"]) == ("succeeded", 0), a
        assert [m["value"] for m in d.store.metrics(ok, "loss")] == [0.5, 0.25]
        assert (b["state"], b["reason"], b["exit_code"]) == ("failed", "exit_code", 3), b
        assert a["backend"] == b["backend"] == self.kind  # the row says where it ran
        assert "about to fail" in (d.home.run_dir(bad) / "output.log").read_text()
        shown = r.show(ok)  # what a user sees of it: its state, the same as the store's
        assert shown["state"] == "succeeded" and shown["backend"] == self.kind

    def test_cancel_ends_a_running_job_as_cancelled(self, rig):
        make, r = rig
        d = make()
        jid = r.submit("--", "sh", "-c", "echo started; sleep 300")
        tick_until(d, lambda: self.job(d, jid)["state"] == "running", 60, "the job to run")
        d.request_cancel(self.job(d, jid), time.time())
        job = self.ended(d, jid, timeout=60)
        assert (job["state"], job["reason"]) == ("cancelled", "cancelled_by_user"), job

    def test_a_restarted_daemon_follows_a_running_job_to_its_end_exactly_once(self, rig):
        make, r = rig
        first = make()
        jid = r.submit("--parser", "generic", "--", "sh", "-c", "echo 'epoch 0 loss=1'; sleep 4; echo 'epoch 1 loss=2'")
        tick_until(first, lambda: self.job(first, jid)["state"] == "running" and first.store.metrics(jid, "loss"), 60,
                   "the job to run and say its first epoch")
        second = make()  # the first one's loop no longer turns: as after a SIGKILL, only the store and the files remain
        job = self.ended(second, jid)
        assert job["state"] == "succeeded", job
        assert [m["value"] for m in second.store.metrics(jid, "loss")] == [1, 2]  # each epoch once


class TestLocalBackend(BackendContract):
    kind = "local"
    config = ""


class TestFakeBackend(BackendContract):
    """A backend written outside runner/backends' own modules, registered by its table entry alone."""

    kind = "fake"
    config = '[backend]\nkind = "fake"\n'

    @pytest.fixture(autouse=True)
    def registered(self, monkeypatch):
        monkeypatch.setitem(backends.BACKENDS, "fake", FakeBackend)


needs_slurm = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("slurmctld") or not shutil.which("munged"),
                                 reason="needs root and Debian's slurm-wlm and munge (.ci/run installs them)")


@needs_slurm
class TestSlurmBackend(BackendContract):
    """On the real test cluster (tests/test_slurm.py starts it once a session)."""

    kind = "slurm"
    config = '[backend]\nkind = "slurm"\npoll_seconds = 0.3\nrequeue = 1\n'

    @pytest.fixture(autouse=True)
    def on_the_cluster(self, request, monkeypatch):
        _, env = request.getfixturevalue("cluster")
        for k, v in env.items():
            monkeypatch.setenv(k, v)



def test_jobs_recorded_with_a_slurm_job_id_keep_it_as_their_backend_and_ref(tmp_path):
    """The store's migration: a job Slurm held is backend 'slurm' with its id as backend_ref (and
    still waits in Slurm's queue, not runner's); every other one is 'local' with none; the API's
    slurm_job_id and old SQL on slurm_job_id read the same as before."""
    import sqlite3

    import sqlite_utils

    from runner.queries import job_view
    from runner.store import MIGRATIONS, Store, _m_backend

    path = tmp_path / "runner.db"
    k = MIGRATIONS.index(_m_backend)
    raw = sqlite3.connect(path, isolation_level=None)
    for m in MIGRATIONS[:k]:  # a store as the runner before it left it
        m(sqlite_utils.Database(raw))
    raw.execute(f"PRAGMA user_version={k}")
    for seq, (jid, state, sid, requeues) in enumerate([("held", "queued", "41", 0), ("ran", "succeeded", "42", 0),
                                                       ("again", "queued", None, 1), ("here", "succeeded", None, None),
                                                       ("waits", "queued", None, None)], 1):
        raw.execute("INSERT INTO jobs (id, seq, name, user, uid, kind, state, spec, created_at, priority, slurm_job_id, requeues) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (jid, seq, jid, "ann", 1000, "command", state, "{}", float(seq), 0, sid, requeues))
    raw.close()
    s = Store(path)
    got = {r["id"]: (r["backend"], r["backend_ref"]) for r in s.list_jobs()}
    assert got == {"held": ("slurm", "41"), "ran": ("slurm", "42"), "again": ("slurm", None), "here": ("local", None),
                   "waits": ("local", None)}
    assert [j["id"] for j in s.queued_jobs()] == ["again", "waits"]  # held waits in Slurm's queue, not in runner's
    assert job_view(s, s.get_job("ran"))["slurm_job_id"] == "42" and job_view(s, s.get_job("here"))["slurm_job_id"] is None
    assert [r["id"] for r in s.conn.execute("SELECT id FROM jobs WHERE slurm_job_id IS NOT NULL ORDER BY seq")] == ["held", "ran"]
    s.insert_job({"id": "new", "name": "n", "user": "ann", "uid": 1000, "kind": "command", "spec": {}, "created_at": 9.0,
                  "gpus": [], "after": [], "slurm_job_id": "43"})  # as an older caller writes it
    assert (s.get_job("new")["backend"], s.get_job("new")["backend_ref"]) == ("slurm", "43")
