"""Read-side functions shared by the CLI and the HTTP API (one implementation of each view)."""

from __future__ import annotations

import os
import time

from .spool import pending_jobs

JOB_FIELDS = ("id", "seq", "name", "user", "kind", "model", "state", "reason", "exit_code", "signal", "priority",
              "created_at", "queued_at", "started_at", "finished_at", "gpus", "gpu_uuids", "env", "env_hash", "after",
              "retry_of", "note", "peak_gpu_mem_mb", "job_dir")


def job_view(store, job: dict, full: bool = False) -> dict:
    """A job as the user sees it: its fields, its latest metrics and (full) its history."""
    out = {k: job.get(k) for k in JOB_FIELDS}
    out["duration"] = ((job["finished_at"] or time.time()) - job["started_at"]) if job.get("started_at") else None
    out["metrics"] = store.latest_metrics(job["id"])
    if full:
        out["spec"] = job["spec"]
        out["log_tail"] = job.get("log_tail")
        out["transitions"] = [{k: t[k] for k in ("from_state", "to_state", "at", "reason")} for t in store.transitions(job["id"])]
        out["artifacts"] = store.artifacts(job["id"])
    return out


def spooled_view(rec: dict) -> dict:
    """A job still in the spool (daemon not running): what is known of it."""
    spec = rec["spec"]
    return {"id": rec["id"], "seq": None, "name": spec.get("name") or spec.get("model") or str(spec.get("command"))[:60],
            "user": rec.get("owner") or rec.get("user"), "state": "submitted", "reason": "waiting for the daemon",
            "created_at": rec.get("submitted_at"), "priority": spec.get("priority", 0), "kind": "model" if spec.get("model") else "command",
            "model": spec.get("model"), "metrics": {}, "gpus": [], "exit_code": None}


def list_jobs(home, store, states=(), user=None, all_jobs=False, limit=None, offset=0) -> list[dict]:
    """Jobs for `runner ls` and GET /jobs: active ones by default, every one with all_jobs."""
    if not states and not all_jobs:
        states = ("queued", "preparing", "running")
    rows = [job_view(store, j) for j in store.list_jobs(states, user, limit, offset)]
    if offset == 0 and (not states or "queued" in states):
        spooled = [spooled_view(r) for r in pending_jobs(home)]
        rows = [r for r in spooled if not user or r["user"] == user] + rows
    return rows


def find_job(home, store, ref: str) -> dict:
    """A job by id/prefix from the store, or from the spool if the daemon has not taken it yet."""
    from .exceptions import JobNotFound

    try:
        return store.get_job(ref)
    except JobNotFound:
        for rec in pending_jobs(home):
            if rec["id"].startswith(ref):
                return {**spooled_view(rec), "spooled": True, "spec": rec["spec"], "uid": None}
        raise


def status(home, store, daemon=None) -> dict:
    """Queue counts, daemon uptime and GPUs: GET /status."""
    counts = store.count_by_state()
    counts["submitted"] = len(pending_jobs(home))
    out = {"home": str(home.root), "counts": counts, "daemon_pid": os.getpid() if daemon else home.daemon_pid()}
    if daemon is not None:
        out["uptime_seconds"] = time.time() - daemon.started_at
        out["max_running"] = daemon.max_running
        inv = daemon.inventory
        out["gpus"] = {"source": inv.source, "available": inv.available, "note": inv.reason,
                       "devices": gpu_view(store, inv)}
    return out


def gpu_view(store, inventory) -> list[dict]:
    """Each GPU with its processes and the runner job holding it."""
    alloc = store.gpu_allocations()
    out = []
    for g in inventory.gpus() if inventory.available else []:
        d = g.as_dict()
        d["job"] = alloc.get(g.uuid)
        out.append(d)
    return out


def read_log(job_dir, tail: int | None = None) -> str:
    """A job's output as text (the last `tail` lines, \\r redraws resolved)."""
    from .watch import tail_lines

    path = os.path.join(job_dir, "output.log")
    if tail is not None:
        return "\n".join(tail_lines(path, tail)) + "\n" if tail else ""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
