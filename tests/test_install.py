"""The admin's install as docs/server.md writes it (issue #26): its install block run as written in a
scratch root with the system's Python, the daemon started as the unit's ExecStart says, a first job
of each of two real users; a CA bundle given only to pip reaching uv in the daemon's env builds;
`runner doctor` showing and trying the running daemon's own index settings, not its shell's."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK, ROOT, DaemonProc, Runner, free_port, wait_for
from test_users import ALICE, BOB, User, users, world  # noqa: F401

DOC = ROOT / "docs" / "server.md"
SCRIPT = ROOT / "scripts" / "uv-from-pip.sh"
as_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root and useradd (real users)")

# what tells uv (or pip) where packages are and which CAs to trust: none of it reaches a systemd unit
_TLS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _bare(env: dict, keep_tls: bool = False) -> dict:
    """`env` without uv's and pip's settings (and without the CA variables unless kept): a shell or a
    unit that was never told them. RUNNER_* of the test run go too."""
    return {k: v for k, v in env.items() if not k.startswith(("UV_", "PIP_", "RUNNER_")) and (keep_tls or k not in _TLS)}


def _doctor(home: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", "doctor"], env={**env, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=180)


def _trusted_bundle() -> str:
    """The CA bundle this machine's HTTPS clients trust (a lab's proxy CA included, where there is one)."""
    for p in (os.environ.get("SSL_CERT_FILE"), os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if p and os.path.isfile(p):
            return p
    pytest.skip("no CA bundle on this machine to give pip")


def _command_job(folder: Path, code: str, requirements=None) -> Path:
    spec = {"name": "first", "command": ["python", "-c", code]}
    if requirements:
        spec["env"] = {"requirements": requirements}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(spec))
    return folder / "job.json"


# -- the CA bundle that pip alone was given ------------------------------------------------------------

def test_a_ca_bundle_given_only_to_pip_reaches_uv_in_the_daemons_env_build(tmp_path):
    """pip trusts a lab CA through `cert` in its config; the daemon's environment (a unit's) has no CA
    variable at all. scripts/uv-from-pip.sh, run, prints `ca_bundle` for [envs]; sourced, it exports
    SSL_CERT_FILE; and the daemon's env build hands it to uv: uv itself names the file (it is not there
    yet), then, once it is, the build succeeds with it."""
    folder = Path(tempfile.mkdtemp(prefix="rn-ca-", dir="/var/tmp"))  # a build does not see /tmp, /home, /root
    os.chmod(folder, 0o755)
    bundle = folder / "lab-ca.pem"
    (tmp_path / "pip.conf").write_text(f"[global]\ncert = {bundle}\n")
    shell = {**_bare(os.environ), "PIP_CONFIG_FILE": str(tmp_path / "pip.conf"), "PY": sys.executable}
    home = tmp_path / "home"
    home.mkdir()
    d = None
    try:
        printed = subprocess.run(["bash", str(SCRIPT)], env=shell, capture_output=True, text=True, timeout=60)
        assert printed.returncode == 0 and printed.stderr == "", printed.stderr
        assert "\n[envs]\n" in printed.stdout and f'\nca_bundle = "{bundle}"\n' in printed.stdout, printed.stdout
        assert f'# Environment="SSL_CERT_FILE={bundle}"' in printed.stdout  # the unit's way, for a drop-in
        sourced = subprocess.run(["sh", "-c", f'. "{SCRIPT}"; echo "SSL_CERT_FILE=$SSL_CERT_FILE"'], env=shell,
                                 capture_output=True, text=True, timeout=60)
        assert sourced.stdout == f"SSL_CERT_FILE={bundle}\n", sourced.stdout + sourced.stderr

        (home / "config.toml").write_text(printed.stdout)  # as the install appends it to /etc/runner/config.toml
        unit_env = {**_bare(os.environ), "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
        d = DaemonProc(home, unit_env).start()
        runner = Runner(home)
        job = _command_job(tmp_path / "work", "import six; print('six', six.__version__)", ["six==1.16.0"])
        first = runner.wait_state(runner.submit(str(job)), timeout=300)
        log = runner.run("logs", first["id"]).stdout
        # uv's own words: the variable reached the uv process of the build (the file is not there yet)
        assert re.search(rf"SSL_CERT_FILE`?\.? .*{re.escape(str(bundle))}", log), log[-3000:]
        assert "uv could not use its CA bundle (SSL_CERT_FILE: [envs] ca_bundle or the daemon's unit)" in log, log[-3000:]
        assert (first["state"], first["reason"]) == ("failed", "env_build_failed"), first
        info = json.loads((home / "daemon.json").read_text())
        assert info["uv_settings"]["SSL_CERT_FILE"] == str(bundle) and "SSL_CERT_DIR" not in info["uv_settings"]
        r = _doctor(home, _bare(os.environ))
        assert r.returncode == 1 and (f"  - index: SSL_CERT_FILE (the daemon's CA bundle, [envs] ca_bundle) is {bundle}, "
                                      "which does not exist") in r.stdout, r.stdout

        shutil.copy(_trusted_bundle(), bundle)  # the lab's CA in place, as pip has it
        os.chmod(bundle, 0o644)
        d.stop()
        d = DaemonProc(home, unit_env).start()
        second = runner.wait_state(runner.submit(str(job)), timeout=300)
        log = runner.run("logs", second["id"]).stdout
        assert second["state"] == "succeeded", log[-3000:]
        assert "six 1.16.0" in log and str(bundle) not in log  # uv read it without a word
    finally:
        if d:
            d.stop()
        shutil.rmtree(folder, ignore_errors=True)


# -- doctor: the running daemon's settings, tried ------------------------------------------------------

def test_doctor_shows_and_tries_the_running_daemons_index_not_its_own_shells(tmp_path):
    """The daemon is told its index by its environment (a unit's Environment=), or by [envs]; doctor,
    run from a shell that has no uv variable at all, shows the daemon's, resolves a package with
    them, and exits 1 naming a bad index (its password hidden everywhere but root's 0600 copy)."""
    home = tmp_path / "home"
    home.mkdir()
    dead = free_port()
    bad = f"http://rn:s3cret@127.0.0.1:{dead}/simple"
    d = DaemonProc(home, {**_bare(os.environ, keep_tls=True), "UV_INDEX_URL": bad, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    try:
        shown = f"http://***@127.0.0.1:{dead}/simple"
        t0 = time.monotonic()
        r = _doctor(home, _bare(os.environ))
        took = time.monotonic() - t0
        assert r.returncode == 1, r.stdout
        line = next(x for x in r.stdout.splitlines() if x.startswith("uv settings"))
        assert f"UV_INDEX_URL={shown}" in line and line.endswith(f"(the daemon's (pid {d.proc.pid}))"), line
        problem = next(x for x in r.stdout.splitlines() if x.startswith("  - index: "))
        assert problem.startswith("  - index: uv cannot resolve packaging with the daemon's settings (") and f"UV_INDEX_URL={shown})" in problem, problem
        assert f"127.0.0.1:{dead}" in problem and "Connection refused" in problem, problem
        assert "index           FAILED" in r.stdout and "s3cret" not in r.stdout + r.stderr
        assert took < 60, took
        assert "s3cret" not in (home / "daemon.json").read_text()
        whole = home / "uv-settings.json"
        assert stat.S_IMODE(whole.stat().st_mode) == 0o600 and json.loads(whole.read_text())["uv_settings"]["UV_INDEX_URL"] == bad
    finally:
        d.stop()
    # the same from [envs], with a good index: doctor's shell has no CA and no index, the daemon has both
    (home / "config.toml").write_text('[envs]\nindex_url = "https://pypi.org/simple"\n')
    d = DaemonProc(home, {**_bare(os.environ, keep_tls=True), "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    try:
        r = _doctor(home, _bare(os.environ))
        assert "UV_INDEX_URL=https://pypi.org/simple" in r.stdout, r.stdout
        assert re.search(r"^index           ok: uv resolved packaging==\S+ with them in \d+\.\d s$", r.stdout, re.M), r.stdout
        assert "  - index: " not in r.stdout
    finally:
        d.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon builds users' envs as the build user")
def test_doctor_says_when_the_build_user_cannot_read_the_daemons_ca_bundle(tmp_path):
    """Root's resolve works with a 0600 bundle; the build user, who builds users' requirements, could
    not read it: doctor says so with the fix, and is content once it is readable."""
    folder = Path(tempfile.mkdtemp(prefix="rn-ca-", dir="/var/tmp"))
    os.chmod(folder, 0o755)
    bundle = folder / "lab-ca.pem"
    shutil.copy(_trusted_bundle(), bundle)
    os.chmod(bundle, 0o600)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'[envs]\nca_bundle = "{bundle}"\n')
    d = DaemonProc(home, {**_bare(os.environ), "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    try:
        r = _doctor(home, _bare(os.environ))
        assert re.search(r"^index           ok: ", r.stdout, re.M), r.stdout  # as root it works
        problem = next((x for x in r.stdout.splitlines() if x.startswith("  - index: ")), None)
        assert problem and problem.startswith(f"  - index: the daemon's CA bundle {bundle} cannot be read by the build user ") \
            and f"(chmod a+r {bundle}" in problem, r.stdout
        assert r.returncode == 1
        os.chmod(bundle, 0o644)
        r = _doctor(home, _bare(os.environ))
        assert "  - index: " not in r.stdout, r.stdout
    finally:
        d.stop()
        shutil.rmtree(folder, ignore_errors=True)


@as_root
def test_a_user_sees_the_daemons_index_with_its_password_hidden_and_doctor_does_not_try_it(world, users):  # noqa: F811
    """doctor run by a user: the daemon's settings as daemon.json shows them (a password in the unit's
    UV_INDEX_URL hidden); root's whole copy is not hers, so the index is not tried with a half URL."""
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chmod(home, 0o755)
    dead = free_port()
    d = DaemonProc(home, {**_bare(os.environ, keep_tls=True), "UV_INDEX_URL": f"http://rn:s3cret@127.0.0.1:{dead}/simple",
                          "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    try:
        alice = User(users[ALICE], world, home)
        r = alice.run("doctor", check=False)
        assert f"UV_INDEX_URL=http://***@127.0.0.1:{dead}/simple" in r.stdout and f"(the daemon's (pid {d.proc.pid}), credentials hidden)" in r.stdout, r.stdout
        assert "index           not tried: the daemon's credentials are hidden from you (run doctor as root)" in r.stdout, r.stdout
        assert "s3cret" not in r.stdout + r.stderr and "  - index: " not in r.stdout
    finally:
        d.stop()
        shutil.rmtree(home, ignore_errors=True)


def _wheel(folder: Path, name: str):
    """A wheel of a pure package `name` 1.0 with nothing in it."""
    import zipfile

    files = {f"{name}/__init__.py": "", f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in files) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as z:
        for n, text in {**files, f"{name}-1.0.dist-info/RECORD": record}.items():
            z.writestr(n, text)


def test_find_links_of_two_folders_reach_uv_as_two(tmp_path, monkeypatch):
    """[envs] find_links = [a, b]: uv finds what each folder holds (it splits UV_FIND_LINKS at commas)."""
    from runner.envs import compile_lock

    for folder, name in (("a", "rnlinka"), ("b", "rnlinkb")):
        (tmp_path / folder).mkdir()
        _wheel(tmp_path / folder, name)
    for var in [k for k in os.environ if k.startswith("UV_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("UV_NO_INDEX", "1")  # the two folders alone
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "cache"))
    lock = compile_lock("rnlinka\nrnlinkb\n", "3.11", {"find_links": [str(tmp_path / "a"), str(tmp_path / "b")]})
    assert "rnlinka==1.0" in lock and "rnlinkb==1.0" in lock, lock


# -- the install, as written ---------------------------------------------------------------------------

def install_block() -> str:
    """docs/server.md's install commands: its ```bash title="install"``` block."""
    m = re.search(r'```bash title="install"\n(.*?)\n```', DOC.read_text(), re.S)
    assert m, 'docs/server.md has no ```bash title="install"``` block'
    return m.group(1) + "\n"


def test_the_install_block_names_the_system_python_and_keeps_the_source_out_of_the_venv():
    block = install_block()
    venv_line = next(line for line in block.splitlines() if " -m venv " in line)
    made = shlex.split(venv_line, comments=True)
    assert made[0].startswith("/usr/bin/python3"), venv_line  # never `python3` as root's PATH finds it (pyenv)
    venv = Path(made[-1])
    src = Path(shlex.split(next(line for line in block.splitlines() if line.startswith("git clone")), comments=True)[-1])
    assert venv not in src.parents and src != venv, (venv, src)  # --clear empties the venv folder, never the source
    unit = (ROOT / "systemd" / "runner.service").read_text()
    assert re.search(rf"^ExecStart={re.escape(str(venv))}/bin/runner daemon ", unit, re.M), unit


@as_root
@pytest.mark.slow
def test_the_install_guide_works_as_written_for_two_users(users):  # noqa: F811
    """Every line of the install block, run by bash as written, with only its fixed paths moved into
    a scratch root: apt-get checks the packages are there (installs nothing), `git clone` copies this
    working tree, systemctl reloads nothing, and the daemon is started as the installed unit's
    ExecStart with a unit's environment (no CA, no uv, no pip variable). Then alice and bob, with the
    `runner` the guide links, each submit a first job that succeeds; alice's builds an env of her
    requirements with the index and CA the install took from pip."""
    scratch = Path(tempfile.mkdtemp(prefix="runner-install-", dir="/tmp"))
    os.chmod(scratch, 0o755)
    port = free_port()
    moved = {"/opt/runner": scratch / "opt/runner", "/etc/runner": scratch / "etc/runner", "/var/lib/runner": scratch / "var/lib/runner",
             "/usr/local/bin/runner": scratch / "usr/local/bin/runner", "/etc/systemd/system": scratch / "etc/systemd/system",
             "127.0.0.1:8765": f"127.0.0.1:{port}"}

    def here(text: str) -> str:
        for path, there in moved.items():
            text = text.replace(path, str(there))
        return text

    for folder in ("etc/systemd/system", "usr/local/bin", "opt"):  # there on every Debian
        (scratch / folder).mkdir(parents=True)
    config = scratch / "etc/runner/config.toml"
    lines = install_block().splitlines()
    start = lines.index("systemctl enable --now runner")
    stand_ins = f"""set -euo pipefail
apt-get() {{ [ "$1 $2" = "install -y" ] && shift 2 && dpkg -s "$@" >/dev/null; }}
git() {{ [ "$1" = clone ] || {{ command git "$@"; return; }}; mkdir -p "$3"
  (cd {ROOT} && command git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | tar -xf - -C "$3"; }}
systemctl() {{ [ "$1" = daemon-reload ]; }}
"""
    shell = {**{k: v for k, v in os.environ.items() if not k.startswith(("UV_", "RUNNER_"))},
             "PATH": f"{scratch / 'usr/local/bin'}:{os.environ['PATH']}", "RUNNER_SYSTEM_CONFIG": str(config)}
    daemon = None
    try:
        t0 = time.monotonic()
        r = subprocess.run(["bash", "-c", stand_ins + here("\n".join(lines[:start]))], env=shell, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        installed = time.monotonic() - t0
        venv_python = scratch / "opt/runner/venv/bin/python"
        assert os.path.realpath(venv_python).startswith("/usr/bin/python3"), os.path.realpath(venv_python)

        # systemctl enable --now runner: the unit's ExecStart, with a unit's environment
        unit = here((scratch / "etc/systemd/system/runner.service").read_text())
        argv = shlex.split(re.search(r"^ExecStart=(.+)$", unit, re.M).group(1))
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "RUNNER_SYSTEM_CONFIG": str(config)}
        env.update(dict(v.split("=", 1) for v in (shlex.split(m)[0] for m in re.findall(r"^Environment=(.+)$", unit, re.M))))
        state = scratch / "var/lib/runner"
        daemon = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(scratch / "daemon.log", "ab"),
                                  start_new_session=True)

        def up():
            assert daemon.poll() is None, (scratch / "daemon.log").read_text()[-3000:]
            try:
                return LOOPBACK.open(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
            except OSError:
                return False
        wait_for(up, 60, 0.2, "the daemon the unit starts")

        r = subprocess.run(["bash", "-c", stand_ins + here("\n".join(lines[start + 1:]))], env=shell, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr  # runner doctor: no problem at all
        assert f"http            served on 127.0.0.1:{port} by this daemon (pid {daemon.pid})" in r.stdout, r.stdout
        assert re.search(r"^index           ok: uv resolved packaging", r.stdout, re.M), r.stdout
        assert re.search(rf"^python          {re.escape(str(venv_python))}3?\n", r.stdout, re.M), r.stdout  # the venv of the system's Python

        # a first job of each user, with the runner the guide put on PATH
        jobs = {}
        for name, code, reqs in ((ALICE, "import six; print('first job of', __import__('getpass').getuser(), 'six', six.__version__)",
                                  ["six==1.16.0"]),
                                 (BOB, "import getpass; print('first job of', getpass.getuser())", None)):
            pw = users[name]
            job = _command_job(Path(pw.pw_dir) / "first", code, reqs)
            for p in (job.parent, job):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            user_env = {"HOME": pw.pw_dir, "PATH": f"{scratch / 'usr/local/bin'}:/usr/bin:/bin", "LANG": "C.UTF-8",
                        "RUNNER_SYSTEM_CONFIG": str(config)}

            def as_user(*args, pw=pw, user_env=user_env):
                r = subprocess.run(["runner", *args], env=user_env, cwd=pw.pw_dir, user=pw.pw_uid, group=pw.pw_gid,
                                   extra_groups=[], capture_output=True, text=True, timeout=120)
                assert r.returncode == 0, f"{pw.pw_name}: runner {' '.join(args)}: {r.stdout}{r.stderr}"
                return r.stdout
            jobs[name] = (as_user, as_user("submit", str(job)).strip().splitlines()[-1])
        for name, (as_user, jid) in jobs.items():
            job = wait_for(lambda: (lambda j: j if j["state"] in ("succeeded", "failed", "cancelled") else None)(
                json.loads(as_user("show", jid, "--json"))), 300, 0.5, f"{name}'s first job")
            log = as_user("logs", jid)
            assert job["state"] == "succeeded" and job["user"] == name, log[-3000:]
            assert f"first job of {name}" in log
        assert "six 1.16.0" in jobs[ALICE][0]("logs", jobs[ALICE][1])
        assert (state / "runner.db").stat().st_uid == 0
        print(f"install {installed:.0f} s, whole test {time.monotonic() - t0:.0f} s")
    finally:
        if daemon and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
