"""GET /metrics: the server in Prometheus text format (exposition format 0.0.4), for an admin's Grafana.

What is there: jobs by state and ended jobs by reason, the queue's wait (a histogram of seconds
from queued to started) and its oldest waiter, per user the running and queued jobs, GPUs held and
GPU-seconds used, each GPU's memory and utilisation (from the daemon's inventory), env builds and
their failures, the spool's backlog, each exporter's lag (runner/exporters/: when its table is set), the last
retention pass, and the HTTP requests by route template (never the raw path) with their latency.

What is not: anything private. No log text, no env_vars, no paths, no job names or commands; user
names only (everyone sees the queue). Everything about jobs is aggregated in SQL (store.job_stats),
so a scrape costs a few milliseconds with 10,000 jobs.
"""

from __future__ import annotations

import math
import threading
import time

from .states import JobState, Reason

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

WAIT_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0)
"""Upper bounds (seconds) of the queue-wait histogram's buckets: from a free GPU to a long weekend."""

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Upper bounds (seconds) of the request-latency histogram's buckets."""

GPU_SAMPLE_SECONDS = 5.0
"""How long one look at the GPUs serves scrapes (Prometheus may scrape from several servers)."""

_REASONS = frozenset(r.value for r in Reason)


def _esc(value) -> str:
    """A label value as the text format writes it."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    if v is None:
        return "NaN"
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


class Exposition:
    """Metric families written in the text format, each with its HELP and TYPE once."""

    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples):
        """One family: `samples` are (labels dict, value), or for a histogram (labels, buckets,
        sum, count) with buckets as cumulative [(upper bound, count)]."""
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for s in samples:
            if kind == "histogram":
                labels, buckets, total, count = s
                for le, n in buckets:
                    self.lines.append(f"{name}_bucket{self._labels({**labels, 'le': _num(le)})} {_num(n)}")
                self.lines.append(f"{name}_bucket{self._labels({**labels, 'le': '+Inf'})} {_num(count)}")
                self.lines.append(f"{name}_sum{self._labels(labels)} {_num(total)}")
                self.lines.append(f"{name}_count{self._labels(labels)} {_num(count)}")
            else:
                labels, value = s
                self.lines.append(f"{name}{self._labels(labels)} {_num(value)}")

    @staticmethod
    def _labels(labels: dict) -> str:
        if not labels:
            return ""
        return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"

    def text(self) -> str:
        """The exposition, ending in a newline as the format asks."""
        return "\n".join(self.lines) + "\n"


class HttpStats:
    """Requests counted by (method, route template, status) and their latency by (method, route).

    A pure ASGI middleware (`middleware(app)`): no per-request task or body copy as Starlette's
    BaseHTTPMiddleware makes. The route is the template the router matched (`/jobs/{job_id}`), or
    `other` when none did: a client can never make a label of its own."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict = {}  # (method, route, code) -> n
        self.latency: dict = {}  # (method, route) -> [bucket counts..., sum, count]

    def observe(self, method: str, route: str, code: int, seconds: float):
        """Record one answered request."""
        with self.lock:
            key = (method, route, str(code))
            self.counts[key] = self.counts.get(key, 0) + 1
            h = self.latency.get((method, route))
            if h is None:
                h = self.latency[(method, route)] = [0] * len(HTTP_BUCKETS) + [0.0, 0]
            for i, b in enumerate(HTTP_BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def middleware(self, app):
        """The ASGI app `app` with every HTTP request it answers recorded here."""
        stats = self

        async def recorded(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            t0 = time.perf_counter()
            status = [500]

            async def send_seen(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_seen)
            finally:
                route = getattr(scope.get("route"), "path", None)
                method = scope.get("method", "")
                stats.observe(method if method in _METHODS else "other", route if isinstance(route, str) else "other",
                              status[0], time.perf_counter() - t0)

        return recorded

    def write(self, out: Exposition):
        """The two HTTP families."""
        with self.lock:
            counts = sorted(self.counts.items())
            latency = sorted((k, list(v)) for k, v in self.latency.items())
        out.family("runner_http_requests_total", "counter", "HTTP requests answered, by method, route template and status code.",
                   [({"method": m, "route": r, "code": c}, n) for (m, r, c), n in counts])
        out.family("runner_http_request_duration_seconds", "histogram", "Seconds from a request's arrival to the end of its answer.",
                   [({"method": m, "route": r}, list(zip(HTTP_BUCKETS, h[:-2])), h[-2], h[-1]) for (m, r), h in latency])


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class GpuLook:
    """The daemon's inventory looked at no more often than every GPU_SAMPLE_SECONDS."""

    def __init__(self, inventory):
        self.inventory, self.at, self.gpus = inventory, 0.0, []
        self.lock = threading.Lock()

    def get(self, now: float) -> list:
        """The GPUs as last seen (a fresh look when the last is older than GPU_SAMPLE_SECONDS)."""
        with self.lock:
            if now - self.at >= GPU_SAMPLE_SECONDS:
                try:
                    self.gpus = self.inventory.gpus() if self.inventory is not None and self.inventory.available else []
                except Exception:  # NVML gone (a driver reset): no GPU series until it is back
                    self.gpus = []
                self.at = now
            return self.gpus


class EndedTotals:
    """Sums over ended jobs, kept between scrapes and topped up with the jobs that ended since (an
    ended job never changes): a scrape reads the jobs of the last few seconds, not the history."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mark = 0  # the last transition id summed
        self.rows: dict = {}  # (user, state, reason, bucket) -> [n, wait_sum, gpu_seconds]

    def get(self, store) -> list[tuple]:
        """[(user, state, reason, bucket, n, wait_sum, gpu_seconds)] over every ended job."""
        with self.lock:
            upto = store.last_transition_id()
            if upto < self.mark:  # another store (a restore): start again
                self.mark, self.rows = 0, {}
            if upto > self.mark:
                for r in store.ended_stats(WAIT_BUCKETS, self.mark, upto):
                    acc = self.rows.setdefault((r["user"] or "", r["state"], r["reason"], r["bucket"]), [0, 0.0, 0.0])
                    acc[0] += r["n"]
                    acc[1] += r["wait_sum"]
                    acc[2] += r["gpu_seconds"]
                self.mark = upto
            return [(*k, *v) for k, v in self.rows.items()]


def render(home, store, daemon=None, http: HttpStats | None = None, gpus: GpuLook | None = None,
           ended: EndedTotals | None = None, now: float | None = None) -> str:
    """The exposition of one scrape. `http`, `gpus` and `ended` are kept by the caller between
    scrapes (the app makes one of each)."""
    from . import queries

    now = time.time() if now is None else now
    out = Exposition()
    if daemon is not None:
        out.family("runner_daemon_start_time_seconds", "gauge", "When the daemon started (Unix time).",
                   [({}, getattr(daemon, "started_at", None))])
        last = getattr(daemon, "last_tick", None)
        out.family("runner_loop_seconds_since_pass", "gauge", "Seconds since the daemon's loop last completed a pass.",
                   [({}, None if last is None else max(0.0, now - last))])
        slots = getattr(daemon, "max_running", None)
        if slots is not None:
            out.family("runner_max_running", "gauge", "Jobs the daemon runs at once at most.", [({}, slots)])

    with store.snapshot():  # counts, the queue and the ended jobs as of one moment: a counter never dips
        by_state = {s.value: 0 for s in JobState}
        by_state.update(store.count_by_state())
        active = store.job_stats(WAIT_BUCKETS, now)
        done = (ended or EndedTotals()).get(store)
        oldest = store.oldest_queued_at()
    users: dict = {}
    per_bucket = [0] * (len(WAIT_BUCKETS) + 1)
    wait_sum = 0.0
    reasons: dict = {}

    def user(name):
        return users.setdefault(name or "", {"running": 0, "queued": 0, "gpus": 0.0, "gpu_seconds": 0.0})

    for r in active:
        u = user(r["user"])
        if r["state"] in ("running", "queued"):
            u[r["state"]] += r["n"]
        u["gpus"] += r["gpus_held"]
        u["gpu_seconds"] += r["gpu_seconds"]
        if r["bucket"] >= 0:
            per_bucket[r["bucket"]] += r["n"]
            wait_sum += r["wait_sum"]
    for name, state, reason, bucket, n, waited, gpu_seconds in done:
        user(name)["gpu_seconds"] += gpu_seconds
        if bucket >= 0:
            per_bucket[bucket] += n
            wait_sum += waited
        why = reason if reason in _REASONS else ("none" if reason is None else "other")
        reasons[(state, why)] = reasons.get((state, why), 0) + n
    out.family("runner_jobs", "gauge", "Jobs in the store by state.", [({"state": s}, n) for s, n in by_state.items()])
    out.family("runner_jobs_ended", "gauge", "Ended jobs in the store by state and reason.",
               [({"state": s, "reason": why}, n) for (s, why), n in sorted(reasons.items())])
    cumulative = [sum(per_bucket[:i + 1]) for i in range(len(WAIT_BUCKETS))]
    out.family("runner_queue_wait_seconds", "histogram", "Seconds each job that started waited from queued to started.",
               [({}, list(zip(WAIT_BUCKETS, cumulative)), wait_sum, sum(per_bucket))])
    out.family("runner_queue_oldest_wait_seconds", "gauge", "Seconds the longest-waiting queued job has waited (0: none waits).",
               [({}, max(0.0, now - oldest) if oldest else 0)])
    names = sorted(users)
    out.family("runner_user_running_jobs", "gauge", "Running jobs per user.", [({"user": n}, users[n]["running"]) for n in names])
    out.family("runner_user_queued_jobs", "gauge", "Queued jobs per user.", [({"user": n}, users[n]["queued"]) for n in names])
    out.family("runner_user_gpus", "gauge", "GPUs held now by each user's preparing and running jobs.",
               [({"user": n}, users[n]["gpus"]) for n in names])
    out.family("runner_user_gpu_seconds_total", "counter", "GPU-seconds used by each user's jobs (GPUs held x seconds run).",
               [({"user": n}, round(users[n]["gpu_seconds"], 3)) for n in names])

    look = gpus or GpuLook(getattr(daemon, "inventory", None))
    devices = look.get(now) if daemon is not None else []
    held = store.gpu_allocations() if devices else {}
    per = [({"gpu": str(g.index), "uuid": g.uuid, "name": g.name}, g) for g in devices]
    out.family("runner_gpu_memory_total_bytes", "gauge", "Memory of each GPU.", [(lb, g.memory_total_mb * 2**20) for lb, g in per])
    out.family("runner_gpu_memory_used_bytes", "gauge", "Memory in use on each GPU (by anyone).", [(lb, g.memory_used_mb * 2**20) for lb, g in per])
    out.family("runner_gpu_utilization_ratio", "gauge", "Each GPU's utilisation, 0 to 1 (absent when the GPU does not say).",
               [(lb, g.utilization / 100.0) for lb, g in per if g.utilization is not None])
    out.family("runner_gpu_allocated", "gauge", "1 when a runner job holds the GPU, else 0.", [(lb, int(g.uuid in held)) for lb, g in per])
    out.family("runner_gpu_processes", "gauge", "Compute processes on each GPU (runner's jobs and anyone else's).",
               [(lb, len(g.processes)) for lb, g in per])

    builds = {r["ok"]: r for r in store.env_build_stats()}
    out.family("runner_env_builds_total", "counter", "Env builds by result.",
               [({"result": "ok"}, builds[1]["n"] if 1 in builds else 0), ({"result": "failed"}, builds[0]["n"] if 0 in builds else 0)])
    out.family("runner_env_build_seconds_total", "counter", "Seconds spent building envs, by result.",
               [({"result": "ok"}, builds[1]["seconds"] if 1 in builds else 0),
                ({"result": "failed"}, builds[0]["seconds"] if 0 in builds else 0)])
    envs = store.env_totals()
    out.family("runner_envs", "gauge", "Envs built and recorded.", [({}, envs["n"])])
    out.family("runner_envs_bytes", "gauge", "Bytes of the recorded envs as measured when built.", [({}, envs["bytes"])])

    backlog = queries.spool_backlog(home)
    out.family("runner_spool_files", "gauge", "Submitted jobs waiting in the spool for the daemon to take them.", [({}, backlog["spool_backlog"])])
    out.family("runner_spool_oldest_seconds", "gauge", "Age of the oldest file in the spool (0: none).",
               [({}, backlog["oldest_spool_seconds"] or 0)])

    from .exporters import load, serving

    for name in serving(daemon):  # each exporter that is on: its backlog
        lag = store.export_lag(name)
        out.family(f"runner_{name}_jobs_behind", "gauge", f"Jobs whose mirror to {load(name).title or name} is not complete.",
                   [({}, lag["behind"])])
        out.family(f"runner_{name}_jobs_failing", "gauge", "Jobs behind whose last export try failed.", [({}, lag["failing"] or 0)])
        out.family(f"runner_{name}_lag_seconds", "gauge", "Seconds since the longest-waiting job behind was enrolled (0: none).",
                   [({}, max(0.0, now - lag["oldest"]) if lag["oldest"] else 0)])

    from .retention import last_pass

    done = last_pass(home)
    if done:
        out.family("runner_retention_last_pass_timestamp_seconds", "gauge", "When the retention policy was last applied.",
                   [({}, done.get("at"))])
        out.family("runner_retention_removed_bytes_total", "counter", "Bytes the retention policy has removed.",
                   [({}, done.get("removed_bytes_total", 0))])
    if http is not None:
        http.write(out)
    return out.text()
