"""The Python an env is made from: ours for our version, else one uv or pyenv has (never a download);
for a root daemon, one the build user can run."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from .exceptions import EnvBuildError
from .uvenv import uv_binary, uv_environ

def base_python(version: Optional[str] = None, config: dict | None = None, where: str = "env.python") -> tuple[str, str]:
    """(interpreter, full version) an env is made from. A root daemon's envs are run by every user
    and users' envs are built by the build user, so there it is the first that the build user can
    run of: [envs] python, the interpreter find_python picks (ours for our version), then
    /usr/bin, /usr/local/bin and PATH's pythonX.Y. The daemon's own interpreter may live where
    users cannot go (/root/.pyenv)."""
    if os.geteuid() != 0:
        return find_python(version, where)
    from .envjail import build_person, runs_as

    who = build_person(config)
    want = version or ".".join(platform.python_version_tuple()[:2])
    minor = ".".join(want.split(".")[:2])
    if not re.fullmatch(r"3\.\d+(\.\d+)?", str(want)):
        raise EnvBuildError(f"{where}: given {version!r}; expected a Python version such as \"3.11\"")
    configured = (config or {}).get("python")
    candidates = list(configured) if isinstance(configured, list) else [configured] if configured else []
    try:
        candidates.append(find_python(version, where)[0])
    except EnvBuildError:
        pass
    candidates += [f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}", shutil.which(f"python{minor}")]
    tried = []
    for path in dict.fromkeys(p for p in candidates if p):
        v = runs_as(str(path), who)
        if v and (v == want or v.startswith(want + ".")):
            return str(path), v
        if os.path.exists(path):
            tried.append(str(path))
    raise EnvBuildError(f"{where}: no Python {want} that the build user {who.name} can run (tried {', '.join(tried) or 'nothing found'}); "
                        f"set [envs] python to one every user may run, e.g. /usr/bin/python{minor}")


def _pyenv_pythons(version: str) -> list[Path]:
    """pyenv's interpreters of that version, newest first (its shims are not interpreters: uv cannot query them)."""
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    found = []
    for root in filter(None, roots):
        for d in sorted(Path(root, "versions").glob(f"{version}*"), key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")], reverse=True):
            exe = d / "bin" / f"python{'.'.join(version.split('.')[:2])}"
            if exe.is_file() and os.access(exe, os.X_OK) and (d.name == version or d.name.startswith(version + ".")):
                found.append(exe)
    return found


def find_python(version: Optional[str], where: str = "python") -> tuple[str, str]:
    """(interpreter path, full version) for a requested Python version (default: ours): uv's
    interpreter discovery (uv-managed Pythons, then PATH without pyenv's shims), then pyenv's
    versions. Never downloads one."""
    ours = platform.python_version()
    if not version or ours == version or ours.startswith(version + "."):
        return sys.executable, ours
    if not re.fullmatch(r"3\.\d+(\.\d+)?", str(version)):
        raise EnvBuildError(f"{where}: given {version!r}; expected a Python version such as \"3.8\"")
    env = uv_environ()
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "pyenv" not in p or not p.rstrip("/").endswith("shims"))
    r = subprocess.run([uv_binary(), "python", "find", "--no-python-downloads", version], capture_output=True, text=True, env=env,
                       cwd="/")  # uv reads uv.toml / .python-version files in its folder and above it
    candidates = [r.stdout.strip()] if r.returncode == 0 and r.stdout.strip() else []
    candidates += [str(p) for p in _pyenv_pythons(version)]
    for path in candidates:
        v = subprocess.run([path, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True,
                           cwd="/").stdout.strip()  # never the caller's folder: `-c` imports from it first
        if v == version or v.startswith(version + "."):
            return path, v
    raise EnvBuildError(f"{where}: Python {version} is not on this machine (looked for uv-managed Pythons, on PATH and in pyenv); "
                        f"install it with `uv python install {version}` or `pyenv install {version}`, or your distribution's python{version} package")
