"""Preemption: a job that has waited long enough for GPUs that a user over her share holds may
stop the newest of that user's preemptible jobs, which goes back to the queue and resumes later
from its last checkpoint.

Pure, like runner/scheduler.py and runner/fairshare.py: `choose` takes rows and numbers and names
the jobs to stop, so it is tested and benched without a daemon. The daemon sends them SIGTERM,
waits `[scheduler] preempt_grace_seconds`, then SIGKILL, and queues each again (reason `preempted`).

A user is over her share when she holds more GPUs than her weighted part of the machine among the
users who have GPU jobs running or waiting, and her recent use per share is above the waiting
user's. Jobs are stopped only where together they free what the waiting job needs, and none of a
user who is already down to her part; as the stopped user's use is then above the waiting user's
and she holds no more than her part, the two cannot preempt each other back and forth.
"""

from __future__ import annotations

RESUMING_FRAMEWORKS = ("timm", "ultralytics", "transformers")
"""Frameworks whose adapters resume from their last checkpoint (optimizer and epoch)."""


def settings(config: dict) -> dict:
    """The `[scheduler]` preemption settings, checked: {"after": seconds or None (off), "grace":
    seconds, "exempt": set of users whose jobs are never stopped, "by": set of users who may
    preempt, or None for everyone}."""
    from .exceptions import RunnerError

    sec = config.get("scheduler", {}) if isinstance(config.get("scheduler", {}), dict) else {}
    after = sec.get("preempt_after_seconds")
    if after is not None and (isinstance(after, bool) or not isinstance(after, (int, float)) or not 0 <= after <= 365 * 86400):
        raise RunnerError(f"[scheduler] preempt_after_seconds: given {after!r}; expected seconds (0 or more), or leave it out for no preemption")
    grace = sec.get("preempt_grace_seconds", 60)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 < grace <= 86400:
        raise RunnerError(f"[scheduler] preempt_grace_seconds: given {grace!r}; expected seconds above 0 (what a stopped job has to save and exit)")
    out = {"after": None if after is None else float(after), "grace": float(grace)}
    for key, name in (("exempt", "preempt_exempt"), ("by", "preempt_by")):
        users = sec.get(name)
        if users is not None and (not isinstance(users, list) or not all(isinstance(u, str) and u for u in users)):
            raise RunnerError(f"[scheduler] {name}: given {users!r}; expected a list of user names")
        out[key] = None if users is None else set(users)
    out["exempt"] = out["exempt"] or set()
    return out


def preemptible(job: dict, repo_resumes=None) -> bool:
    """Whether the job may be stopped and resumed: its spec's `preemptible`, else by kind: a
    timm, Ultralytics or Transformers job yes, a repo whose table maps a resume argument yes
    (`repo_resumes(name)`), a command no (it must handle SIGTERM and resume itself, so it opts in)."""
    spec = job.get("spec") or {}
    said = spec.get("preemptible")
    if isinstance(said, bool):
        return said
    model = spec.get("model") or ""
    if model.startswith("repo/"):
        return bool(repo_resumes and repo_resumes(model[5:]))
    return model.split("/", 1)[0] in RESUMING_FRAMEWORKS


def _gpus(job) -> int:
    g = job.get("gpu_uuids") or job.get("gpus") or []
    return len(g) if isinstance(g, list) else 0


def _want(job) -> int:
    return int(((job.get("spec") or {}).get("resources") or {}).get("gpus") or 0)


def choose(waiting: list, running: list, n_free: int, total_gpus: int, use: dict, shares: dict, now: float, conf: dict,
           can_stop=preemptible) -> list:
    """[(job to stop, the waiting job it is stopped for)].

    `waiting`: queued GPU jobs that wait for GPUs, in the scheduler's order, each with user,
    spec, queued_at. `running`: running jobs with user, spec, gpu_uuids, started_at. `use`: each
    user's decayed use (fairshare.Ledger), `shares` their weights. At most one waiting job is
    served per call, and none while a stop is under way (the daemon calls this only then)."""
    after = conf.get("after")
    if after is None or not waiting or not running:
        return []
    weight = {u: max(float(shares.get(u, 1.0)), 1e-9) for u in {j["user"] for j in waiting + running}}
    standing = {u: use.get(u, 0.0) / w for u, w in weight.items()}
    held: dict = {}
    for r in running:
        held[r["user"]] = held.get(r["user"], 0) + _gpus(r)
    active = {j["user"] for j in waiting if _want(j)} | {u for u, n in held.items() if n}
    total_w = sum(weight[u] for u in active) or 1.0
    part = {u: total_gpus * weight[u] / total_w for u in active}
    by = conf.get("by")
    for job in waiting:
        want = _want(job)
        if not want or now - (job.get("queued_at") or now) < after or (by is not None and job["user"] not in by):
            continue
        need = want - n_free
        if need <= 0:
            continue  # it waits for something else than GPUs held by others (memory, ids): stopping frees nothing it lacks
        me = job["user"]
        candidates = sorted((r for r in running if r["user"] != me and r["user"] not in conf.get("exempt", set())
                             and held.get(r["user"], 0) > part.get(r["user"], 0.0) and standing.get(r["user"], 0.0) > standing.get(me, 0.0)
                             and _gpus(r) and can_stop(r)),
                            key=lambda r: (-(r.get("started_at") or 0), r["id"]))  # newest first
        stops, freed, left = [], 0, dict(held)
        for r in candidates:
            if freed >= need:
                break
            if left[r["user"]] <= part[r["user"]] + 1e-9:
                continue  # she is down to her part: nothing more of hers is stopped
            stops.append((r, job))
            freed += _gpus(r)
            left[r["user"]] -= _gpus(r)
        if freed >= need:
            return stops
    return []
