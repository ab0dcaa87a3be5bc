"""The dashboard under load that a lab's server reaches in a few months: 10,000 jobs in the store
(200 of them queued) and a job with 100,000 metric points. Served by a real daemon over HTTP;
charts drawn in headless Chromium (Debian's). Beside them, what a user would run instead: `runner
ls` and the JSON API's first page.

    python bench/bench_web.py [--reps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
import urllib.request

from common import Daemon, cli, commit, machine, spread, table, tmp_home


def fill(home, n_jobs=10_000, n_points=100_000):
    from runner.home import Home

    h = Home(home).ensure()
    s = h.store()
    now = time.time()
    me = os.getuid()
    rows = []
    for i in range(n_jobs):
        queued = i >= n_jobs - 200
        state = "queued" if queued else ("succeeded", "failed", "cancelled")[i % 3]
        rows.append({"id": f"b{i:07d}", "name": f"sweep-{i % 97}-lr{i % 7}", "user": f"user{i % 12}", "uid": me, "kind": "model",
                     "model": ("timm/resnet18", "ultralytics/yolov8n", "transformers/google/vit-base-patch16-224")[i % 3],
                     "spec": {"model": "timm/resnet18", "train": {"lr": 0.001 * (i % 7 + 1)}, "resources": {"gpus": 8 if queued else 0}},
                     "gpus": [], "after": [], "state": state, "reason": "no_gpus_on_this_host" if queued else "exit_code",
                     "created_at": now - (n_jobs - i) * 60, "started_at": None if queued else now - (n_jobs - i) * 60 + 5,
                     "finished_at": None if queued else now - (n_jobs - i) * 60 + 50, "exit_code": None if queued else (i % 3 == 1) * 1})
    for r in rows:
        s.insert_job(r, now=r["created_at"])
    big = rows[0]["id"]
    s.add_metrics(big, [("loss", 2.0 / (k + 1) + (k % 50) / 1000, k, k // 1000) for k in range(n_points)])
    s.add_metrics(big, [("val_loss", 1.0 / (e + 1), None, e) for e in range(100)])
    return big


def timed_get(url, reps):
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url) as r:
            r.read()
        out.append(time.perf_counter() - t0)
    return out


def ms(v) -> str:
    return spread(v, 1000.0, "{:.0f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    print(f"# bench_web on {machine()}; commit {commit()}")
    print(f"# server times: median (min-max) of {a.reps} requests over HTTP to a real daemon, first request dropped")
    home = tmp_home()
    t0 = time.time()
    big = fill(home)
    print(f"# store filled in {time.time() - t0:.0f}s: 10,000 jobs (200 queued), one with 100,000 points")
    from common import free_port

    port = free_port()
    with Daemon(home, "--http", f"127.0.0.1:{port}", "--max-running", "4"):
        url = f"http://127.0.0.1:{port}"
        last = json.loads(urllib.request.urlopen(url + f"/ui/jobs/{big}/charts").read())["last_id"]
        paths = {"runs": "/ui/", "runs40": "/ui/?state=failed&page=40", "best": "/ui/?sort=best&desc=1", "name": "/ui/?name=sweep-4&sort=name",
                 "rows": "/ui/queue/rows", "job": f"/ui/jobs/{big}", "charts": f"/ui/jobs/{big}/charts", "live": f"/ui/jobs/{big}/live?after={last}",
                 "live100": f"/ui/jobs/{big}/live?after={last - 100}", "series": f"/jobs/{big}/series?name=loss", "models": "/ui/models",
                 "api": "/jobs?limit=50"}
        t = {}
        for k, path in paths.items():
            timed_get(url + path, 1)
            t[k] = timed_get(url + path, a.reps)
        ls = []
        for _ in range(min(a.reps, 10)):
            t0 = time.perf_counter()
            cli(home, "ls")
            ls.append(time.perf_counter() - t0)
        draw = chart_times(url, big, 5)
        n = json.loads(urllib.request.urlopen(url + f"/jobs/{big}/series?name=loss").read())["points"]
    rows = [("runs table /ui/ (10,000 jobs, main metric per row)", ms(t["runs"]) + " ms", "runner ls: " + ms(ls) + " ms", "<= 100 ms",
             statistics.median(t["runs"]) <= 0.1),
            ("runs table, failed jobs, page 41", ms(t["runs40"]) + " ms", "GET /jobs?limit=50: " + ms(t["api"]) + " ms", "<= 100 ms",
             statistics.median(t["runs40"]) <= 0.1),
            ("runs table sorted by best (the page's rows)", ms(t["best"]) + " ms", "", "<= 100 ms", statistics.median(t["best"]) <= 0.1),
            ("runs table, name filter, sorted by name", ms(t["name"]) + " ms", "", "<= 100 ms", statistics.median(t["name"]) <= 0.1),
            ("runs rows (the 3 s refresh)", ms(t["rows"]) + " ms", "", "", ""),
            ("job page, 100,000 points", ms(t["job"]) + " ms", "", "<= 150 ms", statistics.median(t["job"]) <= 0.15),
            ("its charts, every metric (page load, once)", ms(t["charts"]) + " ms", "", "", ""),
            ("live refresh, nothing new", ms(t["live"]) + " ms", "", "<= 50 ms", statistics.median(t["live"]) <= 0.05),
            ("live refresh, 100 new points", ms(t["live100"]) + " ms", "", "<= 50 ms", statistics.median(t["live100"]) <= 0.05),
            (f"one series (100,000 -> {n} points)", ms(t["series"]) + " ms", "", "", ""),
            ("its charts drawn in Chromium (page load to drawn)", ms(draw) + " ms", "", "<= 1000 ms", statistics.median(draw) <= 1.0),
            ("models page (36 cards)", ms(t["models"]) + " ms", "", "", "")]
    table("dashboard", rows, headers=("figure", "runner", "alternative", "target", "ok"))
    shutil.rmtree(home.parent, ignore_errors=True)


def chart_times(url, job, reps):
    from playwright.sync_api import sync_playwright

    chromium = next(p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and os.path.exists(p))
    out = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            page.goto(f"{url}/ui/jobs/{job}")
            page.wait_for_selector(".chart.small[data-names='loss'][data-total='100000']")
            out.append(time.perf_counter() - t0)
        b.close()
    return out[1:]


if __name__ == "__main__":
    main()
