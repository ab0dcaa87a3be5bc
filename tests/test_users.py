"""A team on one server, with real Unix users (made here with useradd; needs root, as CI runs).

A root daemon runs each job as the person who submitted it; nobody reaches what is not theirs:
files, job folders, the store, the spool, logs, secrets, cancel and retry, over the CLI and HTTP.
Users run runner from a world-readable copy of the code with the machine's own python3, as they
would from a system-wide install (docs/server.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, DaemonProc, wait_for

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd: the tests make real Unix users"),
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)

ALICE, BOB = "rn_alice", "rn_bob"
SYSTEM_PY = "/usr/bin/python3"


@pytest.fixture(scope="module")
def users():
    for name in (ALICE, BOB):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    return {n: pwd.getpwnam(n) for n in (ALICE, BOB)}


@pytest.fixture(scope="module")
def world():
    """What every user can run: the code and its packages, readable by all, and a system python."""
    if not os.path.exists(SYSTEM_PY):
        pytest.skip(f"no {SYSTEM_PY} for users to run runner with")
    v = subprocess.run([SYSTEM_PY, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True).stdout.strip()
    if v != str(tuple(sys.version_info[:2])):
        pytest.skip(f"{SYSTEM_PY} is {v}, the test venv {sys.version_info[:2]}: packages would not load")
    root = Path(tempfile.mkdtemp(prefix="runner-users-", dir="/tmp"))
    os.chmod(root, 0o755)
    ignore = shutil.ignore_patterns("__pycache__", "__editable__*")
    for name in ("runner", "adapters", "config_translators", "log_parsers", "envs"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    shutil.copy(ROOT / "registry.toml", root)
    shutil.copy(ROOT / "tests" / "fixtures" / "jobs.py", root)
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir() and (Path(p) / "pydantic").exists())
    shutil.copytree(site, root / "site", ignore=ignore, symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class User:
    """The real CLI run as a Unix user."""

    def __init__(self, pw, world: Path, home: Path):
        self.pw, self.world, self.home = pw, world, home
        self.name, self.uid = pw.pw_name, pw.pw_uid
        self.env = {"RUNNER_HOME": str(home), "PYTHONPATH": f"{world}:{world / 'site'}", "HOME": pw.pw_dir,
                    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    def run(self, *args, check=True, cwd=None):
        r = subprocess.run([SYSTEM_PY, "-m", "runner", *map(str, args)], capture_output=True, text=True, env=self.env,
                           cwd=cwd or self.pw.pw_dir, user=self.uid, group=self.pw.pw_gid, extra_groups=[], timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: runner {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def job(self, *argv, extra=()):
        return self.run("submit", *extra, "--", SYSTEM_PY, self.world / "jobs.py", *argv).stdout.strip().splitlines()[-1]

    def show(self, jid):
        return json.loads(self.run("show", jid, "--json").stdout)

    def wait(self, jid, states=("succeeded", "failed", "cancelled"), timeout=60):
        states = (states,) if isinstance(states, str) else states
        return wait_for(lambda: (lambda j: j if j["state"] in states else None)(self.show(jid)), timeout, 0.2, f"{jid} in {states}")

    def logs(self, jid):
        return self.run("logs", jid).stdout

    def python(self, code: str) -> str:
        """Python run as this user from a shell of hers (not as a job)."""
        return subprocess.run([SYSTEM_PY, "-c", code], capture_output=True, text=True, user=self.uid, group=self.pw.pw_gid,
                              extra_groups=[], env={"PATH": "/usr/bin:/bin"}, cwd="/").stdout


@contextlib.contextmanager
def team_home(world, users, config: str = ""):
    """A root daemon on a new state folder (with `config` as its config.toml), two users, and
    alice's 0600 secret in her 0700 home: (daemon, alice, bob, home)."""
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chmod(home, 0o755)
    if config:
        (home / "config.toml").write_text(config)
    d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    alice, bob = User(users[ALICE], world, home), User(users[BOB], world, home)
    secret = Path(users[ALICE].pw_dir) / "secret.txt"
    secret.write_text("alice's secret\n")
    os.chown(secret, alice.uid, users[ALICE].pw_gid)
    os.chmod(secret, 0o600)
    os.chmod(users[ALICE].pw_dir, 0o700)
    try:
        yield d, alice, bob, home
    finally:
        d.kill(15)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def team(world, users):
    with team_home(world, users) as t:
        yield t


def test_a_job_runs_as_its_submitter_with_no_privileges(team):
    d, alice, bob, home = team
    jid = alice.job("whoami")
    assert alice.wait(jid)["state"] == "succeeded"
    line = alice.logs(jid).strip().splitlines()[-1]
    pw = pwd.getpwnam(ALICE)
    assert f"uid={pw.pw_uid} gid={pw.pw_gid} groups={pw.pw_gid} " in line
    assert "CapEff=0000000000000000 CapPrm=0000000000000000 NoNewPrivs=1" in line
    job = alice.show(jid)
    assert job["user"] == ALICE
    jd = home / "jobs" / job["id"]
    assert jd.stat().st_uid == pw.pw_uid and oct(jd.stat().st_mode & 0o777) == "0o700"
    assert (home / "run" / job["id"] / "output.log").stat().st_uid == pw.pw_uid


def test_her_files_are_hers_alone(team):
    d, alice, bob, home = team
    secret = Path(pwd.getpwnam(ALICE).pw_dir) / "secret.txt"
    mine = alice.job("probe", f"r:{secret}")
    assert alice.wait(mine)["state"] == "succeeded" and "ok b\"alice's secret\\n\"" in alice.logs(mine)
    running = alice.job("sleep", "30")
    her = alice.wait(running, "running")["id"]
    probes = [f"r:{secret}", f"w:{home / 'jobs' / her}", f"w:{home / 'runner.db'}", f"w:{home / 'spool'}",
              f"w:{home / 'envs'}", f"r:{home / 'run' / her / 'output.log'}", f"r:{home / 'run' / her / 'launch.json'}",
              f"w:{home / 'cache'}"]
    his = bob.job("probe", *probes)
    assert bob.wait(his)["state"] == "succeeded"
    out = bob.logs(his)
    for p in probes:
        mode, path = p.split(":", 1)
        assert f"{'read' if mode == 'r' else 'write'} {path}: denied" in out, out
    # and from his own shell, outside any job
    shell = bob.python(f"import os\nfor p in {[str(secret), str(home / 'jobs' / her / 'home'), str(home / 'run' / her / 'output.log')]!r}:\n"
                       "    try: open(p, 'rb').read() if os.path.isfile(p) else os.listdir(p); print('OPEN', p)\n"
                       "    except OSError: print('DENIED', p)")
    assert "OPEN" not in shell and shell.count("DENIED") == 3
    alice.run("cancel", running)


def test_without_bubblewrap_his_job_still_reaches_nothing_of_hers(world, users):
    """Unix permissions alone: the store, the envs, the daemon's folders, her job, log and secrets stay out of reach."""
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chmod(home, 0o755)
    d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT), "RUNNER_NO_BWRAP": "1"}).start()
    try:
        alice, bob = User(users[ALICE], world, home), User(users[BOB], world, home)
        f = Path(users[ALICE].pw_dir) / "job.yaml"
        f.write_text(f"command: [{SYSTEM_PY}, {world / 'jobs.py'}, sleep, '30']\nenv_vars: {{API_KEY: hunter2-of-alice}}\n")
        os.chown(f, alice.uid, -1)
        her = alice.wait(alice.run("submit", f).stdout.strip(), "running")["id"]
        secret = Path(users[ALICE].pw_dir) / "secret.txt"
        probes = [f"r:{secret}", f"w:{home / 'jobs' / her}", f"w:{home / 'runner.db'}", f"w:{home / 'envs'}",
                  f"r:{home / 'run' / her / 'output.log'}", f"r:{home / 'run' / her / 'launch.json'}", f"w:{home / 'run' / her}",
                  f"r:{home / 'secrets' / (her + '.json')}", f"w:{home / 'secrets'}", f"w:{home / 'spool' / '.taking'}",
                  f"w:{home / 'spool' / 'quarantine'}", f"w:{home / 'cache'}", f"w:{home / 'tokens'}"]
        his = bob.job("probe", *probes)
        assert bob.wait(his)["state"] == "succeeded"
        out = bob.logs(his)
        assert "sandbox" not in out or "bubblewrap" in out
        for p in probes:
            mode, path = p.split(":", 1)
            assert f"{'read' if mode == 'r' else 'write'} {path}: denied" in out, out
        alice.run("cancel", her)
    finally:
        d.kill(15)
        shutil.rmtree(home, ignore_errors=True)


def test_he_cannot_cancel_retry_or_read_her_job(team):
    d, alice, bob, home = team
    jid = alice.job("sleep", "30")
    full = alice.wait(jid, "running")["id"]
    r = bob.run("cancel", full, check=False)
    assert r.returncode == 1 and "only its owner or root may cancel" in r.stderr
    r = bob.run("logs", full, check=False)
    assert r.returncode != 0 and "belongs to" in r.stderr and "Traceback" not in r.stderr
    bob_token, alice_token = bob.run("token").stdout.strip(), alice.run("token").stdout.strip()
    assert bob_token != alice_token and bob_token.startswith("rn_")
    tok = home / "tokens" / str(alice.uid)
    assert tok.stat().st_uid == alice.uid and oct(tok.stat().st_mode & 0o777) == "0o600"
    assert d.post(f"/jobs/{full}/cancel", bob_token)[0] == 403
    assert d.get(f"/jobs/{full}/log", bob_token)[0] == 403
    assert d.get(f"/jobs/{full}/log")[0] == 401
    status, text = d.get(f"/jobs/{full}/log?tail=1", alice_token)
    assert status == 200 and "sleeping" in text
    assert alice.show(full)["state"] == "running"
    status, body = d.post(f"/jobs/{full}/cancel", alice_token)
    assert status == 200 and body["cancel_requested"] is True
    assert alice.wait(full)["state"] == "cancelled"
    r = bob.run("retry", full, check=False)
    assert r.returncode == 1 and "only its owner or root may retry" in r.stderr
    assert d.post(f"/jobs/{full}/retry", bob_token)[0] == 403
    status, body = d.post(f"/jobs/{full}/retry", alice_token)
    assert status == 201 and alice.show(body["id"])["user"] == ALICE
    # nor add a repo to the team's registry (the admin's), nor infer with a command job: one line each, no traceback
    r = bob.run("repo", "add", "file:///nowhere", "--commit", "0" * 40, check=False)
    assert r.returncode == 1 and "not writable by you: an admin (root) adds repos" in r.stderr and "Traceback" not in r.stderr
    r = alice.run("infer", full, "/etc/hostname", check=False)
    assert r.returncode == 1 and ("is a command job" in r.stderr or "has no checkpoint" in r.stderr), r.stderr


def test_doctor_audits_the_permissions_of_every_part(team):
    d, alice, bob, home = team
    jid = alice.job("whoami")
    full = alice.wait(jid)["id"]
    alice.run("token")
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "runner", "doctor"], env=env, capture_output=True, text=True)
    # the test daemon's own Python may be one other users cannot run (root's pyenv): doctor says so, and only that
    others = [line for line in r.stdout.splitlines() if line.startswith("  - ") and not line.startswith("  - python: ")]
    assert "permissions     ok" in r.stdout and not others and r.returncode == (1 if "  - python: " in r.stdout else 0), r.stdout
    os.chmod(home / "jobs" / full, 0o755)  # her job folder opened to all by mistake
    os.chmod(home / "secrets", 0o755)
    r = subprocess.run([sys.executable, "-m", "runner", "doctor"], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{home / 'jobs' / full}: mode 0755, expected 0700: job {full}'s folder" in r.stdout
    assert f"{home / 'secrets'}: mode 0755, expected 0700" in r.stdout


def test_a_token_posts_a_job_that_belongs_to_its_user(team, tmp_path):
    d, alice, bob, home = team
    token = alice.run("token").stdout.strip()
    spec = {"command": [SYSTEM_PY, str(alice.world / "jobs.py"), "whoami"]}
    assert d.post("/jobs", None, spec)[0] == 401
    assert d.post("/jobs", "rn_not-a-token", spec)[0] == 401
    status, body = d.post("/jobs", token, spec)
    assert status == 201 and body["user"] == ALICE
    job = alice.wait(body["id"])
    assert job["state"] == "succeeded" and job["user"] == ALICE
    assert f"uid={alice.uid} " in alice.logs(body["id"])
    # the same validation and one-line errors as `runner submit`
    status, body = d.post("/jobs", token, {"command": ["true"], "workdir": "/etc", "network": "no"})
    assert status == 422 and any(p.startswith("workdir:") for p in body["problems"]) and any(p.startswith("network:") for p in body["problems"])
    secret = Path(pwd.getpwnam(BOB).pw_dir)
    status, body = d.post("/jobs", token, {"command": ["true"], "workdir": str(secret)})
    # checked as her by a helper that has dropped to her: the same line as her CLI gives
    assert status == 422 and body["problems"] == [f"workdir: {secret} is not writable by you; give a folder you may write"]
    work = Path(pwd.getpwnam(ALICE).pw_dir) / "posted"
    work.mkdir(exist_ok=True)
    os.chown(work, alice.uid, -1)
    status, body = d.post("/jobs", token, {"command": [SYSTEM_PY, str(alice.world / "jobs.py"), "probe", "w:."], "workdir": "~/posted"})
    assert status == 201 and alice.wait(body["id"])["state"] == "succeeded"  # ~ is her home, not the daemon's
    assert (work / "probe-by-job").stat().st_uid == alice.uid
    rotated = alice.run("token", "--rotate").stdout.strip()
    assert rotated != token and d.post("/jobs", token, spec)[0] == 401


def test_her_secret_is_in_no_view_and_no_file_he_can_read(team):
    d, alice, bob, home = team
    t0 = time.time()
    r = alice.run("submit", "--", SYSTEM_PY, alice.world / "jobs.py", "env", check=False)
    jid = r.stdout.strip()
    f = Path(pwd.getpwnam(ALICE).pw_dir) / "job.yaml"
    f.write_text(f"command: [{SYSTEM_PY}, {alice.world / 'jobs.py'}, env]\nenv_vars: {{API_KEY: hunter2-of-alice}}\n")
    os.chown(f, alice.uid, -1)
    jid = alice.run("submit", f).stdout.strip()
    assert alice.wait(jid)["state"] == "succeeded"
    assert "API_KEY=hunter2-of-alice" in alice.logs(jid)
    assert "hunter2" not in bob.run("show", jid, "--json").stdout
    assert "hunter2" not in json.dumps(d.get(f"/jobs/{jid}", bob.run("token").stdout.strip())[1])
    # every file he can read that was written since her secret existed (the envs' files, hard links of
    # uv's cache, are older: reading all 5 GB of them made this test take a minute and a half)
    found = bob.python(f"import os\nfor r, ds, fs in os.walk({str(home)!r}):\n    for n in fs:\n"
                       "        p = os.path.join(r, n)\n        try:\n"
                       f"            if os.lstat(p).st_mtime < {t0 - 2}: continue\n"
                       "            data = open(p, 'rb').read()\n"
                       "        except OSError:\n            continue\n        print('READ', p)\n"
                       "        if b'hunter2' in data: print('FOUND', p)")
    assert "FOUND" not in found, found
    assert "READ" in found, found  # the filter left him files to read: what the daemon wrote since


def test_workdirs_are_checked_as_the_submitter(team):
    d, alice, bob, home = team
    r = alice.run("submit", "--workdir", "/etc", "--", "true", check=False)
    assert r.returncode == 2 and r.stderr.startswith("runner: workdir:") and "/etc is a system folder" in r.stderr
    assert not (Path("/etc") / "probe-by-job").exists()
    r = alice.run("submit", "--workdir", pwd.getpwnam(BOB).pw_dir, "--", "true", check=False)
    assert r.returncode == 2 and "not writable by you" in r.stderr
    # a record written into the spool by hand meets the same rule at the daemon
    rec = {"id": "forged01", "spec": {"command": ["true"], "workdir": pwd.getpwnam(BOB).pw_dir}, "submitted_at": time.time()}
    alice.python(f"import json\nopen({str(home / 'spool' / '0001-forged01.job.json')!r}, 'w').write({json.dumps(json.dumps(rec))})")
    reason = home / "spool" / "quarantine" / "0001-forged01.job.json.reason"
    wait_for(reason.exists, 10, what="the forged record to be set aside")
    assert f"not writable by {ALICE}" in reason.read_text()
    # what her job makes in her workdir is hers
    work = Path(pwd.getpwnam(ALICE).pw_dir) / "work"
    work.mkdir(exist_ok=True)
    os.chown(work, alice.uid, -1)
    jid = alice.job("probe", f"w:{work}", extra=("--workdir", str(work)))
    assert alice.wait(jid)["state"] == "succeeded"
    assert (work / "probe-by-job").stat().st_uid == alice.uid


@pytest.mark.no_shared_envs  # it shows that no env is built: its home starts with none
def test_data_paths_are_checked_as_the_submitter_at_submit_and_at_prepare(team):
    d, alice, bob, home = team
    private = Path(pwd.getpwnam(BOB).pw_dir) / "data"
    (private / "train" / "a").mkdir(parents=True, exist_ok=True)
    (private / "val" / "a").mkdir(parents=True, exist_ok=True)
    os.chmod(pwd.getpwnam(BOB).pw_dir, 0o700)
    f = Path(pwd.getpwnam(ALICE).pw_dir) / "model.yaml"
    f.write_text(f"model: timm/resnet18\ndataset: {{path: {private}, format: imagefolder}}\n")
    os.chown(f, alice.uid, -1)
    r = alice.run("submit", f, check=False)
    assert r.returncode == 2 and r.stderr.strip() == f"runner: dataset.path: {private} is not readable by you", r.stderr
    token = alice.run("token").stdout.strip()
    status, body = d.post("/jobs", token, {"model": "timm/resnet18", "dataset": {"path": str(private)}})
    assert status == 422 and body["problems"] == [f"dataset.path: {private} is not readable by you"]  # as her CLI says
    # a record that reached the queue anyway (written by hand) fails when prepared, before any env is built
    rec = {"id": "forged02", "spec": {"model": "timm/resnet18", "dataset": {"path": str(private), "format": "imagefolder"},
                                      "env": "timm"}, "submitted_at": time.time()}
    alice.python(f"import json\nopen({str(home / 'spool' / '0002-forged02.job.json')!r}, 'w').write({json.dumps(json.dumps(rec))})")
    job = alice.wait("forged02")
    assert (job["state"], job["reason"]) == ("failed", "prepare_failed")
    assert job["note"] == f"dataset.path: {private} is not readable by {ALICE}"
    assert not list((home / "envs").glob("*"))


def test_a_daemon_of_one_user_runs_only_her_jobs(world, users):
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chown(home, users[ALICE].pw_uid, users[ALICE].pw_gid)
    os.chmod(home, 0o755)  # open to others, so that his spool file reaches her daemon
    alice, bob = User(users[ALICE], world, home), User(users[BOB], world, home)
    proc = subprocess.Popen([SYSTEM_PY, "-m", "runner", "daemon", "--http", "none"], env=alice.env, cwd="/",
                            user=alice.uid, group=users[ALICE].pw_gid, extra_groups=[],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (home / "runner.db").exists() and (home / "spool" / ".taking").exists(), 30, what="her daemon to start")
        theirs = bob.run("submit", "--", "true").stdout.strip()
        mine = alice.job("whoami")
        assert alice.wait(mine)["state"] == "succeeded"
        reason = wait_for(lambda: next(iter((home / "spool" / "quarantine").glob(f"*{theirs}.job.json.reason")), None), 10,
                          what="his file to be refused")
        assert "runs only that user's jobs" in reason.read_text()
        kept = next((home / "spool" / "quarantine").glob(f"*{theirs}.job.json"))
        assert kept.stat().st_uid == bob.uid  # set aside, still his; never run
        assert "no such job" in bob.run("show", theirs, check=False).stderr
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(home, ignore_errors=True)


def test_share_logs_opens_logs_and_job_folders_to_teammates(world, users):
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chmod(home, 0o755)
    (home / "config.toml").write_text("[server]\nshare_logs = true\n")
    d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    try:
        alice, bob = User(users[ALICE], world, home), User(users[BOB], world, home)
        jid = alice.job("whoami")
        full = alice.wait(jid)["id"]
        assert "uid=" in bob.logs(full)  # his CLI reads her log
        status, text = d.get(f"/jobs/{full}/log")  # and anyone over HTTP on loopback
        assert status == 200 and "uid=" in text
        assert oct((home / "jobs" / full).stat().st_mode & 0o777) == "0o755"
        assert oct((home / "run" / full / "output.log").stat().st_mode & 0o777) == "0o644"
        assert oct((home / "run" / full / "launch.json").stat().st_mode & 0o777) == "0o600"  # secrets stay hers
        r = bob.run("cancel", full, check=False)
        assert r.returncode == 1 and "only its owner or root may cancel" in r.stderr  # reading is not acting
    finally:
        d.kill(15)
        shutil.rmtree(home, ignore_errors=True)
