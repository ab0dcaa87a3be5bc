"""The spool against a teammate, a clock and a full disk (issue #31), with real Unix users and a real root daemon.

A spool file is its owner's request only when its owner alone could have written it; an id names a
new job only when the daemon finds none by that name; a retry stays its owner's; no one file or job
stops the loop; time limits follow a clock nobody sets; the daemon's own trouble costs no job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, DaemonProc, Runner, wait_for
from test_users import ALICE, BOB, SYSTEM_PY, User, team, users, world  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd: the tests make real Unix users")


def _reason(home: Path, name: str, timeout: float = 15.0) -> str:
    reason = home / "spool" / "quarantine" / (name + ".reason")
    wait_for(reason.exists, timeout, what=f"{name} to be set aside")
    return reason.read_text()


def _gone(path: Path, timeout: float = 15.0):
    wait_for(lambda: not os.path.lexists(path), timeout, what=f"{path.name} to be taken")


def _wait(user: User, jid: str, states=("succeeded", "failed", "cancelled"), timeout: float = 60.0) -> dict:
    """user.wait, through the moment when the daemon has the file in hand but not yet in the store."""
    wait_for(lambda: user.run("show", jid, check=False).returncode == 0, 10, 0.1, f"{jid} to be known")
    return user.wait(jid, states, timeout)


def _write_as(user: User, path: Path, record: dict):
    """A spool file written by hand as `user` (0644, as her umask makes it), whole or not at all:
    under a hidden name, then renamed, as runner's own submit does (the daemon may wake on its
    creation and would otherwise read it empty, and set it aside as not JSON)."""
    hidden = path.with_name(".part-" + path.name[:100])
    user.python(f"import json, os\nopen({str(hidden)!r}, 'w').write({json.dumps(json.dumps(record))})\n"
                f"os.rename({str(hidden)!r}, {str(path)!r})")


def _her_file(user: User, path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chown(path, user.uid, user.pw.pw_gid)
    os.chmod(path, mode)
    return path


# -- 1. an id is new only when the daemon says so ---------------------------------------------------

def test_a_record_with_her_job_id_cannot_replace_her_secrets(team):
    d, alice, bob, home = team
    gate = alice.job("sleep", "6")  # her job waits for this one, queued
    f = _her_file(alice, Path(alice.pw.pw_dir) / "env.yaml",
                  f"command: [{SYSTEM_PY}, {alice.world / 'jobs.py'}, env]\nenv_vars: {{API_KEY: hunter2-of-alice}}\nafter: [{gate}]\n", 0o644)
    full = _wait(alice, alice.run("submit", f).stdout.strip(), "queued")["id"]
    evil = Path(tempfile.mkdtemp(prefix="evil-", dir="/tmp"))
    os.chmod(evil, 0o755)
    (evil / "sitecustomize.py").write_text("print('BOB WAS HERE', flush=True)\n")
    (evil / "sitecustomize.py").chmod(0o644)
    try:
        name = f"0001-{full}.job.json"
        _write_as(bob, home / "spool" / name, {"id": full, "submitted_at": time.time(), "spec": {
            "command": [SYSTEM_PY, str(alice.world / "jobs.py"), "env"], "env_vars": {"PYTHONPATH": str(evil)}}})
        _gone(home / "spool" / name)
        job = alice.wait(full, timeout=60)
        log = alice.logs(full)
        assert "BOB WAS HERE" not in log and str(evil) not in log, log
        assert (job["state"], job["user"]) == ("succeeded", ALICE) and "API_KEY=hunter2-of-alice" in log
        assert f"id: given {full!r}; expected a new job id" in _reason(home, name)
        assert d.proc.poll() is None
    finally:
        shutil.rmtree(evil, ignore_errors=True)


# -- 2. a file she owns is her request only when only she could have written it --------------------

def test_a_link_or_a_file_he_could_write_is_not_her_request(team):
    d, alice, bob, home = team
    her_token = alice.run("token").stdout.strip()
    running = _wait(alice, alice.job("sleep", "60"), "running")["id"]
    lab = Path(tempfile.mkdtemp(prefix="lab-", dir="/tmp"))  # the lab's shared folder: everyone writes, no sticky bit
    os.chmod(lab, 0o777)
    mark = Path(alice.pw.pw_dir) / "probe-by-job"
    mark.unlink(missing_ok=True)
    try:
        asks = {"job": {"id": "evil0002", "submitted_at": time.time(),
                        "spec": {"command": [SYSTEM_PY, str(alice.world / "jobs.py"), "probe", f"w:{alice.pw.pw_dir}"]}},
                "cancel": {"id": running}, "token": {"rotate": True}, "export": {"ids": [running], "experiment": None}}
        names = {}
        for i, (kind, rec) in enumerate(asks.items()):
            notes = _her_file(alice, lab / f"notes-{kind}.json", "{}", 0o666)  # hers, and he may edit it
            names[kind] = f"000{i}-x.{kind}.json"
            out = bob.python(f"import os\nopen({str(notes)!r}, 'w').write({json.dumps(json.dumps(rec))})\n"
                             f"os.link({str(notes)!r}, {str(home / 'spool' / names[kind])!r})\nprint('linked')")
            assert out.strip() == "linked"
        for kind, name in names.items():
            _gone(home / "spool" / name)
            assert "a hard link (2 names)" in _reason(home, name), kind
        # the same file moved (not linked) into the spool has one name, but he wrote it
        notes = _her_file(alice, lab / "notes-moved.json", "{}", 0o666)
        rec = {**asks["job"], "id": "evil0003"}
        bob.python(f"import os\nopen({str(notes)!r}, 'w').write({json.dumps(json.dumps(rec))})\n"
                   f"os.rename({str(notes)!r}, {str(home / 'spool' / '0009-moved.job.json')!r})")
        assert "writable by others than its owner (mode 0666)" in _reason(home, "0009-moved.job.json")
        time.sleep(1)
        assert alice.show(running)["state"] == "running"  # not cancelled
        assert alice.run("token").stdout.strip() == her_token  # not rotated
        for jid in ("evil0002", "evil0003"):
            assert "no such job" in alice.run("show", jid, check=False).stderr
        assert not mark.exists()
        assert d.proc.poll() is None
        alice.run("cancel", running)
    finally:
        shutil.rmtree(lab, ignore_errors=True)


# -- 3. a retry keeps the job's owner ---------------------------------------------------------------

def test_root_retries_her_job_and_it_runs_as_her(team):
    d, alice, bob, home = team
    full = _wait(alice, alice.job("whoami"))["id"]
    root = Runner(home)
    root.env["PYTHONPATH"] = str(ROOT)
    retried = [root.run("retry", full).stdout.strip()]
    token = root.token()
    status, body = d.post(f"/jobs/{full}/retry", token)
    assert status == 201, body
    retried.append(body["id"])
    retried.append(_ui_post(d, f"/ui/jobs/{full}/retry", token).rsplit("/", 1)[-1])  # the dashboard's button
    for jid in retried:
        job = _wait(alice, jid)
        assert (job["user"], job["state"]) == (ALICE, "succeeded"), job
        assert f"uid={alice.uid} gid={alice.pw.pw_gid} " in alice.logs(jid)
    # her secrets come with a retry of her job, whoever asks for it
    f = _her_file(alice, Path(alice.pw.pw_dir) / "env.yaml",
                  f"command: [{SYSTEM_PY}, {alice.world / 'jobs.py'}, env]\nenv_vars: {{API_KEY: hunter2-of-alice}}\n", 0o644)
    first = _wait(alice, alice.run("submit", f).stdout.strip())["id"]
    again = _wait(alice, root.run("retry", first).stdout.strip())
    assert again["user"] == ALICE and "API_KEY=hunter2-of-alice" in alice.logs(again["id"])


def _ui_post(d: DaemonProc, path: str, token: str) -> str:
    """POST a dashboard form with a token; returns where it redirects to (not followed)."""
    import urllib.error
    import urllib.request

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Stay)
    req = urllib.request.Request(d.url + path, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        opener.open(req, timeout=30)
    except urllib.error.HTTPError as e:
        assert e.code == 303, (e.code, e.read())
        return e.headers["Location"]
    raise AssertionError(f"{path}: no redirect")


# -- 4. nothing one user sends stops the queue ---------------------------------------------------------

def test_a_folder_sent_twice_or_a_name_too_long_costs_only_itself(team):
    d, alice, bob, home = team
    spool = home / "spool"
    folder = "0001-x.job.json"
    for i in range(2):
        bob.python(f"import os\nos.mkdir({str(spool / folder)!r})\nopen({str(spool / folder / 'f')!r}, 'w').write('x')")
        _gone(spool / folder)  # (taken into .taking first; set aside a moment later)
        wait_for(lambda: len(list((spool / "quarantine").glob(folder + "*.reason"))) == i + 1, 15,
                 what=f"the folder to be set aside ({i + 1})")
    long_name = "0002-" + "y" * 240 + ".job.json"  # 254 characters: nothing longer fits beside it
    _write_as(bob, spool / long_name, {"id": "long0001"})
    _gone(spool / long_name)
    assert d.proc.poll() is None, "the daemon died"
    assert _wait(alice, alice.job("whoami"))["state"] == "succeeded"
    assert any("a name of 254 characters" in p.read_text() for p in (spool / "quarantine").glob("0002-*.reason"))
    d.kill(signal.SIGTERM)
    d.start()  # and a restart meets none of it again
    assert _wait(alice, alice.job("whoami"))["state"] == "succeeded"


def test_a_job_the_daemon_cannot_follow_fails_alone(team):
    d, alice, bob, home = team
    one = _wait(alice, alice.job("sleep", "120"), "running")["id"]
    two = _wait(alice, alice.job("sleep", "120"), "running")["id"]
    d.kill(signal.SIGKILL)
    # values no runner writes: a watch.json whose checkpoints are not a list, a row written by hand
    watch = home / "run" / one / "watch.json"
    watch.write_text(json.dumps({**json.loads(watch.read_text()), "checkpoints": 7}))
    _edit_spec(home, two, lambda spec: {**spec, "resources": {"time_limit": "soon"}})
    d.start()
    for jid in (one, two):
        job = alice.wait(jid, timeout=30)
        assert (job["state"], job["reason"]) == ("failed", "daemon_error"), job
        assert job["note"].startswith("the daemon could not follow this job: TypeError:"), job["note"]
        child = json.loads((home / "run" / jid / "child.json").read_text())
        wait_for(lambda: not _alive(child["pid"]), 10, what="her job's processes to be ended")
    assert _wait(bob, bob.job("whoami"))["state"] == "succeeded"
    d.kill(signal.SIGTERM)
    d.start()
    assert _wait(bob, bob.job("whoami"))["state"] == "succeeded" and d.proc.poll() is None


def _edit_spec(home: Path, jid: str, change, **columns):
    """Change a job's row by hand (the daemon stopped)."""
    import sqlite3

    db = sqlite3.connect(home / "runner.db")
    spec = change(json.loads(db.execute("SELECT spec FROM jobs WHERE id=?", (jid,)).fetchone()[0]))
    db.execute(f"UPDATE jobs SET spec=?{''.join(f', {k}=?' for k in columns)} WHERE id=?", (json.dumps(spec), *columns.values(), jid))
    db.commit()
    db.close()


def test_a_queued_row_the_scheduler_cannot_read_fails_alone(team):
    d, alice, bob, home = team
    gate = alice.job("sleep", "3")
    bad = _wait(alice, alice.job("whoami", extra=("--after", gate)), "queued")["id"]
    d.kill(signal.SIGKILL)
    # a row written by hand (or by an older runner): the scheduler reads its resources as a mapping
    _edit_spec(home, bad, lambda spec: {**spec, "resources": "lots"}, after="[]")
    d.start()
    job = alice.wait(bad, timeout=30)
    assert (job["state"], job["reason"]) == ("failed", "daemon_error") and "could not schedule" in job["note"], job
    assert _wait(bob, bob.job("whoami"))["state"] == "succeeded" and d.proc.poll() is None


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# -- 5. clocks ----------------------------------------------------------------------------------------

def test_time_limits_follow_a_clock_nobody_sets():
    from runner.daemon.follow import time_limit_reached

    # (limit, the shim's start and now on the boot clock, the job's start and now on the wall clock)
    assert not time_limit_reached(3600, 1000.0, 1003.3, 5_000.0, 5_003.3 + 7200)  # the wall clock jumped 2 h ahead
    assert time_limit_reached(3600, 1000.0, 4601.0, 5_000.0, 5_000.0 - 7200)  # and back: the limit still ends it
    assert not time_limit_reached(3600, 1000.0, 4599.0, 5_000.0, 9_000.0)
    assert time_limit_reached(2, None, 1003.0, 5_000.0, 5_003.0)  # no boot start known: the wall clock, as before
    assert not time_limit_reached(None, 1000.0, 9e9, 5_000.0, 9e9)
    assert not time_limit_reached(0, 1000.0, 9e9, 5_000.0, 9e9)


def test_a_wall_clock_jump_does_not_end_a_job_but_its_limit_does(team):
    d, alice, bob, home = team
    f = _her_file(alice, Path(alice.pw.pw_dir) / "limit.yaml",
                  f"command: [{SYSTEM_PY}, {alice.world / 'jobs.py'}, sleep, '60']\nresources: {{time_limit: 3}}\n", 0o644)
    t0 = time.monotonic()
    job = _wait(alice, alice.run("submit", f).stdout.strip(), timeout=30)
    assert (job["state"], job["reason"]) == ("failed", "timeout") and 3 <= time.monotonic() - t0 < 20
    # the daemon's loop as it runs after the wall clock jumped 2 h ahead: a 1 h limit is far off
    d.kill(signal.SIGTERM)
    from runner.daemon import Daemon
    from runner.home import Home

    daemon = Daemon(Home(home), http=None)
    daemon._own_taking()
    f.write_text(f"command: [{SYSTEM_PY}, {alice.world / 'jobs.py'}, sleep, '60']\nresources: {{time_limit: 3600}}\n")
    jid = alice.run("submit", f).stdout.strip()
    deadline = time.time() + 30
    while time.time() < deadline:
        daemon.tick()
        if daemon.store.count_jobs(states=["running"]):
            break
        time.sleep(0.1)
    for _ in range(10):
        daemon.tick(now=time.time() + 7200)
        time.sleep(0.1)
    job = daemon.store.get_job(jid)
    try:
        assert job["state"] == "running" and not job["timed_out"] and jid not in daemon.killing, job
    finally:
        daemon.request_cancel(job, time.time())
        for _ in range(100):
            daemon.tick()
            if daemon.store.get_job(jid)["state"] == "cancelled":
                break
            time.sleep(0.1)
        daemon.pool.shutdown(wait=True)
        daemon.launcher.close()
        d.start()


def test_a_submit_from_a_clock_days_off_is_queued_at_the_daemons_time(team):
    d, alice, bob, home = team
    now = time.time()
    for i, (jid, when) in enumerate((("ahead001", now + 2 * 86400), ("behind01", now - 2 * 86400))):
        _write_as(alice, home / "spool" / f"000{i}-{jid}.job.json",
                  {"id": jid, "submitted_at": when, "spec": {"command": [SYSTEM_PY, str(alice.world / "jobs.py"), "whoami"]}})
    ahead, behind = _wait(alice, "ahead001"), _wait(alice, "behind01")
    assert ahead["state"] == behind["state"] == "succeeded"
    assert now - 5 <= ahead["created_at"] <= time.time()  # not in the future: taken as the daemon's now
    # nor before its file was written (the kernel's ctime, which its writer cannot set back): a
    # record that says 1970, or two days ago, does not jump the queue
    assert now - 10 <= behind["created_at"] <= time.time()


# -- 6. the daemon's own trouble costs no job --------------------------------------------------------

@pytest.fixture
def small_disk(world, users):
    """A team on a RUNNER_HOME that is a small tmpfs of its own, which a test may fill or make read-only."""
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(home)], capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(home)
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    (home / "config.toml").write_text("[jobs]\nmin_free_mb = 0\n")  # jobs start on this small disk once it has room
    d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    alice, bob = User(users[ALICE], world, home), User(users[BOB], world, home)
    try:
        yield d, alice, bob, home
    finally:
        d.proc.send_signal(signal.SIGCONT)
        subprocess.run(["mount", "-o", "remount,rw", str(home)], capture_output=True)
        d.kill(signal.SIGTERM)
        subprocess.run(["umount", "-l", str(home)], check=True)
        os.rmdir(home)


def _fill(path: Path) -> Path:
    """Fill the file system of path to its last block."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def test_a_full_disk_costs_no_submit_and_no_job(small_disk):
    d, alice, bob, home = small_disk
    spool = home / "spool"
    f = _her_file(alice, Path(alice.pw.pw_dir) / "env.yaml",
                  f"command: [{SYSTEM_PY}, {alice.world / 'jobs.py'}, env]\nenv_vars: {{API_KEY: hunter2-of-alice}}\n", 0o644)
    d.proc.send_signal(signal.SIGSTOP)
    jid = alice.run("submit", f).stdout.strip()  # the spool took it; the disk fills before the daemon does
    filler = _fill(home)
    r = alice.run("submit", "--", "true", check=False)
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == f"runner: cannot write the spool: no space left on device ({spool})\n", r.stderr
    assert os.listdir(spool / ".tmp") == []
    d.proc.send_signal(signal.SIGCONT)
    time.sleep(3)
    assert d.proc.poll() is None, "the daemon died"
    assert not list((spool / "quarantine").iterdir())
    assert [p.name for p in spool.glob("*.job.json")] == [p.name for p in spool.glob(f"*-{jid}.job.json")] != []
    filler.unlink()
    job = _wait(alice, jid, timeout=60)
    assert (job["state"], job["user"]) == ("succeeded", ALICE) and "API_KEY=hunter2-of-alice" in alice.logs(jid)


def test_a_read_only_store_costs_no_submit(team):
    d, alice, bob, home = team
    if not shutil.which("chattr"):
        pytest.skip("needs chattr (e2fsprogs) to make the store read-only")
    assert _wait(alice, alice.job("whoami"))["state"] == "succeeded"
    frozen = [home / "runner.db-wal", home / "runner.db", home]  # the store and its folder (not -shm: it is mapped)
    if subprocess.run(["chattr", "+i", *map(str, frozen)], capture_output=True).returncode != 0:
        subprocess.run(["chattr", "-i", *map(str, frozen)], capture_output=True)
        pytest.skip(f"{home}'s file system has no immutable flag")
    try:
        ids = [alice.job("whoami"), bob.job("whoami")]  # each printed an id
        time.sleep(3)
        assert d.proc.poll() is None, "the daemon died"
        for user, jid in zip((alice, bob), ids):
            assert list((home / "spool").glob(f"*-{jid}.job.json")), f"{jid} left the spool"
            assert user.show(jid)["state"] == "submitted"
        assert not list((home / "spool" / "quarantine").glob("*.reason"))
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], check=True)
    for user, jid in zip((alice, bob), ids):
        job = _wait(user, jid, timeout=60)
        assert (job["state"], job["user"]) == ("succeeded", user.name)


def test_a_store_that_refuses_writes_leaves_the_file_in_the_spool(tmp_path, monkeypatch):
    """A read-only store (sqlite's own error, from a read-only connection) or one that fails: the file
    waits in the spool and is taken when the store writes again; only a file's own fault sets it aside."""
    import sqlite3

    from runner import spool, store as store_mod
    from runner.daemon import Daemon
    from runner.home import Home

    home = Home(tmp_path / "home")
    daemon = Daemon(home, http=None)
    daemon._own_taking()
    writable = daemon.store.conn
    readonly = sqlite3.connect(f"file:{home.db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    readonly.row_factory = store_mod._row
    failing = lambda *a, **k: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error"))  # noqa: E731
    try:
        for i, how in enumerate(["read-only", "disk I/O"]):
            rec = spool.submit(home, {"command": ["true"], "workdir": str(tmp_path), "env_vars": {"K": "v"}})
            with monkeypatch.context() as m:
                if how == "read-only":
                    daemon.store._local.conn = readonly
                else:
                    m.setattr(daemon.store, "insert_job", failing)
                daemon.ingest(time.time())
                daemon.store._local.conn = writable
            assert [p.name.split("-", 1)[1] for p in spool.pending(home)] == [f"{rec['id']}.job.json"], how
            assert not list(home.quarantine.iterdir()) and not (home.secrets / f"{rec['id']}.json").exists(), how
            daemon._later.clear()  # its retry is due now
            daemon.ingest(time.time())
            assert daemon.store.get_job(rec["id"])["state"] == "queued" and not spool.pending(home), how
            assert (home.secrets / f"{rec['id']}.json").exists()
    finally:
        readonly.close()
        daemon.launcher.close()


def test_a_teammates_command_cannot_drive_my_terminal(team):
    """bob's command carries escape sequences (erase the rows above, set the title, right-to-left):
    alice's `runner ls` and `runner show` print them as visible escapes, and the name made from
    the command has none (found by a hostile teammate)."""
    d, alice, bob, home = team
    evil = "\x1b[A\x1b[2K\x1b]0;PWNED\x07\u202eevil"
    jid = bob.run("submit", "--", "/bin/echo", evil).stdout.strip().splitlines()[-1]
    bob.wait(jid)
    listed = alice.run("ls", "--all").stdout
    shown = alice.run("show", jid).stdout
    for out in (listed, shown):
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, repr(out)
    assert "?[A?[2K?]0;PWNED??evil" in listed  # the name, made from the command
    assert json.loads(alice.run("show", jid, "--json").stdout)["name"] == "/bin/echo ?[A?[2K?]0;PWNED??evil"


def test_a_hand_written_retry_of_her_job_is_refused(team):
    """bob's record names alice's job as the one it retries: set aside (a forged history would also
    keep her job's folder from [retention]); a retry of his own job, and root's of hers, stay retries."""
    d, alice, bob, home = team
    hers, his = alice.wait(alice.job("whoami"))["id"], bob.wait(bob.job("whoami"))["id"]
    for jid, of in (("forged01", hers), ("ownretry", his)):
        _write_as(bob, home / "spool" / f"0001-{jid}.job.json",
                  {"id": jid, "submitted_at": time.time(), "retry_of": of,
                   "spec": {"command": [SYSTEM_PY, str(bob.world / "jobs.py"), "whoami"]}})
    assert f"retry_of: given '{hers}', a job of {alice.name}; expected a job of yours" in _reason(home, "0001-forged01.job.json")
    assert bob.run("show", "forged01", check=False).returncode != 0
    assert _wait(bob, "ownretry")["retry_of"] == his
    copy = Runner(home).run("retry", hers).stdout.strip().splitlines()[-1]  # root's retry of hers: hers, a retry
    assert _wait(alice, copy)["retry_of"] == hers
