"""Process control of a running job from outside it: is it alive, and end its whole tree.

Used by the daemon and by `runner cancel` when no daemon runs; reads only the job's run folder,
which the daemon alone writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_json(path: Path):
    """A JSON file, or None when it is missing or not (yet) complete."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


_BOOT: list = []  # when this machine booted (/proc/stat's btime), read once


def _stat(pid: int):
    """/proc/PID/stat's fields after the command (the state first), or None when it is gone."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()
    except (OSError, ValueError):
        return None


def _started(fields) -> float:
    """The process's start time in seconds since the epoch, as psutil's create_time() gives it (its
    start in clock ticks after boot, plus the boot time): one read of /proc, not psutil's three."""
    if not _BOOT:
        with open("/proc/stat", "rb") as f:
            _BOOT.append(next(float(line.split()[1]) for line in f if line.startswith(b"btime ")))
    return int(fields[19]) / os.sysconf("SC_CLK_TCK") + _BOOT[0]


def started_at(pid) -> float | None:
    """When pid started (seconds since the epoch, comparable with psutil's create_time()), or None when it is gone."""
    fields = _stat(pid)
    return _started(fields) if fields else None


def alive(pid, started=None) -> bool:
    """Whether pid is a live process (not a zombie; the same one, when its start time is known).
    The daemon asks this of every running job on each pass of its loop."""
    if not pid:
        return False
    fields = _stat(pid)
    if not fields or fields[0] == b"Z":
        return False
    return started is None or abs(_started(fields) - started) < 2.0


def kill_tree(run_dir: Path, sig: int, gentle: bool = False) -> bool:
    """Send sig to the job's process group and to any descendant that left it. True if any was alive.

    `gentle` (a preemption's SIGTERM): to the job's own processes only, not to bubblewrap around
    them. bubblewrap does not pass a signal on: it dies, and the job dies with it (SIGKILL, as
    --die-with-parent), before its handler could save anything.

    child.json is in the job's run folder, which only the daemon writes: no user can point a
    kill at a process of her choosing. (A double-forked orphan comes to the shim, which ends it
    with the job.)"""
    import psutil

    child = read_json(run_dir / "child.json")
    if not child:
        return False
    pid = child["pid"]
    procs = []
    try:
        root = psutil.Process(pid)
        if abs(root.create_time() - child["started_at"]) < 5:
            procs = root.children(recursive=True)
            if gentle:
                procs = [p for p in [root, *procs] if not _is_bwrap(p)]
    except psutil.Error:
        pass
    sent = False
    try:
        if not gentle:
            os.killpg(child["pgid"], sig)
            sent = True
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.send_signal(sig)
            sent = True
        except psutil.Error:
            pass
    return sent


def _is_bwrap(p) -> bool:
    """Whether a process is bubblewrap (the sandbox around a job), by its name (a job's own process
    that calls itself bwrap only keeps a SIGTERM from itself: the SIGKILL after the grace ends all)."""
    import psutil

    try:
        return p.name() == "bwrap"
    except psutil.Error:
        return False
