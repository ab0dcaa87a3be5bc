"""Which queued jobs start now: priority, then age, within the running cap and the free GPUs.

Pure: it takes the queue and the free GPUs and returns decisions, so it is tested and benched
without a daemon. A smaller job may start ahead of a larger GPU job that waits (backfill) only
`backfill_limit` times; after that the large job holds a reservation, and a job behind it may
still start only where it cannot delay the large one (EASY backfill): it fits in GPUs that the
large job will not need, or its `time_limit` ends before the large job's expected start (the
`time_limit`s of the running jobs say when their GPUs free up; without them, nothing backfills).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from .states import Reason


@dataclass
class Decision:
    """Jobs to start with their GPUs, and why the others wait.

    `waiting` holds the reason of every job the plan looked at and did not start. A plan that
    stopped early (once no job left could start: no free slot, or no free GPUs for what is left)
    did not look at `rest`, the jobs after; `why(job)` gives any job's reason, those too."""

    start: list = field(default_factory=list)  # [(job, [GPU])]
    waiting: dict = field(default_factory=dict)  # job_id -> Reason
    rest: object = ()  # the jobs not looked at (an iterator; empty unless the plan was lazy)
    tail: object = None  # reason of a job not looked at (nothing starts any more)
    started: set = field(default_factory=set)  # ids of the jobs in `start`
    tail_may_want_gpus: bool = False  # whether a job not looked at may wait for GPUs (a free slot was left)

    def why(self, job):
        """The job's reason to wait (None for a started job, or one that waits for a free slot)."""
        jid = job["id"]
        if jid in self.waiting:
            return self.waiting[jid]
        if jid in self.started or self.tail is None:
            return None
        return self.tail(job)


def _fits(job, free, gpu_count, res=None):
    res = job["spec"].get("resources", {}) if res is None else res
    want = res.get("gpus", 0) or 0
    if want == 0:
        return []
    if len(free) < want:
        return None
    ids = res.get("gpu_ids")
    mem = res.get("gpu_memory_gb")
    pool = [g for g in free if (ids is None or g.index in ids) and (mem is None or g.memory_free_mb >= mem * 1024)]
    if len(pool) < want:
        return None
    return pool[:want]


def never_fits(job, gpus: list) -> str | None:
    """Why no GPU of `gpus` (the machine's, all of them) can ever serve the job, or None."""
    res = job["spec"].get("resources") or {}
    want = res.get("gpus") or 0
    if not want or not gpus:
        return None
    ids, mem = res.get("gpu_ids"), res.get("gpu_memory_gb")
    if want > len(gpus):
        return f"resources.gpus: asks {want}; this machine has {len(gpus)}"
    pool = gpus
    if ids is not None:
        pool = [g for g in gpus if g.index in ids]
        if len(pool) < want:
            return (f"resources.gpu_ids: {list(ids)} name {len(pool)} of this machine's GPUs "
                    f"({', '.join(str(g.index) for g in gpus)}); the job asks {want}")
    if mem is not None and len([g for g in pool if g.memory_total_mb >= mem * 1024]) < want:
        return (f"resources.gpu_memory_gb: asks {mem:g} GB on {want} GPU(s); the largest here hold "
                f"{max(g.memory_total_mb for g in pool) / 1024:g} GB")
    return None


def _shadow(want: int, n_free: int, ends: dict):
    """(time the reserved job can start, GPUs free then beyond its need) from held GPUs' expected ends."""
    times = sorted(float("inf") if e is None else e for e in ends.values())
    k = want - n_free
    if k <= 0 or k > len(times):
        return (None if k > len(times) else 0.0), 0
    shadow = times[k - 1]
    return shadow, n_free + sum(1 for t in times if t <= shadow) - want


def _wants(queued) -> dict:
    """{GPUs asked: number of jobs} of the queue."""
    out: dict = {}
    for job in queued:
        w = (job["spec"].get("resources") or {}).get("gpus") or 0
        out[w] = out.get(w, 0) + 1
    return out


def plan(queued, running: int, max_running: int, free: list, gpu_count: int, gpus_available: bool,
         held_by_user: dict | None = None, user_gpu_limit: int | None = None, skipped: dict | None = None,
         backfill_limit: int = 8, dep_states: dict | None = None, now: float = 0.0, ends: dict | None = None,
         running_by_user: dict | None = None, user_running_limit: int | None = None,
         wants: dict | None = None, lazy: bool = False, stop_early: bool = True) -> Decision:
    """Decide what starts now. `skipped` (job_id -> times passed over) is updated in place.
    `running_by_user` / `user_running_limit`: jobs each user runs (or prepares) now, and the most
    one user may run at once ([daemon] per_user_running; None: no cap).

    Once no job left can start (no free slot; or no CPU job left and none that asks at most the
    GPUs still free: `wants`, {GPUs asked: jobs}, counts the queue, from fairshare.Fair or made
    here), the rest only wait, for reasons that no longer depend on one another: they are given
    by a cheaper walk (`lazy=False`, into `waiting`), or not at all (`lazy=True`: `queued` may then
    be an iterator, read only as far as needed, and `Decision.why` names any job's reason on
    demand). `stop_early=False` walks every job the long way (the tests' reference)."""
    d = Decision()
    if stop_early and wants is None:
        queued = list(queued)
        wants = _wants(queued)
    left = dict(wants) if stop_early else None
    free = list(free)
    held = dict(held_by_user or {})
    runs = dict(running_by_user or {})
    skipped = skipped if skipped is not None else {}
    slots = max_running - running
    reserved = False  # a job passed over `backfill_limit` times holds the GPUs that free up
    shadow, extra = None, 0  # when the reserved job should start; GPUs it will not need then
    blocked = []  # GPU jobs waiting for GPUs, ahead of the current one
    waiting = d.waiting  # (one lookup of each job's fields: this loop meets every queued job)
    it = iter(queued)
    stopped = None
    for job in it:
        res = job["spec"].get("resources") or {}
        want = res.get("gpus") or 0
        if left is not None:
            if slots <= 0 or not any(n > 0 and (w == 0 or (gpus_available and w <= len(free))) for w, n in left.items()):
                stopped = job  # no job from here on can start
                break
            left[want] = left.get(want, 0) - 1
        jid = job["id"]
        deps = job.get("after")
        if deps and dep_states is not None and any(dep_states.get(x) != "succeeded" for x in deps):
            waiting[jid] = Reason.WAITING_FOR_DEPENDENCY
            continue
        if slots <= 0:
            waiting[jid] = None
            continue
        if user_running_limit is not None and runs.get(job["user"], 0) >= user_running_limit:
            waiting[jid] = Reason.USER_RUNNING_LIMIT
            continue
        if want and not gpus_available:
            waiting[jid] = Reason.NO_GPUS_ON_THIS_HOST
            continue
        if want and user_gpu_limit is not None and held.get(job["user"], 0) + want > user_gpu_limit:
            waiting[jid] = Reason.USER_GPU_LIMIT
            continue
        chosen = _fits(job, free, gpu_count, res)
        if want and reserved and chosen is not None:
            limit = res.get("time_limit")
            if limit is not None and shadow is not None and now + limit <= shadow:
                pass  # ends before the reserved job can start
            elif want <= extra:
                extra -= want  # uses GPUs the reserved job will not need
            else:
                chosen = None
        if chosen is None:
            waiting[jid] = Reason.WAITING_FOR_GPUS
            if want and not reserved and skipped.get(job["id"], 0) >= backfill_limit:
                reserved = True
                shadow, extra = _shadow(want, len(free), ends or {})
            elif not reserved:
                blocked.append(job["id"])
            continue
        if want:
            for b in blocked:  # this GPU job starts ahead of larger ones that wait
                skipped[b] = skipped.get(b, 0) + 1
            held[job["user"]] = held.get(job["user"], 0) + want
        d.start.append((job, chosen))
        d.started.add(jid)
        runs[job["user"]] = runs.get(job["user"], 0) + 1
        slots -= 1
        for g in chosen:
            free.remove(g)
        skipped.pop(job["id"], None)
    if stopped is None:
        return d

    def tail(job):  # plan's tests in its order, where no job can start any more
        deps = job.get("after")
        if deps and dep_states is not None and any(dep_states.get(x) != "succeeded" for x in deps):
            return Reason.WAITING_FOR_DEPENDENCY
        if slots <= 0:
            return None
        if user_running_limit is not None and runs.get(job["user"], 0) >= user_running_limit:
            return Reason.USER_RUNNING_LIMIT
        want = (job["spec"].get("resources") or {}).get("gpus") or 0
        if want and not gpus_available:
            return Reason.NO_GPUS_ON_THIS_HOST
        if want and user_gpu_limit is not None and held.get(job["user"], 0) + want > user_gpu_limit:
            return Reason.USER_GPU_LIMIT
        return Reason.WAITING_FOR_GPUS

    d.tail, d.tail_may_want_gpus = tail, slots > 0 and gpus_available
    rest = itertools.chain((stopped,), it)
    if lazy:
        d.rest = rest
    else:
        for job in rest:
            waiting[job["id"]] = tail(job)
    return d
