"""The layout of $RUNNER_HOME and the site config file in it."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from . import defaults


class Home:
    """Paths under the state folder. Creating it is idempotent."""

    def __init__(self, root: str | Path | None = None):
        self.root = (Path(root) if root else defaults.runner_home()).resolve()
        self.spool = self.root / "spool"
        self.quarantine = self.spool / "quarantine"
        self.taking = self.spool / ".taking"  # the daemon's own: a spool file moves here while it is read
        self.secrets = self.root / "secrets"  # the daemon's own: env_vars values, one file per job
        self.run = self.root / "run"  # the daemon's own: one folder per job for the shim's files and the log
        self.tokens = self.root / "tokens"  # one file per user (named by uid), readable by that user only
        self.jobs = self.root / "jobs"
        self.envs = self.root / "envs"
        self.repos = self.root / "repos"
        self.cache = self.root / "cache"
        self.db = self.root / "runner.db"
        self.pidfile = self.root / "daemon.pid"
        self.config_file = self.root / "config.toml"
        self.registry_file = self.root / "registry.toml"

    def ensure(self) -> "Home":
        """Create the folders; the spool is writable by every user (sticky, like /tmp)."""
        for p in (self.root, self.jobs, self.envs, self.repos, self.cache, self.quarantine, self.run):
            try:
                p.mkdir(parents=True, exist_ok=True)
            except PermissionError:
                pass  # a teammate's CLI: the daemon's user makes these
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            from .exceptions import RunnerError

            raise RunnerError(f"{self.root} is not set up for you (no spool/): start the daemon first, "
                              "or set RUNNER_HOME (docs/server.md)") from None
        try:
            os.chmod(self.spool, 0o1777)
        except PermissionError:
            pass
        try:
            (self.spool / ".tmp").mkdir(exist_ok=True)
        except PermissionError:
            pass
        try:
            os.chmod(self.spool / ".tmp", 0o1777)
        except PermissionError:
            pass
        return self

    def job_dir(self, job_id: str) -> Path:
        """The folder of one job, its submitter's: what the job writes (checkpoints, home, tmp, out)."""
        return self.jobs / job_id

    def run_dir(self, job_id: str) -> Path:
        """The daemon's folder of one job: launch.json, child.json, exit.json, watch.json, output.log.

        Apart from the job's own folder so that nothing the job (or its user) writes can change
        what the daemon reads about it or where the daemon writes."""
        return self.run / job_id

    def user_cache(self, name: str) -> Path:
        """The cache a job of this user may write (XDG_CACHE_HOME): one per user, never shared."""
        return self.cache / name

    @cached_property
    def config(self) -> dict:
        """The settings: the system config (/etc/runner/config.toml) with $RUNNER_HOME/config.toml over it, table by table."""
        from .config import read

        merged = {k: v for k, v in defaults.system_config().items() if k != "home"}
        site = read(self.config_file)  # one that is not TOML: one line naming it, for every command
        for key, value in site.items():
            merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        return merged

    def store(self, migrate: bool = True):
        """The store of this home."""
        from .store import Store

        if not self.db.exists():
            self.ensure()
            migrate = True
        return Store(self.db, migrate=migrate)

    def daemon_pid(self) -> int | None:
        """The pid of the running daemon of this home, or None."""
        import fcntl

        try:
            fd = os.open(self.pidfile, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 64).decode().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def home_problems(home) -> list[str]:
    """The unknown tables and keys of the two files a home's settings come from: the system config
    and the state folder's own (where `home` means nothing)."""
    from .config import problems, read

    return (problems(defaults.system_config_path(), defaults.system_config())
            + problems(home.config_file, read(home.config_file), top_keys=()))
