"""Who a job runs as, and what that person may reach.

A job runs with the uid, primary gid and supplementary groups of the person who submitted it (the
owner of its spool file, never a name written in a file). A daemon running as root hands the job's
folder to that person and the shim drops to her ids before the job starts; a daemon running as an
ordinary user runs only that user's jobs. Path checks "as the submitter" are done by mode bits
(owner, group, others) along the whole path, since the daemon itself may read anything.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from typing import NamedTuple


class Person(NamedTuple):
    """A Unix user as a job runs: ids, groups, name and home."""

    uid: int
    gid: int
    groups: tuple
    name: str
    home: str


def person(uid: int) -> Person:
    """The user behind uid (KeyError when there is none)."""
    pw = pwd.getpwuid(uid)
    groups = {pw.pw_gid}
    try:
        groups |= set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except OSError:
        groups |= {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    return Person(uid, pw.pw_gid, tuple(sorted(groups)), pw.pw_name, pw.pw_dir)


def drops_privileges(uid: int) -> bool:
    """Whether a job of uid runs under other ids than the daemon's (a root daemon, another user's job)."""
    return os.geteuid() == 0 and uid != 0


def _allowed(st: os.stat_result, who: Person, bits: int) -> bool:
    """Whether `who` has all of `bits` (as R/W/X of 'other') on a file with this stat."""
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        return (st.st_mode >> 6) & bits == bits
    if st.st_gid in who.groups:
        return (st.st_mode >> 3) & bits == bits
    return st.st_mode & bits == bits


def may_access(path: str | os.PathLike, who: Person, want: str = "r") -> bool:
    """Whether `who` may read ('r') or write ('w') path: every folder above it searchable, the path
    itself readable (and, for a folder, searchable) or writable. Symbolic links are followed as
    the kernel would, since the job will open the path by name."""
    p = Path(os.path.abspath(path))
    try:
        real = Path(os.path.realpath(p))
        for parent in [*reversed(real.parents)]:
            if not _allowed(os.stat(parent), who, 1):
                return False
        st = os.stat(real)
    except OSError:
        return False
    bits = (4 if "r" in want else 0) | (2 if "w" in want else 0)
    if stat.S_ISDIR(st.st_mode):
        bits |= 1
    return _allowed(st, who, bits)


def hand_over(folder: Path, who: Person, mode: int = 0o700):
    """Give a folder the daemon prepared (and all in it) to the job's user; links are not followed."""
    if not drops_privileges(who.uid):
        return
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), who.uid, who.gid)
    os.lchown(folder, who.uid, who.gid)
    os.chmod(folder, mode)


def check_paths_as(spec: dict, who: Person) -> list[str]:
    """The paths a job names, checked as its submitter: one line per path she cannot use."""
    problems = []
    ds = spec.get("dataset") or {}
    for field, path, want in (("dataset.path", ds.get("path"), "r"), ("dataset.annotations", ds.get("annotations"), "r"),
                              ("workdir", spec.get("workdir"), "w"), ("train.resume", (spec.get("train") or {}).get("resume"), "r")):
        if path and os.path.isabs(path) and not may_access(path, who, want):
            problems.append(f"{field}: {path} is not {'writable' if want == 'w' else 'readable'} by {who.name}")
    return problems
