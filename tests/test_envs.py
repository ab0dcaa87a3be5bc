"""Envs built for real with uv: keyed by the lock, built once, never half-built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wait_for
from runner.envs import COMPLETE, EnvManager, EnvRequest, compile_lock, find_python, inline_request, normalise_lock
from runner.store import Store

SMALL = ["six==1.16.0", "packaging"]


def test_key_is_the_lock_content_not_a_name():
    a = EnvRequest(name="a", lock="six==1.16.0\n    --hash=sha256:aa\n", python="/p", python_version="3.11.7")
    b = EnvRequest(name="b", lock="# a comment\nsix==1.16.0 \\\n    --hash=sha256:aa\n", python="/q", python_version="3.11.7")
    c = EnvRequest(name="a", lock="six==1.15.0\n", python="/p", python_version="3.11.7")
    d = EnvRequest(name="a", lock="six==1.16.0\n    --hash=sha256:aa\n", python="/p", python_version="3.12.1")
    renamed = EnvRequest(name="something-else", lock=a.lock, python="/elsewhere/python", python_version="3.11.7")
    commented = EnvRequest(name="a", lock="# pinned by uv\n\nsix==1.16.0   # the one we need\n    --hash=sha256:aa\n\n",
                           python="/p", python_version="3.11.7")
    assert renamed.key == a.key  # neither the env's name nor the interpreter's path is in the key
    assert commented.key == a.key  # comments and blank lines do not change what is installed
    assert a.key != c.key and a.key != d.key  # another version of a package, another Python: another env
    assert a.key != b.key or normalise_lock(a.lock) == normalise_lock(b.lock)


def test_build_reuse_and_listing(tmp_path):
    store = Store(tmp_path / "runner.db")
    mgr = EnvManager(tmp_path / "envs", store)
    req = inline_request(SMALL)
    t0 = time.time()
    path = mgr.ensure(req)
    assert (path / COMPLETE).exists()
    r = subprocess.run([str(path / "bin" / "python"), "-c", "import six; print(six.__version__)"], capture_output=True, text=True)
    assert r.stdout.strip() == "1.16.0"
    assert list(path.rglob("six*.pyc")), "built with --compile-bytecode"
    t1 = time.time()
    assert mgr.ensure(req) == path and time.time() - t1 < 0.5  # a lookup, no uv call
    assert [b["ok"] for b in store.env_builds()] == [1]
    rows = mgr.listing()
    assert rows[0]["hash"] == req.key and rows[0]["size"] > 0 and rows[0]["build_seconds"] <= t1 - t0 + 1
    changed = inline_request(["six==1.15.0", "packaging"])
    assert changed.key != req.key


def test_conflicting_requirements_fail_the_job(runner, daemon, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"command": ["python", "-c", "print(1)"], "env": {"requirements": ["six==1.16.0", "six==1.15.0"]}}))
    job = runner.wait_state(runner.submit(spec), timeout=120)
    assert (job["state"], job["reason"]) == ("failed", "env_build_failed")
    assert "six" in job["log_tail"] and ("unsatisfiable" in job["log_tail"] or "conflict" in job["log_tail"].lower())
    # the note everyone sees carries uv's cause in its one line, not a line cut at its colon
    assert job["note"].startswith("cannot resolve the requirements: No solution found when resolving dependencies: ")
    assert "six==1.15.0" in job["note"] and "\n" not in job["note"], job["note"]
    ok = runner.wait_state(runner.submit("--", "true"))
    assert ok["state"] == "succeeded"  # the daemon goes on


def test_an_env_that_cannot_be_fetched_says_why_in_the_jobs_note_without_the_index_password(home, runner, tmp_path):
    from conftest import DaemonProc, free_port
    from runner.envs import uv_cause

    port = free_port()  # nothing listens: uv cannot fetch the named env's packages from this "mirror"
    (home / "config.toml").write_text(f'[envs]\nindex_url = "http://lab:s3cret@127.0.0.1:{port}/simple"\n')
    d = DaemonProc(home, {**runner.env, "UV_HTTP_RETRIES": "0"}, http=False).start()
    try:
        job = runner.wait_state(runner.submit("--env", "base", "--", "true"), timeout=120)
    finally:
        d.stop()
    assert (job["state"], job["reason"]) == ("failed", "env_build_failed"), job
    note = job["note"]
    assert note.startswith("env base: uv pip failed (exit 2): ") and f"127.0.0.1:{port}" in note, note
    assert "\n" not in note and "s3cret" not in note and len(note) < 400, note
    # the credentials of a URL uv quotes whole are hidden too, and a long cause is cut
    said = "Resolved 3 packages\nerror: Failed to fetch\n  cause: https://lab:s3cret@mirror/simple/six/\n  cause: refused\n"
    assert uv_cause(said) == "Failed to fetch: https://***@mirror/simple/six/: refused"
    assert uv_cause("x" * 500).endswith("...") and len(uv_cause("x" * 500)) == 300


def test_jobs_that_need_one_new_env_build_it_once(runner, daemon, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"command": ["python", "-c", "import six, packaging; print('six', six.__version__)"],
                                "env": {"requirements": SMALL, "name": "small"}}))
    ids = [runner.submit(spec) for _ in range(3)]
    jobs = [runner.wait_state(i, timeout=180) for i in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 3
    assert len({j["env_hash"] for j in jobs}) == 1
    builds = daemon.get("/envs")[1]["builds"]
    assert [b["hash"] for b in builds if b["ok"]] == [jobs[0]["env_hash"]]
    assert "six 1.16.0" in runner.run("logs", ids[0]).stdout
    envs = runner.json("envs", "ls")
    assert envs[0]["name"] == "small" and envs[0]["jobs"] == 3


def test_killed_build_leaves_nothing_that_looks_finished(tmp_path):
    root = tmp_path / "envs"
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from runner.envs import EnvManager, inline_request\n"
            "EnvManager(%r).ensure(inline_request(['six==1.16.0', 'packaging', 'idna', 'attrs']))\n") % (str(ROOT), str(root))
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    wait_for(lambda: root.exists() and any(c.name.startswith(".build-") for c in root.iterdir()), 60, 0.01, "a build to start")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    mgr = EnvManager(root)
    assert not any((c / COMPLETE).exists() for c in root.iterdir())
    req = inline_request(["six==1.16.0", "packaging", "idna", "attrs"])
    path = mgr.ensure(req)
    assert mgr.ready(req.key) and not [c for c in root.iterdir() if c.name.startswith(".build-")]
    assert subprocess.run([str(path / "bin" / "python"), "-c", "import attrs, idna"]).returncode == 0


def test_named_env_base_is_locked_and_builds(runner, daemon):
    lock = (ROOT / "envs" / "base" / "requirements.lock").read_text()
    assert "pyyaml==" in lock and "--hash=sha256:" in lock
    job = runner.wait_state(runner.submit("--env", "base", "--", "python", "-c", "import yaml, sys; print(sys.prefix)"), timeout=180)
    assert job["state"] == "succeeded" and job["env"] == "base"
    assert runner.run("logs", job["id"]).stdout.strip().endswith(job["env_hash"])


def test_envs_rm_and_gc(runner, daemon, home, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"command": ["python", "-c", "import six"], "env": {"requirements": ["six==1.16.0"], "name": "gc-me"}}))
    job = runner.wait_state(runner.submit(spec), timeout=180)
    key = job["env_hash"]
    assert [e["hash"] for e in runner.json("envs", "ls")] == [key]
    assert runner.json("envs", "gc", "--days", "1") == []  # used just now: kept
    r = runner.run("envs", "rm", key[:6])
    assert key in r.stdout and not (home / "envs" / key).exists()
    runner.wait_state(runner.submit(spec), timeout=180)  # built again on demand
    import sqlite3

    sqlite3.connect(home / "runner.db").execute("UPDATE envs SET last_used = 0").connection.commit()
    removed = runner.json("envs", "gc", "--days", "1")
    assert [e["hash"] for e in removed] == [key] and runner.json("envs", "ls") == []


def test_gc_and_rm_keep_an_env_that_a_waiting_job_will_use(runner, daemon, home, tmp_path):
    # a job records its env only once it runs: until then its spec says which env it will use
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"command": ["python", "-c", "import six"], "env": {"requirements": ["six==1.16.0"], "name": "keep-me"}}))
    key = runner.wait_state(runner.submit(spec), timeout=180)["env_hash"]
    import sqlite3

    sqlite3.connect(home / "runner.db").execute("UPDATE envs SET last_used = 0").connection.commit()
    blocker = runner.submit("--", "sleep", "60")
    runner.wait_state(blocker, "running")
    waiting = runner.submit("--after", blocker, spec)  # queued until the blocker ends
    assert runner.show(waiting)["state"] == "queued"
    assert runner.json("envs", "gc", "--days", "1") == []  # unused for days, but a queued job needs it
    r = runner.run("envs", "rm", key[:8], check=False)
    assert r.returncode != 0 and "waits for it" in r.stderr and (home / "envs" / key).exists()
    runner.run("cancel", waiting)
    runner.wait_state(waiting)
    assert [e["hash"] for e in runner.json("envs", "gc", "--days", "1")] == [key]  # nobody waits now
    runner.run("cancel", blocker)


def daemons_own(requirements: list[str]) -> EnvRequest:
    """An env the daemon builds itself, as it does a packaged or registry lock (no owner)."""
    py, ver = find_python(None)
    return EnvRequest(name="admin", lock=compile_lock("\n".join(requirements) + "\n", ver, python=py), python=py, python_version=ver)


def test_a_second_env_shares_the_bytecode_of_the_nearest_one(tmp_path):
    # envs the daemon builds itself share bytecode; one built from a user's requirements lends none
    store = Store(tmp_path / "runner.db")
    mgr = EnvManager(tmp_path / "envs", store)
    users = mgr.ensure(inline_request(["six==1.16.0", "packaging", "idna"]))
    first = mgr.ensure(daemons_own(SMALL))
    assert mgr.nearest(daemons_own(["six==1.16.0", "packaging", "idna"])) == first != users
    lines = []
    second = mgr.ensure(daemons_own(["six==1.16.0", "packaging", "idna"]), log=lines.append)
    assert second != first
    sp1, sp2 = (next(p.glob("lib/python*/site-packages")) for p in (first, second))
    shared = next(sp2.glob("packaging/__pycache__/version.*.pyc"))
    assert shared.stat().st_ino == (sp1 / "packaging" / "__pycache__" / shared.name).stat().st_ino  # one file for both envs
    assert any("bytecode of" in line and "shared with env" in line for line in lines), lines
    # every module of the new env has its bytecode: the shared ones and the new package's own
    for py in [p for p in sp2.rglob("*.py") if "__pycache__" not in p.parts]:
        assert any((py.parent / "__pycache__").glob(py.stem + ".*.pyc")), py
    assert list(sp2.glob("idna/__pycache__/core.*.pyc"))
    # and Python takes it as valid: importing writes nothing and reads the shared file
    r = subprocess.run([str(second / "bin" / "python"), "-v", "-c", "import packaging.version, idna"], capture_output=True, text=True)
    assert r.returncode == 0
    assert f"matches {sp2 / 'packaging' / 'version.py'}" in r.stderr  # "# code object from ... .pyc matches ...": no recompile


@pytest.mark.parametrize("text, ok", [
    ("numpy", True), ("numpy>=1.26", True), ("numpy==1.26.*", True), ("torch==2.14.1+cpu", True), ("a_b.c-d~=1.0", True),
    ("requests[socks,security] >=2.0, <3", True), ("packaging (>=20)", True),
    ("six; python_version < '3.12' and sys_platform == \"linux\"", True),
    ("pkg @ file:///home/bob/evilpkg", False), ("pkg @ https://host/pkg.whl", False), ("https://host/pkg.whl", False),
    ("git+https://host/repo.git", False), ("./pkg", False), ("/abs/pkg", False), ("~/pkg", False), ("pkg.tar.gz/", False),
    ("-r reqs.txt", False), ("-e .", False), ("-c constraints.txt", False), ("--index-url http://h/simple", False),
    ("six --index-url http://h/simple", False), ("six\n-e /x", False), ("six \\", False), ("six # -e", False),
    ("six; os.system('x')", False), ("six; python_version < '3' --hash=sha256:aa", False), ("", False), (" ", False),
])
def test_inline_requirements_are_package_specifiers(text, ok):
    from runner.envs import SPECIFIER_EXPECTED, requirement_problem

    assert requirement_problem(text) == (None if ok else SPECIFIER_EXPECTED)


def test_a_site_may_allow_requirement_urls_but_never_paths_or_options():
    from runner.exceptions import SpecError
    from runner.spec import parse_spec

    site = {"envs": {"allow_requirement_urls": True}}
    spec = {"command": ["true"], "env": {"requirements": ["pkg @ https://host/pkg-1.0-py3-none-any.whl"]}}
    with pytest.raises(SpecError, match=r"^env.requirements.0: given 'pkg @ https://host/pkg-1.0-py3-none-any.whl'; expected"):
        parse_spec(spec)
    assert parse_spec(spec, site).env.requirements == spec["env"]["requirements"]
    for bad in ("pkg @ file:///home/bob/pkg", "-e /home/bob/pkg", "pkg --index-url https://host/simple"):
        with pytest.raises(SpecError):
            parse_spec({"command": ["true"], "env": {"requirements": [bad]}}, site)


@pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon's choice (its envs are run by every user)")
def test_envs_are_made_from_a_python_every_user_can_run():
    from runner.envjail import build_person
    from runner.envs import EnvBuildError, base_python

    who = build_person()
    path, version = base_python()
    assert version.rsplit(".", 1)[0] == "%d.%d" % sys.version_info[:2]
    r = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, user=who.uid, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == str(sys.version_info[:2])
    with pytest.raises(EnvBuildError) as e:
        base_python("3.99")
    assert str(e.value) == (f"env.python: no Python 3.99 that the build user {who.name} can run (tried nothing found); "
                            "set [envs] python to one every user may run, e.g. /usr/bin/python3.99")
