"""Operating a team server: /metrics for Grafana, backups while the daemon runs, retention and du."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, DaemonProc, wait_for
from test_users import ALICE, BOB, User, users, world  # noqa: F401  (fixtures)

JOBS_PY = FIXTURES / "jobs.py"
DAY = 86400.0


def families(text: str) -> dict:
    """{sample name: [(labels, value)]} of an exposition, read by Prometheus's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(fams: dict, metric: str, /, **labels) -> float:
    """The one sample of `metric` whose labels include `labels`."""
    found = [v for lb, v in fams.get(metric, []) if all(lb.get(k) == str(w) for k, w in labels.items())]
    assert len(found) == 1, f"{metric}{labels}: {len(found)} samples in {fams.get(metric)}"
    return found[0]


def scrape(d: DaemonProc, token=None) -> str:
    status, text = d.get("/metrics", token)
    assert status == 200 and isinstance(text, str), (status, text)
    return text


# -- /metrics ----------------------------------------------------------------------------------
def test_metrics_count_the_jobs_the_test_ran_and_say_nothing_private(home, runner):
    mlflow_port = __import__("conftest").free_port()  # nothing listens there: the mirror falls behind
    (home / "config.toml").write_text(
        '[gpus]\nstatic = [{name = "Test GPU", memory_mb = 16000, used_mb = 100, utilization = 37}]\n'
        f'[mlflow]\ntracking_uri = "http://127.0.0.1:{mlflow_port}"\n')
    d = DaemonProc(home, runner.env).start()
    try:
        py = sys.executable
        ok = [runner.submit("--", py, JOBS_PY, "exit", "0") for _ in range(2)]
        bad = runner.submit("--", py, "-c", "print('SECRET-LOG-LINE-42'); raise SystemExit(3)")
        for j in [*ok, bad]:
            runner.wait_state(j)
        spec = home.parent / "job.yaml"
        spec.write_text(f"command: [{py}, {JOBS_PY}, sleep, '60']\nresources: {{gpus: 1}}\nenv_vars: {{API_KEY: hunter2-of-metrics}}\n")
        held = runner.show(runner.wait_state(runner.submit(spec), "running")["id"])
        from runner.store import Store

        store = Store(home / "runner.db", migrate=False)
        for ok_, secs in ((1, 30.0), (1, 40.0), (0, 2.5)):
            store.add_env_build({"hash": "h", "name": "timm", "started_at": time.time(), "finished_at": time.time(),
                                 "seconds": secs, "ok": ok_, "error": None if ok_ else "uv: invalid peer certificate /root/x"})
        for j in (ok[0], ok[0], bad):
            assert d.get(f"/jobs/{j}")[0] == 200
        text = scrape(d)
        fams = families(text)
        me = runner.show(ok[0])["user"]
        assert value(fams, "runner_jobs", state="succeeded") == 2
        assert value(fams, "runner_jobs", state="failed") == 1
        assert value(fams, "runner_jobs", state="running") == 1
        assert value(fams, "runner_jobs", state="queued") == 0
        assert value(fams, "runner_jobs_ended", state="failed", reason="exit_code") == 1
        assert value(fams, "runner_jobs_ended", state="succeeded", reason="none") == 2
        assert value(fams, "runner_queue_wait_seconds_count") == 4  # every job that started
        assert value(fams, "runner_queue_wait_seconds_bucket", le="+Inf") == 4
        assert 0 <= value(fams, "runner_queue_wait_seconds_sum") < 60
        assert value(fams, "runner_user_running_jobs", user=me) == 1
        assert value(fams, "runner_user_gpus", user=me) == 1
        assert value(fams, "runner_user_gpu_seconds_total", user=me) > 0
        gpu = {"gpu": "0", "name": "Test GPU"}
        assert value(fams, "runner_gpu_memory_total_bytes", **gpu) == 16000 * 2**20
        assert value(fams, "runner_gpu_memory_used_bytes", **gpu) == 100 * 2**20
        assert value(fams, "runner_gpu_utilization_ratio", **gpu) == pytest.approx(0.37)
        assert value(fams, "runner_gpu_allocated", **gpu) == 1 and held["gpus"] == [0]
        assert value(fams, "runner_env_builds_total", result="ok") == 2
        assert value(fams, "runner_env_builds_total", result="failed") == 1
        assert value(fams, "runner_env_build_seconds_total", result="ok") == 70
        assert value(fams, "runner_spool_files") == 0
        assert value(fams, "runner_mlflow_jobs_behind") == 4
        assert value(fams, "runner_loop_seconds_since_pass") < 30
        assert value(fams, "runner_http_requests_total", method="GET", route="/jobs/{job_id}", code=200) == 3
        assert value(fams, "runner_http_request_duration_seconds_count", method="GET", route="/jobs/{job_id}") == 3
        # by route template, never the raw path; and nothing private: no log text, env_vars, paths or job ids
        for secret in ("SECRET-LOG-LINE-42", "hunter2-of-metrics", "API_KEY", str(home), "/root", *ok, bad, held["id"]):
            assert secret not in text, secret
        # the spool's backlog: a file no daemon has taken yet shows
        d.kill()
        from fastapi.testclient import TestClient

        from runner.home import Home
        from runner.http import create_app
        from runner.spool import submit

        submit(Home(home), {"command": ["true"]})
        text = TestClient(create_app(Home(home)), base_url="http://127.0.0.1:8765").get("/metrics").text
        assert value(families(text), "runner_spool_files") == 1
    finally:
        d.kill()


def test_metrics_beyond_loopback_need_a_token(home):
    from runner import tokens
    from runner.home import Home
    from test_team import served_on

    c = served_on(home, "0.0.0.0:8765")
    r = c.get("/metrics")
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    tokens.ensure_dir(Home(home))
    good = tokens.write(Home(home), os.getuid(), os.getgid())
    r = c.get("/metrics", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert value(families(r.text), "runner_jobs", state="queued") == 0


def _fill(store, n: int, active: int, now: float):
    """n jobs straight into the store (as many rows as a busy year leaves), `active` of them queued or running."""
    rows, trans = [], []
    for i in range(n):
        jid = f"job{i:06d}"
        q = now - (i % 1000) * 3600.0
        state = ("queued" if i % 2 else "running") if i >= n - active else ("succeeded", "failed", "cancelled")[i % 3]
        started = q + (i % 7) * 60.0 if state != "queued" and state != "cancelled" else None
        finished = started + 600.0 if started and state != "running" else (q + 5 if state == "cancelled" else None)
        rows.append((jid, i + 1, f"user{i % 9}", 1000 + i % 9, state, "exit_code" if state == "failed" else None, q, q, started,
                     finished, json.dumps([i % 4] if started else []), json.dumps({"command": ["python", "train.py"] * 20})))
        trans.append((jid, None, "queued", q))
        if started:
            trans.append((jid, "queued", "running", started))
        if finished:
            trans.append((jid, "running" if started else "queued", state, finished))
    with store.transaction() as c:
        c.executemany("INSERT INTO jobs (id, seq, user, uid, state, reason, created_at, queued_at, started_at, finished_at, gpus, spec) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        c.executemany("INSERT INTO transitions (job_id, from_state, to_state, at) VALUES (?,?,?,?)", trans)


def test_metrics_cost_a_few_milliseconds_with_ten_thousand_jobs(home):
    from runner.home import Home
    from runner.metrics_text import EndedTotals, GpuLook, render

    h = Home(home).ensure()
    store = h.store()
    now = time.time()
    _fill(store, 10_000, 60, now)
    ended, gpus = EndedTotals(), GpuLook(None)
    first = render(h, store, None, None, gpus, ended, now=now)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        text = render(h, store, None, None, gpus, ended, now=now)
        times.append(time.perf_counter() - t0)
    assert text == first
    fams = families(text)
    assert sum(v for _, v in fams["runner_jobs"]) == 10_000
    assert value(fams, "runner_jobs", state="running") == 30 and value(fams, "runner_jobs", state="queued") == 30
    assert value(fams, "runner_queue_wait_seconds_count") == sum(1 for i in range(9940) if i % 3 != 2) + 30
    median = sorted(times)[len(times) // 2]
    assert median < 0.025, f"a scrape took {median * 1000:.1f} ms with 10,000 jobs"  # ~2 ms on an idle core
    # a job that ends after the first scrape is added to what was summed, and the sums are those of a fresh read
    store.transition("job009998", "succeeded", now=now + 10)
    later = render(h, store, None, None, gpus, ended, now=now + 20)
    assert later == render(h, store, None, None, GpuLook(None), EndedTotals(), now=now + 20)
    assert value(families(later), "runner_jobs", state="succeeded") == value(fams, "runner_jobs", state="succeeded") + 1


def test_the_grafana_dashboard_queries_only_metrics_that_exist(home):
    from fastapi.testclient import TestClient

    from runner import retention
    from runner.gpus import StaticInventory
    from runner.home import Home
    from runner.http import create_app

    board = json.loads((ROOT / "docs" / "grafana" / "runner.json").read_text())
    h = Home(home).ensure()
    _job(h.store(), home, "ended", os.getuid(), "root", 1, time.time())  # a job, so that the per-user series exist
    retention.apply(h, h.store(), {"checkpoint_days": 14.0, "job_days": None})

    class Served:
        http_bind, started_at, last_tick, max_running = "127.0.0.1:8765", time.time(), time.time(), 2
        store = h.store()
        mirror_conf = {"tracking_uri": "http://127.0.0.1:1"}
        inventory = StaticInventory([{"name": "G", "memory_mb": 1000, "utilization": 5}])

    c = TestClient(create_app(h, daemon=Served()), base_url="http://127.0.0.1:8765")
    c.get("/jobs")
    names = set(families(c.get("/metrics").text))
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(board)
    assert board["title"] and len(board["panels"]) >= 8 and len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"\b(runner_[a-z0-9_]+)", e)}
    assert used and used <= names, f"the dashboard queries metrics /metrics does not serve: {sorted(used - names)}"
    # every family of /metrics is on the dashboard (a metric added later is added there too)
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert {b for b in bases if not any(u.startswith(b) for u in used)} == set()


# -- backup ------------------------------------------------------------------------------------
def _ids(db: Path) -> set:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM jobs")}
    finally:
        conn.close()


def test_backup_under_load_is_whole_and_consistent(home, runner):
    # a busy GPU (another user's process): the burst's jobs are taken, recorded and kept queued, not run
    (home / "config.toml").write_text('[gpus]\nstatic = [{name = "Busy", memory_mb = 16000, used_mb = 15000}]\n')
    from runner.home import Home
    from runner.spool import submit

    h = Home(home).ensure()
    store = h.store()
    _fill(store, 3000, 0, time.time())
    for i in range(0, 3000, 10):  # metric points too, so that the copy takes a while
        store.add_metrics(f"job{i:06d}", [("loss", 1.0 / (k + 1), k, 0) for k in range(300)])
    d = DaemonProc(home, runner.env).start()
    stop = threading.Event()
    submitted = []

    def burst():
        while not stop.is_set():
            submitted.append(submit(h, {"command": ["true"], "resources": {"gpus": 1}})["id"])
            time.sleep(0.005)

    t = threading.Thread(target=burst)
    t.start()
    try:
        wait_for(lambda: len(_ids(home / "runner.db")) > 3020, 60, what="the daemon taking the burst")
        for n in range(3):
            before, sent = _ids(home / "runner.db"), len(submitted)
            out = home.parent / f"backup-{n}.db"
            r = runner.run("backup", out, "--json")
            done = json.loads(r.stdout)
            assert len(submitted) > sent and len(_ids(home / "runner.db")) > len(before)  # the burst went on meanwhile
            assert done["jobs"] >= len(before)
            assert stat.S_IMODE(out.stat().st_mode) == 0o600
            conn = sqlite3.connect(out)
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
            copied = {r[0] for r in conn.execute("SELECT id FROM jobs")}
            assert before <= copied, f"{len(before - copied)} jobs of the store missing in the copy"
            points = conn.execute("SELECT SUM(n) FROM metric_packs").fetchone()[0]
            conn.close()
            assert points == 300 * 300
        assert not list(home.parent.glob(".backup-*"))  # no temp file left beside it
    finally:
        stop.set()
        t.join()
    assert d.get("/healthz")[0] == 200
    wait_for(lambda: set(submitted) <= _ids(home / "runner.db"), 60, what="every submitted job recorded")
    # a restore is a copy back: the daemon opens it (and would migrate it) as its store
    d.stop()
    os.replace(home.parent / "backup-2.db", home / "runner.db")
    for extra in ("runner.db-wal", "runner.db-shm"):
        (home / extra).unlink(missing_ok=True)
    d = DaemonProc(home, runner.env).start()
    try:
        assert runner.show("job000001")["id"] == "job000001"
    finally:
        d.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="runner backup is root's")
def test_the_documented_nightly_backup_leaves_its_copies_to_root_alone(tmp_path):
    """docs/server.md's cron line, run as cron runs it (sh, umask 022), in a scratch root: the store's
    copy and the keys tarball (every job's secrets, everyone's tokens) are 0600."""
    doc = (ROOT / "docs" / "server.md").read_text()
    line = re.search(r"cat > /etc/cron.d/runner-backup <<'CRON'\n(?:#.*\n)*(.*)\nCRON", doc).group(1)
    command = line.split(" root ", 1)[1].replace("\\%", "%")
    scratch, backups = tmp_path / "root", tmp_path / "backups"
    state = scratch / "var" / "lib" / "runner"
    from runner.home import Home

    Home(state).ensure().store()
    for name, text in (("secrets/j1.json", '{"API_TOKEN": "x"}'), ("tokens/1000", "tok"), ("web.key", "key")):
        (state / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        (state / name).write_text(text)
        os.chmod(state / name, 0o600)
    (scratch / "etc" / "runner").mkdir(parents=True)
    (scratch / "etc" / "runner" / "config.toml").write_text('home = "/var/lib/runner"\n')
    backups.mkdir(mode=0o700)
    command = (command.replace("/usr/local/bin/runner", f"{sys.executable} -m runner").replace("/var/backups/runner", str(backups))
               .replace("-C / ", f"-C {scratch} "))
    env = {**os.environ, "RUNNER_HOME": str(state), "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["sh", "-c", "umask 022; " + command], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    made = sorted(os.listdir(backups))
    assert [n.split("-")[0] for n in made] == ["keys", "runner"], made
    assert {n: stat.S_IMODE(os.stat(backups / n).st_mode) for n in made} == {n: 0o600 for n in made}
    listed = subprocess.run(["tar", "-tzf", str(backups / made[0])], capture_output=True, text=True).stdout
    assert "var/lib/runner/secrets/j1.json" in listed and "etc/runner/config.toml" in listed, listed


def test_backup_and_gc_are_the_admins(world, users):  # noqa: F811
    import shutil
    import tempfile

    from runner.home import Home

    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))  # where her CLI can reach it
    os.chmod(home, 0o755)
    Home(home).ensure().store()
    (home / "config.toml").write_text("[retention]\ncheckpoint_days = 14\n")
    alice = User(users[ALICE], world, home)
    r = alice.run("backup", "/tmp/rn_alice_backup.db", check=False)
    assert r.returncode == 1 and "only root may do this" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not os.path.exists("/tmp/rn_alice_backup.db")
    r = alice.run("gc", check=False)
    assert r.returncode == 1 and "gc: the server's state belongs to root: only root may do this" in r.stderr, r.stderr
    r = alice.run("gc", "--dry-run")  # a preview changes nothing: hers to run
    assert "would free 0B in 0 item(s)" in r.stdout, r.stdout
    shutil.rmtree(home)


# -- retention ---------------------------------------------------------------------------------
def _job(store, home: Path, jid: str, uid: int, user: str, ended_days_ago: float | None, now: float):
    """A job in the store that ran and ended `ended_days_ago` days ago (None: still running)."""
    t = now - (ended_days_ago or 0) * DAY - 3600
    store.insert_job({"id": jid, "name": jid, "user": user, "uid": uid, "kind": "command", "spec": {"command": ["x"]},
                      "created_at": t, "job_dir": str(home / "jobs" / jid)}, now=t)
    store.transition(jid, "running", now=t + 60)
    if ended_days_ago is not None:
        store.transition(jid, "succeeded", now=now - ended_days_ago * DAY)
    store.add_metrics(jid, [("loss", 0.5, 1, 1)], now=t + 120)


def _checkpoints(store, home: Path, jid: str, names: list[str], uid: int, gid: int, size: int = 4096):
    """Checkpoint files written by the job's user and recorded by the daemon, in this order."""
    jd = home / "jobs" / jid
    for k, name in enumerate(names):
        p = jd / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"w" * size)
        store.add_artifact(jid, str(p), "checkpoint", size, now=time.time() - 1000 + k)
    for root, dirs, files in os.walk(jd):
        for n in [*dirs, *files]:
            os.chown(os.path.join(root, n), uid, gid, follow_symlinks=False)
    os.chown(jd, uid, gid)


def _tree(root: Path) -> dict:
    """Every path under root with what lstat says of it (a dry run must leave this the same), but the
    store's own files (a reader touches its -shm)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in [*dirs, *files]:
            if n.startswith("runner.db"):
                continue
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.join(dirpath, n)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_uid)
    return out


def test_retention_keeps_best_and_last_never_follows_a_link_and_dry_run_changes_nothing(users, tmp_path, home, runner):  # noqa: F811
    from runner.home import Home

    alice, bob = users[ALICE], users[BOB]
    h = Home(home).ensure()
    store = h.store()
    now = time.time()
    # bob's files, outside the state folder, that alice's job folders point at
    victim = tmp_path / "bob"
    victim.mkdir()
    (victim / "thesis.tex").write_text("bob's thesis\n")
    (victim / "epoch_9.pth").write_text("bob's weights\n")
    for p in (victim, victim / "thesis.tex", victim / "epoch_9.pth"):
        os.chown(p, bob.pw_uid, bob.pw_gid)

    _job(store, home, "old", alice.pw_uid, ALICE, 20, now)  # ended 20 days ago: checkpoints past 14 days
    _checkpoints(store, home, "old", ["checkpoints/epoch_1.pth", "checkpoints/epoch_2.pth", "checkpoints/best.pth",
                                      "checkpoints/epoch_3.pth", "checkpoints/last.pth", "links/epoch_4.pth",
                                      "swapped/epoch_5.pth"], alice.pw_uid, alice.pw_gid)
    old = home / "jobs" / "old"
    (old / "links" / "epoch_4.pth").unlink()  # a recorded checkpoint replaced by a link to bob's file
    os.symlink(victim / "thesis.tex", old / "links" / "epoch_4.pth")
    (old / "swapped" / "epoch_5.pth").unlink()  # a recorded folder replaced by a link to bob's folder
    (old / "swapped").rmdir()
    os.symlink(victim, old / "swapped")
    (victim / "epoch_5.pth").write_text("bob's other weights\n")
    os.chown(victim / "epoch_5.pth", bob.pw_uid, bob.pw_gid)
    os.symlink(victim / "thesis.tex", old / "checkpoints" / "epoch_0.pth")  # planted, not recorded
    store.add_artifact("old", str(old / "checkpoints" / "epoch_0.pth"), "checkpoint", 10, now=now - 2000)

    _job(store, home, "hf", alice.pw_uid, ALICE, 20, now)  # one file name in many folders: each folder is one checkpoint
    _checkpoints(store, home, "hf", [f"checkpoints/checkpoint-{k}/model.safetensors" for k in (100, 200, 300)],
                 alice.pw_uid, alice.pw_gid)
    (home / "jobs" / "hf" / "checkpoints" / "checkpoint-100" / "optimizer.pt").write_bytes(b"o" * 8192)

    _job(store, home, "young", alice.pw_uid, ALICE, 2, now)  # within the limit: untouched
    _checkpoints(store, home, "young", ["checkpoints/epoch_1.pth", "checkpoints/epoch_2.pth"], alice.pw_uid, alice.pw_gid)
    _job(store, home, "running", alice.pw_uid, ALICE, None, now)  # not ended: untouched whatever its age
    _checkpoints(store, home, "running", ["checkpoints/epoch_1.pth", "checkpoints/epoch_2.pth"], alice.pw_uid, alice.pw_gid)

    _job(store, home, "ancient", alice.pw_uid, ALICE, 100, now)  # past job_days: its folders go, its row stays
    _checkpoints(store, home, "ancient", ["out/best.pth"], alice.pw_uid, alice.pw_gid, size=100_000)
    anc = home / "jobs" / "ancient"
    os.symlink(victim / "thesis.tex", anc / "thesis-link")
    os.symlink(victim, anc / "bob-dir")
    deep = anc / "a" / "b" / "c"
    deep.mkdir(parents=True)
    os.symlink(victim, deep / "up")
    (home / "run" / "ancient").mkdir()
    (home / "run" / "ancient" / "output.log").write_text("epoch 1 loss 0.5\n" * 1000)

    (home / "config.toml").write_text("[retention]\ncheckpoint_days = 14\njob_days = 90\n")
    before = {**_tree(home), **_tree(victim)}
    r = runner.run("gc", "--dry-run", "--json")
    plan = json.loads(r.stdout)
    assert {**_tree(home), **_tree(victim)} == before  # a dry run changes nothing
    going = {(i["job_id"], os.path.relpath(i["path"], home)) for i in plan["items"]}
    assert going == {("old", "jobs/old/checkpoints/epoch_1.pth"), ("old", "jobs/old/checkpoints/epoch_2.pth"),
                     ("old", "jobs/old/checkpoints/epoch_3.pth"), ("hf", "jobs/hf/checkpoints/checkpoint-100"),
                     ("hf", "jobs/hf/checkpoints/checkpoint-200"), ("ancient", "jobs/ancient"), ("ancient", "run/ancient")}, going
    by_path = {os.path.relpath(i["path"], home): i["bytes"] for i in plan["items"]}
    assert by_path["jobs/old/checkpoints/epoch_1.pth"] >= 4096 and by_path["jobs/ancient"] >= 100_000
    assert by_path["jobs/hf/checkpoints/checkpoint-100"] >= 4096 + 8192
    text = runner.run("gc", "--dry-run").stdout
    assert "would free" in text and "nothing was changed" in text and "jobs/old/checkpoints/epoch_1.pth" in text

    r = runner.run("gc", "--json")
    applied = json.loads(r.stdout)
    assert {(i["job_id"], os.path.relpath(i["path"], home)) for i in applied["items"]} == going
    assert not (old / "checkpoints" / "epoch_1.pth").exists() and not (old / "checkpoints" / "epoch_3.pth").exists()
    assert (old / "checkpoints" / "best.pth").exists() and (old / "checkpoints" / "last.pth").exists()
    assert (old / "swapped" / "epoch_5.pth").exists()  # the newest recorded: kept (it is bob's, and a link's)
    assert os.path.islink(old / "links" / "epoch_4.pth") and os.path.islink(old / "checkpoints" / "epoch_0.pth")
    hf = home / "jobs" / "hf" / "checkpoints"
    assert sorted(os.listdir(hf)) == ["checkpoint-300"]
    for jid in ("young", "running"):
        assert sorted(os.listdir(home / "jobs" / jid / "checkpoints")) == ["epoch_1.pth", "epoch_2.pth"]
    assert not anc.exists() and not (home / "run" / "ancient").exists()
    assert store.get_job("ancient")["state"] == "succeeded" and store.latest_metrics("ancient") == {"loss": 0.5}
    # bob's files, pointed at by links in her folders, are all there, unchanged
    assert (victim / "thesis.tex").read_text() == "bob's thesis\n" and (victim / "epoch_9.pth").exists()
    assert (victim / "epoch_5.pth").read_text() == "bob's other weights\n"
    assert json.loads((home / "retention.json").read_text())["removed_bytes"] == applied["bytes"] > 100_000
    # what was removed is said so: a log retention took is an error, not an empty log; a checkpoint it took is marked
    r = runner.run("logs", "ancient", check=False)
    assert (r.returncode, r.stdout) == (1, ""), (r.stdout, r.stderr)
    assert r.stderr == ("runner: job ancient: its log is gone: removed by the [retention] policy (job_days = 90: a job's folder "
                        "and log go 90 days after it ended); `runner show ancient` keeps its states and metrics\n"), r.stderr
    assert runner.run("logs", "-f", "ancient", check=False).returncode == 1
    shown = runner.run("show", "old").stdout
    assert f"{old / 'checkpoints' / 'epoch_1.pth'} (4096 bytes) (removed)" in shown, shown
    assert f"{old / 'checkpoints' / 'best.pth'} (4096 bytes)\n" in shown, shown
    marks = {os.path.basename(a["path"]): a["removed"] for a in runner.json("show", "old")["artifacts"]}
    assert marks["epoch_1.pth"] and marks["epoch_3.pth"] and not marks["best.pth"] and not marks["last.pth"], marks
    assert runner.run("logs", "running").stdout == ""  # a job not ended whose log is not there yet: nothing to say
    # a second pass finds nothing more
    assert json.loads(runner.run("gc", "--json").stdout)["items"] == []


def test_the_daemon_applies_retention_in_its_own_thread_at_most_hourly(home, runner):
    from runner import retention
    from runner.home import Home

    h = Home(home).ensure()
    store = h.store()
    now = time.time()
    _job(store, home, "old", os.getuid(), "root", 20, now)
    _checkpoints(store, home, "old", ["ck/epoch_1.pth", "ck/best.pth", "ck/epoch_2.pth"], os.getuid(), os.getgid())
    (home / "config.toml").write_text("[retention]\ncheckpoint_days = 14\n")
    d = DaemonProc(home, runner.env).start()
    try:
        wait_for(lambda: not (home / "jobs" / "old" / "ck" / "epoch_1.pth").exists(), 30, 0.2, "the daemon's retention pass")
        assert sorted(os.listdir(home / "jobs" / "old" / "ck")) == ["best.pth", "epoch_2.pth"]  # best, and the last recorded
        assert d.get("/healthz")[0] == 200
        fams = families(scrape(d))
        assert value(fams, "runner_retention_last_pass_timestamp_seconds") > now
        assert value(fams, "runner_retention_removed_bytes_total") >= 4096
    finally:
        d.stop()
    at = json.loads((home / "retention.json").read_text())["at"]
    r = retention.Retention(Home(home), store)
    assert not r.due(at + 600) and r.due(at + retention.INTERVAL_SECONDS)  # at most once an hour, across restarts
    # a bad policy stops the daemon at start, in one line
    (home / "config.toml").write_text("[retention]\ncheckpoint_days = 'two weeks'\n")
    p = subprocess.run([sys.executable, "-m", "runner", "daemon", "--http", "none"], env=runner.env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1 and "[retention] checkpoint_days: given 'two weeks'; expected a number of days above 0" in p.stderr


def test_du_shows_usage_per_user_and_per_env(home, runner):
    from runner.home import Home

    h = Home(home).ensure()
    store = h.store()
    now = time.time()
    _job(store, home, "j1", os.getuid(), "root", 1, now)
    _checkpoints(store, home, "j1", ["ck/a.pth"], os.getuid(), os.getgid(), size=300_000)
    env = h.envs / "abc123"
    (env / "lib").mkdir(parents=True)
    (env / "lib" / "torch.so").write_bytes(b"t" * 500_000)
    (env / ".runner-env.json").write_text(json.dumps({"name": "timm", "python": "3.11", "built_at": now}))
    os.symlink("/", env / "root-link")  # a link is counted as a link, never followed
    out = runner.json("du")
    me = next(u for u in out["users"] if u["user"] == "root")
    assert me["folders"] == 1 and 300_000 <= me["jobs"] < 2_000_000
    e = next(e for e in out["envs"] if e["hash"] == "abc123")
    assert 500_000 <= e["bytes"] < 2_000_000 and e["complete"]
    text = runner.run("du").stdout
    assert "USER" in text and "root" in text and "abc123" in text


def test_gc_dry_run_on_a_fresh_install_previews_the_suggested_policy(tmp_path):
    """No [retention] yet: the preview uses the suggested days and says so; gc itself still asks for a policy."""
    import subprocess
    import sys

    from runner.home import Home

    h = Home(tmp_path / "state").ensure()
    h.store()
    env = {**os.environ, "RUNNER_HOME": str(h.root)}
    r = subprocess.run([sys.executable, "-m", "runner", "gc", "--dry-run"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "previewing checkpoint_days = 14, job_days = 90" in r.stderr
    assert "would free 0B in 0 item(s) (checkpoint_days = 14, job_days = 90); nothing was changed" in r.stdout
    r = subprocess.run([sys.executable, "-m", "runner", "gc"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "gc: no [retention] in the config" in r.stderr


def test_doctor_says_when_a_missing_home_is_only_the_personal_default(tmp_path, monkeypatch):
    from runner import defaults, permissions
    from runner.home import Home

    monkeypatch.delenv("RUNNER_HOME", raising=False)
    monkeypatch.setattr(defaults, "system_config", lambda: {})
    [line] = permissions.audit(Home(tmp_path / "nowhere"))
    assert "RUNNER_HOME is not set" in line and "set RUNNER_HOME to the team daemon's state folder" in line
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "nowhere"))
    assert permissions.audit(Home(tmp_path / "nowhere")) == [f"{(tmp_path / 'nowhere').resolve()}: does not exist (start the daemon once: it makes the folders)"]


def test_du_as_a_user_counts_her_own_logs_and_none_of_a_teammates(world, users):  # noqa: F811
    from test_users import team_home

    with team_home(world, users) as (d, alice, bob, home):
        jid = alice.job("burst", "300")
        assert alice.wait(jid)["state"] == "succeeded"
        logged = os.path.getsize(home / "run" / jid / "output.log")
        mine = {u["user"]: u for u in json.loads(alice.run("du", "--json").stdout)["users"]}
        assert mine[ALICE]["logs"] == logged > 3000, mine  # her log, in the daemon's 0711 run folder
        his = {u["user"]: u for u in json.loads(bob.run("du", "--json").stdout)["users"]}
        assert his.get(ALICE, {}).get("logs", 0) == 0 and his.get(ALICE, {}).get("jobs", 0) == 0, his
