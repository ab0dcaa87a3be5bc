"""A day of a busy lab on 8 GPUs (time compressed, the real scheduler) beside strict FIFO (what
task-spooler with GPU slots does: the head of the queue waits for its GPUs and blocks the rest),
over several seeded days; and the cost of one scheduling decision with 1,000 jobs queued.

    python bench/bench_sched.py [--jobs 300] [--days 5]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time

from common import commit, machine, pct, spread, table
from runner.gpus import GPU
from runner.scheduler import plan

SIZES = [(1, 0.6), (2, 0.25), (4, 0.1), (8, 0.05)]


def workload(n, rng):
    jobs, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(n / 86400 * 1.3)  # arrivals spread over ~a day, bursty
        size = rng.choices([s for s, _ in SIZES], [w for _, w in SIZES])[0]
        dur = min(6 * 3600, rng.lognormvariate(6.6, 0.9))  # median ~12 min, mean ~20: a ~90 % loaded day
        jobs.append({"id": f"j{i}", "user": f"u{rng.randint(0, 7)}", "after": [], "priority": 0, "created_at": t,
                     "spec": {"resources": {"gpus": size, "time_limit": dur * rng.uniform(1.1, 2.0)}}, "dur": dur})
    return jobs


def fifo_plan(queued, free):
    """Strict FIFO: start queue heads while they fit; the first that does not blocks the rest."""
    starts = []
    free = list(free)
    for job in queued:
        want = job["spec"]["resources"]["gpus"]
        if want > len(free):
            break
        starts.append((job, free[:want]))
        free = free[want:]
    return starts


def simulate(jobs, n_gpus=8, backfill_limit=8, fifo=False):
    gpus = [GPU(index=i, uuid=f"G{i}", name="sim", memory_total_mb=81920) for i in range(n_gpus)]
    free = list(gpus)
    events = [(j["created_at"], 0, j["id"]) for j in jobs]
    heapq.heapify(events)
    by_id = {j["id"]: j for j in jobs}
    queued, running, skipped = [], {}, {}
    start, end = {}, {}
    decisions = []
    while events:
        while True:  # every arrival and end at this instant, then one decision
            now, kind, jid = heapq.heappop(events)
            if kind == 0:
                queued.append(by_id[jid])
            else:
                free.extend(running.pop(jid))
                free.sort(key=lambda g: g.index)
                end[jid] = now
            if not events or events[0][0] != now:
                break
        t0 = time.perf_counter()
        if fifo:
            starts = fifo_plan(queued, free)
        else:
            ends = {g.uuid: start[j] + by_id[j]["spec"]["resources"]["time_limit"] for j, gs in running.items() for g in gs}
            starts = plan(queued, len(running), 10**6, free, n_gpus, True, skipped=skipped, backfill_limit=backfill_limit, now=now,
                          ends=ends).start
        decisions.append(time.perf_counter() - t0)
        for job, chosen in starts:
            queued.remove(job)
            for g in chosen:
                free.remove(g)
            running[job["id"]] = chosen
            start[job["id"]] = now
            heapq.heappush(events, (now + job["dur"], 1, job["id"]))
    work = sum(j["dur"] * j["spec"]["resources"]["gpus"] for j in jobs)
    t_first = min(j["created_at"] for j in jobs)
    makespan = max(end.values()) - t_first
    bound = max(work / n_gpus, max(j["created_at"] + j["dur"] for j in jobs) - t_first)
    waits = {s: [start[j["id"]] - j["created_at"] for j in jobs if j["spec"]["resources"]["gpus"] == s] for s, _ in SIZES}
    return work, makespan, bound, waits, decisions


def decision_time(n_queued=1000, n_gpus=8, reps=50):
    rng = random.Random(3)
    q = workload(n_queued, rng)
    q.sort(key=lambda j: (-j["priority"], j["created_at"]))
    gpus = [GPU(index=i, uuid=f"G{i}", name="sim", memory_total_mb=81920) for i in range(n_gpus)]
    free = gpus[:3]  # a busy server: 5 of 8 in use
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        plan(q, 5, 10**6, free, n_gpus, True, skipped={}, backfill_limit=8)
        ts.append(time.perf_counter() - t0)
    return ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--days", type=int, default=5, help="seeded days to simulate (the spread is over them)")
    a = ap.parse_args()
    print(f"# bench_sched on {machine()}; commit {commit()}")
    print(f"# {a.days} simulated days of {a.jobs} jobs on 8 GPUs (seeds 1..{a.days}); figures are median (min-max) over the days")
    res = {"runner": [], "fifo": []}
    for seed in range(1, a.days + 1):
        jobs = workload(a.jobs, random.Random(seed))
        for name in res:
            work, makespan, bound, waits, decisions = simulate(jobs, fifo=(name == "fifo"))
            mean_dur = sum(j["dur"] for j in jobs) / len(jobs)
            res[name].append({"util": work / (8 * makespan), "vs_bound": (work / (8 * makespan)) / (work / (8 * bound)),
                              "waits": waits, "worst": max(max(w) for w in waits.values() if w) / mean_dur, "decisions": decisions})
    rows = []
    for label, key, fmt, scale in (("GPU utilisation (work / 8 x makespan), %", "util", "{:.1f}", 100),
                                   ("utilisation vs a simple lower bound, %", "vs_bound", "{:.1f}", 100),
                                   ("max wait / mean job length, x", "worst", "{:.1f}", 1)):
        rows.append((label, spread([r[key] * scale for r in res["runner"]], fmt=fmt), spread([r[key] * scale for r in res["fifo"]], fmt=fmt)))
    for size, _ in SIZES:
        rows.append((f"mean wait of {size}-GPU jobs, min",
                     spread([sum(r["waits"][size]) / len(r["waits"][size]) / 60 for r in res["runner"] if r["waits"][size]], fmt="{:.0f}"),
                     spread([sum(r["waits"][size]) / len(r["waits"][size]) / 60 for r in res["fifo"] if r["waits"][size]], fmt="{:.0f}")))
        rows.append((f"p95 wait of {size}-GPU jobs, min",
                     spread([pct(r["waits"][size], 95) / 60 for r in res["runner"] if r["waits"][size]], fmt="{:.0f}"),
                     spread([pct(r["waits"][size], 95) / 60 for r in res["fifo"] if r["waits"][size]], fmt="{:.0f}")))
    table("a simulated day: runner's scheduler (priority, backfill bounded at 8, reservations) vs strict FIFO", rows,
          headers=("figure", "runner", "FIFO (task-spooler)"))
    ts = decision_time()
    d = [1000 * statistics.mean(r["decisions"]) for r in res["runner"]]
    table("decision cost", [("one scheduling decision, 1,000 queued (p50 / max of 50)", f"{1000 * pct(ts, 50):.2f} / {1000 * max(ts):.2f} ms",
                             "<= 10 ms", max(ts) <= 0.010),
                            ("mean decision in the simulated days", spread(d, fmt="{:.3f}") + " ms", "", "")])


if __name__ == "__main__":
    main()
