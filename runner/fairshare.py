"""Fair share: among queued jobs of equal priority, the user with the least recent use goes first.

Use is GPU-seconds (a CPU job counts its wall seconds as one slot's), each job's weighted by
2^(-age / half_life), where age is how long ago it ended (0 while it runs), and divided by the
user's share (1 unless `[scheduler] shares` says otherwise). Pure, like runner/scheduler.py: it
takes rows and returns numbers or an order, so it is tested and benched without a daemon.

Within a pass, each job given a turn charges its user an estimate of what it will use (its
`time_limit`, else `CHARGE_SECONDS`, times its GPUs), so a user who has used nothing yet still
alternates with the others rather than taking every free GPU at once.
"""

from __future__ import annotations

import json
import math

CHARGE_SECONDS = 3600.0
"""What a job given a turn is expected to use (per GPU, or per slot for a CPU job) when it has no time_limit."""

DEFAULT_HALF_LIFE_DAYS = 7.0
"""[scheduler] fairshare_half_life: after this many days a job's use counts half."""


def units(gpus) -> int:
    """The slots a job holds: its GPUs, or 1 for a CPU job."""
    if isinstance(gpus, str):
        try:
            gpus = json.loads(gpus)
        except ValueError:
            gpus = []
    n = len(gpus) if isinstance(gpus, (list, tuple)) else int(gpus or 0)
    return max(1, n)


def decayed_use(rows, now: float, half_life_s: float) -> dict:
    """{user: decayed slot-seconds} from rows with user, gpus (the list it held), started_at,
    finished_at, and (a job preempted before) prior_use, the slot-seconds of its earlier runs, and
    prior_ended_at, when the last of them ended."""
    use: dict = {}
    for r in rows:
        prior = r.get("prior_use")
        if prior and half_life_s > 0:
            age = max(0.0, now - (now if r.get("prior_ended_at") is None else r["prior_ended_at"]))
            use[r["user"]] = use.get(r["user"], 0.0) + float(prior) * math.pow(2.0, -age / half_life_s)
        start = r.get("started_at")
        if start is None:
            continue
        end = now if r.get("finished_at") is None else r["finished_at"]  # 0.0 is a time
        seconds = max(0.0, min(end, now) - start)
        age = max(0.0, now - end)
        w = units(r.get("gpus")) * seconds * math.pow(2.0, -age / half_life_s) if half_life_s > 0 else 0.0
        use[r["user"]] = use.get(r["user"], 0.0) + w
    return use


def standing(use: dict, shares: dict | None = None) -> dict:
    """{user: use / share}: lower goes first."""
    shares = shares or {}
    return {u: v / max(float(shares.get(u, 1.0)), 1e-9) for u, v in use.items()}


def _want(job) -> int:
    res = job["spec"].get("resources") or {}
    return max(1, int(res.get("gpus") or 0))


def _charge(job) -> float:
    res = job["spec"].get("resources") or {}
    return _want(job) * float(res.get("time_limit") or CHARGE_SECONDS)


def order(queued: list, use: dict, shares: dict | None = None) -> list:
    """The queue in fair-share order: priority first (higher first), then, among equal priority,
    each time the head job of the user with the least (use + what her jobs given a turn in this
    order will use) / share. A user's own jobs keep their order. `queued` is in priority-then-age
    order (as the store gives it); ties between users fall to the older head job.

    Each user's standings before each of her jobs rise with her jobs, so taking the least head
    each time is one sort of every job by (tier, standing, place): no heap, one pass to key them
    (10,000 jobs in a few milliseconds: bench/bench_sched.py)."""
    shares = shares or {}
    keyed = []
    acc: dict = {}  # (tier, user) -> [standing before her next job, share]
    tier, prio = 0, None
    for k, job in enumerate(queued):
        p = job.get("priority") or 0
        if p != prio:  # a run of one priority is a tier (the queue comes in priority order)
            tier, prio = tier + 1, p
        key = (tier, job["user"])
        a = acc.get(key)
        if a is None:
            share = max(float(shares.get(job["user"], 1.0)), 1e-9)
            a = acc[key] = [use.get(job["user"], 0.0) / share, share]
        keyed.append((tier, a[0], k))
        res = job["spec"].get("resources") or {}  # _charge(job), inline: this loop meets every queued job
        want = int(res.get("gpus") or 0)
        a[0] += (want if want > 1 else 1) * float(res.get("time_limit") or CHARGE_SECONDS) / a[1]
    keyed.sort()
    return [queued[k] for _, _, k in keyed]


class Fair:
    """The queue in fair-share order, lazily: `order`'s order, made as it is read.

    A job's place in `order` depends only on its own user's jobs (her standing before it, in its
    run of one priority), so the order is a merge of each user's jobs: one pass files the jobs by
    (tier, user), and a heap over the users' next jobs gives the order one job at a time. A
    decision that starts a few jobs reads a few; `jobs(users)` is the order of some users' jobs
    only (the same merge over their files), and `wants` counts the queue's jobs by GPUs asked
    (the scheduler stops once none that is left could start)."""

    def __init__(self, queued: list, use: dict, shares: dict | None = None):
        self.queued, self.use, self.shares = queued, use, shares or {}
        files: dict = {}  # (tier, user) -> places in `queued`
        wants: dict = {}
        tier, prio, mine = 0, None, {}
        for k, job in enumerate(queued):  # (this loop meets every queued job: one lookup of each field)
            p = job.get("priority") or 0
            if p != prio:
                tier, prio, mine = tier + 1, p, {}
            user = job["user"]
            f = mine.get(user)
            if f is None:
                f = mine[user] = files[(tier, user)] = []
            f.append(k)
            res = job["spec"].get("resources")
            w = (res.get("gpus") or 0) if res else 0
            wants[w] = wants.get(w, 0) + 1
        self.files, self.wants = files, wants
        self.users = {u for _, u in files}

    def jobs(self, users=None):
        """The queued jobs in fair-share order (of `users` only, when given)."""
        import heapq

        q, shares, use = self.queued, self.shares, self.use
        heap = []
        for (tier, user), f in self.files.items():
            if users is None or user in users:
                share = max(float(shares.get(user, 1.0)), 1e-9)
                heap.append((tier, use.get(user, 0.0) / share, f[0], 0, f, share))
        heapq.heapify(heap)
        while heap:
            tier, st, k, i, f, share = heap[0]
            job = q[k]
            yield job
            i += 1
            if i == len(f):
                heapq.heappop(heap)
                continue
            res = job["spec"].get("resources") or {}  # _charge(job)
            want = int(res.get("gpus") or 0)
            st += (want if want > 1 else 1) * float(res.get("time_limit") or CHARGE_SECONDS) / share
            heapq.heapreplace(heap, (tier, st, f[i], i, f, share))

    def of(self, user: str):
        """One user's queued jobs, in her order."""
        q = self.queued
        for (tier, u), f in sorted(self.files.items(), key=lambda kv: kv[0][0]):
            if u == user:
                for k in f:
                    yield q[k]


def passed_over(fifo: list, fair: list) -> set:
    """Ids of jobs that fair share put behind a job of another user that came later in the plain
    order (priority, then age): their wait is fair share's doing, and their reason says so."""
    rank = {j["id"]: i for i, j in enumerate(fifo)}
    # the two highest plain ranks seen so far in the fair order, of two different users
    r1, u1, r2, u2 = -1, None, -1, None
    out = set()
    for w in fair:
        r, u = rank[w["id"]], w["user"]
        if (r1 if u1 != u else r2) > r:
            out.add(w["id"])
        if u == u1:
            r1 = max(r1, r)
        elif r > r1:
            r1, u1, r2, u2 = r, u, r1, u1
        elif r > r2:
            r2, u2 = r, u
    return out


def settings(config: dict) -> dict:
    """The `[scheduler]` fair-share settings, checked: {"on": bool, "half_life_s": float, "shares": {user: float}}."""
    from .exceptions import RunnerError

    sec = config.get("scheduler", {})
    if not isinstance(sec, dict):
        raise RunnerError("[scheduler]: expected a table (fairshare = true, fairshare_half_life = 7, shares = {...})")
    on = sec.get("fairshare", True)
    if not isinstance(on, bool):
        raise RunnerError(f"[scheduler] fairshare: given {on!r}; expected true or false")
    days = sec.get("fairshare_half_life", DEFAULT_HALF_LIFE_DAYS)
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 3650:
        raise RunnerError(f"[scheduler] fairshare_half_life: given {days!r}; expected a number of days above 0")
    shares = sec.get("shares", {})
    if not isinstance(shares, dict):
        raise RunnerError(f"[scheduler] shares: given {shares!r}; expected a table of user = weight")
    for user, w in shares.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 1e6:
            raise RunnerError(f"[scheduler] shares.{user}: given {w!r}; expected a weight above 0 (1 is everyone's default)")
    max_priority(config)  # checked with the rest: a bad one stops the daemon at its start, in one line
    return {"on": on, "half_life_s": float(days) * 86400.0, "shares": {str(u): float(w) for u, w in shares.items()}}


def max_priority(config: dict) -> int:
    """`[scheduler] max_priority`: the highest priority a user other than root may give a job
    (priority wins over fair share, so a server that lets anyone set 1000 lets anyone jump it).
    1000 (any) unless set."""
    from .exceptions import RunnerError

    sec = config.get("scheduler", {}) if isinstance(config.get("scheduler", {}), dict) else {}
    v = sec.get("max_priority", 1000)
    if isinstance(v, bool) or not isinstance(v, int) or not -1000 <= v <= 1000:
        raise RunnerError(f"[scheduler] max_priority: given {v!r}; expected a whole number from -1000 to 1000 "
                          "(the highest priority a user may give her jobs; root's are not capped)")
    return v


def priority_problem(priority: int, uid: int, config: dict) -> str | None:
    """One line if `uid` may not give a job this priority on this server, else None."""
    cap = max_priority(config)
    if uid == 0 or priority <= cap:
        return None
    return (f"priority: given {priority}; expected at most {cap} on this server ([scheduler] max_priority; "
            "only root queues above it)")


class Ledger:
    """Each user's decayed use, for the scheduler and `runner share`.

    A decay is a product: an ended job's weight 2^(-(now - end)/h) is 2^(-(now - t0)/h) times
    2^((end - t0)/h), whose second factor never changes. So the ended jobs are summed once, in SQL,
    against a reference time t0 (store.ended_use), and each job that ends later is added to its
    user's sum as it ends (found by its transition's id); a call scales the sums to `now` and adds
    the jobs that run now (and the earlier runs of preempted jobs back in the queue). No call reads
    the history again, whatever its size."""

    def __init__(self, store, conf: dict, refresh: float = 60.0):
        self.store, self.conf = store, conf
        self._t0 = None  # the reference time of the sums
        self._sums: dict = {}
        self._mark = 0  # the id of the last transition whose ended job is in the sums

    def _add(self, rows, hl: float):
        for r in rows:
            for w, end in _ended_parts(r):
                self._sums[r["user"]] = self._sums.get(r["user"], 0.0) + w * math.pow(2.0, (end - self._t0) / hl)

    def use(self, now: float) -> dict:
        hl = self.conf["half_life_s"]
        # a new reference when there is none, when the clock went back before it, or before 2^x overflows
        if self._t0 is None or now < self._t0 or (now - self._t0) / hl > 500:
            self._t0 = now - 20 * hl  # 20 half-lives back: what is older weighs less than a millionth
            self._mark = self.store.last_transition_id()
            sums = self.store.ended_use(self._t0, hl)
            if sums is None:  # an SQLite without pow(): the same sum, row by row
                self._sums = {}
                self._add(self.store.usage_rows(self._t0), hl)
            else:
                self._sums = sums
        else:
            upto = self.store.last_transition_id()
            if upto > self._mark:
                self._add(self.store.ended_usage_rows(self._mark, upto), hl)
                self._mark = upto
        scale = math.pow(2.0, -(now - self._t0) / hl)
        out = {u: v * scale for u, v in self._sums.items() if v}
        for u, v in decayed_use(self.store.usage_rows(0, running=True), now, hl).items():  # running, and preempted ones' earlier runs
            out[u] = out.get(u, 0.0) + v
        return out


def _ended_parts(r) -> list:
    """An ended job's (slot-seconds, when they ended): its last run, and its earlier runs (a preempted job's)."""
    out = []
    if r.get("started_at") is not None and r.get("finished_at") is not None:
        out.append((units(r.get("gpus")) * max(0.0, r["finished_at"] - r["started_at"]), r["finished_at"]))
    if r.get("prior_use"):
        ended = next((t for t in (r.get("prior_ended_at"), r.get("finished_at")) if t is not None), 0.0)
        out.append((float(r["prior_use"]), ended))
    return out
