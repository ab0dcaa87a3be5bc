"""The HTTP API under load: 200 concurrent clients with 10,000 jobs in the store, /healthz while
they wait, a 1 GB log read through the API with the daemon's memory sampled, an unbounded
metrics read, and the long reads (a page of 1,000 jobs of 1,000 metric names each, the charts of
a job of 1,000 metrics) with /healthz meanwhile. Each figure is repeated and given with its spread.

The daemon keeps an answer while nothing it was read from has changed, so 200 clients asking the
same page of an idle queue cost one read and 199 cached answers. Each list request is therefore
measured twice: every client asking a page no one asked before in this run (a distinct offset:
each answer is read from the store, the figure that matters when the queue moves), and all asking
the same page (mostly the response cache), the latter reported apart.

    python bench/bench_http_load.py [--jobs 10000] [--clients 200] [--rounds 5] [--log-gb 1]
                                    [--wide-jobs 1000] [--wide-points 2000]
                                    [--compare PATH]   # another checkout (e.g. `git worktree add`), same run

With --compare the same measurements run against the other checkout's daemon, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import ROOT, machine, pct, table, tmp_home

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import fill  # noqa: E402


def commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() + \
            (" (+ uncommitted changes)" if subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"]).returncode else "")
    except OSError:
        return "?"


async def _get(port: int, path: str, token: str | None = None) -> tuple[float, int, int]:
    """One GET on a fresh connection: (seconds, status, body bytes)."""
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n".encode())  # a name of this server: another Host is refused
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    n = 0
    while True:
        chunk = await r.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
    w.close()
    return time.perf_counter() - t0, status, n


async def _burst(port: int, paths: list[str], tokens: list | None = None):
    """One request per path, all at once (the i-th with tokens[i], as the i-th of as many people),
    and one /healthz sent while they are being served."""
    tasks = [asyncio.create_task(_get(port, path, tokens[i] if tokens else None)) for i, path in enumerate(paths)]
    await asyncio.sleep(0.05)
    health = await _get(port, "/healthz")
    done = await asyncio.gather(*tasks)
    return done, health


class Served:
    def __init__(self, root: Path, home: Path):
        self.root, self.home = root, home
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def __enter__(self):
        env = {**os.environ, "RUNNER_HOME": str(self.home), "PYTHONPATH": str(self.root)}
        self.proc = subprocess.Popen([sys.executable, "-m", "runner", "daemon", "--http", f"127.0.0.1:{self.port}"],
                                     env=env, cwd=self.root, stdout=subprocess.DEVNULL, stderr=open(self.home / "bench-daemon.log", "ab"))
        t0 = time.time()
        while True:
            try:
                asyncio.run(_get(self.port, "/healthz"))
                break
            except OSError:
                if time.time() - t0 > 60:
                    raise RuntimeError("daemon did not start")
                time.sleep(0.1)
        r = subprocess.run([sys.executable, "-m", "runner", "token"], env=env, cwd=self.root, capture_output=True, text=True)
        self.token = r.stdout.strip() or None  # an older checkout has no tokens (and an open log)
        return self

    def people(self, n: int) -> list[str]:
        """Tokens of n people (uids 70000 on): the daemon shares its long reads among people
        (web.reads.Reads), at most 16 of one person's waiting, so n clients model n teammates, as the
        load this bench stands for is. (An older checkout reads them as no one's.)"""
        from runner import tokens
        from runner.home import Home

        h = Home(self.home)
        tokens.ensure_dir(h)
        return [tokens.write(h, 70000 + i, 70000 + i) for i in range(n)]

    def __exit__(self, *a):
        self.proc.terminate()
        self.proc.wait(30)


def _rss_sampler(pid: int, out: list, stop: threading.Event):
    import psutil

    p = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append(p.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.02)


def big_job(home: Path, gb: float) -> str:
    """A job row whose output.log is `gb` GiB of metric lines."""
    from runner.store import Store, _insert_points

    jid = "biglog00"
    d = home / "run" / jid  # the daemon's folder of the job, where its log is
    d.mkdir(parents=True, exist_ok=True)
    line = b"epoch 1 step 123456 loss=0.123456 lr=0.001 some padding to make the line longer than most\n"
    block = line * (4 << 20 // len(line) + 1)
    target = int(gb * 2**30)
    with open(d / "output.log", "wb") as f:
        n = 0
        while n < target:
            f.write(block)
            n += len(block)
    s = Store(home / "runner.db")
    with s.transaction() as c:
        c.execute("INSERT INTO jobs (id, seq, name, user, uid, kind, state, spec, created_at, gpus, after, job_dir, priority, log_offset, cancel_requested) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,0,0)", (jid, 10**8, "biglog", "bench", 1000, "command", "succeeded",
                                                             json.dumps({"command": "true"}), 0, "[]", "[]", str(d)))
        _insert_points(c, jid, [("loss", 1.0 / (k + 1), k, k // 1000) for k in range(100_000)], 0.0)
    return jid


def _writer(home: Path, stop: threading.Event, every: float):
    """A running job's metrics as they arrive: one commit every `every` seconds."""
    from runner.store import Store

    s = Store(home / "runner.db")
    i = 0
    while not stop.is_set():
        s.add_metrics("b0000000", [("loss", 1.0 / (i + 1), i, None)])
        i += 1
        time.sleep(every)


# (query, first offset, a metric written meanwhile): each measured uncached, then cached
# (the uncached runs' offsets never overlap another's: a page one case asked is not another's hit)
CASES = (("/jobs?limit=50", 0, False), ("/jobs?limit=50", 5000, False), ("/jobs?limit=50&state=failed", 0, False),
         ("/jobs?limit=50", 2000, True))


def measure_latency(label: str, root: Path, home: Path, a, rows_lat):
    with Served(root, home) as srv:
        people = srv.people(a.clients)
        asyncio.run(_burst(srv.port, ["/jobs?limit=50&offset=9999"] * a.clients, people))  # warm-up: connections (its page is never asked again)
        for (query, first, writes), cached in [(c, cached) for c in CASES for cached in (False, True)]:
            stop = threading.Event()
            if writes:
                threading.Thread(target=_writer, args=(home, stop, 0.01), daemon=True).start()
            p50s, p99s, maxs, health = [], [], [], []
            for r in range(a.rounds):
                # uncached: each client its own page, never asked before in this daemon's life
                # (offsets first .. first + rounds*clients); cached: all the same page, as before
                paths = [f"{query}&offset={first if cached else first + r * a.clients + i}" for i in range(a.clients)]
                done, h = asyncio.run(_burst(srv.port, paths, people))
                ts = [d[0] for d in done]
                bad = sum(1 for d in done if d[1] != 200)
                if bad:  # a latency of refusals measures nothing: stop
                    raise SystemExit(f"{label}: {bad} of {a.clients} answered non-200 (e.g. {next(d[1] for d in done if d[1] != 200)})")
                p50s.append(pct(ts, 50))
                p99s.append(pct(ts, 99))
                maxs.append(max(ts))
                health.append(h[0])
            stop.set()
            what = (f"{a.clients} x GET {query}&offset={first}" if cached else
                    f"{a.clients} x GET {query}&offset={first}+i, each a page not asked before")
            rows_lat.append((label, "cached" if cached else "uncached",
                             what + (" (a metric written every 10 ms)" if writes else ""),
                             _spread(p50s), _spread(p99s), _spread(maxs), _spread(health)))


def measure_memory(label: str, root: Path, home: Path, a, rows_mem):
    with Served(root, home) as srv:
        stop, samples = threading.Event(), []
        t = threading.Thread(target=_rss_sampler, args=(srv.proc.pid, samples, stop), daemon=True)
        base = __import__("psutil").Process(srv.proc.pid).memory_info().rss
        t.start()
        secs, status, n = asyncio.run(_get(srv.port, f"/jobs/{a.big}/log", token=srv.token))
        stop.set()
        t.join()
        rows_mem.append((label, f"GET /jobs/{{id}}/log ({a.log_gb:g} GiB)", status, f"{n / 2**30:.2f} GiB", f"{secs:.1f} s",
                         f"{base / 2**20:.0f} MB", f"{max(samples or [0]) / 2**20:.0f} MB"))
        stop, samples = threading.Event(), []
        t = threading.Thread(target=_rss_sampler, args=(srv.proc.pid, samples, stop), daemon=True)
        t.start()
        secs, status, n = asyncio.run(_get(srv.port, f"/jobs/{a.big}/metrics"))
        stop.set()
        t.join()
        rows_mem.append((label, "GET /jobs/{id}/metrics (100,000 points, no limit)", status, f"{n / 2**20:.1f} MB", f"{secs:.2f} s",
                         "", f"{max(samples or [0]) / 2**20:.0f} MB"))


def wide_store(home: Path, jobs: int, chart_points: int):
    """`jobs` ended jobs of 1,000 metric names each (the most a job keeps: a per-class table), and
    one more whose 1,000 metrics have `chart_points` points each (its charts: 1,000 series)."""
    from runner.store import Store

    s = Store(home / "runner.db")
    names = [f"val/per_class/{'x' * 40}_{i:04d}" for i in range(1000)]
    for j in range(jobs + 1):
        jid = f"w{j:07d}"
        s.insert_job({"id": jid, "name": "wide", "user": "bench", "uid": 1000, "kind": "command", "spec": {}, "created_at": j,
                      "gpus": [], "after": []})
        s.conn.execute("UPDATE jobs SET state='succeeded' WHERE id=?", (jid,))
        if j < jobs:
            s.add_metrics(jid, [(n, 0.5, 1, 1) for n in names])
    for step in range(0, chart_points, 100):
        s.add_metrics(f"w{jobs:07d}", [(f"m{i:04d}", float(k % 7), k, None) for k in range(step, step + 100) for i in range(1000)])
    s.close()
    return f"w{jobs:07d}"


def _healthz_while(port: int, path: str, rounds: int):
    """(seconds of each GET path, the longest /healthz answer while each was served): /healthz
    asked every 50 ms from another thread."""
    times, worst = [], []
    for _ in range(rounds):
        waits, stop = [], threading.Event()

        def poll():
            while not stop.is_set():
                waits.append(asyncio.run(_get(port, "/healthz"))[0])
                time.sleep(0.05)
        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)
        secs, status, n = asyncio.run(_get(port, path))
        if status != 200:
            raise SystemExit(f"{path}: {status}")
        time.sleep(0.2)
        stop.set()
        t.join()
        times.append(secs)
        worst.append(max(waits))
    return times, worst, n


def measure_wide(label: str, root: Path, home: Path, a, rows):
    """The long reads: a page of 1,000 jobs of 1,000 metric names each, and the charts of a job of
    1,000 metrics; how long each takes, and how long /healthz waits meanwhile."""
    with Served(root, home) as srv:
        for path, what in ((f"/jobs?all=true&limit=1000&offset={{}}", f"GET /jobs?all=true&limit=1000: {a.wide_jobs:,} jobs of 1,000 metric names"),
                           (f"/ui/jobs/{a.wide_charts}/charts?points={{}}", f"its charts: a job of 1,000 metrics of {a.wide_points:,} points")):
            times, worst, n = [], [], 0
            for r in range(a.rounds):  # each round a request not asked before (no answer from a cache)
                t, w, n = _healthz_while(srv.port, path.format(r if "offset" in path else 1000 - r), 1)
                times += t
                worst += w
            rows.append((label, what, f"{n / 2**20:.0f} MB", _spread(times), _spread(worst)))


def _spread(xs) -> str:
    ms = [1000 * x for x in xs]
    return f"{statistics.median(ms):.0f} ms ({min(ms):.0f}-{max(ms):.0f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--log-gb", type=float, default=1.0)
    ap.add_argument("--compare", type=Path, help="another checkout of runner to measure in the same run")
    ap.add_argument("--wide-jobs", type=int, default=1000, help="jobs of 1,000 metric names each for the long reads (0: skip them)")
    ap.add_argument("--wide-points", type=int, default=2000, help="points of each of the 1,000 metrics whose charts are read")
    a = ap.parse_args()
    print(f"# bench_http_load on {machine()}")
    print(f"# this checkout: {ROOT} at {commit(ROOT)}" + (f"; compared with {a.compare} at {commit(a.compare)}" if a.compare else ""))
    home = tmp_home()
    fill(home, a.jobs)
    rows_lat, rows_mem = [], []
    daemons = [("this", ROOT)] + ([("compare", a.compare.resolve())] if a.compare else [])
    for label, root in daemons:
        measure_latency(label, root, home, a, rows_lat)
    a.big = big_job(home, a.log_gb)
    os.sync()
    for label, root in daemons:
        measure_memory(label, root, home, a, rows_mem)
    table(f"Latency under {a.clients} concurrent clients, {a.jobs} jobs in the store; median (min-max) over {a.rounds} rounds. "
          "uncached: every answer read from the store; cached: one read, the rest from the daemon's response cache "
          "(with a metric written every 10 ms, a cached run misses after each write)",
          rows_lat, ("daemon", "answers", "requests", "p50", "p99", "max", "/healthz meanwhile"))
    table("Big reads: the daemon's memory (RSS sampled every 20 ms)", rows_mem,
          ("daemon", "request", "status", "body", "time", "RSS before", "peak RSS"))
    import shutil

    shutil.rmtree(home.parent, ignore_errors=True)
    if a.wide_jobs:
        home = tmp_home()
        a.wide_charts = wide_store(home, a.wide_jobs, a.wide_points)
        rows_wide: list = []
        for label, root in daemons:
            measure_wide(label, root, home, a, rows_wide)
        table(f"Long reads, each a request not asked before; median (min-max) over {a.rounds} rounds, and the longest "
              "/healthz answer while each was served (asked every 50 ms)", rows_wide,
              ("daemon", "request", "body", "time", "/healthz meanwhile, longest"))
        shutil.rmtree(home.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
