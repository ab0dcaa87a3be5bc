"""Four schedulers side by side in a discrete-event simulation, each driving runner's real pure
policies as the daemon does (runner/daemon/launch.py `schedule_here`, runner/daemon/preemption.py):

- FIFO: strict, what task-spooler with GPU slots does: the head of the queue waits and blocks the rest;
- runner: `scheduler.plan` over the queue in priority-then-age order, EASY backfill;
- fair share: `fairshare.order` of each user's queue heads by decayed use, then `plan`;
- fair share + preemption: the same, then `preempt.choose` over the jobs left waiting for GPUs
  (one stop in flight at a time); a stopped job goes back to the queue in its old place and loses
  the work since its last checkpoint.

The workload is either a synthetic busy day on 8 GPUs (the default), or a replay of Alibaba's 2023
GPU cluster trace (openb, `--trace` a CSV you extracted; nothing of it is kept here), sampled to one
8-GPU server and to a 64-GPU cluster. Last, the cost of one decision with 10,000 jobs queued.

    python bench/bench_sched.py [--jobs 300] [--days 5]
    git -C clusterdata show HEAD:cluster-trace-gpu-v2023/csv/openb_pod_list_default.csv > /tmp/openb.csv
    python bench/bench_sched.py --trace openb.csv [--jobs 600] [--cluster-jobs 3000] [--days 3]
"""

from __future__ import annotations

import argparse
import bisect
import csv
import hashlib
import heapq
import math
import os
import random
import statistics
import sys
import time

from common import commit, machine, pct, spread, table
from runner import fairshare, preempt
from runner.daemon.launch import REASONS_EVERY
from runner.gpus import GPU
from runner.scheduler import plan

SIZES = [(1, 0.6), (2, 0.25), (4, 0.1), (8, 0.05)]
POLICIES = ("fifo", "runner", "fair", "preempt")
LABELS = {"fifo": "FIFO (task-spooler)", "runner": "runner (prio+age, EASY)", "fair": "fair share", "preempt": "fair share + preemption"}
N_USERS = 8
ZIPF_S = 1.2  # P(user k) ~ 1/k^1.2 for k = 1..8: the first user ~40 % of submissions, the first two ~60 %
BURST_GAP = 600  # trace pods of the same request shape created within 10 min of the last one: one user's burst
PREEMPT_AFTER, CHECKPOINT_EVERY, STOP_TAKES = 600.0, 600.0, 30.0  # s; a stopped job exits 30 s after SIGTERM
WINDOW = 3600.0  # fairness windows, simulated seconds


def workload(n, rng):
    """The synthetic day: ~n jobs over a day, uniform users u0..u7."""
    jobs, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(n / 86400 * 1.3)  # arrivals spread over ~a day, bursty
        size = rng.choices([s for s, _ in SIZES], [w for _, w in SIZES])[0]
        dur = min(6 * 3600, rng.lognormvariate(6.6, 0.9))  # median ~12 min, mean ~20: a ~90 % loaded day
        jobs.append(_job(i, f"u{rng.randint(0, 7)}", t, size, dur, dur * rng.uniform(1.1, 2.0)))
    return jobs


def _job(i, user, t, gpus, dur, limit):
    return {"id": f"j{i}", "user": user, "after": [], "priority": 0, "created_at": t, "queued_at": t,
            "spec": {"resources": {"gpus": gpus, "time_limit": limit}}, "dur": dur}


def read_trace(path, cap_s):
    """GPU pods of the openb pod list: [(arrival, duration capped at cap_s, GPUs, request shape)], and counts."""
    pods, n_rows, n_gpu, capped = [], 0, 0, 0
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            n_rows += 1
            try:
                g = int(r["num_gpu"])
                c, d, s = float(r["creation_time"]), float(r["deletion_time"]), float(r["scheduled_time"])
            except (KeyError, TypeError, ValueError):
                continue
            if g < 1:
                continue
            n_gpu += 1
            if d - s <= 0:
                continue
            capped += d - s > cap_s
            pods.append((c, min(d - s, cap_s), g, (g, r.get("gpu_milli"), r.get("cpu_milli"), r.get("memory_mib"))))
    if not pods:
        sys.exit(f"--trace {path}: no GPU pods with num_gpu, creation_time, deletion_time, scheduled_time")
    pods.sort(key=lambda p: p[0])
    days = {}
    for p in pods:
        days[int(p[0] // 86400)] = days.get(int(p[0] // 86400), 0) + 1
    busy = min(d for d, n in days.items() if n >= 20) * 86400  # before it, ~25 pods over 115 days
    return [p for p in pods if p[0] >= busy], {"rows": n_rows, "gpu": n_gpu, "kept": len(pods), "capped": capped,
                                               "busy_from": busy, "busy": sum(p[0] >= busy for p in pods)}


def trace_jobs(pods, n, n_gpus, load, rng):
    """A seeded sample of n pods, a user per burst (Zipf), arrivals compressed so the offered load is `load`."""
    weights = [1 / k ** ZIPF_S for k in range(1, N_USERS + 1)]
    users, last = [], {}
    for t, _, _, shape in pods:
        prev = last.get(shape)
        users.append(prev[1] if prev and t - prev[0] <= BURST_GAP else f"u{rng.choices(range(N_USERS), weights)[0]}")
        last[shape] = (t, users[-1])
    idx = sorted(rng.sample(range(len(pods)), min(n, len(pods))))
    t0, t1 = pods[idx[0]][0], pods[idx[-1]][0]
    work = sum(pods[i][1] * min(pods[i][2], n_gpus) for i in idx)
    factor = (t1 - t0) * n_gpus * load / work  # trace seconds per simulated second
    jobs = []
    for k, i in enumerate(idx):
        t, dur, g, _ = pods[i]
        jobs.append(_job(k, users[i], (t - t0) / factor, min(g, n_gpus), dur, dur * rng.uniform(1.1, 2.0)))
    return jobs, factor


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


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


class Use:
    """Each user's decayed GPU-seconds, exactly what fairshare.decayed_use gives over every row: the
    ended rows folded into a sum that decays by 2^(-dt/half_life), the running and requeued ones weighed
    by decayed_use on each call."""

    def __init__(self, half_life):
        self.hl, self.at, self.ended = half_life, 0.0, {}

    def fold(self, row, now):
        k = math.pow(2.0, -(now - self.at) / self.hl)
        self.ended = {u: v * k for u, v in self.ended.items()}
        self.at = now
        for u, v in fairshare.decayed_use([row], now, self.hl).items():
            self.ended[u] = self.ended.get(u, 0.0) + v

    def now(self, rows, now):
        k = math.pow(2.0, -(now - self.at) / self.hl)
        out = {u: v * k for u, v in self.ended.items()}
        for u, v in fairshare.decayed_use(rows, now, self.hl).items():
            out[u] = out.get(u, 0.0) + v
        return out


def simulate(jobs, policy, n_gpus, half_life, backfill_limit=8):
    """Replay jobs under one policy; the figures of the run."""
    max_running = n_gpus  # a GPU job holds at least one GPU: the cap never binds before the GPUs do
    window = max(32, 8 * max_running)  # the daemon reads this much of the queue (per user with fair share)
    gpus = [GPU(index=i, uuid=f"G{i}", name="sim", memory_total_mb=81920) for i in range(n_gpus)]
    free, queue, mine, running = list(gpus), [], {}, {}
    key = lambda j: (-j["priority"], j["created_at"], j["id"])  # noqa: E731
    by_id = {j["id"]: dict(j, done=0.0, runs=0, queued_for=0.0, prior_use=0.0, prior_ended_at=None) for j in jobs}
    events = [(j["created_at"], 0, j["id"], 0) for j in jobs]  # (t, kind, job, run): 0 arrive, 1 end, 2 stopped, 3 look
    heapq.heapify(events)
    use, skipped, stopping = Use(half_life), {}, set()  # stopping: jobs sent SIGTERM that have not exited yet
    reserved = None  # (job, GPUs): what a preemption frees is kept for the job it was made for (the daemon's take_reserved)
    finish, decisions, n_stops, lost = {}, [], 0, 0.0
    stopped_for, served, stops_of, orders = {}, 0, {}, 0  # victim -> the job it was stopped for; orders whose job then started
    held, want = {}, {}  # per user: GPUs held; GPUs held or wanted (for the fairness windows)
    got_w, want_w, busy = {}, {}, 0.0
    t_last = t0 = min(j["created_at"] for j in jobs)

    def advance(t):
        nonlocal t_last, busy
        busy += sum(held.values()) * (t - t_last)
        while t_last < t:
            w = int((t_last - t0) // WINDOW)
            end = min(t, t0 + (w + 1) * WINDOW)
            for u, x in want.items():
                if x:
                    want_w.setdefault(w, {})[u] = want_w.get(w, {}).get(u, 0.0) + x * (end - t_last)
                    got_w.setdefault(w, {})[u] = got_w.get(w, {}).get(u, 0.0) + held.get(u, 0) * (end - t_last)
            t_last = end

    def enqueue(j, now):
        j["queued_at"], j["in_q"] = now, now
        bisect.insort(queue, (key(j), j["id"]))
        bisect.insort(mine.setdefault(j["user"], []), (key(j), j["id"]))
        want[j["user"]] = want.get(j["user"], 0) + j["spec"]["resources"]["gpus"]

    def end_run(j, now):
        r = running.pop(j["id"])
        free.extend(r["gpus"])
        free.sort(key=lambda g: g.index)
        held[j["user"]] -= len(r["gpus"])
        want[j["user"]] -= len(r["gpus"])
        return r

    while events:
        now = events[0][0]
        advance(now)
        check = set()
        while events and events[0][0] == now:  # every arrival, end and stop at this instant, then one decision
            _, kind, jid, run = heapq.heappop(events)
            j = by_id[jid]
            if kind == 0:
                enqueue(j, now)
                if policy == "preempt":
                    heapq.heappush(events, (now + PREEMPT_AFTER, 3, jid, 0))
            elif kind == 1 and j["runs"] == run and jid in running:
                r = end_run(j, now)
                finish[jid] = now
                use.fold({"user": j["user"], "gpus": r["gpus"], "started_at": r["started_at"], "finished_at": now,
                          "prior_use": j["prior_use"], "prior_ended_at": j["prior_ended_at"]}, now)
            elif kind == 2:  # the stopped job has exited: back to the queue, from its last checkpoint
                r = end_run(j, now)
                ran = now - r["started_at"]
                kept = min(j["dur"] - j["done"], CHECKPOINT_EVERY * math.floor(ran / CHECKPOINT_EVERY))
                lost += (ran - kept) * len(r["gpus"])
                j["done"] += kept
                j["prior_use"] += len(r["gpus"]) * ran
                j["prior_ended_at"] = now
                stopping.discard(jid)
                check.add(stopped_for.pop(jid))
                enqueue(j, now)
                heapq.heappush(events, (now + PREEMPT_AFTER, 3, jid, 0))
        if not queue:
            served += sum(1 for i in check if i in running)
            continue
        t_dec = time.perf_counter()
        order = use_now = None
        pre, free_for_plan = [], free
        if reserved is not None:
            rid, rg = reserved
            if rid in running or rid in finish:
                reserved = None
            elif all(g in free for g in rg):  # all freed: it starts on them, before the plan
                pool = [g for g in free if g in rg] + [g for g in free if g not in rg]
                need = by_id[rid]["spec"]["resources"]["gpus"]
                if len(pool) >= need and len(running) < max_running:
                    pre = [(by_id[rid], pool[:need])]
                    free_for_plan = [g for g in free if g not in pool[:need]]
                reserved = None
            else:
                free_for_plan = [g for g in free if g not in rg]
        if policy == "fifo":
            starts = fifo_plan([by_id[i] for _, i in queue], free)
        else:
            ends = {g.uuid: r["started_at"] + by_id[i]["spec"]["resources"]["time_limit"] for i, r in running.items() for g in r["gpus"]}
            if policy == "runner":
                order = [by_id[i] for _, i in queue[:window]]
            else:
                heads = sorted(x for lst in mine.values() for x in lst[:window])
                rows = [{"user": by_id[i]["user"], "gpus": r["gpus"], "started_at": r["started_at"], "finished_at": None,
                         "prior_use": by_id[i]["prior_use"], "prior_ended_at": by_id[i]["prior_ended_at"]} for i, r in running.items()]
                rows += [{"user": by_id[i]["user"], "prior_use": by_id[i]["prior_use"], "prior_ended_at": by_id[i]["prior_ended_at"]}
                         for _, i in queue if by_id[i]["prior_use"]]
                use_now = use.now(rows, now)
                # as the daemon decides between its reason passes: the fair order made as the plan reads it
                order = fairshare.Fair([by_id[i] for _, i in heads if not pre or i != pre[0][0]["id"]], use_now, {})
            if pre and policy == "runner":
                order = [j for j in order if j["id"] != pre[0][0]["id"]]
            lazy = isinstance(order, fairshare.Fair)
            d = plan(order.jobs() if lazy else order, len(running) + len(pre), max_running, free_for_plan, n_gpus, True,
                     skipped=skipped, backfill_limit=backfill_limit, now=now, ends=ends, wants=order.wants if lazy else None, lazy=lazy)
            starts = pre + d.start
        stops = []
        if policy == "preempt" and not stopping and reserved is None:
            wanting, who = preempt.wanting(order, d)
            rows = [dict(by_id[i], gpu_uuids=[g.uuid for g in r["gpus"]], started_at=r["started_at"]) for i, r in running.items()]
            stops = preempt.choose(wanting, rows, len(free_for_plan) - sum(len(c) for _, c in d.start), n_gpus, use_now, {}, now,
                                   {"after": PREEMPT_AFTER, "grace": 60.0, "exempt": set(), "by": None}, can_stop=lambda r: True,
                                   waiting_users=who)
        decisions.append(time.perf_counter() - t_dec)
        for job, chosen in starts:
            for lst in (queue, mine[job["user"]]):
                del lst[bisect.bisect_left(lst, (key(job), job["id"]))]
            job["queued_for"] += now - job["in_q"]
            for g in chosen:
                free.remove(g)
            job["runs"] += 1
            running[job["id"]] = {"gpus": chosen, "started_at": now}
            held[job["user"]] = held.get(job["user"], 0) + len(chosen)
            heapq.heappush(events, (now + job["dur"] - job["done"], 1, job["id"], job["runs"]))
        served += sum(1 for i in check if i in running)
        orders += bool(stops)
        if stops:
            reserved = (stops[0][1]["id"], [g for v, _ in stops for g in running[v["id"]]["gpus"]])
        for victim, for_job in stops:
            stopping.add(victim["id"])
            stopped_for[victim["id"]] = for_job["id"]
            stops_of[victim["id"]] = stops_of.get(victim["id"], 0) + 1
            n_stops += 1
            by_id[victim["id"]]["runs"] += 1  # its end event no longer counts
            heapq.heappush(events, (now + STOP_TAKES, 2, victim["id"], 0))
    advance(t_last)
    assert len(finish) == len(jobs) and len(free) == n_gpus and not any(held.values()), "a job was lost or a GPU leaked"
    out = figures(jobs, by_id, finish, n_gpus, busy, t0, lost, n_stops, got_w, want_w, decisions)
    out["served"] = 100 * served / orders if orders else float("nan")
    out["stops_max"] = max(stops_of.values(), default=0)
    return out


def jain(xs):
    s = sum(xs)
    return s * s / (len(xs) * sum(x * x for x in xs)) if s else 1.0


def water_fill(cap, demand):
    """Max-min fair split of cap among demands."""
    out, left, users = {}, cap, sorted(demand, key=demand.get)
    for k, u in enumerate(users):
        out[u] = min(demand[u], left / (len(users) - k))
        left -= out[u]
    return out


def figures(jobs, by_id, finish, n_gpus, busy, t0, lost, n_stops, got_w, want_w, decisions):
    jct = [finish[j["id"]] - j["created_at"] for j in jobs]
    waits = {}
    for j in jobs:
        waits.setdefault(j["user"], []).append(by_id[j["id"]]["queued_for"])
    span = max(finish.values()) - t0
    raw, norm = [], []
    for w, want in want_w.items():
        got = got_w[w]
        users = [u for u, x in want.items() if x > 0]
        if len(users) < 2:
            continue
        raw.append(jain([got[u] for u in users]))
        length = min(WINDOW, span - w * WINDOW)
        fair = water_fill(n_gpus * length, {u: want[u] for u in users})
        norm.append(jain([min(1.0, got[u] / fair[u]) for u in users]))
    work = sum(j["dur"] * j["spec"]["resources"]["gpus"] for j in jobs)
    return {"jct_mean": statistics.mean(jct) / 3600, "jct_p95": pct(jct, 95) / 3600,
            "wait_mean": statistics.mean(w for ws in waits.values() for w in ws) / 3600,
            "wait_worst_user": max(statistics.mean(ws) for ws in waits.values()) / 3600,
            "wait_max": max(w for ws in waits.values() for w in ws) / 3600,
            "util": 100 * busy / (n_gpus * span), "useful": 100 * work / (n_gpus * span), "stops": n_stops, "lost": lost / 3600,
            "jain": statistics.mean(raw) if raw else float("nan"), "jain_fair": statistics.mean(norm) if norm else float("nan"),
            "decision_ms": 1000 * statistics.mean(decisions)}


ROWS = (("mean job completion time (finish - arrival), h", "jct_mean", "{:.2f}"),
        ("p95 job completion time, h", "jct_p95", "{:.1f}"),
        ("mean wait (all jobs), h", "wait_mean", "{:.2f}"),
        ("mean wait of the worst-off user, h", "wait_worst_user", "{:.2f}"),
        ("max wait of any job, h", "wait_max", "{:.1f}"),
        ("GPUs busy over the busy span, %", "util", "{:.1f}"),
        ("of which useful work (not lost to preemption), %", "useful", "{:.1f}"),
        ("preemptions", "stops", "{:.0f}"),
        ("GPU-hours lost to preemption", "lost", "{:.1f}"),
        ("most preemptions of one job", "stops_max", "{:.0f}"),
        ("stop orders after which the job stopped for started, %", "served", "{:.0f}"),
        ("Jain's index of users' GPU-time per hour (users with demand)", "jain", "{:.3f}"),
        ("Jain's index of GPU-time / max-min fair share of demand, per hour", "jain_fair", "{:.3f}"),
        ("mean decision time in the run, ms", "decision_ms", "{:.3f}"))


def compare(title, runs):
    """runs: [(jobs, n_gpus, half_life)] one per seed: every policy on each; one table of the spreads."""
    res = {p: [] for p in POLICIES}
    for jobs, n_gpus, hl in runs:
        for p in POLICIES:
            res[p].append(simulate(jobs, p, n_gpus, hl))
    cell = lambda v, fmt: "-" if all(math.isnan(x) for x in v) else spread(v, fmt=fmt)  # noqa: E731
    table(title, [(label, *(cell([r[k] for r in res[p]], fmt) for p in POLICIES)) for label, k, fmt in ROWS],
          headers=("figure", *(LABELS[p] for p in POLICIES)))


def decision_time(n_queued=10000, n_gpus=64, reps=30, window=None, over=False):
    """One decision as the daemon makes it with fair share and preemption on, and the pass that
    gives every queued job its reason (the daemon's every launch.REASONS_EVERY seconds), with
    n_queued jobs queued (all waiting past preempt_after) and the GPUs busy. over: one user holds
    more than her part, so choose looks through the waiting jobs for one it may stop a job for.

    The decision: fairshare.Fair files the queue, plan reads its order lazily and stops once no
    job left can start, preempt.choose reads the waiting jobs of the users it may serve. The
    reasons: the whole fair order, plan over all of it, fairshare.passed_over, choose."""
    rng = random.Random(3)
    q = workload(n_queued, rng)
    for j in q:
        j["created_at"] = j["queued_at"] = j["created_at"] - 86400
    q.sort(key=lambda j: (-j["priority"], j["created_at"]))
    if window:  # what the daemon reads: the first `window` jobs of each user
        seen = {}
        for j in q:
            seen[j["user"]] = seen.get(j["user"], 0) + 1
            j["in_window"] = seen[j["user"]] <= window
        q = [j for j in q if j["in_window"]]
    gpus = [GPU(index=i, uuid=f"G{i}", name="sim", memory_total_mb=81920) for i in range(n_gpus)]
    running = [{"id": f"r{i}", "user": "u7" if over and i < 12 else f"u{i % 7 if over else i % 8}", "spec": {"resources": {"gpus": 2, "time_limit": 7200}},
                "gpu_uuids": [gpus[2 * i].uuid, gpus[2 * i + 1].uuid], "started_at": -3600.0 * (i % 5)} for i in range(30)]
    free = gpus[60:]
    ends = {g: r["started_at"] + 7200 for r in running for g in r["gpu_uuids"]}
    use = {f"u{k}": 3600.0 * (k + 1) * (10 if over and k == 7 else 1) for k in range(8)}
    conf = {"after": 600.0, "grace": 60.0, "exempt": set(), "by": None}
    parts = {k: [] for k in ("file", "plan", "choose", "decision", "order", "plan all", "passed_over", "choose all", "reasons")}
    chosen = None
    for _ in range(reps):
        t0 = time.process_time()
        fair = fairshare.Fair(q, use, {})
        t1 = time.process_time()
        d = plan(fair.jobs(), len(running), n_gpus, free, n_gpus, True, skipped={}, backfill_limit=8, now=0.0, ends=ends,
                 wants=fair.wants, lazy=True)
        t2 = time.process_time()
        wanting, who = preempt.wanting(fair, d)
        stops = preempt.choose(wanting, running, len(free) - sum(len(c) for _, c in d.start), n_gpus, use, {}, 0.0, conf,
                               can_stop=lambda r: True, waiting_users=who)
        t3 = time.process_time()
        order = list(fairshare.Fair(q, use, {}).jobs())
        t4 = time.process_time()
        full = plan(order, len(running), n_gpus, free, n_gpus, True, skipped={}, backfill_limit=8, now=0.0, ends=ends)
        t5 = time.process_time()
        fairshare.passed_over(q, order)
        t6 = time.process_time()
        all_stops = preempt.choose(*preempt.wanting(order, full)[:1], running, len(free) - sum(len(c) for _, c in full.start),
                                   n_gpus, use, {}, 0.0, conf, can_stop=lambda r: True)
        t7 = time.process_time()
        assert [j["id"] for j, _ in d.start] == [j["id"] for j, _ in full.start], "the lazy decision must start what the whole one does"
        assert [(a["id"], b["id"]) for a, b in stops] == [(a["id"], b["id"]) for a, b in all_stops]
        chosen = (len(d.start), len(stops), len(d.waiting) + len(d.start))
        for k, v in (("file", t1 - t0), ("plan", t2 - t1), ("choose", t3 - t2), ("decision", t3 - t0), ("order", t4 - t3),
                     ("plan all", t5 - t4), ("passed_over", t6 - t5), ("choose all", t7 - t6), ("reasons", t7 - t3)):
            parts[k].append(1000 * v)
    return len(q), parts, chosen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", help="the openb pod list CSV (Alibaba clusterdata, cluster-trace-gpu-v2023); without it, a synthetic day")
    ap.add_argument("--jobs", type=int, default=None, help="jobs per run on 8 GPUs (synthetic day: 300; trace sample: 600, 0: skip)")
    ap.add_argument("--cluster-jobs", type=int, default=3000, help="trace pods sampled per run on 64 GPUs (0: skip)")
    ap.add_argument("--days", type=int, default=5, help="seeds to run (the spread is over them)")
    ap.add_argument("--load", type=float, default=1.0, help="offered load the trace's arrivals are compressed to")
    ap.add_argument("--max-hours", type=float, default=24.0, help="trace pods running longer are cut there (a time limit)")
    ap.add_argument("--reps", type=int, default=30, help="repeats of the timed decision")
    a = ap.parse_args()
    print(f"# bench_sched on {machine()}; commit {commit()}")
    # the trace by its file name: a report names no folder of the machine it was made on
    print("# python bench/bench_sched.py " + " ".join(os.path.basename(x) if x == a.trace else x for x in sys.argv[1:]))
    print(f"# figures are median (min-max) over seeds 1..{a.days}; preemption: preempt_after {PREEMPT_AFTER:.0f} s, every job "
          f"preemptible, a checkpoint every {CHECKPOINT_EVERY:.0f} s of its run (a stop loses up to that), a stopped job exits "
          f"{STOP_TAKES:.0f} s after SIGTERM; fairness windows {WINDOW:.0f} s of simulated time; max_running = the GPUs")
    if not a.trace:
        n = a.jobs or 300
        print(f"# workload: a synthetic day of {n} jobs on 8 GPUs (1/2/4/8 GPUs 60/25/10/5 %, lognormal lengths, "
              "8 users uniformly); fair-share half-life 7 days (as configured: longer than the day)")
        compare("a synthetic day on 8 GPUs", [(workload(n, random.Random(s)), 8, 7 * 86400.0) for s in range(1, a.days + 1)])
    else:
        pods, c = read_trace(a.trace, a.max_hours * 3600)
        print(f"# workload: Alibaba GPU cluster trace 2023 (openb_pod_list_default.csv of github.com/alibaba/clusterdata, "
              "cluster-trace-gpu-v2023; Weng et al., \"Beware of Fragmentation: Scheduling GPU-Sharing Workloads with "
              f"Fragmentation Gradient Descent\", USENIX ATC '23), read from {os.path.basename(a.trace)} (sha256 {digest(a.trace)[:16]}); "
              "it has no license file: no part of it is kept here; extract it with `git -C clusterdata show "
              "HEAD:cluster-trace-gpu-v2023/csv/openb_pod_list_default.csv > openb.csv`")
        print(f"# {c['rows']} pods, {c['gpu']} with GPUs, {c['kept']} with deletion_time > scheduled_time; the {c['busy']} from day "
              f"{c['busy_from'] / 86400:.0f} on (the first day with 20 arrivals) are used; arrival = creation_time, length = "
              f"deletion_time - scheduled_time cut at {a.max_hours:g} h ({c['capped']} cut: pods still Running at the trace's end "
              "are among them); GPU-sharing pods (gpu_milli < 1000) count as 1 GPU; time_limit = length x U(1.1, 2.0)")
        print(f"# users: the trace has none; each burst (pods of one request shape created within {BURST_GAP} s of the last) is "
              f"given one of {N_USERS} users drawn with P(k) ~ 1/k^{ZIPF_S} (a few users submit most jobs, as Alibaba's PAI 2020 "
              "trace analysis reports), seeded")
        for n_gpus, n in ((8, 600 if a.jobs is None else a.jobs), (64, a.cluster_jobs)):
            if n < 2:
                continue  # 0: skipped
            runs, factors = [], []
            for s in range(1, a.days + 1):
                jobs, f = trace_jobs(pods, n, n_gpus, a.load, random.Random(s))
                factors.append(f)
                runs.append((jobs, n_gpus, 7 * 86400 / f))
            print(f"\n# {n_gpus} GPUs: {min(n, len(pods))} pods sampled per seed; arrivals compressed {spread(factors, fmt='{:.1f}')}x "
                  f"for an offered load of {100 * a.load:.0f} %; fair-share half-life 7 days of trace time = "
                  f"{spread([7 * 24 / f for f in factors], fmt='{:.0f}')} h simulated")
            compare(f"the openb trace on {n_gpus} GPUs ({'one server' if n_gpus == 8 else 'a cluster'})", runs)
    rows = []
    for label, window, over in (("10,000 queued", None, False), ("the daemon's read: 512 per user", 512, False),
                                ("10,000 queued, one user over her part", None, True)):
        n, parts, (n_start, n_stop, n_read) = decision_time(reps=a.reps, window=window, over=over)
        ms = lambda k: f"{statistics.median(parts[k]):.2f} / {pct(parts[k], 95):.2f} ms"  # noqa: E731
        for k in ("file", "plan", "choose"):
            rows.append((f"{label}: decision: {k}", ms(k), "", ""))
        rows.append((f"{label}: **the decision** ({n_start} started, {n_stop} stopped; {n_read} of {n} jobs read)", ms("decision"),
                     "< 10 ms", pct(parts["decision"], 95) < 10))
        for k in ("order", "plan all", "passed_over", "choose all"):
            rows.append((f"{label}: every job's reason: {k}", ms(k), "", ""))
        rows.append((f"{label}: every job's reason (the daemon's every {REASONS_EVERY:g} s)", ms("reasons"), "", ""))
    table(f"one decision on 64 GPUs (60 busy, 30 jobs running), CPU time, median / p95 of {a.reps}", rows)


if __name__ == "__main__":
    main()
