"""HTTP latency with many jobs in the store (the real daemon serving, a real client on loopback).

    python bench/bench_http.py [--jobs 10000] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

from common import Daemon, commit, free_port, machine, pct, table, tmp_home, wait_healthy
from runner.store import Store, _insert_points


def fill(home, n, metrics_per_job=10):
    s = Store(home / "runner.db")
    states = ["succeeded"] * 8 + ["failed", "cancelled"]
    with s.transaction() as c:
        for i in range(n):
            jid = f"b{i:07d}"
            c.execute("INSERT INTO jobs (id, seq, name, user, uid, kind, state, spec, created_at, started_at, finished_at, gpus, after, job_dir, priority, log_offset, cancel_requested) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,0,0)",
                      (jid, i + 1, f"job{i}", f"user{i % 7}", 1000, "command", states[i % 10], json.dumps({"command": "true"}),
                       i, i + 1, i + 2, "[]", "[]", str(home / "jobs" / jid)))
            _insert_points(c, jid, [(f"m{k % 5}", k * 0.1, k, k // 5) for k in range(metrics_per_job)], i)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    print(f"# bench_http on {machine()}; commit {commit()}")
    print(f"# p50, p99 and max over {a.requests} requests each")
    home = tmp_home()
    fill(home, a.jobs)
    port = free_port()
    rows = []
    with Daemon(home, "--http", f"127.0.0.1:{port}"):
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        mid = f"b{a.jobs // 2:07d}"
        for path in ("/healthz", "/status", "/jobs?limit=50", f"/jobs?limit=50&offset={a.jobs - 100}", f"/jobs/{mid}",
                     f"/jobs/{mid}/metrics", "/jobs?state=failed&limit=100"):
            ts = []
            for _ in range(a.requests):
                t0 = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=10) as r:
                    r.read()
                ts.append(time.perf_counter() - t0)
            rows.append((f"GET {path}", f"{1000 * pct(ts, 50):.1f} ms", f"{1000 * pct(ts, 99):.1f} ms", f"{1000 * max(ts):.1f} ms"))
    table(f"HTTP with {a.jobs} jobs and {a.jobs * 10} metric points in the store", rows, ("request", "p50", "p99", "max"))


if __name__ == "__main__":
    main()
