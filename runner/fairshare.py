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

import heapq
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
            age = max(0.0, now - (r.get("prior_ended_at") or now))
            use[r["user"]] = use.get(r["user"], 0.0) + float(prior) * math.pow(2.0, -age / half_life_s)
        start = r.get("started_at")
        if start is None:
            continue
        end = r.get("finished_at") or now
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
    order (as the store gives it); ties between users fall to the older head job."""
    shares = shares or {}
    out = []
    i = 0
    while i < len(queued):
        prio = queued[i].get("priority") or 0
        j = i
        while j < len(queued) and (queued[j].get("priority") or 0) == prio:
            j += 1
        out += _fair_tier(queued[i:j], use, shares)
        i = j
    return out


def _fair_tier(jobs: list, use: dict, shares: dict) -> list:
    by_user: dict = {}
    for k, job in enumerate(jobs):
        by_user.setdefault(job["user"], []).append((k, job))
    heads = []
    for user, lst in by_user.items():
        share = max(float(shares.get(user, 1.0)), 1e-9)
        heads.append((use.get(user, 0.0) / share, lst[0][0], user, 0, share))
    heapq.heapify(heads)
    out = []
    while heads:
        standing_, _, user, n, share = heapq.heappop(heads)
        k, job = by_user[user][n]
        out.append(job)
        if n + 1 < len(by_user[user]):
            nk = by_user[user][n + 1][0]
            heapq.heappush(heads, (standing_ + _charge(job) / share, nk, user, n + 1, share))
    return out


def passed_over(fifo: list, fair: list) -> set:
    """Ids of jobs that fair share put behind a job of another user that came later in the plain
    order (priority, then age): their wait is fair share's doing, and their reason says so."""
    rank = {j["id"]: i for i, j in enumerate(fifo)}
    best: list = []  # the two highest plain ranks seen so far in the fair order, of two different users: [(rank, user)]
    out = set()
    for w in fair:
        r = rank[w["id"]]
        if any(u != w["user"] and br > r for br, u in best):
            out.add(w["id"])
        mine = [(br, u) for br, u in best if u == w["user"]]
        others = [(br, u) for br, u in best if u != w["user"]]
        top = max(mine + [(r, w["user"])])
        best = sorted(others + [top], reverse=True)[:2]
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
    return {"on": on, "half_life_s": float(days) * 86400.0, "shares": {str(u): float(w) for u, w in shares.items()}}


class Ledger:
    """Each user's decayed use, for the scheduler: the jobs that ended before the last full read are
    weighed again at most every `refresh` seconds (their weights change slowly: a half-life is
    days); those that ended since, and the running ones, on every call."""

    def __init__(self, store, conf: dict, refresh: float = 60.0):
        self.store, self.conf, self.refresh = store, conf, refresh
        self._ended, self._at = {}, None

    def use(self, now: float) -> dict:
        hl = self.conf["half_life_s"]
        if self._at is None or now - self._at >= self.refresh or now < self._at:
            # 20 half-lives back: what is older weighs less than a millionth of what it weighed
            self._ended, self._at = decayed_use(self.store.usage_rows(now - 20 * hl), now, hl), now
        out = dict(self._ended)
        fresh = self.store.usage_rows(self._at) + self.store.usage_rows(0, running=True)  # ended since the read, and running
        for u, v in decayed_use(fresh, now, hl).items():
            out[u] = out.get(u, 0.0) + v
        return out
