"""Shared bench helpers: a temporary home, a daemon subprocess, tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def machine() -> str:
    """One line naming the machine the figures come from (CPU, cores, memory, GPUs)."""
    from runner.provenance import machine as m

    return m()["line"]


def commit() -> str:
    """The commit the figures come from (+dirty where the tree differs from it)."""
    from runner.provenance import commit as c

    return c()


def table(title: str, rows: list[tuple], headers=("figure", "value", "target", "ok")):
    """Print rows as an aligned table."""
    rows = [tuple("" if c is None else str(c) for c in r) for r in rows]
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(x) for h, x in zip(headers, w)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(x) for c, x in zip(r, w)) + " |")
    sys.stdout.flush()


def pct(values, p):
    """The p-th percentile."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def cli(home: Path, *args, env=None) -> subprocess.CompletedProcess:
    """The real `runner` CLI (by the real interpreter path, not a shim)."""
    e = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], capture_output=True, text=True, env=e)


class Daemon:
    """`runner daemon` as a subprocess for the benches."""

    def __init__(self, home: Path, *extra, env: dict | None = None):
        self.home = home
        self.extra = extra
        self.env = env or {}  # its environment's changes (None: unset)

    def __enter__(self):
        e = {**os.environ, "RUNNER_HOME": str(self.home), "PYTHONPATH": str(ROOT)}
        for k, v in self.env.items():
            e.pop(k, None) if v is None else e.__setitem__(k, v)
        self.proc = subprocess.Popen([sys.executable, "-m", "runner", "daemon", *self.extra], env=e,
                                     stdout=subprocess.DEVNULL, stderr=open(self.home / "bench-daemon.log", "ab"))
        t0 = time.time()
        while not (self.home / "daemon.pid").exists() or not (self.home / "runner.db").exists():
            time.sleep(0.02)
            if time.time() - t0 > 30:
                raise RuntimeError("daemon did not start")
        time.sleep(0.5)
        return self

    def __exit__(self, *a):
        self.proc.terminate()
        self.proc.wait(30)


def tmp_home() -> Path:
    h = Path(tempfile.mkdtemp(prefix="runner-bench-")) / "home"
    h.mkdir()
    return h


def median(values):
    return statistics.median(values)


def spread(values, scale=1.0, fmt="{:.1f}") -> str:
    """median (min-max) of repeated measurements, each times `scale`."""
    v = sorted(x * scale for x in values)
    return f"{fmt.format(statistics.median(v))} ({fmt.format(v[0])}-{fmt.format(v[-1])})"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, tries: int = 100):
    """Wait (up to tries x 0.1 s) for a daemon's HTTP API at `base` to answer /healthz."""
    import urllib.request

    for _ in range(tries):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
