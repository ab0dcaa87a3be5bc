"""The spool: where `runner submit` drops a job and the daemon takes it.

A submit is one atomic rename of a complete file into spool/, so the daemon never reads half a
job and a submit works while the daemon is down. The file's owner (st_uid) is the submitting
user; the daemon trusts that, not what the file says, and only for a file that nobody else could
have written: a regular file with one name, writable by its owner alone. The id a record gives is
taken only when no job has it.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import re
import stat
import time
from pathlib import Path

from . import defaults
from .exceptions import RunnerError, SpecError
from .home import Home

_ID = re.compile(r"^[0-9a-z]{4,32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUARANTINE_NAME = 230
"""The longest name a file keeps in quarantine/ (NAME_MAX is 255; ".N.reason" follows it)."""


class SpoolFileError(RunnerError):
    """A spool file the daemon will not take: not a regular file, too big, not JSON, wrong fields."""

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    """A short random job id (8 characters of Crockford base32); prefixes work in every verb."""
    return "".join(_ALPHABET[b % 32] for b in os.urandom(8))  # 256 = 8 * 32: unbiased (no `secrets`: ~5 ms to import)


def user_name(uid: int | None = None) -> str:
    """The login name of uid (default: the current user)."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _drop(home: Home, name: str, record: dict, owner: tuple[int, int] | None = None):
    # 0600: a spec may hold secrets (env_vars); the daemon reads it as root, teammates may not.
    # `owner` (uid, gid): the daemon drops a file for a user it knows by her token (HTTP writes),
    # or root retries her job; the file is hers, so intake treats it exactly as if she had run the CLI.
    from .atomic import write_json

    try:  # made in spool/.tmp (sticky, open to all): the daemon watches spool/ and sees only whole files
        write_json(home.spool / name, record, 0o600, owner, tmp_dir=home.spool / ".tmp")
    except OSError as e:  # a full disk leaves no half-written file behind
        why = (e.strerror or str(e)).lower()
        raise RunnerError(f"cannot write the spool: {why} ({home.spool})") from None


def submit(home: Home, spec: dict, now: float | None = None, retry_of: str | None = None,
           owner: tuple[int, int] | None = None) -> dict:
    """Write a validated spec into the spool; returns the record (with its new id)."""
    now = time.time() if now is None else now
    uid = os.geteuid() if owner is None else owner[0]
    record = {"id": new_id(), "spec": spec, "submitted_at": now, "user": user_name(uid), "retry_of": retry_of}
    _drop(home, f"{time.time_ns()}-{record['id']}.job.json", record, owner)
    return record


def request_cancel(home: Home, job_id: str, now: float | None = None, owner: tuple[int, int] | None = None):
    """Ask the daemon to cancel a job (it checks that the file's owner may)."""
    _drop(home, f"{time.time_ns()}-{job_id}.cancel.json", {"id": job_id, "at": time.time() if now is None else now}, owner)


def request_tags(home: Home, job_id: str, add=(), remove=(), notes: str | None = None,
                 owner: tuple[int, int] | None = None):
    """Ask the daemon to change a job's tags and notes (it checks that the file's owner may)."""
    _drop(home, f"{time.time_ns()}-{job_id}.tags.json", {"id": job_id, "add": list(add), "remove": list(remove), "notes": notes}, owner)


def request_token(home: Home, rotate: bool = False):
    """Ask the daemon to make (or replace) the caller's token; it knows the caller by the file's owner."""
    _drop(home, f"{time.time_ns()}-{new_id()}.token.json", {"rotate": bool(rotate)})


def request_export(home: Home, ids: list[str], experiment: str | None = None, exporter: str | None = None):
    """Ask the daemon to export these jobs with `exporter` (runner/exporters/) to `experiment` (its
    target; None: the config's); it checks that the file's owner may."""
    rec = {"ids": list(ids), "experiment": experiment}
    if exporter is not None:
        rec["exporter"] = exporter
    _drop(home, f"{time.time_ns()}-{new_id()}.export.json", rec)


def pending(home: Home) -> list[Path]:
    """Spool files waiting for the daemon, oldest first."""
    try:
        names = [n for n in os.listdir(home.spool) if n.endswith(".json") and not n.startswith(".")]
    except FileNotFoundError:
        return []
    return [home.spool / n for n in sorted(names)]


def pending_jobs(home: Home) -> list[dict]:
    """Submitted jobs the daemon has not taken yet (for `ls` while it is down)."""
    out = []
    now = time.time()
    for p in pending(home):
        if p.name.endswith(".job.json"):
            try:
                raw, uid = read_record(p)
                rec = check_job_record(raw, now)
                rec["owner"] = user_name(uid)
                out.append(rec)
            except (OSError, SpoolFileError):
                continue
    return out


def quarantine(home: Home, path: Path, reason: str) -> bool:
    """Move a spool file the daemon cannot use aside, with the reason beside it; never raises.

    The file is moved as it is (a symlink stays a link, a FIFO is never opened, a folder stays a
    folder) under a name no earlier one holds; the reason file is written with O_NOFOLLOW into the
    daemon's own folder, so no name a user picks redirects it. False when the file could not be
    moved (a read-only disk): it stays in spool/.taking, where only a restart looks again.
    """
    name = path.name.removesuffix(".retry")
    if len(name) > _QUARANTINE_NAME:  # room for a counter and ".reason" within NAME_MAX
        name = name[:_QUARANTINE_NAME]
    dest = home.quarantine / name
    try:
        n = 1
        while os.path.lexists(dest):  # a folder sent twice must not meet the first one
            n += 1
            dest = home.quarantine / f"{name}.{n}"
        os.rename(path, dest)
    except FileNotFoundError:
        return True
    except OSError as e:
        import logging

        logging.getLogger("runner.daemon.intake").warning("cannot set %s aside: %s", path.name, e.strerror)
        return False
    # The reason appears whole or not at all (a reader never sees it half-written), written with
    # O_NOFOLLOW under a new hidden name in the daemon's own folder, then renamed beside the file.
    # It may quote what the file said: it is its owner's to read, like the file.
    from .atomic import write_bytes

    owner = None
    if os.geteuid() == 0:
        try:
            owner = (os.lstat(dest).st_uid, -1)
        except OSError:
            pass
    try:
        write_bytes(home.quarantine / (dest.name + ".reason"), (_CONTROL.sub(" ", reason)[:2000] + "\n").encode(),
                    0o600, owner, fsync=False)
    except OSError:
        pass  # a full disk: the file is aside, its reason is in the daemon's log
    return True


def read_record(path: Path) -> tuple[dict, int]:
    """Read a spool file safely: (record, owner uid), or SpoolFileError.

    Never follows a symlink, never blocks on a FIFO or device, reads at most MAX_SPOOL_BYTES and
    checks the nesting depth before parsing, so no file can crash or stall the daemon.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the name is a symlink
            raise SpoolFileError("a symbolic link; the spool takes regular files only") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpoolFileError("not a regular file (a FIFO, device or folder); the spool takes regular files only")
        # Its owner is who asked only if nobody else could have written it: not a second name of
        # a file (a hard link he made to her file), not a file that others may write (hers, in a
        # shared folder, that he edited and moved here). `runner submit` writes 0600, one name.
        if st.st_nlink != 1:
            raise SpoolFileError(f"a hard link ({st.st_nlink} names); the spool takes files with exactly one name "
                                 "(write it with runner submit)")
        if st.st_mode & 0o022:
            raise SpoolFileError(f"writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o}); the spool "
                                 "takes files that only their owner can write (runner submit writes 0600)")
        if st.st_size > defaults.MAX_SPOOL_BYTES:
            raise SpoolFileError(f"{st.st_size} bytes; a spool file is at most {defaults.MAX_SPOOL_BYTES}")
        chunks, size = [], 0
        while size <= defaults.MAX_SPOOL_BYTES:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
            size += len(b)
        if size > defaults.MAX_SPOOL_BYTES:
            raise SpoolFileError(f"more than {defaults.MAX_SPOOL_BYTES} bytes; a spool file is at most that")
    finally:
        os.close(fd)
    from .specfile import decode_text, parse_json

    try:
        rec = parse_json(decode_text(b"".join(chunks), "file"), "file")
    except SpecError as e:
        raise SpoolFileError(e.problems[0].removeprefix("file: ")) from None
    if not isinstance(rec, dict):
        raise SpoolFileError("not a JSON object")
    return rec, st.st_uid


def _time(rec: dict, key: str, now: float) -> float:
    """A time the record gives, or now; one from a clock ahead of the daemon's is taken as now."""
    v = rec.get(key, now)
    if v is None:
        return now
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise SpoolFileError(f"{key}: given {str(v)[:40]}; expected a time (seconds since 1970)")
    return min(float(v), now)


def check_job_record(rec: dict, now: float) -> dict:
    """The fields of a job record, each checked: {id, spec, submitted_at, retry_of}."""
    unknown = set(rec) - {"id", "spec", "submitted_at", "user", "retry_of"}
    if unknown:
        raise SpoolFileError(f"unknown field(s) {', '.join(json.dumps(k[:40]) for k in sorted(unknown))[:200]}")
    if not isinstance(rec.get("id"), str) or not _ID.match(rec["id"]):
        raise SpoolFileError(f"id: given {str(rec.get('id'))[:40]!r}; expected a runner job id (4-32 of 0-9 a-z)")
    if not isinstance(rec.get("spec"), dict):
        raise SpoolFileError("spec: missing or not a mapping")
    retry_of = rec.get("retry_of")
    if retry_of is not None and (not isinstance(retry_of, str) or not _ID.match(retry_of)):
        raise SpoolFileError(f"retry_of: given {str(retry_of)[:40]!r}; expected a runner job id or null")
    return {"id": rec["id"], "spec": rec["spec"], "submitted_at": _time(rec, "submitted_at", now), "retry_of": retry_of}


def check_tags_record(rec: dict) -> dict:
    """The fields of a tags request, each checked: {id, add, remove, notes (None: unchanged)}."""
    from .tags import check

    if set(rec) - {"id", "add", "remove", "notes"}:
        raise SpoolFileError("unknown field(s) in a tags request; expected id, add, remove and notes")
    ref = rec.get("id")
    if not isinstance(ref, str) or not re.fullmatch(r"#?[0-9a-z]{1,32}", ref):
        raise SpoolFileError(f"id: given {str(ref)[:40]!r}; expected a job id, prefix or #seq")
    out = {"id": ref, "add": rec.get("add", []), "remove": rec.get("remove", []), "notes": rec.get("notes")}
    problems = check(out["add"], out["remove"], out["notes"])
    if problems:
        raise SpoolFileError("; ".join(problems))
    return out


def check_cancel_record(rec: dict, now: float) -> dict:
    """The fields of a cancel request, each checked: {id, at}."""
    if set(rec) - {"id", "at"}:
        raise SpoolFileError("unknown field(s) in a cancel request; expected id and at")
    ref = rec.get("id")
    if not isinstance(ref, str) or not re.fullmatch(r"#?[0-9a-z]{1,32}", ref):
        raise SpoolFileError(f"id: given {str(ref)[:40]!r}; expected a job id, prefix or #seq")
    return {"id": ref, "at": _time(rec, "at", now)}
