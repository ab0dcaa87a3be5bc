"""Core figures beside their targets: submit-to-start latency, drain rate, CLI wall times,
log-parse throughput into SQLite, runner overhead on a CPU-bound script, idle daemon memory.

    python bench/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, Daemon, cli, machine, median, pct, table, tmp_home


def submit_to_start(n: int):
    home = tmp_home()
    lat = []
    with Daemon(home, "--http", "none"):
        for i in range(n):
            r = cli(home, "submit", "--", "/bin/sh", "-c", "date +%s.%N")
            t_ret = time.time()
            jid = r.stdout.strip()
            log = home / "run" / jid / "output.log"
            while True:
                try:
                    first = log.read_text().split("\n", 1)[0]
                    if first.strip():
                        break
                except FileNotFoundError:
                    pass
                time.sleep(0.001)
            lat.append(float(first) - t_ret)
    return lat


def drain(n: int, slots: int = 4):
    from runner import spool
    from runner.home import Home

    home = tmp_home()
    h = Home(home).ensure()
    for _ in range(n):
        spool.submit(h, {"command": ["/bin/true"], "env": "system", "workdir": str(home.parent), "network": True})
    from runner.store import Store

    t0 = time.time()
    with Daemon(home, "--http", "none", "--max-running", str(slots)):
        s = Store(home / "runner.db")
        while s.count_by_state().get("succeeded", 0) < n:
            time.sleep(0.01)
        dt = time.time() - t0
    return n / dt


def cli_times(reps: int):
    home = tmp_home()
    cli(home, "submit", "--", "true")  # creates the store
    jid = cli(home, "ls", "--json").stdout
    import json

    jid = json.loads(jid)[0]["id"]
    out = {}
    for name, args in (("runner submit", ("submit", "--", "true")), ("runner ls", ("ls",)), ("runner show", ("show", jid)),
                       ("runner --help", ("--help",))):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            cli(home, *args)
            ts.append(time.perf_counter() - t0)
        out[name] = median(ts)
    bare = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"])
        bare.append(time.perf_counter() - t0)
    out["bare interpreter"] = median(bare)
    return out


def parse_throughput(lines: int):
    """A training-progress-style log: \\r-redrawn bars with ANSI colour, a metrics line per 'epoch'."""
    from runner.store import Store
    from runner.watch import LogWatcher

    home = tmp_home()
    job_dir = home / "jobs" / "bench"
    job_dir.mkdir(parents=True)
    chunks = []
    per_epoch = 1000
    for e in range(lines // per_epoch):
        for s in range(per_epoch - 1):
            chunks.append(f"\x1b[34mEpoch {e}/{lines // per_epoch}\x1b[0m {s:4d}/{per_epoch}: loss={1.0 / (s + 1):.4f} lr=0.001\r")
        chunks.append(f"\nepoch={e} train_loss=0.5 val_loss=0.4 val_acc=0.9\n")
    data = "".join(chunks).encode()
    (job_dir / "output.log").write_bytes(data)
    s = Store(home / "runner.db")
    s.insert_job({"id": "bench", "name": "b", "user": "u", "uid": 0, "kind": "command", "spec": {}, "created_at": 0, "gpus": [], "after": []})
    w = LogWatcher("bench", job_dir, None)
    t0 = time.perf_counter()
    points = w.poll(s, final=True)
    dt = time.perf_counter() - t0
    import re

    rx = re.compile(r"(\w+)=([\d.]+)")
    t1 = time.perf_counter()
    for line in data.decode().splitlines():
        rx.findall(line)
    bare = time.perf_counter() - t1
    physical = data.count(b"\n") + data.count(b"\r")
    return physical / dt, points, physical / bare, len(data)


def overhead(seconds: float):
    script = f"import time\nt=time.process_time()\nx=0\nwhile time.process_time()-t<{seconds}:\n    x+=1\nprint('work', x)\n"
    home = tmp_home()
    p = home / "cpu.py"
    p.write_text(script)
    t0 = time.perf_counter()
    by_hand = subprocess.run([sys.executable, str(p)], capture_output=True, text=True)
    hand_t = time.perf_counter() - t0
    hand_work = int(by_hand.stdout.split()[1])
    with Daemon(home, "--http", "none"):
        r = cli(home, "submit", "--", sys.executable, str(p))
        jid = r.stdout.strip()
        from runner.store import Store

        s = Store(home / "runner.db")
        while s.get_job(jid)["state"] != "succeeded":
            time.sleep(0.05)
        work = int((home / "run" / jid / "output.log").read_text().split()[1])
    # Same CPU time budget: less work done means the runner slowed the job down.
    return 100.0 * (hand_work - work) / hand_work, hand_t


def idle_memory():
    import psutil

    home = tmp_home()
    with Daemon(home, "--http", "127.0.0.1:0") as d:
        time.sleep(3)
        return psutil.Process(d.proc.pid).memory_info().rss / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    a = ap.parse_args()
    n = 20 if a.quick else 100
    print(f"# bench_core on {machine()}")
    print(f"bubblewrap: {'on' if __import__('runner.sandbox', fromlist=['x']).bwrap_path() else 'off'}")
    lat = submit_to_start(n)
    rate = drain(200 if not a.quick else 50)
    times = cli_times(5 if a.quick else 10)
    lps, points, bare_lps, size = parse_throughput(100_000 if a.quick else 1_000_000)
    ovh, hand_t = overhead(2.0 if a.quick else 20.0)
    rss = idle_memory()
    rows = [
        (f"submit-to-start p50 ({n} jobs)", f"{1000 * pct(lat, 50):.1f} ms", "<= 50 ms", pct(lat, 50) <= 0.05),
        (f"submit-to-start p90", f"{1000 * pct(lat, 90):.1f} ms", "", ""),
        ("jobs drained per second, 4 slots", f"{rate:.0f}/s", ">= 100/s", rate >= 100),
    ]
    for k, v in times.items():
        target = {"runner submit": 0.25, "runner ls": 0.15, "runner show": 0.15, "runner --help": 0.15}.get(k)
        rows.append((f"{k} wall time", f"{1000 * v:.0f} ms", f"<= {1000 * target:.0f} ms" if target else "", v <= target if target else ""))
    rows += [
        (f"log parse into SQLite ({size / 1e6:.0f} MB, {points} points)", f"{lps / 1e6:.2f} M lines/s", ">= 1.0 M lines/s", lps >= 1e6),
        ("bare regex pass, same log", f"{bare_lps / 1e6:.2f} M lines/s", "(reference)", ""),
        (f"runner overhead, CPU-bound {hand_t:.0f}s script", f"{ovh:.2f} %", "<= 1 %", ovh <= 1.0),
        ("idle daemon RSS (HTTP on)", f"{rss:.0f} MB", "<= 100 MB", rss <= 100),
    ]
    table("core", rows)


if __name__ == "__main__":
    main()
