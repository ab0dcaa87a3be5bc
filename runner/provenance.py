"""Where a figure or a report comes from: the commit of this source tree and the machine (CPU,
cores, memory, GPUs). Stdlib only: benches and `runner check` print it beside what they measured."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The full commit id of the runner source tree, with "+dirty" where its code differs from it
    (a report made from uncommitted code must say so; docs/, where reports are written, does not
    count); "unknown" outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(SOURCE), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(SOURCE), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def gpus() -> list[str]:
    """The GPUs NVML sees (names), or [] where there is no NVML or no GPU."""
    try:
        from .gpus import NvmlInventory

        return [g.name for g in NvmlInventory().gpus()]
    except Exception:
        return []


def machine() -> dict:
    """The machine, as fields and as one line (`line`)."""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    g = gpus()
    gpu = ", ".join(f"{g.count(n)}x {n}" for n in dict.fromkeys(g)) if g else "no GPU"
    line = f"{cpu}, {cores} cores, {mem:.0f} GiB, {gpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    return {"cpu": cpu, "cores": cores, "memory_gib": round(mem, 1), "gpus": g, "python": platform.python_version(), "line": line}
