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

from operator import itemgetter

RESUMING_FRAMEWORKS = ("timm", "ultralytics", "transformers")
"""Frameworks whose adapters resume from their last checkpoint (optimizer and epoch)."""


def settings(config: dict) -> dict:
    """The `[scheduler]` preemption settings, checked: {"after": seconds or None (off), "grace":
    seconds, "min_run": seconds a job runs before it may be stopped (default: after), "exempt": set
    of users whose jobs are never stopped, "by": set of users who may preempt, or None for everyone}."""
    from .exceptions import RunnerError

    sec = config.get("scheduler", {}) if isinstance(config.get("scheduler", {}), dict) else {}
    after = sec.get("preempt_after_seconds")
    if after is not None and (isinstance(after, bool) or not isinstance(after, (int, float)) or not 0 <= after <= 365 * 86400):
        raise RunnerError(f"[scheduler] preempt_after_seconds: given {after!r}; expected seconds (0 or more), or leave it out for no preemption")
    min_run = sec.get("preempt_min_run_seconds")
    if min_run is not None and (isinstance(min_run, bool) or not isinstance(min_run, (int, float)) or not 0 <= min_run <= 365 * 86400):
        raise RunnerError(f"[scheduler] preempt_min_run_seconds: given {min_run!r}; expected seconds (0 or more)")
    grace = sec.get("preempt_grace_seconds", 60)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 < grace <= 86400:
        raise RunnerError(f"[scheduler] preempt_grace_seconds: given {grace!r}; expected seconds above 0 (what a stopped job has to save and exit)")
    out = {"after": None if after is None else float(after), "grace": float(grace),
           "min_run": float(min_run) if min_run is not None else (None if after is None else float(after))}
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


def _started(job, now: float) -> float:
    t = job.get("started_at")
    return now if t is None else t


def _want(job) -> int:
    return int(((job.get("spec") or {}).get("resources") or {}).get("gpus") or 0)


def wanting(queued, decision):
    """(waiting, waiting_users) for `choose` after the scheduler's `decision`: the jobs that wait
    for GPUs. `queued`: the queue in the decision's order, a list (then a list, and None), or a
    fairshare.Fair whose order the decision read lazily (then a function of users, read lazily,
    and the set of users with such jobs: each user's jobs read only until one waits for GPUs)."""
    import itertools

    from .fairshare import Fair
    from .states import Reason

    def waits(j):
        return decision.why(j) is Reason.WAITING_FOR_GPUS

    if not isinstance(queued, Fair):
        return [j for j in queued if waits(j)], None
    if decision.tail_may_want_gpus:
        users = {u for u in queued.users if any(waits(j) for j in queued.of(u))}
    else:  # only the jobs it looked at (the order's first ones) may wait for GPUs
        looked = itertools.islice(queued.jobs(), len(decision.waiting) + len(decision.started))
        users = {j["user"] for j in looked if waits(j)}
    return (lambda some: (j for j in queued.jobs(some) if waits(j))), users


MARGIN = 1.25
"""A job is stopped only for a user whose recent use per share is below the stopped user's by this
factor: users of nearly equal use (three or more of them) do not stop each other's jobs in a cycle."""


def choose(waiting, running: list, n_free: int, total_gpus: int, use: dict, shares: dict, now: float, conf: dict,
           can_stop=preemptible, fits=None, waiting_users: set | None = None) -> list:
    """[(job to stop, the waiting job it is stopped for)].

    `waiting`: queued GPU jobs that wait for GPUs, in the scheduler's order, each with user,
    spec, queued_at: a list, or a function of a set of users that gives those users' such jobs in
    that order, lazily (then `waiting_users` names the users who have such jobs): only the users
    who may be served are read, and only until one is. `running`: running jobs with user, spec, gpu_uuids, started_at. `use`: each
    user's decayed use (fairshare.Ledger), `shares` their weights. At most one waiting job is
    served per call, and none while a stop is under way (the daemon calls this only then; it then
    keeps the freed GPUs for that job). A job that has run less than `conf["min_run"]` seconds
    (default: `after`) is not stopped: every job gets that long, at least, between stops.
    `fits(job, uuids)`: whether the waiting job would start on the free GPUs and those (its
    memory and gpu_ids too); without it, counts decide."""
    after = conf.get("after")
    if not callable(waiting):
        listed = list(waiting)
        waiting_users = set(map(itemgetter("user"), listed))
        waiting = lambda users: (j for j in listed if j["user"] in users)  # noqa: E731
    if after is None or not waiting_users or not running:
        return []
    min_run = conf.get("min_run", after) or 0.0
    held: dict = {}
    for r in running:
        held[r["user"]] = held.get(r["user"], 0) + _gpus(r)
    active = set(waiting_users) | {u for u, n in held.items() if n}  # (waiting: jobs that wait for GPUs)
    weight = {u: max(float(shares.get(u, 1.0)), 1e-9) for u in active | {r["user"] for r in running}}
    standing = {u: use.get(u, 0.0) / w for u, w in weight.items()}
    total_w = sum(weight[u] for u in active) or 1.0
    part = {u: total_gpus * weight[u] / total_w for u in active}
    exempt = conf.get("exempt") or set()
    # what may be stopped at all, newest first, read once: users over their part, jobs that ran long enough
    candidates = sorted((r for r in running if held.get(r["user"], 0) > part.get(r["user"], 0.0) + 1e-9 and r["user"] not in exempt
                         and _gpus(r) and now - _started(r, now) >= min_run and can_stop(r)),
                        key=lambda r: (-(r.get("started_at") or 0), r["id"]))
    if not candidates:
        return []
    top = max(standing[r["user"]] for r in candidates)
    by = conf.get("by")
    served = {u for u in waiting_users if (by is None or u in by) and standing.get(u, 0.0) * MARGIN < top}
    if not served:
        return []
    for job in waiting(served):
        want = _want(job)
        me = job["user"]
        if not want or now - (now if job.get("queued_at") is None else job["queued_at"]) < after:
            continue
        need = want - n_free
        if need <= 0:
            continue  # it waits for something else than GPUs held by others (memory, ids): stopping frees nothing it lacks
        stops, freed, left = [], 0, dict(held)
        for r in candidates:
            if freed >= need:
                break
            if r["user"] == me or standing[r["user"]] <= standing.get(me, 0.0) * MARGIN or left[r["user"]] <= part[r["user"]] + 1e-9:
                continue  # hers, or of a user not far enough above her, or down to her part already
            stops.append((r, job))
            freed += _gpus(r)
            left[r["user"]] -= _gpus(r)
        if freed >= need and (fits is None or fits(job, [u for r, _ in stops for u in (r.get("gpu_uuids") or [])])):
            return stops
    return []
