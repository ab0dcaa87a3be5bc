"""The config files as an admin writes them: a syntax error is one line naming the file, for every
command that reads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _run(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, capture_output=True, text=True, timeout=120)


def _env(tmp_path: Path, **more) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "UV_"))}
    return {**env, "PYTHONPATH": str(ROOT), "RUNNER_SYSTEM_CONFIG": str(tmp_path / "etc" / "config.toml"), **more}


def test_a_config_that_is_not_toml_is_one_line_naming_the_file_for_every_command(tmp_path):
    (tmp_path / "etc").mkdir()
    system = tmp_path / "etc" / "config.toml"
    home = tmp_path / "home"
    system.write_text(f'home = "{home}"\n[server]\nshare_logs = False\n')  # Python's spelling, not TOML's
    want = f"runner: {system}: not valid TOML: Invalid value (at line 3, column 14)"
    env = _env(tmp_path)  # users find the state folder through the system config's `home`
    for args in (("daemon", "--http", "none"), ("doctor",), ("ls",), ("submit", "--", "true"), ("gc", "--dry-run")):
        r = _run(env, *args)
        assert (r.returncode, r.stderr.strip(), r.stdout) == (1, want, ""), (args, r.stdout, r.stderr)
    # the state folder's own config, under a good system config
    system.write_text('[server]\nshare_logs = false\n')
    home.mkdir()
    (home / "config.toml").write_text('[daemon]\nmax_running = 2\n[daemon]\nhttp = "none"\n')
    env = _env(tmp_path, RUNNER_HOME=str(home))
    want = f"runner: {home / 'config.toml'}: not valid TOML: Cannot declare ('daemon',) twice (at line 3, column 8)"
    for args in (("daemon",), ("doctor",), ("gc", "--dry-run")):
        r = _run(env, *args)
        assert (r.returncode, r.stderr.strip()) == (1, want), (args, r.stdout, r.stderr)
    assert not (home / "runner.db").exists()  # the daemon stopped before it made anything


# -- a key runner does not read (a misspelling) stops the daemon and is a doctor problem, never a user's command --

def test_an_unknown_key_stops_the_daemon_naming_it_and_the_nearest_key_and_doctor_lists_each(tmp_path):
    (tmp_path / "etc").mkdir()
    system = tmp_path / "etc" / "config.toml"
    system.write_text('[server]\nshare_log = true\n')
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[daemon]\nmax_runing = 2\n[envs]\nindex-strategy = "unsafe-best-match"\n')
    env = _env(tmp_path, RUNNER_HOME=str(home))
    first = (f"runner: {system}: [server] share_log: not a key of [server]; did you mean share_logs? (known: share_logs, "
             "hostnames, url, max_body_bytes, max_connections, header_seconds, body_seconds, write_seconds, stalled_mb)")
    r = _run(env, "daemon", "--http", "none")
    assert (r.returncode, r.stderr.strip()) == (1, first + " (and 2 more: `runner doctor` lists each)"), r.stderr
    assert not (home / "runner.db").exists()
    r = _run(env, "doctor")
    listed = [line[len("  - config: "):] for line in r.stdout.splitlines() if line.startswith("  - config: ")]
    assert r.returncode == 1 and "config          3 unknown table(s) or key(s), below" in r.stdout, r.stdout
    assert listed[0] == first[len("runner: "):], listed
    assert listed[1].startswith(f"{home / 'config.toml'}: [daemon] max_runing: not a key of [daemon]; did you mean max_running?")
    assert listed[2].startswith(f"{home / 'config.toml'}: [envs] index-strategy: not a key of [envs]; did you mean index_strategy?")
    # a user's commands go on: the config is the admin's to fix, and the daemon says so
    jid = _run(env, "submit", "--", "true")
    assert jid.returncode == 0 and jid.stderr == "", jid.stderr
    r = _run(env, "ls")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # fixed: the daemon starts, doctor has no config problem
    system.write_text('[server]\nshare_logs = true\n')
    (home / "config.toml").write_text('[daemon]\nmax_running = 2\n[envs]\nindex_strategy = "unsafe-best-match"\n')
    r = _run(env, "doctor", "--json")
    assert __import__("json").loads(r.stdout)["config_problems"] == [], r.stdout


def test_a_table_key_or_home_in_the_wrong_place_is_said_with_where_it_belongs():
    from runner.config import problems

    assert problems("c.toml", {"deamon": {"http": "none"}})[0].startswith("c.toml: [deamon]: not a table runner reads; did you mean [daemon]?")
    assert problems("c.toml", {"max_running": 2}) == [
        "c.toml: max_running: not a top-level key; it belongs inside [daemon] (a key above the first [table] is top-level)"]
    assert problems("/etc/runner/config.toml", {"home": "/var/lib/runner"}) == []
    assert "cannot move the state folder" in problems("state/config.toml", {"home": "/x"}, top_keys=())[0]
    assert problems("c.toml", {"scheduler": {"shares": {"anyone": 2}}, "gpus": {"static": [{"name": "A", "odd": 1}]}}) == []


def test_every_documented_key_is_known_and_every_known_key_is_read():
    import re
    import tomllib

    from runner.config import KEYS, problems
    from runner.envs import _CONFIG_TO_UV

    doc = (ROOT / "docs" / "server.md").read_text()
    install = re.search(r"cat > /etc/runner/config.toml <<'TOML'\n(.*?)TOML\n", doc, re.S).group(1)
    blocks = [(p.name, b) for p in [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
              for b in re.findall(r"```toml\n(.*?)```", p.read_text(), re.S)]
    configs = [(name, tomllib.loads(b)) for name, b in blocks + [("install", install)]]
    configs = [(name, c) for name, c in configs if set(c) <= set(KEYS) | {"home"}]  # not registry.toml tables
    assert {"server.md", "slurm.md", "mlflow.md", "install"} <= {name for name, _ in configs}
    for name, c in configs:
        assert problems(name, c) == [], c
    assert set(_CONFIG_TO_UV) <= set(KEYS["envs"])
    source = "\n".join(p.read_text() for p in (ROOT / "runner").rglob("*.py") if p.name != "config.py")
    unread = [f"[{t}] {k}" for t, keys in KEYS.items() for k in keys if not re.search(rf"[\"']{k}[\"']", source)]
    assert unread == [], "listed as known but read nowhere: " + ", ".join(unread)


def _keys_read(tree) -> set[tuple[str, str]]:
    """(table, key) of each `config.get("T")...get("k")`, of each `v.get("k")` where `v = ...config.get("T")`,
    and of each key a `for` loop over a literal tuple hands to `v.get(...)`, in one module."""
    import ast

    def table_of(node):  # "T" when node is config.get("T", ...) (also through `... or {}`)
        if isinstance(node, ast.BoolOp):
            node = node.values[0]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            owner = node.func.value
            if (isinstance(owner, ast.Name) and owner.id == "config") or (isinstance(owner, ast.Attribute) and owner.attr == "config"):
                return node.args[0].value
        return None

    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = node.value.body if isinstance(node.value, ast.IfExp) else node.value
            t = table_of(value)
            if t:
                bound[node.targets[0].id] = t
    out = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args):
            continue
        arg, owner = node.args[0], node.func.value
        table = table_of(owner) or (bound.get(owner.id) if isinstance(owner, ast.Name) else None)
        if table and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            out.add((table, arg.value))
    for loop in ast.walk(tree):
        if not (isinstance(loop, ast.For) and isinstance(loop.iter, ast.Tuple)):
            continue
        names = [loop.target.id] if isinstance(loop.target, ast.Name) else [getattr(e, "id", None) for e in loop.target.elts]
        for node in ast.walk(loop):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in names
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in bound):
                i = names.index(node.args[0].id)
                for e in loop.iter.elts:
                    key = e if len(names) == 1 else (e.elts[i] if isinstance(e, ast.Tuple) else None)
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        out.add((bound[node.func.value.id], key.value))
    return out


def test_every_key_the_code_reads_is_a_known_key():
    """A key added to the code but not to runner.config.KEYS would stop every daemon whose config sets it."""
    import ast

    from runner.config import KEYS
    from runner.envs import _CONFIG_TO_UV

    read = set()
    for path in (ROOT / "runner").rglob("*.py"):
        if path.name != "config.py":
            read |= _keys_read(ast.parse(path.read_text()))
    read |= {("envs", k) for k in _CONFIG_TO_UV}
    assert {("backend", "partition"), ("jobs", "min_free_mb"), ("scheduler", "preempt_by"), ("server", "url")} <= read  # it finds them
    unknown = sorted(f"[{t}] {k}" for t, k in read if k not in KEYS.get(t, ()))
    assert unknown == [], "read by the code but not in runner.config.KEYS: " + ", ".join(unknown)
