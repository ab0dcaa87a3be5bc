"""Hostile input and load: nothing one user sends can stop, stall or corrupt the daemon.

Poison spool files, job files that must be refused with one line naming the field, bounded HTTP
reads, metrics stored exactly once across crashes, and the times and memory recorded for a job.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import FIXTURES, DaemonProc, wait_for

JOB = [sys.executable, str(FIXTURES / "jobs.py")]


def _quarantined(home: Path, name: str, timeout: float = 5.0) -> str:
    reason = home / "spool" / "quarantine" / (name + ".reason")
    wait_for(reason.exists, timeout, what=f"{name} to be quarantined")
    return reason.read_text()


def _drop(home: Path, name: str, data) -> Path:
    p = home / "spool" / name
    p.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return p


def _job(jid: str, **over) -> dict:
    return {"id": jid, "spec": {"command": ["true"], "workdir": str(FIXTURES)}, "submitted_at": time.time(), **over}


# -- poison spool files ---------------------------------------------------------------------------

def test_poison_spool_files_are_set_aside_and_the_daemon_serves_on(runner, daemon, home):
    poisons = {
        "0001-deep.job.json": b"[" * 400_000 + b"]" * 400_000,
        "0002-retry.job.json": _job("aaaa0002", retry_of={"x": 1}),
        "0003-list.cancel.json": {"id": ["a", "b"]},
        "0004-inf.job.json": b'{"id": "aaaa0004", "spec": {"command": ["true"]}, "submitted_at": 1e999}',
        "0005-nan.job.json": b'{"id": "aaaa0005", "spec": {"command": ["true"]}, "submitted_at": NaN}',
        "0006-binary.job.json": bytes(range(256)) * 10,
        "0007-huge.job.json": b'{"id": "aaaa0007", "spec": {"command": ["' + b"x" * (2 << 20) + b'"]}}',
        "0008-ldpreload.job.json": _job("aaaa0008", spec={"command": ["true"], "workdir": str(FIXTURES), "env_vars": {"LD_PRELOAD": "/x.so"}}),
        "0009-root.job.json": _job("aaaa0009", spec={"command": ["true"], "workdir": "/"}),
        "0010-badid.job.json": _job("../../etc"),
        "0011-array.job.json": [1, 2, 3],
        "0012-dup.job.json": b'{"id": "aaaa0012", "id": "bbbb0012", "spec": {"command": ["true"]}}',
    }
    for name, data in poisons.items():
        _drop(home, name, data)
    os.mkfifo(home / "spool" / "0013-fifo.job.json")
    target = home.parent / "elsewhere.job.json"
    target.write_text(json.dumps(_job("aaaa0014")))
    os.symlink(target, home / "spool" / "0014-link.job.json")
    t0 = time.time()
    reasons = {name: _quarantined(home, name) for name in [*poisons, "0013-fifo.job.json", "0014-link.job.json"]}
    assert time.time() - t0 < 5  # a FIFO does not block intake
    assert "deeper than" in reasons["0001-deep.job.json"]
    assert "retry_of" in reasons["0002-retry.job.json"]
    assert "id" in reasons["0003-list.cancel.json"]
    assert "submitted_at" in reasons["0004-inf.job.json"] or "out of range" in reasons["0004-inf.job.json"]
    assert "NaN" in reasons["0005-nan.job.json"]
    assert "not UTF-8" in reasons["0006-binary.job.json"]
    assert "bytes" in reasons["0007-huge.job.json"]
    assert "env_vars.LD_PRELOAD" in reasons["0008-ldpreload.job.json"]
    assert "workdir" in reasons["0009-root.job.json"]
    assert "id:" in reasons["0010-badid.job.json"]
    assert "object" in reasons["0011-array.job.json"]
    assert "duplicate key" in reasons["0012-dup.job.json"]
    assert "regular file" in reasons["0013-fifo.job.json"]
    assert "symbolic link" in reasons["0014-link.job.json"]
    assert target.exists() and (home / "spool" / "quarantine" / "0014-link.job.json").is_symlink()  # moved, not followed
    assert daemon.proc.poll() is None
    status, body = daemon.get("/jobs")
    assert status == 200 and not any(j["id"].startswith("aaaa") for j in body["jobs"])
    assert runner.wait_state(runner.submit("--", "true"))["state"] == "succeeded"
    status, body = daemon.get("/healthz")
    assert status == 200 and body["ok"] and body["spool_backlog"] == 0


def test_a_restart_never_meets_the_same_poison_twice(runner, home):
    """A file the daemon died on is retried once (a SIGKILL mid-intake loses no job), then set aside."""
    spool = home / "spool"
    d = DaemonProc(home, runner.env, http=False).start()
    d.stop()
    taking = spool / ".taking"
    # as if the daemon had died while taking these in: a job once, another for the second time
    (taking / "0001-abcd0001.job.json").write_text(json.dumps(_job("abcd0001")))
    (taking / "0002-abcd0002.job.json.retry").write_text(json.dumps(_job("abcd0002")))
    d = DaemonProc(home, runner.env, http=False).start()
    try:
        wait_for(lambda: not list(taking.iterdir()), 20, what="the leftovers to be taken")
        assert runner.wait_state("abcd0001")["state"] == "succeeded"
        assert "stopped twice" in _quarantined(home, "0002-abcd0002.job.json")
        assert runner.run("show", "abcd0002", check=False).returncode != 0
    finally:
        d.stop()


def test_spool_records_meet_the_submit_rules(runner, daemon, home):
    """A record written into the spool by hand is validated like `runner submit` validates."""
    bad = {
        "0001-a.job.json": {"command": ["true"], "network": "no"},
        "0002-b.job.json": {"command": ["true"], "resources": {"memory_gb": 1e308 * 10 if False else 1e300}},
        "0003-c.job.json": {"command": ["a\u0000b"]},
        "0004-d.job.json": {"command": ["true"], "workdir": "relative/dir"},
        "0005-e.job.json": {"command": ["true"], "workdir": str(home / "jobs")},
        "0006-f.job.json": {"command": ["true"], "env_vars": {"RUNNER_JOB_ID": "x"}},
    }
    for i, (name, spec) in enumerate(bad.items()):
        _drop(home, name, {"id": f"bbbb000{i}", "spec": spec, "submitted_at": time.time()})
    reasons = {n: _quarantined(home, n) for n in bad}
    assert "network" in reasons["0001-a.job.json"]
    assert "resources.memory_gb" in reasons["0002-b.job.json"]
    assert "command.0" in reasons["0003-c.job.json"] and "NUL" in reasons["0003-c.job.json"]
    assert "absolute" in reasons["0004-d.job.json"]
    assert "state folder" in reasons["0005-e.job.json"]
    assert "env_vars.RUNNER_JOB_ID" in reasons["0006-f.job.json"]


# -- job files refused at submit ------------------------------------------------------------------

def _refused(runner, tmp_path, text: str | bytes, suffix=".yaml", *extra) -> list[str]:
    f = tmp_path / f"job{suffix}"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    r = runner.run("submit", f, *extra, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "list[str]" not in r.stderr and "function-" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(l.startswith("runner: ") for l in lines)
    return [l.removeprefix("runner: ") for l in lines]


CMD = json.dumps([*JOB, "env"])


@pytest.mark.parametrize("body, field, words", [
    ("workdir: /", "workdir", "system folder"),
    ("workdir: /etc", "workdir", "system folder"),
    ("workdir: /usr/lib", "workdir", "system folder"),
    ("env_vars: {LD_PRELOAD: /tmp/x.so}", "env_vars.LD_PRELOAD", "may not be set"),
    ("env_vars: {LD_LIBRARY_PATH: /tmp}", "env_vars.LD_LIBRARY_PATH", "may not be set"),
    ("env_vars: {PATH: /tmp}", "env_vars.PATH", "may not be set"),
    ("env_vars: {HOME: /tmp}", "env_vars.HOME", "may not be set"),
    ("env_vars: {CUDA_VISIBLE_DEVICES: '0'}", "env_vars.CUDA_VISIBLE_DEVICES", "may not be set"),
    ("env_vars: {RUNNER_JOB_ID: x}", "env_vars.RUNNER_JOB_ID", "may not be set"),
    ("resources: {memory_gb: .inf}", "resources.memory_gb", "finite"),
    ("resources: {memory_gb: .nan}", "resources.memory_gb", "finite"),
    ("resources: {cpu_seconds: 99999999999999999999}", "resources.cpu_seconds", "less than or equal"),
    ("resources: {max_open_files: 100000000000}", "resources.max_open_files", "less than or equal"),
    ("resources: {time_limit: 1.0e+300}", "resources.time_limit", "less than or equal"),
    ("network: 'no'", "network", "valid boolean"),
    ("network: no_thanks", "network", "valid boolean"),
    ("priority: '5'", "priority", "valid integer"),
    ("resources: {gpus: 1.5}", "resources.gpus", "valid integer"),
])
def test_bad_job_files_get_one_line_naming_the_field(runner, tmp_path, body, field, words):
    lines = _refused(runner, tmp_path, f"command: {CMD}\n{body}\n")
    assert len(lines) == 1 and lines[0].startswith(field + ":") and words in lines[0], lines


def test_nul_bytes_sizes_and_counts(runner, tmp_path, home):
    lines = _refused(runner, tmp_path, json.dumps({"command": ["echo", "a\u0000b"]}), ".json")
    assert lines == ["command.1: contains a NUL byte; expected text without NUL"]
    lines = _refused(runner, tmp_path, json.dumps({"command": ["echo"], "env_vars": {"A": "x\u0000"}}), ".json")
    assert lines == ["env_vars.A: contains a NUL byte; expected text without NUL"]
    lines = _refused(runner, tmp_path, json.dumps({"command": ["echo", "x" * (200 * 1024)]}), ".json")
    assert len(lines) == 1 and lines[0].startswith("command:") and "131072 bytes" in lines[0]
    lines = _refused(runner, tmp_path, json.dumps({"command": ["echo", "x" * (10 << 20)]}), ".json")
    assert len(lines) == 1 and "larger than" in lines[0]  # refused before it is parsed
    many = {f"V{i}": "1" for i in range(300)}
    lines = _refused(runner, tmp_path, json.dumps({"command": ["echo"], "env_vars": many}), ".json")
    assert len(lines) == 1 and lines[0].startswith("env_vars:") and "at most 256" in lines[0]
    lines = _refused(runner, tmp_path, json.dumps({"command": ["echo"], "env_vars": {f"V{i}": "1" for i in range(100_000)}}), ".json")
    assert len(lines) == 1 and "larger than" in lines[0]
    assert not list((home / "spool").glob("*.json"))


def test_yaml_bombs_duplicates_binary_and_nesting(runner, tmp_path):
    bomb = "command: [echo]\na: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    assert len(bomb) < 400
    lines = _refused(runner, tmp_path, bomb)
    assert len(lines) == 1 and "aliases" in lines[0] and "at most 20000" in lines[0]
    lines = _refused(runner, tmp_path, "command: [echo]\ntrain: {epochs: 1}\ncommand: [ls]\n")
    assert len(lines) == 1 and "duplicate key 'command'" in lines[0] and "line 3" in lines[0]
    lines = _refused(runner, tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert len(lines) == 1 and "not a text file" in lines[0]
    lines = _refused(runner, tmp_path, "command: [echo]\nname: caf\xe9\n".encode("latin-1"))
    assert len(lines) == 1 and "not UTF-8" in lines[0]
    lines = _refused(runner, tmp_path, "x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert len(lines) == 1 and "deeper than 32" in lines[0]
    lines = _refused(runner, tmp_path, "[" * 5000 + "]" * 5000, ".json")
    assert len(lines) == 1 and "deeper than 32" in lines[0]
    lines = _refused(runner, tmp_path, '{"command": ["echo"], "priority": NaN}', ".json")
    assert len(lines) == 1 and "NaN" in lines[0]


def test_unions_are_reported_plainly(runner, tmp_path):
    assert _refused(runner, tmp_path, "command: [echo, [1, 2]]\n") == [
        "command: given [\"echo\", [1, 2]]; expected a non-empty command (a string for the shell, or a list of strings)"]
    lines = _refused(runner, tmp_path, "command: [echo]\nenv: {requirements: six}\n")
    assert lines == ["env.requirements: given 'six'; expected a valid list"]
    lines = _refused(runner, tmp_path, "command: [echo]\nenv: 5\n")
    assert len(lines) == 1 and lines[0].startswith("env: given 5; expected an env name")


def test_documented_coercions_run(runner, daemon, tmp_path):
    """command items and env_vars values are the text written (YAML would make them bool/int)."""
    f = tmp_path / "job.yaml"
    f.write_text("command: [true]\nenv_vars: {OMP_NUM_THREADS: 4, FLAG: yes}\n")
    job = runner.wait_state(runner.submit(f))
    assert job["state"] == "succeeded" and job["spec"]["command"] == ["true"]
    f.write_text(f"command: {json.dumps([*JOB, 'env'])}\nenv_vars: {{OMP_NUM_THREADS: 4, FLAG: yes}}\n")
    jid = runner.submit(f)
    assert runner.wait_state(jid)["state"] == "succeeded"
    out = runner.run("logs", jid).stdout.splitlines()
    assert "OMP_NUM_THREADS=4" in out and "FLAG=yes" in out


def test_workdir_must_be_writable_and_outside_the_state_folder(runner, tmp_path, home):
    ro = tmp_path / "ro"
    ro.mkdir()
    lines = _refused(runner, tmp_path, f"command: [true]\nworkdir: {home / 'jobs'}\n")
    assert len(lines) == 1 and "state folder" in lines[0]
    if os.geteuid() != 0:
        ro.chmod(0o555)
        lines = _refused(runner, tmp_path, f"command: [true]\nworkdir: {ro}\n")
        assert len(lines) == 1 and "not writable by you" in lines[0]


# -- HTTP ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/jobs?limit=100000000000000000000000", "/jobs?offset=100000000000000000000000", "/jobs?limit=0", "/jobs?limit=1001",
    "/jobs?state=bogus", "/jobs/x/metrics?limit=10001", "/jobs/x/metrics?offset=-1", "/jobs/x/log?tail=-1",
    "/jobs/x/log?length=100000000000", "/jobs/x/log?offset=99999999999999999999999",
])
def test_http_parameters_out_of_range_are_422_with_one_line(daemon, path):
    status, body = daemon.get(path)
    assert status == 422 and body["error"] and "\n" not in body["error"]


def test_http_metrics_are_paged_and_logs_bounded(runner, daemon, home):
    jid = runner.submit("--parser", "generic", "--", *JOB, "burst", "25000")
    job = runner.wait_state(jid)
    assert job["state"] == "succeeded"
    status, page = daemon.get(f"/jobs/{jid}/metrics?name=loss")
    assert status == 200 and page["total"] == 25000 and len(page["metrics"]) == 10000 and page["next_offset"] == 10000
    status, last = daemon.get(f"/jobs/{jid}/metrics?name=loss&offset=20000&limit=10000")
    assert len(last["metrics"]) == 5000 and last["next_offset"] is None and last["metrics"][-1]["step"] == 24999
    token = runner.token()
    status, text = daemon.get(f"/jobs/{jid}/log?tail=2", token)
    assert text == "step=24999 loss=0.000040\nburst done\n"
    status, text = daemon.get(f"/jobs/{jid}/log?offset=0&length=26", token)
    assert text == "step=0 loss=1.000000\nstep="
    status, text = daemon.get(f"/jobs/{jid}/log", token)
    assert text.count("\n") == 25001


def test_nan_metrics_do_not_break_json(runner, daemon):
    jid = runner.submit("--parser", "generic", "--", *JOB, "nan")
    runner.wait_state(jid)
    status, body = daemon.get(f"/jobs/{jid}")
    assert status == 200 and body["metrics"]["loss"] is None and body["metrics"]["acc"] == 0.5
    status, body = daemon.get("/jobs")
    assert status == 200
    # the CLI's --json too: strict JSON (no NaN or Infinity, which jq and browsers refuse), null in their place
    for args in (("metrics", jid, "--json"), ("show", jid, "--json")):
        out = runner.run(*args).stdout
        assert "NaN" not in out and "Infinity" not in out, out
        json.loads(out, parse_constant=lambda c: pytest.fail(f"{args}: {c} is not JSON"))
    assert json.loads(runner.run("metrics", jid, "--json").stdout)["series"]["loss"][0]["value"] is None


async def _get(port, path):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    return int(data.split(b" ", 2)[1]), data


def test_200_concurrent_reads_all_answer_and_healthz_stays_up(daemon, home):
    from runner.store import Store

    s = Store(home / "runner.db")
    with s.transaction() as c:
        for i in range(2000):
            c.execute("INSERT INTO jobs (id, seq, name, user, uid, kind, state, spec, created_at, gpus, after, job_dir, priority, "
                      "log_offset, cancel_requested) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,0,0)",
                      (f"c{i:07d}", 1000 + i, f"j{i}", "u", 1000, "command", "succeeded", '{"command": "true"}', i, "[]", "[]", "/x"))

    async def burst():
        tasks = [asyncio.create_task(_get(daemon.port, "/jobs?limit=50")) for _ in range(200)]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        health = await _get(daemon.port, "/healthz")
        health_s = time.perf_counter() - t0
        return await asyncio.gather(*tasks), health, health_s

    done, health, health_s = asyncio.run(burst())
    assert all(st == 200 for st, _ in done)
    assert all(json.loads(body.split(b"\r\n\r\n", 1)[1])["jobs"][0]["id"] == "c0001999" for _, body in done)
    assert health[0] == 200
    assert health_s < 2.0, f"/healthz took {health_s:.2f}s while 200 reads were served"


def test_reading_a_big_log_keeps_the_daemon_small(runner, daemon, home):
    jid = runner.submit("--", *JOB, "sleep", "0")
    job = runner.wait_state(jid)
    log = home / "run" / job["id"] / "output.log"
    line = b"x" * 99 + b"\n"
    with open(log, "ab") as f:
        for _ in range(300):
            f.write(line * 10_000)  # 300 MB
    token = runner.token()
    proc = psutil.Process(daemon.proc.pid)
    before = proc.memory_info().rss
    peak = [before]

    async def read():
        r, w = await asyncio.open_connection("127.0.0.1", daemon.port)
        w.write(f"GET /jobs/{jid}/log HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
        await w.drain()
        n = 0
        while chunk := await r.read(1 << 20):
            n += len(chunk)
            peak.append(proc.memory_info().rss)
        w.close()
        return n

    n = asyncio.run(read())
    assert n > 300_000_000
    assert max(peak) - before < 100 * 2**20, f"daemon grew by {(max(peak) - before) / 2**20:.0f} MB"
    log.unlink()


def test_healthz_reports_a_stalled_loop(home):
    from runner.home import Home
    from runner.http import create_app

    class Stalled:
        last_tick = time.time() - 60
        store = Home(home).ensure().store()

    from fastapi.testclient import TestClient

    r = TestClient(create_app(Home(home), daemon=Stalled()), base_url="http://127.0.0.1:8765").get("/healthz")  # a Host the bind serves
    assert r.status_code == 503 and r.json()["ok"] is False and "stalled" in r.json()["error"]


# -- exactly once, times, memory -------------------------------------------------------------------

def test_a_crash_between_two_metric_batches_stores_each_point_once(tmp_path, monkeypatch):
    from runner import defaults
    from runner.store import Store
    from runner.watch import LogWatcher

    monkeypatch.setattr(defaults, "METRICS_BATCH_BYTES", 1024)
    store = Store(tmp_path / "db")
    store.insert_job({"id": "job1", "name": "x", "user": "u", "uid": 0, "kind": "command", "spec": {}, "gpus": [], "after": []})
    job_dir = tmp_path / "job1"
    job_dir.mkdir()
    (job_dir / "output.log").write_text("".join(f"step={i} loss={i}\n" for i in range(3000)))

    class Crash(Exception):
        pass

    calls = {"n": 0}
    real = store.record_progress

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash()  # the daemon dies between its second and third batch
        return real(*a, **k)

    monkeypatch.setattr(store, "record_progress", crashing)
    with pytest.raises(Crash):
        LogWatcher("job1", job_dir, None).poll(store, final=True)
    monkeypatch.setattr(store, "record_progress", real)
    saved = store.get_job("job1")
    assert 0 < saved["log_offset"] < (job_dir / "output.log").stat().st_size
    LogWatcher("job1", job_dir, None, saved["log_offset"], saved["parser_state"]).poll(store, final=True)
    steps = [m["step"] for m in store.metrics("job1", "loss")]
    assert steps == list(range(3000))


@pytest.mark.slow
def test_metric_burst_with_daemon_sigkills_is_stored_exactly_once(runner, home):
    n = 400_000
    d = DaemonProc(home, runner.env, http=False).start()
    jid = runner.submit("--parser", "generic", "--", *JOB, "burst", str(n), "8")
    full = runner.wait_state(jid, "running")["id"]
    from runner.store import Store

    s = Store(home / "runner.db")
    kills = 0
    for _ in range(3):  # kill it while it ingests, restart, kill again
        wait_for(lambda: s.count_metrics(full) > 0, 30, 0.01, "ingestion to begin")
        time.sleep(0.15 * (kills + 1))
        d.kill(signal.SIGKILL)
        kills += 1
        got = s.count_metrics(full)
        if got >= 2 * n:
            break
        d = DaemonProc(home, runner.env, http=False).start()
    try:
        if d.proc.poll() is not None:
            d = DaemonProc(home, runner.env, http=False).start()
        job = runner.wait_state(jid, timeout=120)
        assert job["state"] == "succeeded"
        steps = [p["step"] for p in s.metrics(full, "loss")]
        assert (len(steps), len(set(steps))) == (n, n)
    finally:
        d.stop()


def test_a_job_that_ended_while_the_daemon_was_down_keeps_its_real_end_time(runner, home):
    d = DaemonProc(home, runner.env, http=False).start()
    jid = runner.submit("--", *JOB, "sleep", "1")
    runner.wait_state(jid, "running")
    d.kill(signal.SIGKILL)
    exit_json = home / "run" / runner.show(jid)["id"] / "exit.json"
    wait_for(exit_json.exists, 20, what="the job to end")
    time.sleep(4)
    d = DaemonProc(home, runner.env, http=False).start()
    try:
        job = runner.wait_state(jid)
        ended = json.loads(exit_json.read_text())["finished_at"]
        assert job["finished_at"] == pytest.approx(ended, abs=0.01)
        assert job["duration"] < 3.5
    finally:
        d.stop()


def test_peak_memory_is_the_jobs_own(runner, daemon):
    job = runner.wait_state(runner.submit("--", *JOB, "hog", "200"))
    assert job["state"] == "succeeded"
    assert job["max_rss_kb"] > 200 * 1024, job["max_rss_kb"]


# -- fuzzing ---------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalar = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
_value = st.recursive(_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=10)
_spec_keys = st.sampled_from(["command", "model", "dataset", "train", "env", "resources", "priority", "after", "network", "workdir",
                              "env_vars", "name", "checkpoints", "parser", "zzz"])
_spec = st.dictionaries(_spec_keys, _value, max_size=6) | st.fixed_dictionaries(
    {"command": st.lists(st.text(max_size=8), min_size=1, max_size=3)}, optional={"env_vars": _value, "resources": _value})
_record = st.fixed_dictionaries({}, optional={"id": st.text(max_size=10) | st.just("abcd1234") | _value, "spec": _spec | _value,
                                              "submitted_at": _value, "retry_of": _value, "user": _value, "at": _value})


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    from runner.daemon import Daemon
    from runner.home import Home

    home = Home(tmp_path_factory.mktemp("fuzz") / "home")
    d = Daemon(home, http=None)
    d._own_taking()
    return d


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(record=_record | _value, kind=st.sampled_from([".job.json", ".cancel.json", ".x.json"]), raw=st.booleans(),
       junk=st.binary(max_size=64))
def test_fuzzed_spool_records_are_taken_or_set_aside_never_raise(fuzz_daemon, record, kind, raw, junk):
    """Any spool file: the daemon takes it into the store or quarantines it with a one-line reason."""
    d = fuzz_daemon
    name = f"{time.time_ns()}-fuzz{kind}"
    path = d.home.taking / name
    data = junk if raw else json.dumps(record, allow_nan=True).encode()
    path.write_bytes(data)
    d._take(path, time.time())  # must not raise
    assert not path.exists()
    reason = d.home.quarantine / (name + ".reason")
    if reason.exists():
        text = reason.read_text()
        assert text.count("\n") == 1 and "Traceback" not in text and "internal error" not in text, text
    else:
        assert kind != ".x.json"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_spec | _value, style=st.sampled_from(["yaml", "json"]))
def test_fuzzed_job_files_load_or_give_one_line_per_problem(tmp_path_factory, data, style):
    import yaml

    from runner.exceptions import SpecError
    from runner.spec import parse_spec
    from runner.specfile import load_spec_file

    f = tmp_path_factory.mktemp("jf") / f"job.{style}"
    try:
        f.write_text(yaml.safe_dump(data) if style == "yaml" else json.dumps(data, allow_nan=True))
    except (yaml.YAMLError, ValueError):
        return
    try:
        parse_spec(load_spec_file(f))
    except SpecError as e:
        assert e.problems and all(p and "\n" not in p and ":" in p and "list[str]" not in p for p in e.problems), e.problems
