"""One contract, every exporter (runner/exporters/): what the daemon and the store rely on from each.

ExporterContract is run against the MLflow exporter on a real `mlflow server` (test_mlflow's
session fixture) and against FakeExporter, defined here and registered only by a line in
EXPORTERS (monkeypatched; in the daemon's own process, by the few lines that start it): no edit
anywhere else makes it an exporter that the real daemon drives, exactly once across a SIGKILL.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import DaemonProc, Runner, wait_for
from runner.exceptions import RunnerError
from runner.exporters.base import Exporter
from runner.states import ENDED
from test_mlflow import metrics_job, mlflow_server, server  # noqa: F401

TESTS = Path(__file__).resolve().parent


class FakeExporter(Exporter):
    """The other side is a file: each metric row it is handed is one JSON line (job, row id, name, value)."""

    title = "a file"
    unset = "[fake] path"
    keys = ("path", "interval_seconds")

    @classmethod
    def settings(cls, table) -> dict:
        if not isinstance(table, dict) or not isinstance(table.get("path"), str):
            raise RunnerError("[fake] path: expected the file the jobs' points go to")
        return {"path": table["path"], "interval_seconds": float(table.get("interval_seconds", 0.2))}

    def held(self) -> list[dict]:
        """Every point the file holds, in the order written."""
        try:
            return [json.loads(line) for line in Path(self.conf["path"]).read_text().splitlines()]
        except FileNotFoundError:
            return []

    def _write(self, job_id: str, rows: list[dict]):
        with open(self.conf["path"], "a") as f:
            f.writelines(json.dumps({"job": job_id, "id": r["id"], "name": r["name"], "value": r["value"]}) + "\n" for r in rows)
            f.flush()
            os.fsync(f.fileno())

    def export(self, job_id: str, row: dict) -> bool:
        job = self.store.get_job(job_id)
        ended = job["state"] in [s.value for s in ENDED]  # read first: once ended, every point is stored
        if not row["run_id"]:
            self.set(job_id, run_id=f"file:{self.conf['path']}")
        if row["inflight_id"]:  # written, never acknowledged (a crash between): write only what the file lacks
            have = {p["id"] for p in self.held() if p["job"] == job_id}
            rows = self.store.metric_rows_after(job_id, row["exported_id"], upto_id=row["inflight_id"], limit=1 << 30)
            self._write(job_id, [r for r in rows if r["id"] not in have])
            self.set(job_id, exported_id=row["inflight_id"], inflight_id=None)
            row = self.row(job_id)
        exported = row["exported_id"]
        while True:
            rows = self.store.metric_rows_after(job_id, exported, limit=500)
            if not rows:
                break
            self.set(job_id, inflight_id=rows[-1]["id"])
            self._write(job_id, rows)
            if os.environ.get("FAKE_EXPORTER_KILL_AFTER_BATCH"):  # the window exactly-once must survive
                os.kill(os.getpid(), signal.SIGKILL)
            self.set(job_id, exported_id=rows[-1]["id"], inflight_id=None)
            exported = rows[-1]["id"]
        if ended:
            self.set(job_id, status_sent=job["state"], done=1)
            return True
        if row["status_sent"] != job["state"]:
            self.set(job_id, status_sent=job["state"])
        return False


_BOOT = """
import runpy, sys
sys.path.insert(0, {tests!r})
import runner.exporters
from test_exporter_contract import FakeExporter
runner.exporters.EXPORTERS["fake"] = FakeExporter  # its table line
sys.argv = ["runner", "daemon", *sys.argv[1:]]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


class FakeDaemonProc(DaemonProc):
    """The real daemon, in a process whose EXPORTERS has the fake's line (the test process's
    monkeypatch does not reach a subprocess)."""

    def start(self):
        real = subprocess.Popen

        def popen(cmd, *a, **kw):
            if cmd[1:4] == ["-m", "runner", "daemon"]:
                cmd = [cmd[0], "-c", _BOOT.format(tests=str(TESTS)), *cmd[4:]]
            return real(cmd, *a, **kw)

        subprocess.Popen = popen
        try:
            return super().start()
        finally:
            subprocess.Popen = real


def _value(v):
    """A point's value as both sides can be compared (SQLite keeps a NaN as NULL; MLflow says "NaN")."""
    if v is None or (isinstance(v, str) and v.lower() == "nan") or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return round(float(v), 9)


def _stored(store, job_id) -> dict:
    out = {}
    for m in store.metrics(job_id):
        out.setdefault(m["name"], []).append(_value(m["value"]))
    return out


class ExporterContract:
    """Subclasses give the exporter's name, its config table, what the other side holds, and how the
    daemon is started and made to die between sending a batch and acknowledging it."""

    name = ""
    kill_env: dict = {}

    def table(self, tmp_path: Path) -> str:
        """The config table that turns the exporter on."""
        raise NotImplementedError

    def held(self, exporter, job_id: str) -> dict:
        """{metric name: [values in the order the other side keeps them]} for the job."""
        raise NotImplementedError

    def daemon(self, home: Path, env: dict) -> DaemonProc:
        return DaemonProc(home, env, http=False)

    # -- helpers -------------------------------------------------------------------------------
    def home(self, tmp_path: Path):
        from runner.home import Home

        root = tmp_path / "home"
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.toml").write_text(self.table(tmp_path))
        return Home(root).ensure()

    def running_job(self, store, points: int) -> str:
        jid = "c" + uuid.uuid4().hex[:11]
        store.insert_job({"id": jid, "name": "contract", "user": "root", "uid": os.getuid(), "kind": "command",
                          "spec": {"command": "true"}, "created_at": time.time(), "job_dir": "/nonexistent", "gpus": []})
        store.transition(jid, "preparing")
        store.transition(jid, "running")
        self.add(store, jid, 0, points)
        return jid

    @staticmethod
    def add(store, jid: str, first: int, n: int):
        store.add_metrics(jid, [(name, value, s, s // 10) for s in range(first, first + n)
                                for name, value in (("loss", 1.0 / (s + 1)), ("acc", (s % 7) / 7))])

    # -- the contract --------------------------------------------------------------------------
    def test_is_chosen_by_its_config_table_and_off_without_it(self, tmp_path):
        from runner.config import problems
        from runner.exporters import Exporters, configured

        h = self.home(tmp_path)
        assert self.name in configured(h.config) and problems("config.toml", h.config) == []
        ex = Exporters(h, h.store(), h.config)
        assert ex.names == [self.name] and ex.get(self.name).describe()
        assert not Exporters(h, h.store(), {}) and configured({}) == {}
        with pytest.raises(RunnerError) as e:  # a bad table: one line, naming it
            configured({self.name: "not a table"})
        assert f"[{self.name}]" in str(e.value) and "\n" not in str(e.value)

    def test_passes_send_each_stored_point_once_and_end_done(self, tmp_path):
        from runner.exporters import Exporters, show_lines, view, views

        h = self.home(tmp_path)
        store = h.store()
        ex = Exporters(h, store, h.config).get(self.name)
        jid = self.running_job(store, 700)  # more than one batch of most exporters
        assert ex.enrol([jid], ex.default_target()) == 1 and ex.enrol([jid], "elsewhere") == 0  # enrolled once
        assert views(store, jid)[self.name]["done"] is False
        ex.pass_once()
        assert self.held(ex, jid) == _stored(store, jid)
        assert not store.export_row(self.name, jid)["done"]
        self.add(store, jid, 700, 300)
        store.transition(jid, "succeeded")
        for _ in range(5):
            ex.pass_once()
        assert self.held(ex, jid) == _stored(store, jid)
        ex.pass_once()  # nothing is sent twice
        assert ex.sync(jid) is True and self.held(ex, jid) == _stored(store, jid)
        v = view(store, self.name, jid)
        assert v["done"] and v["run_id"] and v["points_exported"] == v["points"] == 2000 and v["error"] is None
        lines = show_lines({self.name: v})
        assert lines == [(self.name, lines[0][1])] and "2000/2000 points exported; complete" in lines[0][1]
        assert store.export_lag(self.name)["behind"] == 0

    def test_the_real_daemon_exports_a_job_exactly_once_across_a_sigkill(self, tmp_path):
        h = self.home(tmp_path)
        r = Runner(h.root)
        d = self.daemon(h.root, {**r.env, **self.kill_env}).start()  # dies after sending its first batch, unacknowledged
        job = r.submit(*metrics_job(3, 200, sleep=0.3, name="contract"))
        wait_for(lambda: d.proc.poll() is not None, 60, what="the daemon to die mid-export")
        assert d.proc.returncode == -signal.SIGKILL
        store = h.store(migrate=False)
        assert store.export_row(self.name, job)["inflight_id"], "the batch in flight is recorded"
        d = self.daemon(h.root, r.env).start()
        try:
            r.wait_state(job, "succeeded", timeout=120)
            wait_for(lambda: store.export_row(self.name, job)["done"], 60, what="the export")
        finally:
            d.stop()
        from runner.exporters import Exporters

        ex = Exporters(h, store, h.config).get(self.name)
        assert self.held(ex, job) == _stored(store, job) and sum(map(len, _stored(store, job).values())) > 600
        from runner.queries import job_view

        shown = job_view(store, store.get_job(job), full=True)[self.name]  # what `runner show` and the API say
        assert shown["done"] and shown["points_exported"] == shown["points"]


class TestMlflowExporter(ExporterContract):
    name = "mlflow"
    kill_env = {"RUNNER_FAULT_KILL_AFTER_MLFLOW_BATCH": "1"}

    @pytest.fixture(autouse=True)
    def _server(self, server):  # noqa: F811
        self.server = server

    def table(self, tmp_path):
        return f'[mlflow]\ntracking_uri = "{self.server.url}"\nexperiment = "contract"\ninterval_seconds = 0.2\n'

    def held(self, exporter, job_id):
        from runner.exporters.mlflow import metric_key

        run_id = exporter.row(job_id)["run_id"]
        out = {}
        for name in sorted({m["name"] for m in exporter.store.metrics(job_id)}):
            got = sorted(self.server.history(run_id, metric_key(name)), key=lambda p: p["timestamp"])
            if got:
                out[name] = [_value(p["value"]) for p in got]
        return out


class TestFakeExporter(ExporterContract):
    name = "fake"
    kill_env = {"FAKE_EXPORTER_KILL_AFTER_BATCH": "1"}

    @pytest.fixture(autouse=True)
    def _registered(self, monkeypatch):
        from runner import exporters

        monkeypatch.setitem(exporters.EXPORTERS, "fake", FakeExporter)

    def table(self, tmp_path):
        return f'[fake]\npath = "{tmp_path / "fake.jsonl"}"\ninterval_seconds = 0.2\n'

    def held(self, exporter, job_id):
        out = {}
        for p in exporter.held():
            if p["job"] == job_id:
                out.setdefault(p["name"], []).append(_value(p["value"]))
        return out

    def daemon(self, home, env):
        return FakeDaemonProc(home, env, http=False)


def test_the_outbox_migration_keeps_each_mlflow_export_where_it_stood(tmp_path):
    """A store made before the outbox: each job's MLflow export (run, position, batch in flight,
    what was sent, the retry schedule) is the MLflow exporter's row after the migration, and the
    old table is gone."""
    import sqlite3

    from runner import store as store_mod
    from runner.exporters import load

    db = tmp_path / "old.db"
    raw = sqlite3.connect(db, isolation_level=None)
    import sqlite_utils

    import inspect

    before = next(i for i, m in enumerate(store_mod.MIGRATIONS) if "INTO export_outbox" in inspect.getsource(m))
    for m in store_mod.MIGRATIONS[:before]:
        m(sqlite_utils.Database(raw))
    raw.execute(f"PRAGMA user_version={before}")
    raw.execute("INSERT INTO mlflow_export (job_id, experiment, experiment_id, run_id, exported_id, inflight_id, ts_state, "
                "params_done, status_sent, artifacts_done, done, error, attempts, next_try, enrolled_at, updated_at) "
                "VALUES ('a', 'exp', '7', 'run-a', 40, 60, '{\"loss\": 1000}', 1, 'RUNNING', 0, 0, 'down', 3, 99.5, 1.0, 2.0),"
                "('b', 'other', NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0, NULL, 0, 0.0, 3.0, 3.0),"
                "('c', 'exp', '7', 'run-c', 9, NULL, '{}', 1, 'FINISHED', 1, 1, NULL, 0, 0.0, 4.0, 5.0)")
    raw.close()
    s = store_mod.Store(db)
    assert "mlflow_export" not in {r["name"] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    cls = load("mlflow")
    a = {**cls.row_defaults, **s.export_row("mlflow", "a")}
    assert {k: a[k] for k in ("target", "experiment_id", "run_id", "exported_id", "inflight_id", "ts_state", "params_done",
                              "status_sent", "artifacts_done", "done", "error", "attempts", "next_try", "enrolled_at")} == {
        "target": "exp", "experiment_id": "7", "run_id": "run-a", "exported_id": 40, "inflight_id": 60, "ts_state": {"loss": 1000},
        "params_done": 1, "status_sent": "RUNNING", "artifacts_done": 0, "done": 0, "error": "down", "attempts": 3,
        "next_try": 99.5, "enrolled_at": 1.0}
    b = {**cls.row_defaults, **s.export_row("mlflow", "b")}
    assert b["target"] == "other" and b["run_id"] is None and b["ts_state"] is None and b["params_done"] == 0
    assert s.mlflow_row("c")["done"] == 1 and s.export_row("fake", "a") is None
    assert [r["job_id"] for r in s.export_due("mlflow", 100.0)] == ["b", "a"] and s.export_lag("mlflow")["behind"] == 2
