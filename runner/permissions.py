"""`runner doctor`'s audit of a state folder: who owns each part and who may write it.

A team server is safe only if the daemon's folders are the daemon's, each job's folder and log
are its user's, and secrets and tokens are readable by their owner alone. Each finding names the
path, what is wrong, and the command that fixes it.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def audit(home) -> list[str]:
    """Problems found (empty when all is as it should be)."""
    out: list[str] = []
    try:
        owner = os.stat(home.root).st_uid
    except FileNotFoundError:
        import os as _os

        from . import defaults

        if not _os.environ.get("RUNNER_HOME") and not defaults.system_config().get("home"):
            return [f"{home.root}: does not exist: RUNNER_HOME is not set and no {defaults.SYSTEM_CONFIG} names a home, so this is "
                    "your personal default; set RUNNER_HOME to the team daemon's state folder (or start a daemon of your own once)"]
        return [f"{home.root}: does not exist (start the daemon once: it makes the folders)"]

    def check(path: Path, mode: int | None = None, uid: int | None = owner, no_write_by_others: bool = True, label: str = ""):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except PermissionError:
            out.append(f"{path}: cannot be inspected by {_name(os.geteuid())} (run `sudo runner doctor`)")
            return
        m = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            out.append(f"{path}: is a symbolic link; runner's folders must be real (remove it and restart the daemon)")
            return
        if uid is not None and st.st_uid != uid:
            out.append(f"{path}: owned by {_name(st.st_uid)}, expected {_name(uid)}{label} (fix: chown {_name(uid)} {path})")
        if mode is not None and m != mode:
            out.append(f"{path}: mode {m:04o}, expected {mode:04o}{label} (fix: chmod {mode:04o} {path})")
        elif mode is None and no_write_by_others and m & 0o022:
            out.append(f"{path}: writable by group or others (mode {m:04o}) (fix: chmod go-w {path})")

    check(home.root)
    check(home.spool, 0o1777, label=": every user drops files there, only the owner may move them")
    check(home.taking, 0o700)
    check(home.quarantine)
    check(home.secrets, 0o700, label=": env_vars values")
    for p in sorted(home.secrets.glob("*")) if os.access(home.secrets, os.R_OK) else []:
        check(p, 0o600)
    check(home.tokens, 0o711, label=": each user reaches her own token only")
    for p in sorted(home.tokens.glob("*")) if os.access(home.tokens, os.R_OK) else []:
        if p.name.isdigit():
            check(p, 0o600, uid=int(p.name), label=f": the token of {_name(int(p.name))}")
    for p in (home.db, home.db.with_name("runner.db-wal"), home.db.with_name("runner.db-shm")):
        check(p, label=": the store")
    if (home.root / "web.key").exists():
        check(home.root / "web.key", 0o600, label=": the key that signs dashboard sessions")
    for p in (home.envs, home.repos, home.jobs, home.run, home.cache):
        check(p)
    jobs = {}
    try:
        from .store.operate import job_uids

        jobs = job_uids(home.db)
    except Exception:  # no store yet, or not readable: the checks above say so
        pass
    share = bool(home.config.get("server", {}).get("share_logs"))
    is_root_daemon = owner == 0
    for job_id, uid in jobs.items():
        if not is_root_daemon and uid != owner:
            continue
        d = home.job_dir(job_id)
        if d.exists():
            check(d, (0o755 if share else 0o700) if uid != 0 or not is_root_daemon else None, uid=uid if is_root_daemon else owner,
                  no_write_by_others=True, label=f": job {job_id}'s folder")
        r = home.run_dir(job_id)
        if r.exists():
            check(r, 0o711, label=f": job {job_id}'s run folder (the daemon's)")
            check(r / "launch.json", 0o600, label=": holds the job's env_vars values")
            check(r / "output.log", 0o644 if share else 0o600, uid=uid if is_root_daemon else owner, label=f": job {job_id}'s log")
    if home.cache.exists() and os.access(home.cache, os.R_OK):
        for p in sorted(home.cache.iterdir()):
            try:
                uid = pwd.getpwnam(p.name).pw_uid
            except KeyError:
                continue
            check(p, 0o700, uid=uid if is_root_daemon else owner, label=f": {p.name}'s cache")
    return out


def python_for_everyone(executable: str | None = None) -> str | None:
    """A problem, with its fix, when the Python the daemon runs on (and builds envs from), by default
    this process's, is not one every user may run: jobs of `env: system` and every env's
    interpreter would fail to start for them (a venv made from root's pyenv or conda)."""
    import glob
    import re
    import sys

    from .identity import Person, may_access

    nobody = Person(65534, 65534, (65534,), "nobody", "/nonexistent")
    executable = executable or sys.executable
    real = os.path.realpath(executable)
    try:
        if may_access(real, nobody, "r") and os.stat(real).st_mode & 0o001:
            return None
    except OSError:  # gone, or hidden from the one asking: nobody else can run it either
        pass
    closed = next((str(p) for p in reversed(Path(real).parents) if not may_access(p, nobody, "r")), None)
    venv = Path(executable).parent.parent
    version = re.search(r"python(\d+\.\d+)", Path(real).name)
    system = [p for p in sorted(glob.glob(f"/usr/bin/python{version.group(1) if version else '3'}*"))
              if re.fullmatch(r"python\d+\.\d+", Path(p).name) and may_access(p, nobody, "r")]
    python = system[0] if system else "/usr/bin/python3"
    fix = (f"make {venv} again from the system's Python ({python} -m venv --clear {venv}; --clear empties the folder, "
           f"so keep runner's source outside it), reinstall runner into it and restart the daemon (docs/server.md)"
           if (venv / "pyvenv.cfg").exists() else f"run runner with the system's Python ({python}; docs/server.md)")
    return (f"{executable} (really {real}) cannot be run by other users"
            + (f" ({closed} is closed to them)" if closed else "") + f": their jobs cannot start; {fix}")


def daemon_info(home) -> dict:
    """What the running daemon said of itself at start (daemon.json): pid, uid, HTTP bind."""
    import json

    try:
        return json.loads((home.root / "daemon.json").read_text())
    except (OSError, ValueError):
        return {}
