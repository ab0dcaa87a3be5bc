"""Every job mirrored to a real MLflow tracking server (`mlflow server`, SQLite backend, loopback).

One server per test session (scripts/mlflow-server.sh builds its venv with uv and starts it);
the tests that stop it start it again on the same port and database.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import LOOPBACK, ROOT, DaemonProc, Runner, free_port, wait_for
from runner.store import Store

pytestmark = pytest.mark.shared_envs  # its homes reuse the session's framework envs (tests/envcache.py)

PY = sys.executable


class MlflowServer:
    """`mlflow server` in a session of its own; kill() and start() keep its port and database."""

    def __init__(self, folder):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        exe = subprocess.run(["bash", str(ROOT / "scripts" / "mlflow-server.sh"), "venv"], capture_output=True, text=True, timeout=900)
        assert exe.returncode == 0, f"building the MLflow server's venv failed:\n{exe.stderr[-3000:]}"

    def start(self):
        log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "mlflow-server.sh"), "start", str(self.folder), str(self.port)],
                                     stdout=log, stderr=log, start_new_session=True)
        wait_for(self.up, 120, 0.25, "the MLflow server")
        return self

    def up(self):
        try:
            return LOOPBACK.open(self.url + "/health", timeout=2).status == 200
        except OSError:
            return False

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        wait_for(lambda: not self.up(), 10, what="the MLflow server down")

    def api(self, path, query=None, body=None):
        url = f"{self.url}/api/2.0/mlflow/{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
        with LOOPBACK.open(req, timeout=30) as r:
            return json.loads(r.read())

    def run(self, run_id):
        r = self.api("runs/get", {"run_id": run_id})["run"]
        return {"info": r["info"], "tags": {t["key"]: t["value"] for t in r["data"].get("tags", [])},
                "params": {p["key"]: p["value"] for p in r["data"].get("params", [])}}

    def history(self, run_id, key):
        return self.api("metrics/get-history", {"run_id": run_id, "metric_key": key, "max_results": 25000}).get("metrics", [])

    def runs_of(self, experiment, job_id):
        exp = self.api("experiments/get-by-name", {"experiment_name": experiment})["experiment"]["experiment_id"]
        return self.api("runs/search", body={"experiment_ids": [exp], "filter": f"tags.\"runner.job_id\" = '{job_id}'"}).get("runs", [])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGKILL)


@pytest.fixture
def server(mlflow_server):
    if not mlflow_server.up():  # a test that stopped it and failed before starting it again
        mlflow_server.start()
    return mlflow_server


def mirrored_home(home, server, extra=""):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[mlflow]\ntracking_uri = "{server.url}"\nexperiment = "tests"\n'
                                      f'interval_seconds = 0.2\n{extra}')
    return home


def metrics_job(epochs, per_epoch, sleep=0.0, name=None, extra=()):
    """A command job printing `epoch E step S loss=... lr=...` lines (repeated values included)."""
    code = (f"import time\nfor e in range({epochs}):\n    for i in range({per_epoch}):\n"
            f"        s = e * {per_epoch} + i\n"
            f"        print(f'epoch {{e}} step {{s}} loss={{1.0 / (s + 1):.6f}} lr=0.01 acc={{(s % 7) / 7:.4f}}', flush=True)\n"
            f"    time.sleep({sleep})\nprint('epoch {epochs - 1} loss=nan')\n")
    return [*(("--name", name) if name else ()), "--parser", "generic", *extra, "--", PY, "-c", code]


def assert_history_equals_store(server, home, job_id):
    """Each stored point of the job is in its MLflow run exactly once, in order, with its step."""
    store = Store(home / "runner.db", migrate=False)
    row = store.mlflow_row(job_id)
    assert row and row["done"] and row["run_id"], row
    expected = {}
    for m in store.metrics(job_id):
        step = m["epoch"] if m["epoch"] is not None else (m["step"] if m["step"] is not None else 0)
        expected.setdefault(m["name"], []).append((math.nan if m["value"] is None else m["value"], step))  # SQLite: NaN is NULL
    assert expected, "the job stored no metrics"
    for name, want in expected.items():
        got = sorted(server.history(row["run_id"], name), key=lambda h: h["timestamp"])
        got = [(float(h["value"]) if not isinstance(h["value"], str) else float(h["value"].replace("Infinity", "inf")), h["step"])
               for h in got]
        assert len(got) == len(want), f"{name}: {len(got)} points in MLflow, {len(want)} stored"
        for (gv, gs), (wv, ws) in zip(got, want):
            assert gs == ws and (gv == wv or (math.isnan(gv) and math.isnan(wv))), (name, (gv, gs), (wv, ws))
    return row


def test_each_job_is_a_run_with_its_metrics_params_tags_and_status(tmp_path, server):
    home = mirrored_home(tmp_path / "home", server, 'artifacts = ["spec", "log", "best_checkpoint"]\nartifact_max_mb = 0.01\n')
    r = Runner(home)
    d = DaemonProc(home, r.env, http=True).start()
    try:
        ok = r.submit(*metrics_job(6, 200, name="ok-job"))  # 3,600 points: 4 batches
        bad = r.submit("--name", "bad-job", "--parser", "generic", "--", "sh", "-c", "echo 'epoch 0 loss=2.5'; exit 3")
        spec = tmp_path / "own.json"
        spec.write_text(json.dumps({"parser": "generic", "name": "own-exp", "command": ["sh", "-c", "echo 'epoch 0 loss=1.5'"], "mlflow": {"experiment": "elsewhere"}}))
        own = r.submit(str(spec))
        spec.write_text(json.dumps({"parser": "generic", "name": "saves", "checkpoints": ["ckpt/*.pt"], "command": [
            "sh", "-c", "mkdir -p $RUNNER_JOB_DIR/ckpt && echo w > $RUNNER_JOB_DIR/ckpt/last.pt && echo w > $RUNNER_JOB_DIR/ckpt/best.pt; "
                        "echo 'epoch 0 loss=1'"]}))
        saves = r.submit(str(spec))
        spec.write_text(json.dumps({"parser": "generic", "name": "not-mirrored", "command": ["sh", "-c", "echo 'epoch 0 loss=1.5'"], "mlflow": False}))
        off = r.submit(str(spec))
        slow = r.submit("--name", "cancelled-job", "--parser", "generic", "--", "sh", "-c", "echo 'epoch 0 loss=9'; sleep 60")
        r.wait_state(slow, "running")
        wait_for(lambda: (Store(home / "runner.db", migrate=False).mlflow_row(slow) or {}).get("status_sent") == "RUNNING", 30,
                 what="the running job's run to say RUNNING")
        r.run("cancel", slow)
        for j in (ok, bad, own, off, slow, saves):
            r.wait_state(j, ("succeeded", "failed", "cancelled"))
        store = Store(home / "runner.db", migrate=False)
        wait_for(lambda: all((store.mlflow_row(j) or {}).get("done") for j in (ok, bad, own, slow, saves)), 60, what="the exports")
        status, api = d.get(f"/jobs/{ok}")
        assert status == 200 and api["mlflow"]["done"] and api["mlflow"]["run_id"] == store.mlflow_row(ok)["run_id"]
        page = LOOPBACK.open(d.url + f"/ui/jobs/{ok}").read().decode()
        assert f'{server.url}/#/experiments/{api["mlflow"]["experiment_id"]}/runs/{api["mlflow"]["run_id"]}' in page
    finally:
        d.stop()
    row = assert_history_equals_store(server, home, ok)
    run = server.run(row["run_id"])
    assert run["info"]["run_name"] == "ok-job" and run["info"]["status"] == "FINISHED" and run["info"]["end_time"]
    assert run["tags"]["runner.job_id"] == ok and run["tags"]["runner.user"] == run["tags"]["mlflow.user"] == pwd.getpwuid(os.getuid()).pw_name
    assert run["tags"]["runner.kind"] == "command" and run["tags"]["runner.state"] == "succeeded"
    assert run["params"]["env"] == "system" and run["params"]["name"] == "ok-job" and "command" in run["params"]
    files = server.api("artifacts/list", {"run_id": row["run_id"], "path": "runner"})["files"]
    assert {f["path"] for f in files} == {"runner/spec.json"}, "the log is over artifact_max_mb"
    assert "runner/output.log" in run["tags"]["runner.artifacts_skipped"] and "artifact_max_mb" in run["tags"]["runner.artifacts_skipped"]
    saved = store.mlflow_row(saves)["run_id"]
    assert [f["path"] for f in server.api("artifacts/list", {"run_id": saved, "path": "checkpoints"})["files"]] == ["checkpoints/best.pt"]
    assert_history_equals_store(server, home, bad)
    failed = server.run(store.mlflow_row(bad)["run_id"])
    assert failed["info"]["status"] == "FAILED" and failed["tags"]["runner.exit_code"] == "3"
    assert server.run(store.mlflow_row(slow)["run_id"])["info"]["status"] == "KILLED"
    assert server.runs_of("elsewhere", own) and not server.runs_of("tests", own)
    assert store.mlflow_row(off) is None and not server.runs_of("tests", off)
    shown = json.loads(r.run("show", ok, "--json").stdout)["mlflow"]
    assert shown["done"] and shown["points_exported"] == shown["points"] == store.count_metrics(ok) > 3600
    assert "points exported; complete" in r.run("show", ok).stdout


def test_daemon_sigkill_between_send_and_acknowledge_leaves_each_point_once(tmp_path, server):
    home = mirrored_home(tmp_path / "home", server)
    r = Runner(home)
    # The daemon kills itself after sending its 2nd metric batch, before recording it as sent.
    d = DaemonProc(home, {**r.env, "RUNNER_FAULT_KILL_AFTER_MLFLOW_BATCH": "2"}, http=False).start()
    job = r.submit(*metrics_job(8, 300, sleep=0.5, name="killed-midway"))
    wait_for(lambda: d.proc.poll() is not None, 60, what="the daemon to die mid-export")
    assert d.proc.returncode == -signal.SIGKILL
    store = Store(home / "runner.db", migrate=False)
    row = store.mlflow_row(job)
    assert row["inflight_id"], "the batch in flight is recorded"
    held = sum(len(server.history(row["run_id"], k)) for k in ("loss", "lr", "acc"))
    assert held > store.metric_count_upto(job, row["exported_id"]), "MLflow holds the batch that was never acknowledged"
    d = DaemonProc(home, r.env, http=False).start()
    try:
        r.wait_state(job, "succeeded", timeout=120)
        wait_for(lambda: store.mlflow_row(job)["done"], 60, what="the export")
    finally:
        d.stop()
    assert_history_equals_store(server, home, job)
    assert "settled a batch in flight" in (home / "daemon-test.log").read_text()


def test_mlflow_restart_mid_job_and_a_job_submitted_while_it_is_down(tmp_path, server):
    home = mirrored_home(tmp_path / "home", server)
    r = Runner(home)
    d = DaemonProc(home, r.env, http=False).start()
    try:
        long = r.submit(*metrics_job(10, 200, sleep=0.8, name="outlives-restart"))
        store = Store(home / "runner.db", migrate=False)
        wait_for(lambda: (store.mlflow_row(long) or {}).get("exported_id"), 60, what="the first points exported")
        server.kill()
        during = r.submit(*metrics_job(2, 50, name="while-down"))
        r.wait_state(during, "succeeded")
        wait_for(lambda: (store.mlflow_row(during) or {}).get("error"), 30, what="the export to meet the server down")
        shown = r.run("show", during).stdout
        assert "behind:" in shown and "cannot be reached" in shown, shown
        time.sleep(2)
        server.start()
        r.wait_state(long, "succeeded", timeout=120)
        wait_for(lambda: store.mlflow_row(long)["done"] and store.mlflow_row(during)["done"], 120,
                 what="both exports to catch up")
    finally:
        d.stop()
    assert_history_equals_store(server, home, long)
    row = assert_history_equals_store(server, home, during)
    assert row["error"] is None and row["attempts"] == 0


def test_export_mlflow_of_past_jobs(tmp_path, server):
    home = tmp_path / "home"
    home.mkdir()
    r = Runner(home)
    d = DaemonProc(home, r.env, http=False).start()  # no [mlflow] yet: nothing is mirrored
    try:
        old = r.submit(*metrics_job(3, 20, name="old-one"))
        older = r.submit(*metrics_job(2, 10, name="old-two"))
        r.wait_state(old, "succeeded")
        r.wait_state(older, "succeeded")
    finally:
        d.stop()
    out = r.run("export", "mlflow", old, check=False)
    assert out.returncode != 0 and "[mlflow] tracking_uri is not set" in out.stderr
    mirrored_home(home, server)
    assert Store(home / "runner.db").mlflow_row(old) is None
    d = DaemonProc(home, r.env, http=False).start()
    try:
        out = r.run("export", "mlflow", old[:5], "--experiment", "backfill")
        assert f"{old}  run " in out.stdout and "done" in out.stdout, out.stdout
        out = r.run("export", "mlflow", "--all", "--since", time.strftime("%Y-%m-%d"))
        assert older in out.stdout and out.stdout.count("done") == 2, out.stdout
    finally:
        d.stop()
    assert server.runs_of("backfill", old) and server.runs_of("tests", older)
    assert not server.runs_of("tests", old), "an exported job keeps its run"
    assert_history_equals_store(server, home, old)
    assert_history_equals_store(server, home, older)
    bad = r.run("export", "mlflow", "--all", "--since", "last week", check=False)
    assert bad.returncode != 0 and "--since: given 'last week'; expected a date" in bad.stderr


def test_bad_mlflow_settings_are_one_line_errors(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = Runner(home)
    (home / "config.toml").write_text('[mlflow]\ntracking_uri = "localhost:5000"\n')
    out = subprocess.run([PY, "-m", "runner", "daemon", "--http", "none"], env=r.env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "[mlflow] tracking_uri: given 'localhost:5000'; expected the tracking server's address" in out.stderr
    spec = tmp_path / "j.json"
    spec.write_text(json.dumps({"command": "true", "mlflow": {"experimnt": "x"}}))
    out = r.run("submit", str(spec), check=False)
    assert out.returncode != 0 and "mlflow: given" in out.stderr and "{experiment: NAME}" in out.stderr


def test_names_steps_and_timestamps_as_mlflow_takes_them():
    from runner.exporters.mlflow import job_tags, metric_key, points

    assert metric_key("gpu0_memory_mb") == "system/gpu_0_memory_usage_megabytes"
    assert metric_key("gpu3_utilization") == "system/gpu_3_utilization_percentage"
    assert metric_key("metrics/mAP50(B)") == "metrics/mAP50_B_" and metric_key("/lead") == "lead"
    rows = [{"name": "loss", "value": 0.5, "step": 7, "epoch": 1, "at": 100.0},
            {"name": "loss", "value": 0.5, "step": 8, "epoch": 1, "at": 100.0},  # same value, same time: still two points
            {"name": "loss", "value": None, "step": None, "epoch": None, "at": 99.0},  # a NaN (NULL in SQLite), older clock
            {"name": "lr", "value": 0.1, "step": 3, "epoch": None, "at": 100.0}]
    out, state = points(rows, {})
    assert [(p["timestamp"], p["step"], p["value"]) for p in out] == [(100000, 1, 0.5), (100001, 1, 0.5), (100002, 0, "NaN"), (100000, 3, 0.1)]
    assert points(rows, {}) == (out, state) and state == {"loss": 100002, "lr": 100000}  # the same rows map the same
    again, _ = points(rows[:1], state)
    assert again[0]["timestamp"] == 100003  # after what was sent before, never at the same time
    tags = job_tags({"id": "abc", "user": "ann", "state": "succeeded", "kind": "model", "model": "repo/tiny", "reason": "scheduled"},
                    {"url": "https://github.com/lab/tiny", "commit": "0" * 40})
    assert tags["runner.repo"] == "https://github.com/lab/tiny" and tags["runner.commit"] == "0" * 40
    assert tags["runner.framework"] == "repo" and "runner.reason" not in tags


def test_an_upload_into_a_mounted_artifact_folder_never_writes_through_a_planted_link(tmp_path):
    """The root daemon uploads a checkpoint into a folder this machine mounts: its temporary file is
    a new one of an unguessable name (it was `NAME.tmp`: a link planted there made root write the
    checkpoint into the file it points to, then put the link in place), readable by the tracking
    server's user, and nothing of it is left behind."""
    import io

    from runner.exporters.mlflow_rest import Client

    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    art = tmp_path / "artifacts" / "1" / "run" / "artifacts"
    (art / "checkpoints").mkdir(parents=True)
    (art / "checkpoints" / "last.pth.tmp").symlink_to(victim)
    Client("http://127.0.0.1:9").upload(f"file://{art}", "checkpoints/last.pth", io.BytesIO(b"weights" * 1000))
    assert victim.read_text() == "root's file\n"
    dest = art / "checkpoints" / "last.pth"
    assert dest.read_bytes() == b"weights" * 1000 and not dest.is_symlink() and (dest.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in (art / "checkpoints").iterdir()) == ["last.pth", "last.pth.tmp"]  # (the planted link, untouched)
