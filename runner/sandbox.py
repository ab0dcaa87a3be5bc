"""What a job runs inside: a scrubbed environment, resource limits and, where bubblewrap is
available, a read-only view of the system with only the job's own folders writable and, if the
spec says `network: false`, no network at all.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

# Variables a job inherits from the daemon's environment, by name; everything else is dropped.
PASSTHROUGH = ("LANG", "LC_ALL", "TZ", "TERM")

# The spec's resources -> the rlimit applied in the child before exec.
_RLIMITS = {
    "memory_gb": ("RLIMIT_AS", lambda v: int(v * 1024**3)),
    "max_open_files": ("RLIMIT_NOFILE", int),
    "max_processes": ("RLIMIT_NPROC", int),
    "cpu_seconds": ("RLIMIT_CPU", int),
}


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    """The bubblewrap binary if it is installed and can create a sandbox here, else None."""
    if os.environ.get("RUNNER_NO_BWRAP"):
        return None
    path = shutil.which("bwrap")
    if not path:
        return None
    try:
        ok = subprocess.run([path, "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-pid", "--unshare-net", "true"],
                            capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return path if ok else None


def rlimits(resources: dict) -> dict:
    """{RLIMIT_NAME: value} from the spec's resources."""
    out = {}
    for key, (name, conv) in _RLIMITS.items():
        if resources.get(key) is not None:
            out[name] = conv(resources[key])
    return out


def job_environment(job_dir: Path, path_dirs: list[str], extra: dict, user: str, cache_dir: Path) -> dict:
    """The child's environment, built from nothing: what the runner sets, then what the spec sets."""
    env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    home = job_dir / "home"  # made by the shim as the job's user (the daemon writes nothing in her folder)
    tmp = job_dir / "tmp"
    env.update({
        "PATH": os.pathsep.join([*path_dirs, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "USER": user,
        "TMPDIR": str(tmp),
        "PYTHONUNBUFFERED": "1",
        "XDG_CACHE_HOME": str(cache_dir),
        "RUNNER_JOB_DIR": str(job_dir),
    })
    env.update(extra)
    return env


def wrap(argv: list[str], job_dir: Path, writable: list[Path], network: bool, cwd: Path,
         protect: list[Path] = ()) -> tuple[list[str], bool]:
    """argv run under bubblewrap when it is available: returns (argv, sandboxed).

    `protect` (runner's state folder) stays read-only even when a writable folder contains it
    (a workdir above it); the job's own folders inside it are then bound writable again.
    """
    bwrap = bwrap_path()
    if not bwrap:
        return argv, False
    # /dev is the host's (the GPUs' device files), but /dev/shm is the job's own: the host's is
    # shared by every user, and what a job leaves there would outlive it.
    args = [bwrap, "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if not network:
        args.append("--unshare-net")
    seen = set()
    for p in [job_dir, *writable]:
        p = str(Path(p).resolve())
        if p not in seen and os.path.isdir(p):
            seen.add(p)
            args += ["--bind", p, p]
    for q in protect:
        q = str(Path(q).resolve())
        if any(q.startswith(p + "/") for p in seen) and os.path.isdir(q):
            args += ["--ro-bind", q, q]
            args += [a for p in seen if p.startswith(q + "/") for a in ("--bind", p, p)]
    args += ["--chdir", str(cwd), "--"]
    return args + list(argv), True


def report() -> dict:
    """What isolation this machine gives jobs: for `runner doctor`."""
    bwrap = shutil.which("bwrap")
    userns = Path("/proc/sys/kernel/unprivileged_userns_clone")
    return {
        "bubblewrap": bwrap or None,
        "bubblewrap_works": bwrap_path() is not None,
        "user_namespaces": (userns.read_text().strip() == "1") if userns.exists() else os.path.exists("/proc/self/ns/user"),
        "isolation": "bubblewrap: read-only system, private pid/ipc namespaces and /dev/shm, network cut when asked"
        if bwrap_path() else "process group + scrubbed env + rlimits only (install bubblewrap for a read-only system and network:false)",
    }
