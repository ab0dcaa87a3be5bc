"""Disk that does not fill: the site's retention policy, applied by the daemon at most once an hour.

    [retention]
    checkpoint_days = 14   # an ended job's checkpoints this many days after it ended, except its best and last
    job_days = 90          # an ended job's whole folder (jobs/ID) and run folder (run/ID: its log) after this many days
    metrics_days = 180     # an ended job's metric points compacted this many days after it ended (off unless set)
    metrics_bucket = 100   # steps per bucket of that compaction (runner/compaction.py)

A job's row and its transitions stay in the store whatever the policy, and its metric points too
unless metrics_days is set (then each metric keeps its first, last, lowest and highest point of
each bucket: runner/compaction.py): `runner show`, the dashboard's charts and MLflow keep the history. Nothing of a job that has not
ended is touched, nor the folder of an ended job that a waiting or running job still names
(retry_of, train.resume). `runner gc --dry-run` lists what a pass would remove and its bytes;
`runner gc` applies it now. The per-job log cap is [jobs] log_max_mb (runner/diskspace.py).

Which checkpoints are "best" and "last": of the checkpoints the daemon recorded for the job (its
framework's or repo table's `checkpoints` globs), the newest whose name says best, the newest whose
name says last or latest, and the newest recorded of all. When all of a job's recorded checkpoints
share one file name (checkpoints/checkpoint-500/model.safetensors), each is its folder.

Removal runs as root inside folders users write, so it never follows a link: each folder is opened
by a descriptor relative to its parent with O_NOFOLLOW and checked to be the one just looked at,
each entry is looked at with lstat and unlinked or removed by its parent's descriptor. A link a
user planted is removed as a link; what it points to is never read or touched. A checkpoint is
removed only when it is a file or folder of the job's own user; no mount point is crossed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .compaction import DEFAULT_BUCKET, check_bucket
from .exceptions import RunnerError

log = logging.getLogger("runner.retention")

INTERVAL_SECONDS = 3600.0
"""A pass at most this often (the time of the last is kept in $RUNNER_HOME/retention.json)."""

FIRST_PASS_DELAY_SECONDS = 5.0
"""After the daemon starts, the first pass waits this long (its loop's first passes go first)."""

MAX_DEPTH = 200
"""Deepest folder a removal descends into; anything deeper is left (and said)."""

STATE_FILE = "retention.json"
DAYS = ("checkpoint_days", "job_days", "metrics_days")  # the policy's keys in days
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def settings(config: dict) -> dict | None:
    """The `[retention]` table, checked: {"checkpoint_days", "job_days", "metrics_days": float | None,
    "metrics_bucket": int}; None when there is no policy. A bad value raises RunnerError in one line."""
    sec = config.get("retention")
    if sec is None:
        return None
    if not isinstance(sec, dict):
        raise RunnerError("[retention]: expected a table (checkpoint_days = 14, job_days = 90)")
    unknown = sorted(set(sec) - {*DAYS, "metrics_bucket"})
    if unknown:
        raise RunnerError(f"[retention] {unknown[0]}: not a key of [retention]; expected checkpoint_days, job_days, "
                          "metrics_days or metrics_bucket (the log cap is [jobs] log_max_mb)")
    out: dict = {}
    for key in DAYS:
        v = sec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 100_000):
            raise RunnerError(f"[retention] {key}: given {v!r}; expected a number of days above 0")
        out[key] = None if v is None else float(v)
    b = sec.get("metrics_bucket")
    bucket = DEFAULT_BUCKET if b is None else check_bucket(b, "[retention] metrics_bucket")
    return {**out, "metrics_bucket": bucket} if any(v is not None for v in out.values()) else None


@dataclass
class Item:
    """One thing a pass removes: a checkpoint (file or folder), a job folder or a run folder."""

    job_id: str
    user: str
    what: str  # "checkpoint", "job folder", "run folder", "metric points" (compacted in the store)
    path: str
    bytes: int = 0  # metric points: an estimate of what they held in the store
    ended_at: float | None = None
    points: int | None = None  # metric points: how many go
    kept: int | None = None  # metric points: how many stay


# -- walking without following links ----------------------------------------------------------
def _open_dir(parent_fd: int, name: str, expect: os.stat_result | None = None) -> int:
    """A descriptor of the folder `name` in parent_fd, never through a link; with `expect`, it must
    be that very folder (a folder swapped for another between the look and the open is refused)."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    if expect is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            os.close(fd)
            raise FileNotFoundError(f"{name} changed while it was looked at")
    return fd


def _tree(dir_fd: int, dev: int, remove: bool, depth: int = 0) -> tuple[int, int]:
    """(bytes, entries left) under the folder dir_fd; with remove, everything in it is removed.
    Links are looked at and removed as links; folders on another device are left."""
    if depth > MAX_DEPTH:
        return 0, 1
    total = left = 0
    with os.scandir(dir_fd) as it:
        names = [e.name for e in it]
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        total += st.st_blocks * 512 if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode) else st.st_blocks * 512 // st.st_nlink
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev:
                left += 1  # a mount point: never crossed
                continue
            try:
                fd = _open_dir(dir_fd, name, st)
            except OSError:
                left += 1  # swapped for a link or gone meanwhile
                continue
            try:
                n, k = _tree(fd, dev, remove, depth + 1)
            finally:
                os.close(fd)
            total, left = total + n, left + k
            if remove and not k:
                try:
                    os.rmdir(name, dir_fd=dir_fd)
                except OSError:
                    left += 1
        elif remove:
            try:
                os.unlink(name, dir_fd=dir_fd)  # a link is unlinked itself; its target is untouched
            except FileNotFoundError:
                pass
            except OSError:
                left += 1
    return total, left


def _walk_to(base_fd: int, parts: tuple[str, ...]) -> int:
    """A descriptor of the folder base/parts[0]/parts[1]/..., each step without following a link."""
    fd = os.dup(base_fd)
    for part in parts:
        if part in ("", ".", ".."):
            os.close(fd)
            raise FileNotFoundError(part)
        try:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def _entry(parent_fd: int, name: str, dev: int, remove: bool, uid: int | None = None) -> tuple[int, int] | None:
    """Bytes of the file or folder `name` in parent_fd (removed with `remove`), and entries left;
    None when it is not there, is a link, is on another device or (with `uid`) is not that user's."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if st.st_dev != dev or (uid is not None and st.st_uid != uid):
        return None
    if stat.S_ISREG(st.st_mode):
        if remove:
            try:
                os.unlink(name, dir_fd=parent_fd)
            except FileNotFoundError:
                return None
        return st.st_blocks * 512, 0
    if not stat.S_ISDIR(st.st_mode):
        return None  # a link, a FIFO, a socket: not a checkpoint nor a job folder
    try:
        fd = _open_dir(parent_fd, name, st)
    except OSError:
        return None
    try:
        n, left = _tree(fd, dev, remove)
    finally:
        os.close(fd)
    n += st.st_blocks * 512
    if remove and not left:
        try:
            os.rmdir(name, dir_fd=parent_fd)
        except OSError:
            left += 1
    return n, left


def tree_bytes(path) -> int:
    """Bytes under `path` (a folder, its links not followed, no mount point crossed); 0 when absent
    or unreadable."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return 0
    try:
        st = os.fstat(fd)
        return _tree(fd, st.st_dev, False)[0] + st.st_blocks * 512
    except OSError:
        return 0
    finally:
        os.close(fd)


# -- what a pass removes ------------------------------------------------------------------------
def _units(job_dir: Path, rows: list[dict]) -> list[tuple[tuple[str, ...], dict]]:
    """Each recorded checkpoint of one job as (its path's parts inside the job folder, its newest row):
    the file, or its folder when all of the job's checkpoints share one file name."""
    rels = []
    for r in rows:
        try:
            rel = Path(os.path.relpath(r["path"], job_dir))
        except (TypeError, ValueError):
            continue
        if rel.is_absolute() or not rel.parts or ".." in rel.parts:
            continue
        rels.append((rel, r))
    by_folder = len(rels) > 1 and len({rel.name for rel, _ in rels}) == 1 and all(len(rel.parts) > 1 for rel, _ in rels)
    units: dict = {}
    for rel, r in rels:
        parts = rel.parent.parts if by_folder else rel.parts
        old = units.get(parts)
        if old is None or (r["at"] or 0, r["id"]) > (old["at"] or 0, old["id"]):
            units[parts] = r
    return list(units.items())


def _kept(units: list[tuple[tuple[str, ...], dict]]) -> set:
    """The units of one job that stay: its newest best, newest last (or latest), newest of all."""
    def newest(pick):
        found = [(r["at"] or 0, r["id"], parts) for parts, r in units if pick(parts[-1].lower())]
        return {max(found)[2]} if found else set()

    return newest(lambda n: "best" in n) | newest(lambda n: "last" in n or "latest" in n) | newest(lambda n: True)


def plan(home, store, policy: dict, now: float | None = None) -> list[Item]:
    """What a pass of `policy` would remove now, with the bytes each frees. Changes nothing."""
    return _pass(home, store, policy, time.time() if now is None else now, remove=False)[0]


def _pass(home, store, policy: dict, now: float, remove: bool) -> tuple[list[Item], list[str]]:
    items, problems = _files(home, store, policy, now, remove)
    if policy.get("metrics_days") is not None:
        got, more = _metrics(home, store, policy, now, remove)
        items, problems = items + got, problems + more
    return items, problems


def _metrics(home, store, policy: dict, now: float, remove: bool) -> tuple[list[Item], list[str]]:
    """Compaction of the metric points of jobs that ended metrics_days ago or more: one item per job
    whose points go (a job with nothing to drop is marked compacted too, so no pass reads it again).
    Reads and writes only the store, never a file of a user."""
    from .store import SCHEMA_VERSION

    if store.schema_version() < SCHEMA_VERSION:
        return [], [f"{home.db}: metric compaction needs the store's newest schema: start the daemon once (it migrates)"]
    items = []
    bucket = policy.get("metrics_bucket") or DEFAULT_BUCKET
    for job in store.compactable_jobs(before=now - policy["metrics_days"] * 86400):
        done = store.compact_metrics(job["id"], bucket, now, apply=remove)
        if done and done["points"]:
            items.append(Item(job["id"], job["user"], "metric points", str(home.db), done["bytes"], job["finished_at"],
                              done["points"], done["kept"]))
    return items, []


def _files(home, store, policy: dict, now: float, remove: bool) -> tuple[list[Item], list[str]]:
    items, problems = [], []
    ckpt_days, job_days = policy.get("checkpoint_days"), policy.get("job_days")
    in_use = store.referenced_by_active()
    owners = None
    try:
        jobs_fd = os.open(home.jobs, _DIR_FLAGS)
    except OSError as e:
        return [], [f"{home.jobs}: {e.strerror}"]
    try:
        if job_days is not None:
            run_fd = os.open(home.run, _DIR_FLAGS) if home.run.is_dir() else None
            try:
                for job in store.ended_jobs(before=now - job_days * 86400):
                    jid = job["id"]
                    if not _ID.match(jid or "") or jid in in_use:
                        continue
                    for what, base_fd, folder in (("job folder", jobs_fd, home.jobs), ("run folder", run_fd, home.run)):
                        if base_fd is None:
                            continue
                        try:
                            got = _entry(base_fd, jid, os.fstat(base_fd).st_dev, remove)
                        except OSError as e:
                            problems.append(f"{folder / jid}: {e.strerror or e}")
                            continue
                        if got is not None:
                            items.append(Item(jid, job["user"], what, str(folder / jid), got[0], job["finished_at"]))
                            if got[1]:
                                problems.append(f"{folder / jid}: {got[1]} entries left (deeper than {MAX_DEPTH} "
                                                "folders, a mount point, or not removable)")
            finally:
                if run_fd is not None:
                    os.close(run_fd)
        if ckpt_days is not None:
            after = now - job_days * 86400 if job_days is not None else None
            rows = store.ended_checkpoints(before=now - ckpt_days * 86400, after=after)
            by_job: dict = {}
            for r in rows:
                by_job.setdefault(r["job_id"], []).append(r)
            for jid, jrows in by_job.items():
                if not _ID.match(jid or "") or jid in in_use:
                    continue
                units = _units(home.job_dir(jid), jrows)
                keep = _kept(units)
                gone = [(parts, r) for parts, r in units if parts not in keep]
                if not gone:
                    continue
                try:
                    job_fd = _open_dir(jobs_fd, jid)
                except OSError:
                    continue  # its folder is gone (job_days) or is not a folder
                try:
                    job_st = os.fstat(job_fd)
                    for parts, r in gone:
                        try:
                            parent = _walk_to(job_fd, parts[:-1])
                        except OSError:
                            continue  # a folder on the way is gone or was swapped for a link
                        try:
                            got = _entry(parent, parts[-1], job_st.st_dev, remove,
                                         uid=job_st.st_uid if r["uid"] is None else r["uid"])
                        finally:
                            os.close(parent)
                        if got is not None:
                            if owners is None:
                                owners = store.job_owners()
                            items.append(Item(jid, owners.get(jid, ""), "checkpoint", str(home.job_dir(jid).joinpath(*parts)), got[0]))
                finally:
                    os.close(job_fd)
    finally:
        os.close(jobs_fd)
    return items, problems


def last_pass(home) -> dict | None:
    """What the last applied pass did ({"at", "removed_bytes", "removed", "removed_bytes_total"}), or None."""
    try:
        return json.loads((home.root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def apply(home, store, policy: dict, now: float | None = None) -> dict:
    """Remove what `policy` says now (one pass at a time, under a lock in the state folder) and
    record it in retention.json. Returns {"items": [...], "removed_bytes", "problems"}."""
    from .atomic import write_json

    now = time.time() if now is None else now
    fd = os.open(home.root / ".retention.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        items, problems = _pass(home, store, policy, now, remove=True)
        files = [i for i in items if i.points is None]
        freed = sum(i.bytes for i in files)
        points = sum(i.points or 0 for i in items)
        before = last_pass(home) or {}
        record = {"at": now, "removed": len(files), "removed_bytes": freed,
                  "removed_bytes_total": int(before.get("removed_bytes_total", 0)) + freed,
                  "compacted_jobs": len(items) - len(files), "compacted_points": points,
                  "compacted_points_total": int(before.get("compacted_points_total", 0)) + points, "problems": problems[:20]}
        write_json(home.root / STATE_FILE, record, mode=0o644)
    finally:
        os.close(fd)
    return {"items": [asdict(i) for i in items], "removed_bytes": freed, "compacted_points": points, "problems": problems}


class Retention:
    """The daemon's side: the policy checked at start, then applied in a thread of its own at most
    once every INTERVAL_SECONDS (never on the loop's path: a slow disk delays only itself)."""

    def __init__(self, home, store):
        self.home, self.store = home, store
        self.policy = settings(home.config)  # a bad [retention] stops the daemon at start, in one line

    def due(self, now: float) -> bool:
        """Whether a pass is due: a policy is set and the last pass is INTERVAL_SECONDS old or more."""
        if self.policy is None:
            return False
        done = last_pass(self.home)
        at = done.get("at") if isinstance(done, dict) else None
        return not isinstance(at, (int, float)) or not 0 <= now - at < INTERVAL_SECONDS

    def run_once(self, now: float | None = None) -> dict | None:
        """One pass if due; what it did, or None."""
        now = time.time() if now is None else now
        if not self.due(now):
            return None
        done = apply(self.home, self.store, self.policy, now)
        files = [i for i in done["items"] if i["points"] is None]
        if files:
            log.info("retention: removed %d item(s), %.1f MB", len(files), done["removed_bytes"] / 2**20)
        if done["compacted_points"]:
            log.info("retention: compacted the metrics of %d job(s): %d points went", len(done["items"]) - len(files),
                     done["compacted_points"])
        for p in done["problems"][:5]:
            log.warning("retention: %s", p)
        return done

    def start(self, stop: threading.Event, first_delay: float = FIRST_PASS_DELAY_SECONDS):
        """A thread that applies the policy while the daemon runs (none when there is no policy)."""
        if self.policy is None:
            return None

        def loop():
            wait = first_delay
            while not stop.wait(wait):
                try:
                    self.run_once()
                except Exception:  # the next pass tries again; the daemon goes on
                    log.exception("retention pass failed")
                finally:
                    self.store.close()  # this thread's connection: not held between passes
                wait = min(INTERVAL_SECONDS, 60.0)  # looks every minute; runs when due

        t = threading.Thread(target=loop, name="retention", daemon=True)
        t.start()
        return t
