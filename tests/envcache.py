"""Framework envs shared across the test session's homes, as hard links (issue #30's CI budget).

Every test home starts empty, so each one that runs a model job built its framework env again:
about a minute each on 2 cores (uv links the packages from its cache, then compiles their bytecode),
some twenty times a session. A module marked `shared_envs` gets, in each new home, the complete
framework envs an earlier home of the session built (`cp -al`: a second or two, no disk); every home
gives back what it built when its daemon stops or the test ends. An env is keyed by its Python, lock
and platform alone (runner.envs.EnvRequest.key), so a linked one is exactly the env a build would
make; a user's own env (keyed by its owner) is never shared. Tests of env building itself (test_envs,
test_privsep_envs, the install) are not marked and build as before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

COMPLETE = ".runner-env.json"  # runner.envs.COMPLETE
CACHE = Path(tempfile.gettempdir()) / f"runner-test-envs-{os.getpid()}"
wanted = False  # set per test by conftest: whether its module is marked shared_envs


def _shareable(env: Path) -> bool:
    try:
        meta = json.loads((env / COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("owner") is None  # a framework env, not one user's inline requirements


def _link(env: Path, into: Path, prefix: str):
    """into/NAME: the env hard-linked (`cp -al`), whole or not at all (made under a hidden name)."""
    into.mkdir(parents=True, exist_ok=True)
    tmp = into / f"{prefix}{env.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    if subprocess.run(["cp", "-al", str(env), str(tmp)], capture_output=True).returncode == 0:
        os.rename(tmp, into / env.name)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def seed(home: Path):
    """Link every cached env into home/envs (where missing), when the running test wants it."""
    if not wanted or not CACHE.is_dir():
        return
    envs = Path(home) / "envs"
    for env in CACHE.iterdir():
        if env.name.startswith(".") or (envs / env.name).exists():
            continue
        _link(env, envs, ".seed-")


def harvest(home: Path):
    """Keep, as links, the complete framework envs that home built and the cache lacks."""
    envs = Path(home) / "envs"
    if not envs.is_dir():
        return
    for env in envs.iterdir():
        if env.name.startswith(".") or (CACHE / env.name).exists() or not _shareable(env):
            continue
        _link(env, CACHE, ".in-")


def clear():
    shutil.rmtree(CACHE, ignore_errors=True)
