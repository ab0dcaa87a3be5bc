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


def alive(pid, started=None) -> bool:
    """Whether pid is a live process (and the same one, when its start time is known)."""
    import psutil

    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(p.create_time() - started) < 2.0
    except psutil.Error:
        return False


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
