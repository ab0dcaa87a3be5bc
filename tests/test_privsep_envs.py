"""What a user asks of an env never runs as root: inline requirements are package specifiers only,
an env name is one of envs/ (never a path), a requirements file is read as its submitter, and a
user's packages are built by the build user in the sandbox. Two real users (useradd) and a root
daemon, as in test_users."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, DaemonProc, wait_for
from test_users import ALICE, BOB, SYSTEM_PY, User, team, team_home, users, world  # noqa: F401

SPECIFIER = 'expected a package specifier such as "numpy>=1.26" (no URLs, paths or pip options)'
KNOWN = "base, timm, transformers, ultralytics"


def _marker_dir() -> Path:
    """A folder anyone may write (outside /tmp, which a build does not see): a planted setup.py reports there."""
    d = Path(tempfile.mkdtemp(prefix="rn-marker-", dir="/var/tmp"))
    os.chmod(d, 0o1777)
    return d


def _his(user: User, rel: str, text: str) -> Path:
    p = Path(user.pw.pw_dir) / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    for q in [p, *p.relative_to(user.pw.pw_dir).parents]:
        os.lchown(Path(user.pw.pw_dir) / q, user.uid, user.pw.pw_gid)
    return p


def _refused(user: User, spec: dict) -> list[str]:
    """`runner submit` of a job file of hers: exit 2, one line per problem (the `runner: ` prefix dropped)."""
    f = _his(user, f"job-{time.monotonic_ns()}.json", json.dumps(spec))
    r = user.run("submit", f, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    return [line.removeprefix("runner: ") for line in r.stderr.strip().splitlines()]


def _forge(user: User, home: Path, rec_id: str, spec: dict) -> str:
    """A spool record written by hand (not by `runner submit`): the reason it was set aside."""
    rec = {"id": rec_id, "spec": spec, "submitted_at": time.time()}
    target = home / "spool" / f"0009-{rec_id}.job.json"
    user.python(f"open({str(target)!r}, 'w').write({json.dumps(json.dumps(rec))})")
    reason = home / "spool" / "quarantine" / f"{target.name}.reason"
    wait_for(reason.exists, 15, what=f"{rec_id} to be set aside")
    return reason.read_text()


def _alive(d: DaemonProc, user: User):
    assert d.proc.poll() is None
    jid = user.job("whoami")
    assert user.wait(jid)["state"] == "succeeded"


def test_inline_requirements_are_package_specifiers_only(team):
    """`evilpkg @ file:///home/rn_bob/evilpkg` once made the root daemon run his setup.py as uid 0
    (uv pip compile). Every form that names a path, a URL or a pip option is refused at submit,
    over HTTP and at the spool, in one line naming the item; his setup.py never runs."""
    d, alice, bob, home = team
    marker = _marker_dir()
    evil = f"import os\nopen(os.path.join({str(marker)!r}, 'ran-as-%d' % os.getuid()), 'w').close()\n" \
           "from setuptools import setup\nsetup(name='evilpkg', version='1.0')\n"
    pkg = _his(bob, "evilpkg/setup.py", evil).parent
    reqs = _his(bob, "more.txt", "six\n")
    attacks = [f"evilpkg @ file://{pkg}", f"-r {reqs}", f"-e {pkg}", str(pkg), f"file://{pkg}",
               "six --index-url http://any.host/simple", "--extra-index-url=http://any.host/simple", f"--find-links {pkg}",
               "-c /etc/passwd", "git+https://example.org/evil.git", "six\n-e /home", "evilpkg @ https://any.host/evil.tar.gz"]
    try:
        for attack in attacks:
            lines = _refused(bob, {"command": ["true"], "env": {"requirements": ["six==1.16.0", attack]}})
            assert lines == [f"env.requirements.1: given {attack!r}; {SPECIFIER}"], lines
        token = bob.run("token").stdout.strip()
        status, body = d.post("/jobs", token, {"command": ["true"], "env": {"requirements": [f"evilpkg @ file://{pkg}"]}})
        assert status == 422 and body["problems"] == [f"env.requirements.0: given 'evilpkg @ file://{pkg}'; {SPECIFIER}"], body
        reason = _forge(bob, home, "forged11", {"command": ["true"], "env": {"requirements": [f"-e {pkg}"]}})
        assert f"env.requirements.0: given '-e {pkg}'; {SPECIFIER}" in reason, reason
        # what a specifier may be is all there: extras, versions, markers
        ok = bob.run("submit", "--after", "nosuchjob", _his(bob, "fine.json", json.dumps(
            {"command": ["true"], "env": {"requirements": ["six[x]>=1.0,<2 ; python_version >= '3.8'", "packaging (>=20)"]}})),
            check=False)
        assert ok.returncode == 2 and ok.stderr.strip() == "runner: after.0: given 'nosuchjob'; expected the id of a submitted job"
        time.sleep(1)
        assert not list(marker.iterdir()), list(marker.iterdir())  # his setup.py never ran, as anyone
        _alive(d, alice)
    finally:
        shutil.rmtree(marker, ignore_errors=True)


def test_an_env_name_is_a_packaged_env_never_a_path(team):
    """`env: {name: ../../../../home/rn_bob/myenv}` once made the root daemon read that folder's
    requirements.in and paste its `# import-check:` line into `python -c` as root. A name is one of
    envs/'s, at submit, at the spool and again at prepare."""
    d, alice, bob, home = team
    marker = _marker_dir()
    myenv = _his(bob, "myenv/requirements.in",
                 f"# import-check: os; open('{marker}/ran-as-%d' % os.getuid(), 'w')\nsix\n").parent
    _his(bob, "myenv/requirements.lock", "")
    os.chmod(bob.pw.pw_dir, 0o755)  # readable by all: the name alone must stop it
    sneaky = "../" * 8 + str(myenv).lstrip("/")
    try:
        assert _refused(bob, {"command": ["true"], "env": {"name": sneaky}}) == [f"env.name: given {sneaky!r}; expected one of envs/: {KNOWN}"]
        assert _refused(bob, {"command": ["true"], "env": sneaky}) == [f"env: given {sneaky!r}; expected an env name: 'system' or one of envs/: {KNOWN}"]
        assert _refused(bob, {"command": ["true"], "env": "myenv"}) == [f"env: given 'myenv'; expected an env name: 'system' or one of envs/: {KNOWN}"]
        token = bob.run("token").stdout.strip()
        status, body = d.post("/jobs", token, {"command": ["true"], "env": {"name": sneaky, "python": "3.11"}})
        assert status == 422 and body["problems"] == [f"env.name: given {sneaky!r}; expected one of envs/: {KNOWN}"], body
        reason = _forge(bob, home, "forged12", {"command": ["true"], "env": {"name": sneaky}})
        assert f"env.name: given {sneaky!r}; expected one of envs/: {KNOWN}" in reason, reason
        # a record that got into the queue some other way meets the same rule when it is prepared
        from runner.exceptions import RunnerError
        from runner.prepare import env_request

        for env in ({"name": sneaky}, sneaky, {"name": "myenv"}):
            with pytest.raises(RunnerError, match=r"^env: given .*; expected 'system' or one of envs/: " + KNOWN):
                env_request(env, {})
        time.sleep(1)
        assert not list(marker.iterdir()) and not list((home / "envs").glob("*"))
        _alive(d, alice)
    finally:
        shutil.rmtree(marker, ignore_errors=True)
        os.chmod(bob.pw.pw_dir, 0o700)


def test_a_requirements_file_is_read_as_its_submitter_and_checked(team):
    """A requirements file is read by whoever submits (her CLI, or the HTTP helper that dropped to
    her): one she may not read is refused in one line that says so; its lines are checked as the
    list's are."""
    d, alice, bob, home = team
    secret = Path(alice.pw.pw_dir) / "secret.txt"
    token = bob.run("token").stdout.strip()
    for path in ("/etc/shadow", str(secret)):
        status, body = d.post("/jobs", token, {"command": ["true"], "env": {"requirements_file": path}})
        assert status == 422 and body["problems"] == [f"env.requirements_file: {path} is not readable by you"], body
        assert _refused(bob, {"command": ["true"], "env": {"requirements_file": path}}) == \
            [f"env.requirements_file: {path} is not readable by you"]
    f = _his(bob, "reqs.txt", "# pinned\nsix==1.16.0  # the one\n\n-e /home/rn_bob/evilpkg\n")
    line = f"env.requirements_file: line 4 of {f}: given '-e /home/rn_bob/evilpkg'; {SPECIFIER}"
    assert _refused(bob, {"command": ["true"], "env": {"requirements_file": str(f)}}) == [line]
    status, body = d.post("/jobs", token, {"command": ["true"], "env": {"requirements_file": str(f)}})
    assert status == 422 and body["problems"] == [line], body
    assert "alice's secret" not in json.dumps(body)
    _alive(d, alice)


def _probe_sdist(folder: Path, version: str, state: Path):
    """rnprobe-VERSION.tar.gz: its setup.py records who runs it and what it can reach, into the
    package it builds (so the job that imports it prints the report)."""
    setup = f'''import json, os, pathlib
r = {{"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups()}}
try:
    r["secret"] = open("/home/{ALICE}/secret.txt").read()
except OSError as e:
    r["secret"] = type(e).__name__
r["home"] = sorted(os.listdir("/home"))
try:
    r["root"] = sorted(os.listdir("/root"))
except OSError as e:
    r["root"] = type(e).__name__
for name, path in (("state", {str(state / "pwned")!r}), ("usr", "/usr/pwned")):
    try:
        open(path, "w").write("x")
        r[name] = "written"
    except OSError as e:
        r[name] = type(e).__name__
r["status"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff:", "NoNewPrivs:"))]
pathlib.Path("rnprobe", "_report.py").write_text("REPORT = " + repr(json.dumps(r)) + "\\n")
from setuptools import setup
setup(name="rnprobe", version="{version}", packages=["rnprobe"])
'''
    files = {"setup.py": setup, "rnprobe/__init__.py": "from ._report import REPORT\n",
             "PKG-INFO": f"Metadata-Version: 2.1\nName: rnprobe\nVersion: {version}\n"}
    with tarfile.open(folder / f"rnprobe-{version}.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"rnprobe-{version}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def site(world, users):
    """A root daemon whose site gives uv a local find-links folder (an admin's setting), with
    alice's 0600 secret in her 0700 home."""
    links = Path(tempfile.mkdtemp(prefix="rn-links-", dir="/var/tmp"))
    os.chmod(links, 0o755)
    try:
        with team_home(world, users, f"[envs]\nfind_links = {json.dumps(str(links))}\n") as (d, alice, bob, home):
            yield d, alice, bob, home, links
    finally:
        shutil.rmtree(links, ignore_errors=True)


def test_a_users_packages_are_built_as_the_build_user_in_the_sandbox(site):
    """A package bob asks for (a plain specifier; its sdist is on the site's index) runs its
    setup.py during the build: as the build user, never root, with no capabilities, without a view
    of /home or /root, unable to write the state folder or the system. The env is then root's,
    and his job runs in it as him."""
    from runner.envjail import build_person
    from runner.sandbox import bwrap_path

    d, alice, bob, home, links = site
    version = f"1.0.{time.time_ns()}"  # a new sdist each run: uv's cache never answers for it
    _probe_sdist(links, version, home)
    f = _his(bob, "probe.json", json.dumps({"command": ["python", "-c", "import rnprobe; print('REPORT', rnprobe.REPORT)"],
                                            "env": {"requirements": [f"rnprobe=={version}"], "name": "probe"}}))
    jid = bob.run("submit", f).stdout.strip().splitlines()[-1]
    job = bob.wait(jid, timeout=300)
    log = bob.logs(jid)
    assert job["state"] == "succeeded", log[-3000:]
    builder = build_person()
    sandboxed = bwrap_path() is not None and shutil.which("setpriv") is not None
    assert f"runner: building as {builder.name} (uid {builder.uid}) {'in bubblewrap' if sandboxed else 'WITHOUT'}" in log, log
    report = json.loads(next(line for line in log.splitlines() if line.startswith("REPORT "))[len("REPORT "):])
    assert (report["uid"], report["euid"]) == (builder.uid, builder.uid) and report["groups"] in ([], [builder.gid]), report
    assert report["status"] == ["0000000000000000", "1"] if sandboxed else report["status"][0] == "0000000000000000", report
    assert report["secret"] in ("FileNotFoundError", "PermissionError"), report  # never her text
    assert report["state"] != "written" and report["usr"] != "written" and not (home / "pwned").exists(), report
    if sandboxed:
        assert report["home"] == [] and report["root"] == [] and report["secret"] == "FileNotFoundError", report
    # the env is root's and nobody else may change it; it is his alone (keyed with his uid)
    env = home / "envs" / job["env_hash"]
    meta = json.loads((env / ".runner-env.json").read_text())
    assert meta["owner"] == bob.uid and meta["name"] == "probe"
    for root, dirs, files in os.walk(env):
        for n in dirs + files + ["."]:
            st = os.lstat(os.path.join(root, n))
            assert st.st_uid == 0 and (stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o022), os.path.join(root, n)
    made_from = os.path.realpath(env / "bin" / "python")
    assert not made_from.startswith("/root/"), made_from  # a Python every user can run
    assert job["user"] == BOB and d.proc.poll() is None
