"""Disk space: a cap on each job's log, a floor of free space below which no job starts, and the
words for a job that ended because a disk filled.

Site settings, in the `[jobs]` table of the config:

    [jobs]
    log_max_mb = 1024     # past it the shim keeps the log's head and its last part, and the job runs on
    min_free_mb = 1024    # below it, in the state folder or its jobs/ or run/, no job starts
"""

from __future__ import annotations

import os

from .exceptions import RunnerError

LOG_MAX_MB = 1024.0
"""Default cap of one job's log (output.log), in MB."""

MIN_FREE_MB = 1024.0
"""Default floor of free space where jobs write (the state folder, jobs/, run/), in MB."""


def settings(config: dict) -> dict:
    """The `[jobs]` disk settings, checked: {"log_max_bytes": int, "min_free_bytes": int}."""
    sec = config.get("jobs", {})
    if not isinstance(sec, dict):
        raise RunnerError("[jobs]: expected a table (log_max_mb = ..., min_free_mb = ...)")
    out = {}
    for key, default, least in (("log_max_mb", LOG_MAX_MB, 0.01), ("min_free_mb", MIN_FREE_MB, 0.0)):
        v = sec.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < least or v > 1 << 40:
            raise RunnerError(f"[jobs] {key}: given {v!r}; expected a number of MB"
                              + (" above 0" if least else ", 0 or more"))
        out[key.replace("_mb", "_bytes")] = int(v * 2**20)
    return out


def free_bytes(path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of `path` (None when unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def low_space(home) -> str | None:
    """Why no job may start now (a folder jobs write into has less free space than the floor), or None.

    The state folder, its jobs/ and its run/ (logs) are looked at: each may be a mount of its own."""
    floor = settings(home.config)["min_free_bytes"]
    if not floor:
        return None
    seen = set()
    for folder in (home.root, home.jobs, home.run):
        try:
            dev = os.stat(folder).st_dev
        except OSError:
            continue
        if dev in seen:
            continue
        seen.add(dev)
        free = free_bytes(folder)
        if free is not None and free < floor:
            return (f"waiting_for_disk_space: {folder} has {free / 2**20:.0f} MB free, below [jobs] min_free_mb = "
                    f"{floor / 2**20:g}; free some space there (unused envs: `runner envs gc`)")
    return None


def full_note(exit_info: dict) -> str | None:
    """The note of a job that ended because a disk filled (the shim's `disk_full` in exit.json)."""
    full = exit_info.get("disk_full")
    if not isinstance(full, dict) or not isinstance(full.get("folder"), str):
        return None
    free = full.get("free_bytes")
    where = "its log's folder" if full.get("log") else "the folder"
    have = f" ({free / 2**20:.0f} MB free when it ended)" if isinstance(free, int) and not isinstance(free, bool) else ""
    return f"the disk was full: {where} {full['folder'][:500]}{have}"
