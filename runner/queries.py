"""Read-side functions shared by the CLI and the HTTP API (one implementation of each view)."""

from __future__ import annotations

import os
import time

from .spool import pending_jobs
from .store.charts import series_buckets, series_chunk_stats, series_chunks, series_extent, series_points  # noqa: F401 (a chart's reads, by their names here)

JOB_FIELDS = ("id", "seq", "name", "user", "kind", "model", "state", "reason", "exit_code", "signal", "priority",
              "created_at", "queued_at", "started_at", "finished_at", "gpus", "gpu_uuids", "env", "env_hash", "after",
              "retry_of", "note", "peak_gpu_mem_mb", "max_rss_kb", "cpu_seconds", "job_dir", "backend", "backend_ref", "node",
              "requeues", "tags", "notes", "restarts")


def job_view(store, job: dict, full: bool = False, latest: dict | None = None, tail: list[str] | None = None) -> dict:
    """A job as the user sees it: its fields, its latest metrics and (full) its history. `tail`:
    the last lines of its log, given only by a caller who checked that the viewer may read them
    (log_tail_for)."""
    out = {k: job.get(k) for k in JOB_FIELDS}
    out["slurm_job_id"] = job.get("backend_ref") if job.get("backend") == "slurm" else None  # the API's field since Slurm came
    start, end = job.get("started_at"), job.get("finished_at")
    out["duration"] = None if start is None else (time.time() if end is None else end) - start
    out["metrics"] = store.latest_metrics(job["id"]) if latest is None else latest
    if full:
        out["spec"] = job["spec"]
        out["log_tail"] = "\n".join(tail) if tail else None
        out["transitions"] = [{k: t[k] for k in ("from_state", "to_state", "at", "reason")} for t in store.transitions(job["id"])]
        out["artifacts"] = store.artifacts(job["id"])[-MAX_ARTIFACTS:]
        from .exporters import views

        out.update(views(store, job["id"]))  # {exporter: how far its export is, or None}
        out["metrics_compacted"] = compacted_view(store, job)
    return out


def compacted_view(store, job: dict) -> dict | None:
    """When and how the job's metric points were compacted ([retention] metrics_days: each metric
    keeps its first, last, lowest and highest point per bucket of steps), or None when they were not."""
    if not job.get("metrics_compacted_at"):
        return None
    return {"at": job["metrics_compacted_at"], "bucket_steps": job.get("metrics_bucket"),
            "points_before": job.get("metrics_points_before"), "points": store.count_metrics(job["id"])}


def compacted_line(c: dict) -> str:
    """compacted_view in one line, for the CLI and the job page."""
    when = time.strftime("%Y-%m-%d", time.localtime(c["at"]))
    return (f"compacted on {when}: {c['points']} of {c['points_before']} points kept (first, last, min and max of each "
            f"metric per {c['bucket_steps']} steps; [retention] metrics_days)")


def may_read_log(home, job: dict, viewer: int | None) -> bool:
    """Whether the viewer (a uid; None: anonymous) may read the job's log: its owner, root, or
    everyone where [server] share_logs is on."""
    if home.config.get("server", {}).get("share_logs"):
        return True
    return viewer is not None and viewer in (0, job.get("uid"))


def log_tail_for(home, job: dict, viewer: int | None) -> list[str] | None:
    """A failed job's last log lines for a viewer who may read its log; None for anyone else."""
    if job.get("state") != "failed" or not may_read_log(home, job, viewer):
        return None
    from .watch import tail_lines

    try:
        return tail_lines(home.run_dir(job["id"]) / "output.log")
    except OSError:  # a CLI user whose log it is not (the file says so)
        return None


MAX_ARTIFACTS = 1000  # newest files of a job shown in its view


def spooled_view(rec: dict) -> dict:
    """A job still in the spool (daemon not running): what is known of it."""
    spec = rec["spec"]
    return {"id": rec["id"], "seq": None, "name": spec.get("name") or spec.get("model") or str(spec.get("command"))[:60],
            "user": rec.get("owner") or rec.get("user"), "state": "submitted", "reason": "waiting for the daemon",
            "created_at": rec.get("submitted_at"), "priority": spec.get("priority", 0), "kind": "model" if spec.get("model") else "command",
            "model": spec.get("model"), "metrics": {}, "gpus": [], "exit_code": None}


def list_jobs(home, store, states=(), user=None, all_jobs=False, limit=None, offset=0, tag=None) -> list[dict]:
    """Jobs for `runner ls` and GET /jobs: active ones by default, every one with all_jobs (`tag`:
    only those tagged so; a job still in the spool has no tags yet)."""
    spooled, rows = job_page(home, store, states, user, all_jobs, limit, offset, tag)
    return spooled + list(rows)


def job_page(home, store, states=(), user=None, all_jobs=False, limit=None, offset=0, tag=None, step: int = 1000):
    """(the jobs still in the spool, on the first page only, outside limit and offset; the store's
    jobs from offset, at most limit, as an iterator) as list_jobs shows them. The iterator reads
    their latest metrics `step` jobs at a time: a reader that stops early (GET /jobs at its bytes)
    has not read the rest, nor held it (a job may hold 1,000 metric names)."""
    if not states and not all_jobs:
        jobs = _active(store, user, limit, offset, tag)
    else:
        jobs = store.list_jobs(states, user, limit, offset, columns=JOB_FIELDS, tag=tag)

    def views():
        for i in range(0, len(jobs), step):
            part = jobs[i:i + step]
            latest = store.latest_metrics_many([j["id"] for j in part])
            yield from (job_view(store, j, latest=latest[j["id"]]) for j in part)
    rows = views()
    spooled = []
    if offset == 0 and (not states or "queued" in states) and not tag:
        spooled = [r for r in map(spooled_view, _spooled(home)) if not user or r["user"] == user]
    return spooled, rows


def _active(store, user, limit, offset, tag=None) -> list[dict]:
    """The active jobs, those that hold a slot first (running, then preparing, newest first), then
    the queued ones, newest first: a page of them, so that 100,000 queued jobs cost one page."""
    busy = (store.list_jobs(("running",), user, columns=JOB_FIELDS, tag=tag)
            + store.list_jobs(("preparing",), user, columns=JOB_FIELDS, tag=tag))
    page = busy[offset:] if limit is None else busy[offset:offset + limit]
    if limit is not None and len(page) >= limit:
        return page
    return page + store.list_jobs(("queued",), user, None if limit is None else limit - len(page),
                                  max(0, offset - len(busy)), columns=JOB_FIELDS, tag=tag)


def count_jobs(store, states=(), user=None, all_jobs=False, tag=None) -> int:
    """How many jobs list_jobs gives without a limit (the store's; spooled ones aside)."""
    if not states and not all_jobs:
        states = ("queued", "preparing", "running")
    return store.count_jobs(states, user, tag=tag)


_SPOOL_CACHE: dict = {}


def _spooled(home) -> list[dict]:
    """pending_jobs, re-read only when the spool folder changed (a list view is asked for often)."""
    try:
        st = os.stat(home.spool)
    except FileNotFoundError:
        return []
    key = (str(home.spool), st.st_mtime_ns, st.st_nlink)
    hit = _SPOOL_CACHE.get("key") == key and time.time() - _SPOOL_CACHE.get("at", 0) < 1.0
    if not hit:
        _SPOOL_CACHE.update(key=key, at=time.time(), rows=pending_jobs(home))
    return _SPOOL_CACHE["rows"]


def spool_backlog(home) -> dict:
    """How many files wait in the spool and how old the oldest is (a stalled intake shows here)."""
    try:
        names = [n for n in os.listdir(home.spool) if n.endswith(".json") and not n.startswith(".")]
    except FileNotFoundError:
        return {"spool_backlog": 0, "oldest_spool_seconds": None}
    oldest = None
    if names:  # names start with the submit time in ns: the smallest is the oldest
        try:
            oldest = os.lstat(os.path.join(home.spool, min(names))).st_mtime
        except FileNotFoundError:
            pass
    return {"spool_backlog": len(names), "oldest_spool_seconds": round(time.time() - oldest, 3) if oldest else None}


def find_job(home, store, ref: str) -> dict:
    """A job by id/prefix from the store, or from the spool if the daemon has not taken it yet."""
    from .exceptions import JobNotFound

    try:
        return store.get_job(ref)
    except JobNotFound:
        for rec in pending_jobs(home):
            if rec["id"].startswith(ref):
                return {**spooled_view(rec), "spooled": True, "spec": rec["spec"], "uid": None}
        # Being taken in: the daemon moves the file out of the spool into spool/.taking a moment
        # before its row is committed (a job's page asked for right after its submit answered 404
        # under load). Wait for the row while its file is there (root reads that folder; a user
        # cannot, and reads the store once more after a moment).
        deadline = time.monotonic() + 2.0
        while True:
            try:
                names = os.listdir(home.taking)
            except OSError:
                time.sleep(0.1)
                return store.get_job(ref)
            try:
                return store.get_job(ref)
            except JobNotFound:
                if time.monotonic() > deadline or not any(f"-{ref}" in n for n in names):
                    raise
            time.sleep(0.02)


def status(home, store, daemon=None) -> dict:
    """Queue counts, daemon uptime and GPUs: GET /status."""
    counts = store.count_by_state()
    counts["submitted"] = len(_spooled(home))
    out = {"home": str(home.root), "counts": counts, "daemon_pid": os.getpid() if daemon else home.daemon_pid()}
    if daemon is not None:
        out["uptime_seconds"] = time.time() - daemon.started_at
        out["max_running"] = daemon.max_running
        inv = daemon.inventory
        out["gpus"] = {"source": inv.source, "available": inv.available, "note": inv.reason,
                       "devices": gpu_view(store, inv)}
    return out


def share_view(store, config: dict, now: float) -> dict:
    """Each user's fair-share standing: decayed use (GPU-hours; a CPU job counts as one slot),
    share, use per share, order (1 goes first among equal priority), and running/queued counts."""
    from . import fairshare

    conf = fairshare.settings(config)
    use = fairshare.Ledger(store, conf).use(now)
    counts = store.active_by_user()
    users = sorted(set(use) | set(counts) | set(conf["shares"]))
    per = fairshare.standing({u: use.get(u, 0.0) for u in users}, conf["shares"])
    ranked = sorted(users, key=lambda u: (per[u], u))
    rows = [{"user": u, "use_gpu_hours": round(use.get(u, 0.0) / 3600.0, 4), "share": conf["shares"].get(u, 1.0),
             "use_per_share": round(per[u] / 3600.0, 4), "order": ranked.index(u) + 1,
             "running": counts.get(u, {}).get("running", 0) + counts.get(u, {}).get("preparing", 0),
             "queued": counts.get(u, {}).get("queued", 0)} for u in ranked]
    return {"fairshare": conf["on"], "half_life_days": conf["half_life_s"] / 86400.0, "users": rows}


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
    return b"".join(log_chunks(job_dir)).decode("utf-8", "replace")


def log_size(job_dir) -> int:
    """Bytes in a job's output.log (0 when there is none yet)."""
    try:
        return os.path.getsize(os.path.join(job_dir, "output.log"))
    except FileNotFoundError:
        return 0


def log_chunks(job_dir, offset: int = 0, length: int | None = None, chunk: int = 256 * 1024):
    """A job's output.log as bytes, chunk by chunk, from offset (length bytes at most): memory stays flat."""
    try:
        f = open(os.path.join(job_dir, "output.log"), "rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            data = f.read(chunk if left is None else min(chunk, left))
            if not data:
                return
            if left is not None:
                left -= len(data)
            yield data

