"""runner's own scheduler on this machine (the local backend's schedule): each decision starts the
queued jobs that fit the free slots and GPUs (runner/scheduler.plan: priority, fair share, age,
backfill), records why the others wait, and asks preemption to stop jobs for those that wait."""

from __future__ import annotations

import logging

from .. import diskspace, fairshare
from .. import gpus as gpus_mod
from ..exceptions import InvalidTransition, JobNotFound
from ..scheduler import plan
from ..states import JobState, Reason
from .unschedulable import fail_never_fitting

log = logging.getLogger("runner.daemon.launch")

REASONS_EVERY = 2.0
"""Seconds between the decisions that give every queued job its reason to wait. The decisions
between them start what can start and read the queue only as far as that needs (fair share's order
is made as it is read): with thousands queued, a decision reads the few jobs at its head."""


class Scheduler:
    """The scheduling decisions of the local backend; owns what carries from one decision to the next."""

    def __init__(self, store, home, inventory, limits: dict, fairshare_conf: dict, ledger, preemption, prepare):
        self.store = store
        self.home = home
        self.inventory = inventory  # the GPUs (NVML, or a static list)
        self.max_running = limits["max_running"]
        self.per_user_running = limits["per_user_running"]  # [daemon] per_user_running
        self.user_gpu_limit = limits["user_gpu_limit"]  # [gpus] per_user_limit
        self.backfill_limit = limits["backfill_limit"]  # [gpus] backfill_limit
        self.fairshare = fairshare_conf  # fairshare.settings
        self.ledger = ledger  # fairshare.Ledger: each user's decayed use
        self.preemption = preemption  # daemon.preemption.Preemption
        self.prepare = prepare  # (job): a claimed job, prepared in a worker, then started
        self.skipped = {}  # job_id -> times a smaller job started ahead of it (backfill bound)
        self._gpus_seen = {}  # uuid -> GPU: every GPU the inventory showed since the start (never_fits)
        self._reasons_at = None  # when the last decision gave every queued job its reason (REASONS_EVERY)

    def schedule_here(self, now: float):  # the Host's schedule_here
        """runner's own scheduler (the local backend's): start the queued jobs that fit now; record why the others wait."""
        active = self.store.count_by_state()
        if not active.get("queued") or active.get("running", 0) + active.get("preparing", 0) >= self.max_running:
            return
        # The head of the queue is enough to fill the free slots: a deep queue is not re-read
        # (and its JSON re-parsed) on every decision. Jobs further back get their wait reason
        # when they come within the window.
        window = max(32, 8 * self.max_running)
        queued = self.store.queued_heads(window) if self.fairshare["on"] else self.store.queued_jobs(limit=window)
        if not queued:
            return
        low = diskspace.low_space(self.home)  # below [jobs] min_free_mb where jobs write: none starts, each says why
        if low:
            for j in queued:
                if j["reason"] != low:
                    self.store.update_job(j["id"], reason=low)
            return
        deps = {d for j in queued for d in (j["after"] or [])}
        dep_states = {}
        for d in deps:
            try:
                dep_states[d] = self.store.get_job(d)["state"]
            except JobNotFound:
                dep_states[d] = "missing"
        for j in list(queued):
            bad = [d for d in (j["after"] or []) if dep_states.get(d) in ("failed", "cancelled", "missing")]
            if bad:
                self.store.transition(j["id"], JobState.FAILED, Reason.DEPENDENCY_FAILED.value, now=now, expect=JobState.QUEUED,
                                      note=f"dependency {bad[0]} is {dep_states[bad[0]]}")
                queued.remove(j)
        running = active.get("running", 0) + active.get("preparing", 0)
        wants_gpus = any((j["spec"].get("resources") or {}).get("gpus") for j in queued)
        free, count = [], 0
        allocations = {}
        held = {}
        if wants_gpus and self.inventory.available:
            all_gpus = self.inventory.gpus()
            count = len(all_gpus)
            allocations = self.store.gpu_allocations()
            free = gpus_mod.free_gpus(all_gpus, allocations, job_pids=set())
            for g in all_gpus:  # every GPU seen since the start: one that fell off the bus may come back
                self._gpus_seen[g.uuid] = g
            queued = fail_never_fitting(self.store, queued, list(self._gpus_seen.values()), now)
            queued, free, started = self.preemption.take_reserved(queued, free, count, running, now)
            running += started
            for jid in set(allocations.values()):
                try:
                    j = self.store.get_job(jid)
                    held[j["user"]] = held.get(j["user"], 0) + len(j["gpu_uuids"] or [])
                except JobNotFound:
                    pass
        ends = limit_ends(self.store.list_jobs(states=["preparing", "running"]), now) if allocations else {}
        fifo = queued
        fair = fairshare.Fair(queued, self.ledger.use(now), self.fairshare["shares"]) if self.fairshare["on"] else None
        reasons = self._reasons_at is None or not 0 <= now - self._reasons_at < REASONS_EVERY
        if reasons:  # this decision gives every job its reason: the whole order, read now
            self._reasons_at = now
            queued = list(fair.jobs()) if fair is not None else queued
        runs = {}
        if self.per_user_running is not None:
            for j in self.store.list_jobs(states=["preparing", "running"], columns=["user"]):
                runs[j["user"]] = runs.get(j["user"], 0) + 1
        decision = plan(fair.jobs() if fair is not None and not reasons else queued, running, self.max_running, free, count,
                        self.inventory.available and count > 0, held, self.user_gpu_limit, self.skipped, self.backfill_limit,
                        dep_states, now=now, ends=ends, running_by_user=runs, user_running_limit=self.per_user_running,
                        wants=fair.wants if fair is not None else None, lazy=not reasons)
        for job, chosen in decision.start:
            try:
                self.store.claim(job["id"], [(g.index, g.uuid) for g in chosen], now=now)
            except InvalidTransition as e:
                log.info("%s", e)
                continue
            self.prepare(self.store.get_job(job["id"]))
        if reasons:
            behind = fairshare.passed_over(fifo, queued) if fair is not None else set()
            for j in queued:
                if j["id"] in decision.waiting:
                    reason = decision.waiting[j["id"]]
                    if reason is Reason.WAITING_FOR_GPUS and j["id"] in behind:
                        reason = Reason.FAIR_SHARE
                    value = reason.value if reason else None
                    if j["reason"] != value:
                        self.store.update_job(j["id"], reason=value)
        if self.preemption.on and count:
            left = [g for g in free if all(g is not c for _, cs in decision.start for c in cs)]
            self.preemption.preempt_pass(fair if fair is not None and not reasons else queued, decision, left, all_gpus, now)


def limit_ends(jobs, now: float) -> dict:
    """{GPU uuid: when its job's time limit ends, None without one}; a job not started yet (started_at None,
    never 0.0, which is a time) counts from now."""
    ends = {}
    for j in jobs:
        limit = (j["spec"].get("resources") or {}).get("time_limit")
        for u in j["gpu_uuids"] or []:
            ends[u] = (now if j["started_at"] is None else j["started_at"]) + limit if limit else None
    return ends
