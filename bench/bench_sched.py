"""A day of a busy lab on 8 GPUs (time compressed, the real scheduler), and the cost of one
scheduling decision with 1,000 jobs queued.

    python bench/bench_sched.py [--jobs 300] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import random
import time

from common import machine, pct, table
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


def simulate(jobs, n_gpus=8, backfill_limit=8):
    gpus = [GPU(index=i, uuid=f"G{i}", name="sim", memory_total_mb=81920) for i in range(n_gpus)]
    free = list(gpus)
    events = [(j["created_at"], 0, j["id"]) for j in jobs]
    heapq.heapify(events)
    by_id = {j["id"]: j for j in jobs}
    queued, running, skipped = [], {}, {}
    start, end = {}, {}
    decisions = []
    while events:
        now, kind, jid = heapq.heappop(events)
        if kind == 0:
            queued.append(by_id[jid])
        else:
            free.extend(running.pop(jid))
            free.sort(key=lambda g: g.index)
            end[jid] = now
        while events and events[0][0] == now:
            break
        t0 = time.perf_counter()
        ends = {g.uuid: start[j] + by_id[j]["spec"]["resources"]["time_limit"] for j, gs in running.items() for g in gs}
        d = plan(queued, len(running), 10**6, free, n_gpus, True, skipped=skipped, backfill_limit=backfill_limit, now=now, ends=ends)
        decisions.append(time.perf_counter() - t0)
        for job, chosen in d.start:
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
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(f"# bench_sched on {machine()}")
    jobs = workload(a.jobs, random.Random(a.seed))
    work, makespan, bound, waits, decisions = simulate(jobs)
    util = work / (8 * makespan)
    util_bound = work / (8 * bound)
    rows = [("jobs / GPUs", f"{a.jobs} / 8", "", ""),
            ("GPU utilisation (work / 8 x makespan)", f"{100 * util:.1f} %", "", ""),
            ("simple lower bound's utilisation", f"{100 * util_bound:.1f} %", "", ""),
            ("utilisation vs bound", f"{100 * util / util_bound:.1f} %", ">= 95 %", util / util_bound >= 0.95)]
    mean_dur = sum(j["dur"] for j in jobs) / len(jobs)
    for size, w in waits.items():
        if w:
            rows.append((f"wait of {size}-GPU jobs: mean / p95 / max", f"{sum(w) / len(w) / 60:.0f} / {pct(w, 95) / 60:.0f} / {max(w) / 60:.0f} min",
                         "", ""))
    worst = max(max(w) for w in waits.values() if w)
    rows.append(("max wait / mean job length", f"{worst / mean_dur:.1f}x", "bounded (backfill limit 8)", ""))
    ts = decision_time()
    rows.append(("one scheduling decision, 1,000 queued (p50 / max)", f"{1000 * pct(ts, 50):.2f} / {1000 * max(ts):.2f} ms", "<= 10 ms",
                 max(ts) <= 0.010))
    rows.append(("decisions in the simulated day (mean)", f"{1000 * sum(decisions) / len(decisions):.3f} ms", "", ""))
    table("scheduler", rows)


if __name__ == "__main__":
    main()
