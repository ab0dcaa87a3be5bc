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
