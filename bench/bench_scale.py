"""A year of a busy lab in one store (#30): stores of 1,000, 10,000 and 100,000 jobs with their
metric points, and at each size what a user waits for: `runner ls`, GET /jobs?limit=50 and the
runs table /ui/ (both uncached: the store changes between requests), the last page of the runs
table, a job's page and its charts with 100,000 points, a compare of 10 such jobs (the page and
what it fetches on its first load), one scheduling pass with the queue, the
daemon's RSS and the store's bytes per million points; beside them task-spooler's `tsp -l` over
the same queue and SQLite's own insert rate on this disk.

How each store is built (the write paths are the daemon's own):
- the queue: `queued` jobs written into the spool by spool.submit (what `runner submit` writes),
  each asking for a GPU on a host with none, taken in by the real daemon;
- the history: ended jobs and their points written with the store's own functions (insert_job,
  then record_progress, the watcher's write: a job's points and its log offset in one
  transaction), because parsing a log per job for 100,000 jobs would take hours here;
- ten jobs with 100,000 points each read from real logs by the daemon's LogWatcher (one job's page,
  the ten on the compare page).

    python bench/bench_scale.py [--sizes 1000,10000,100000] [--reps 10] [--points-per-job 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, Daemon, commit, free_port, machine, median, spread, table, tmp_home

METRICS = ("loss", "acc", "lr", "val_loss")


def history(store, n, points_per_job, now):
    """n ended jobs, a job's points and its offset in one transaction each (as the watcher writes)."""
    me = os.getuid()
    ids = []
    chunk = 1000
    for start in range(0, n, chunk):
        with store.transaction():  # insert_job's own transactions join this one: 1,000 jobs a commit
            for i in range(start, min(n, start + chunk)):
                t = now - (n - i) * 300
                jid = f"h{i:07d}"
                store.insert_job({"id": jid, "name": f"sweep-{i % 97}-lr{i % 7}", "user": f"user{i % 12}", "uid": me, "kind": "model",
                                  "model": ("timm/resnet18", "ultralytics/yolov8n", "transformers/google/vit-base-patch16-224")[i % 3],
                                  "spec": {"model": "timm/resnet18", "train": {"lr": 0.001 * (i % 7 + 1)}, "resources": {"gpus": 1}},
                                  "gpus": [], "after": [], "state": ("succeeded", "failed", "cancelled")[i % 3], "reason": "exit_code",
                                  "created_at": t, "started_at": t + 5, "finished_at": t + 250, "exit_code": (i % 3 == 1) * 1}, now=t)
                ids.append(jid)
    t0 = time.perf_counter()
    steps = max(1, points_per_job // len(METRICS))
    for i, jid in enumerate(ids):
        pts = [(m, 1.0 / (k + 1) + (i % 13) / 100, k, k // 10) for k in range(steps) for m in METRICS]
        store.record_progress(jid, pts, 4096, {"epoch": steps // 10, "step": steps - 1})
    return ids, time.perf_counter() - t0, len(ids) * steps * len(METRICS)


def big_job(home, store, n_points, now, jid="big0000"):
    """A job of n_points points (4 a line) read from its log by the daemon's LogWatcher."""
    from runner.watch import LogWatcher

    store.insert_job({"id": jid, "name": "big", "user": "user0", "uid": os.getuid(), "kind": "command", "spec": {}, "gpus": [],
                      "after": [], "state": "succeeded", "reason": "exit_code", "created_at": now - 100, "started_at": now - 99,
                      "finished_at": now - 1, "exit_code": 0}, now=now - 100)
    d = home / "jobs" / jid
    d.mkdir(parents=True)
    lines = n_points // 4
    (d / "output.log").write_text("".join(f"epoch={i // 1000} step={i} loss={2.0 / (i + 1) + (i % 50) / 1000:.5f} "
                                          f"lr=0.001 acc={i % 100 / 100:.2f} val_loss={1.0 / (i // 1000 + 1):.4f}\n"
                                          for i in range(lines)))
    w = LogWatcher(jid, d, None)
    t0 = time.perf_counter()
    got = w.poll(store, final=True)
    w.close()
    return jid, got, time.perf_counter() - t0


def sqlite_limit(path, rows=1_000_000):
    """Points/s in one transaction on the same disk from Python's sqlite3: SQLite's own limit for a
    row a point (a table of the columns a point has, with the (job_id, name, id) index, one
    executemany), and the store's own write of the same points (store._insert_points: packs and
    their chart chunks). (the row a point's, the store's)"""
    from runner.store import Store, _insert_points

    out = []
    for multi in (False, True):
        s = Store(path)
        c = s.conn
        c.execute("CREATE TABLE IF NOT EXISTS limit_rows (id INTEGER PRIMARY KEY, job_id TEXT, name TEXT, value REAL, step INTEGER, "
                  "epoch INTEGER, at REAL)")
        c.execute("CREATE INDEX IF NOT EXISTS limit_rows_ix ON limit_rows (job_id, name, id)")
        t0 = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        if multi:
            _insert_points(c, "sqlite-limit", [(METRICS[k % 4], 1.0 / (k + 1), k, k // 1000) for k in range(rows)], 0.0)
        else:
            c.executemany("INSERT INTO limit_rows (job_id, name, value, step, epoch, at) VALUES (?,?,?,?,?,?)",
                          [("sqlite-limit", METRICS[k % 4], 1.0 / (k + 1), k, k // 1000, 0.0) for k in range(rows)])
        c.execute("COMMIT")
        out.append(rows / (time.perf_counter() - t0))
        s.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(str(path) + suffix)
            except FileNotFoundError:
                pass
    return out


def enqueue(home, n):
    """n GPU jobs into the spool as `runner submit` writes them; returns when the daemon took them all."""
    from runner import spool
    from runner.home import Home

    h = Home(home)
    t0 = time.perf_counter()
    for i in range(n):
        spool.submit(h, {"command": ["/bin/true"], "env": "system", "workdir": str(home.parent), "network": True,
                         "name": f"queued-{i % 50}", "resources": {"gpus": 1}})
    s = h.store()
    while s.count_jobs(["queued"]) < n:
        time.sleep(0.2)
    return time.perf_counter() - t0


def timed_get(url, reps, between=None):
    """Round-trip times of GET url (or of each of a list of urls, one after the other: a page and
    what it fetches); `between` runs before each request, outside the timing."""
    out = []
    for _ in range(reps):
        if between:
            between()
        t0 = time.perf_counter()
        for u in [url] if isinstance(url, str) else url:
            with urllib.request.urlopen(u) as r:
                r.read()
        out.append(time.perf_counter() - t0)
    return out


COMPARED = 10
"""Jobs of --big-points points each on the compare page (its most, runner.web.runs.COMPARE_MAX)."""


def compare_urls(url, ids):
    """What the compare page of these jobs asks the server for on its first load (charts.js): the
    page, its small multiples of every shared metric, and each job's series of the page's metric
    (val_loss: these jobs print no main metric)."""
    q = ",".join(ids)
    return [f"{url}/ui/compare?ids={q}", f"{url}/ui/compare/charts?ids={q}",
            *(f"{url}/jobs/{i}/series?name=val_loss&points=2000" for i in ids)]


TSP_MAX = 500
"""Most jobs queued in task-spooler: each of its queued jobs is a process of its own holding a
connection to the server, which serves at most 1,000 (MAXCONN; past it a new `tsp` waits for good)."""


class Tsp:
    """task-spooler with `n` jobs queued behind one that holds its only slot (a queue like ours)."""

    def __init__(self, n):
        self.dir = tempfile.mkdtemp(prefix="bench-tsp-scale-")
        self.env = {**os.environ, "TS_SOCKET": f"{self.dir}/sock", "TMPDIR": self.dir, "TS_MAXFINISHED": "1000"}
        self.run("-S", "1")
        self.blocker = self.run("sleep", "3600").strip()
        for _ in range(n):
            self.run("true")

    def run(self, *args):
        return subprocess.run(["tsp", *args], env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout

    def close(self):
        subprocess.run(["tsp", "-k", self.blocker], env=self.env, capture_output=True, timeout=60)  # -K alone leaves the running job
        subprocess.run(["tsp", "-K"], env=self.env, capture_output=True, timeout=60)  # the server and its waiting jobs
        shutil.rmtree(self.dir, ignore_errors=True)


def cli_times(home, reps, baseline=None):
    """Wall times of `runner ls` and `runner submit` (a GPU job: it waits in the queue with the
    others) of 5 runs each, from this checkout and, interleaved with them, from `baseline` (another
    checkout of runner: the same store, the same moments of the host's load)."""
    roots = {"": ROOT, **({"base_": baseline} if baseline else {})}
    out = {f"{p}{k}": [] for p in roots for k in ("ls", "submit")}
    for _ in range(min(reps, 5)):
        for prefix, root in roots.items():
            for key, args in (("ls", ("ls",)), ("submit", ("submit", "--gpus", "1", "--name", "bench-submit", "--workdir",
                                                           home.parent, "--", "/bin/true"))):
                e = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(root)}
                t = time.perf_counter()  # run in the checkout: `python -m` looks in its folder first
                r = subprocess.run([sys.executable, "-m", "runner", *map(str, args)], capture_output=True, text=True, env=e, cwd=root)
                out[f"{prefix}{key}"].append(time.perf_counter() - t)
                assert r.returncode == 0, r.stderr
    return out


def one_size(n_jobs, reps, points_per_job, big_points, use_tsp, baseline=None):
    """Build a store of n_jobs jobs (a tenth of them queued, at most 10,000) and measure it."""
    import psutil

    from runner.home import Home

    queued = min(10_000, n_jobs // 10)
    n_jobs = max(n_jobs, queued + COMPARED + 1)
    home = tmp_home()
    h = Home(home).ensure()
    store = h.store()
    now = time.time()
    t0 = time.perf_counter()
    ids, hist_s, hist_points = history(store, n_jobs - queued - COMPARED, points_per_job, now)
    big, big_got, big_s = big_job(home, store, big_points, now)
    more = [big_job(home, store, big_points, now, f"big{k:04d}") for k in range(1, COMPARED)]  # for compare
    build = {"history_jobs": len(ids), "history_points": hist_points, "history_s": hist_s, "big_points": big_got, "big_s": big_s,
             "more_points": sum(m[1] for m in more)}
    port = free_port()
    out = {"queued": queued, "jobs": n_jobs}
    with Daemon(home, "--http", f"127.0.0.1:{port}", "--max-running", "4") as d:
        build["intake_s"] = enqueue(home, queued)
        build["total_s"] = time.perf_counter() - t0
        url = f"http://127.0.0.1:{port}"
        k = [0]

        def write():  # a commit from another connection: the daemon's answers are read afresh
            k[0] += 1
            store.update_job(ids[k[0] % len(ids)], note=f"bench {k[0]}")

        last = (n_jobs - queued - 1) // 50  # the runs table shows ended jobs 50 a page (runner.web.runs.PAGE), from page 0
        paths = {"api": "/jobs?limit=50", "runs": "/ui/", "runs_last": f"/ui/?page={last}", "job": f"/ui/jobs/{big}",
                 "charts": f"/ui/jobs/{big}/charts"}
        for key, path in paths.items():
            timed_get(url + path, 1)
            out[key] = timed_get(url + path, reps, between=write)
        cmp = compare_urls(url, [big, *(m[0] for m in more)])
        timed_get(cmp, 1)
        out["compare"] = timed_get(cmp, reps, between=write)
        out.update(cli_times(home, reps, baseline))
        bare = []
        for _ in range(min(reps, 5)):  # what any Python command costs to start on this host now
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"])
            bare.append(time.perf_counter() - t)
        out["bare"] = bare
        out["rss_mb"] = psutil.Process(d.proc.pid).memory_info().rss / 2**20
        out["load"] = os.getloadavg()[0]  # this host is shared: how busy it was while measured
    points = build["history_points"] + build["big_points"] + build["more_points"]
    size = sum(os.path.getsize(h.db.parent / (h.db.name + s)) for s in ("", "-wal") if (h.db.parent / (h.db.name + s)).exists())
    out["db_mb"] = size / 1e6
    out["points"] = points
    out["mb_per_m_points"] = size / 1e6 / (points / 1e6)
    out["sched"] = sched_pass(h, reps)
    if use_tsp and queued:
        out["tsp_n"] = min(queued, TSP_MAX)
        tsp = Tsp(out["tsp_n"])
        try:
            tl = []
            for _ in range(min(reps, 5)):
                t = time.perf_counter()
                tsp.run("-l")
                tl.append(time.perf_counter() - t)
            out["tsp_l"] = tl
        finally:
            tsp.close()
    out["build"] = build
    shutil.rmtree(home.parent, ignore_errors=True)
    return out


def sched_pass(h, reps):
    """The real daemon's scheduling pass (Launch.schedule_here) on this store, in this process
    (the bench's daemon stopped first): the first pass (fair share reads the history) and the next."""
    from runner.daemon import Daemon as D

    d = D(h, http=None, max_running=4)
    try:
        ts = []
        for _ in range(reps + 1):
            t = time.perf_counter()
            d.schedule_here(time.time())
            ts.append(time.perf_counter() - t)
    finally:
        d.pool.shutdown()
        d.launcher.close()
        d.store.close()
    return ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated job counts (e.g. 1000 for a quick run)")
    ap.add_argument("--reps", type=int, default=10, help="requests per figure (runner ls: at most 5)")
    ap.add_argument("--points-per-job", type=int, default=100, help="metric points of each ended job")
    ap.add_argument("--big-points", type=int, default=100_000, help="points of the one job whose page is timed")
    ap.add_argument("--no-tsp", action="store_true", help="skip task-spooler's queue (it takes a process per job to fill)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout of runner (e.g. `git archive COMMIT runner log_parsers | tar -x -C DIR`) whose "
                         "`runner ls` and `runner submit` are timed beside this one's, interleaved")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    print(f"# bench_scale on {machine()}; commit {commit()}; SQLite {sqlite3.sqlite_version}")
    print("# each store: a tenth of its jobs queued (at most 10,000; GPU jobs on a host without GPUs, through the spool and the daemon),")
    print(f"# the rest ended, {a.points_per_job} points each (the store's own insert_job and record_progress: the watcher's write,")
    print(f"# not a parsed log per job), and {COMPARED} jobs of {a.big_points:,} points parsed from their logs by the daemon's LogWatcher")
    print(f"# figures: median (min-max) of {a.reps} requests over HTTP to a real daemon, a store write from another")
    print("# connection before each (no answer comes from a cache); runner ls and runner submit: of 5 runs of the CLI")
    use_tsp = shutil.which("tsp") is not None and not a.no_tsp
    if a.baseline:
        a.baseline = a.baseline.resolve()
        print(f"# baseline: the CLI of {a.baseline} ({(a.baseline / 'COMMIT').read_text().strip() if (a.baseline / 'COMMIT').exists() else 'commit not given'})")
    res = {n: one_size(n, a.reps, a.points_per_job, a.big_points, use_tsp, a.baseline) for n in sizes}
    limit_dir = tmp_home()
    limit = sqlite_limit(limit_dir / "limit.db")
    shutil.rmtree(limit_dir.parent, ignore_errors=True)

    def ms(v):
        return spread(v, 1000.0, "{:.0f}") + " ms"

    def row(label, key, target, alt=None):
        cells = [ms(res[n][key]) for n in sizes]
        ok = all(median(res[n][key]) <= target for n in sizes)
        return (label, *cells, alt or "", f"<= {1000 * target:.0f} ms", ok)

    heads = ("figure", *(f"{n:,} jobs" for n in sizes), "alternative", "target", "ok")
    rows = [
        ("of them queued", *(f"{res[n]['queued']:,}" for n in sizes), "", "", ""),
        ("metric points in the store", *(f"{res[n]['points']:,}" for n in sizes), "", "", ""),
        row("runner ls (the CLI, wall)", "ls", 0.10,
            ("tsp -l: " + " / ".join(f"{ms(res[n]['tsp_l'])} ({res[n]['tsp_n']:,} queued)" for n in sizes if "tsp_l" in res[n]))
            if use_tsp else None),
        *([row("  runner ls of the baseline", "base_ls", 0.10)] if a.baseline else []),
        row("runner submit (the CLI, wall)", "submit", 0.08),
        *([row("  runner submit of the baseline", "base_submit", 0.08)] if a.baseline else []),
        ("  a bare `python -c pass` then", *(ms(res[n]["bare"]) for n in sizes), "", "(reference)", ""),
        row("GET /jobs?limit=50, uncached", "api", 0.02),
        row("runs table /ui/, uncached", "runs", 0.10),
        row("runs table, its last page, uncached", "runs_last", 0.10),
        row(f"job page, {a.big_points:,} points", "job", 0.15),
        row("its charts (every metric, the page's first load)", "charts", 0.15),
        row(f"compare of {COMPARED} such jobs (the page, its charts, each job's series: the first load)", "compare", 0.50),
        ("one scheduling pass (first / median of the next)",
         *(f"{1000 * res[n]['sched'][0]:.0f} / {1000 * median(res[n]['sched'][1:]):.0f} ms" for n in sizes), "", "<= 50 ms",
         all(median(res[n]["sched"][1:]) <= 0.05 for n in sizes)),
        ("daemon RSS after these requests", *(f"{res[n]['rss_mb']:.0f} MB" for n in sizes), "", "<= 300 MB",
         all(res[n]["rss_mb"] <= 300 for n in sizes)),
        ("load average (1 min) at the end of the requests", *(f"{res[n]['load']:.1f}" for n in sizes), "", "(2 cores)", ""),
        ("store file (db + wal)", *(f"{res[n]['db_mb']:.0f} MB" for n in sizes), "", "", ""),
        ("  per million points (jobs' rows included)", *(f"{res[n]['mb_per_m_points']:.0f} MB" for n in sizes), "", "(stated)", ""),
    ]
    table("a year of a busy lab: each figure at each size", rows, headers=heads)
    b = {n: res[n]["build"] for n in sizes}
    rows = [
        ("history: points stored per second (record_progress, a job a transaction)",
         *(f"{b[n]['history_points'] / b[n]['history_s'] / 1e6:.2f} M/s" for n in sizes),
         f"SQLite's own limit for a row a point, one transaction, the (job_id, name, id) index: {limit[0] / 1e6:.2f} M rows/s "
         f"(executemany); the store's own write, packs and chunks, the same points in one transaction: {limit[1] / 1e6:.2f} M points/s"),
        (f"a {a.big_points:,}-point log through LogWatcher (4 points a line)",
         *(f"{b[n]['big_s']:.2f} s ({b[n]['big_points'] / b[n]['big_s'] / 1e6:.2f} M points/s)" for n in sizes), ""),
        ("the queue taken in by the daemon from the spool",
         *(f"{res[n]['queued'] / b[n]['intake_s']:.0f} jobs/s" if res[n]["queued"] else "—" for n in sizes), ""),
        ("whole store built in", *(f"{b[n]['total_s']:.0f} s" for n in sizes), ""),
    ]
    table("building the stores", rows, headers=("figure", *(f"{n:,} jobs" for n in sizes), "alternative"))


if __name__ == "__main__":
    main()
