"""The spool: where `runner submit` drops a job and the daemon takes it.

A submit is one atomic rename of a complete file into spool/, so the daemon never reads half a
job and a submit works while the daemon is down. The file's owner (st_uid) is the submitting
user; the daemon trusts that, not what the file says.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import time
from pathlib import Path

from .home import Home

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    """A short random job id (8 characters of Crockford base32); prefixes work in every verb."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def user_name(uid: int | None = None) -> str:
    """The login name of uid (default: the current user)."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _drop(home: Home, name: str, record: dict):
    tmp = home.spool / ".tmp" / f"{name}.{os.getpid()}.{secrets.token_hex(4)}"
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, home.spool / name)


def submit(home: Home, spec: dict, now: float | None = None, retry_of: str | None = None) -> dict:
    """Write a validated spec into the spool; returns the record (with its new id)."""
    now = now or time.time()
    record = {"id": new_id(), "spec": spec, "submitted_at": now, "user": user_name(), "retry_of": retry_of}
    _drop(home, f"{time.time_ns()}-{record['id']}.job.json", record)
    return record


def request_cancel(home: Home, job_id: str, now: float | None = None):
    """Ask the daemon to cancel a job (it checks that the file's owner may)."""
    _drop(home, f"{time.time_ns()}-{job_id}.cancel.json", {"id": job_id, "at": now or time.time()})


def pending(home: Home) -> list[Path]:
    """Spool files waiting for the daemon, oldest first."""
    try:
        names = [n for n in os.listdir(home.spool) if n.endswith(".json")]
    except FileNotFoundError:
        return []
    return [home.spool / n for n in sorted(names)]


def pending_jobs(home: Home) -> list[dict]:
    """Submitted jobs the daemon has not taken yet (for `ls` while it is down)."""
    out = []
    for p in pending(home):
        if p.name.endswith(".job.json"):
            try:
                rec = json.loads(p.read_text())
                rec["owner"] = user_name(p.stat().st_uid)
                out.append(rec)
            except (OSError, ValueError):
                continue
    return out


def quarantine(home: Home, path: Path, reason: str):
    """Move a spool file the daemon cannot use aside, with the reason beside it."""
    dest = home.quarantine / path.name
    os.replace(path, dest)
    (home.quarantine / (path.name + ".reason")).write_text(reason + "\n")
