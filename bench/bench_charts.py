"""A job's charts and a compare of ten jobs, 100,000 points each, before and after (#30), one run.

Each side (a checkout of runner: --before DIR, e.g. `git archive COMMIT`, and --after DIR, this one
by default) builds its own store with its own code: ten jobs whose 100,000-point logs (4 points a
line, the lines of bench_scale.big_job) are parsed into the store by the daemon's LogWatcher, then
its own `runner daemon --http` serves it. The requests go to the two daemons in turn, rep by rep
(the same moments of the host's load); before each, a commit to that store from another connection
(no answer comes from a cache). Figures: median (min-max) of --reps requests over HTTP:

- charts: GET /ui/jobs/ID/charts (every metric of one job, the page's first load);
- compare: what the compare page of the ten asks for on its first load (bench_scale.compare_urls:
  the page, its small multiples, each job's series of its metric);
- zoom (after only where before has none): GET /jobs/ID/series of a range of 1,500 steps and of
  40,000 steps;
- the log's parse into the store (LogWatcher.poll, the points' write): what the chunks cost there.

    python bench/bench_charts.py --before DIR [--after DIR] [--reps 10] [--points 100000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOBS = 10


def build(home: Path, n_points: int) -> list[float]:
    """(run with the side's runner first on sys.path) ten ended jobs of n_points points each, each
    parsed from its log by LogWatcher; returns each parse's seconds."""
    from runner.home import Home
    from runner.watch import LogWatcher

    store = Home(home).ensure().store()
    now = time.time()
    out = []
    for k in range(JOBS):
        jid = f"big{k:04d}"
        store.insert_job({"id": jid, "name": "big", "user": "user0", "uid": os.getuid(), "kind": "command", "spec": {}, "gpus": [],
                          "after": [], "state": "succeeded", "reason": "exit_code", "created_at": now - 100, "started_at": now - 99,
                          "finished_at": now - 1, "exit_code": 0}, now=now - 100)
        d = home / "jobs" / jid
        d.mkdir(parents=True)
        (d / "output.log").write_text("".join(f"epoch={i // 1000} step={i} loss={2.0 / (i + 1) + (i % 50) / 1000:.5f} "
                                              f"lr=0.001 acc={i % 100 / 100:.2f} val_loss={1.0 / (i // 1000 + 1):.4f}\n"
                                              for i in range(n_points // 4)))
        w = LogWatcher(jid, d, None)
        t0 = time.perf_counter()
        w.poll(store, final=True)
        out.append(time.perf_counter() - t0)
        w.close()
    return out


class Side:
    """One checkout: its store and its daemon."""

    def __init__(self, label: str, root: Path, n_points: int):
        import tempfile

        self.label, self.root = label, root
        self.home = Path(tempfile.mkdtemp(prefix=f"bench-charts-{label}-")) / "home"
        self.home.mkdir()
        self.env = {**os.environ, "RUNNER_HOME": str(self.home), "PYTHONPATH": str(root)}
        r = subprocess.run([sys.executable, __file__, "--build", str(self.home), "--root", str(root), "--points", str(n_points)],
                           env=self.env, capture_output=True, text=True, check=True)
        self.parse_s = [float(v) for v in r.stdout.split()]
        self.db_bytes = sum(os.path.getsize(p) for p in (self.home / "runner.db", self.home / "runner.db-wal") if p.exists())

    def __enter__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "runner", "daemon", "--http", f"127.0.0.1:{self.port}"], env=self.env,
                                     cwd=self.root, stdout=subprocess.DEVNULL, stderr=open(self.home / "bench-daemon.log", "ab"))
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(self.url + "/status").read()
                break
            except OSError:
                if time.time() - t0 > 60 or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label}: the daemon did not start ({self.home / 'bench-daemon.log'})")
                time.sleep(0.1)
        self.db = sqlite3.connect(str(self.home / "runner.db"), timeout=10)
        self.k = 0
        return self

    def write(self):
        """A commit from another connection: the daemon's answers are read afresh."""
        self.k += 1
        self.db.execute("UPDATE jobs SET note=? WHERE id=?", (f"bench {self.k}", f"big{self.k % JOBS:04d}"))
        self.db.commit()

    def get(self, urls: list[str]) -> float:
        self.write()
        t0 = time.perf_counter()
        for u in urls:
            with urllib.request.urlopen(self.url + u) as r:
                r.read()
        return time.perf_counter() - t0

    def __exit__(self, *a):
        self.db.close()
        self.proc.terminate()
        self.proc.wait(30)


def spread(values) -> str:
    v = sorted(x * 1000 for x in values)
    return f"{statistics.median(v):.0f} ({v[0]:.0f}-{v[-1]:.0f}) ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="a checkout of runner to compare with (e.g. git archive COMMIT)")
    ap.add_argument("--after", type=Path, default=HERE.parent)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--points", type=int, default=100_000, help="points of each of the ten jobs")
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.build:
        sys.path.insert(0, str(a.root))
        print(" ".join(f"{s:.4f}" for s in build(a.build, a.points)))
        return
    sys.path.insert(0, str(HERE))
    from bench_scale import compare_urls
    from common import machine

    sides = [Side("before", a.before.resolve(), a.points)] if a.before else []
    sides.append(Side("after", a.after.resolve(), a.points))
    ids = [f"big{k:04d}" for k in range(JOBS)]
    asks = {"charts": [f"/ui/jobs/{ids[0]}/charts"],
            "compare": [u.split("127.0.0.1:0", 1)[1] for u in compare_urls("http://127.0.0.1:0", ids)],
            "zoom 1,500 steps": [f"/jobs/{ids[0]}/series?name=loss&points=2000&lo=12000&hi=13499"],
            "zoom 40,000 steps": [f"/jobs/{ids[0]}/series?name=loss&points=2000&lo=20000&hi=59999"]}
    times = {(s.label, k): [] for s in sides for k in asks}
    from contextlib import ExitStack

    with ExitStack() as stack:
        for s in sides:
            stack.enter_context(s)
        for s in sides:  # once each, unmeasured (imports, first connection)
            for urls in asks.values():
                s.get(urls)
        for _ in range(a.reps):
            for key, urls in asks.items():
                for s in sides:
                    times[(s.label, key)].append(s.get(urls))
        load = os.getloadavg()
    print(f"# bench_charts on {machine()}; Python {sys.version.split()[0]}; SQLite {sqlite3.sqlite_version}")
    print(f"# {JOBS} jobs of {a.points:,} points each (4 metrics), parsed from their logs by each side's LogWatcher;"
          f" median (min-max) of {a.reps} requests over HTTP to each side's daemon, in turn, a store write before each")
    print(f"# sides: " + "; ".join(f"{s.label} = {s.root}" for s in sides))
    print()
    print("| figure | " + " | ".join(s.label for s in sides) + " | target |")
    print("|---|" + "---|" * len(sides) + "---|")
    targets = {"charts": "<= 150 ms", "compare": "<= 500 ms"}
    for key in asks:
        print(f"| {key} | " + " | ".join(spread(times[(s.label, key)]) for s in sides) + f" | {targets.get(key, '')} |")
    print(f"| a {a.points:,}-point log into the store (LogWatcher.poll), median of {JOBS} | "
          + " | ".join(f"{statistics.median(s.parse_s):.2f} s ({a.points / statistics.median(s.parse_s) / 1e6:.3f} M points/s)" for s in sides)
          + " | |")
    print(f"| the store's file (db + wal) after the build | "
          + " | ".join(f"{s.db_bytes / 1e6:.0f} MB ({s.db_bytes / (JOBS * a.points):.0f} bytes a point)" for s in sides) + " | |")
    print(f"| load average (1, 5, 15 min) at the end | {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} |" + " |" * len(sides))


if __name__ == "__main__":
    main()
