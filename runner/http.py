"""The HTTP API (FastAPI; OpenAPI schema at /openapi.json). Loopback by default.

Each handler is one line of routing into the same functions the CLI uses (`queries.py`,
`writes.py`). Every read is bounded: pages of jobs and metric points have a largest size, logs are
streamed or read by tail or byte range, parameters out of range get 422 with one line, never 500,
so no request can stall the daemon or fill its memory for everyone else.

Who asks is known only by a personal token (`Authorization: Bearer TOKEN`, see `runner token`),
never by a name in the request. Writes (POST) need one, checked before a byte of the body is read;
a job's log needs its owner's (or root's) unless [server] share_logs is on; when the daemon is
bound beyond loopback every request but /healthz needs one. Before any route, `web.guard` checks
the Host header against the server's names (DNS rebinding) and caps the body.

/healthz fails (503, one line) when the loop has stalled or the store cannot be written (a real
write, at most every STORE_PROBE_SECONDS): a monitor then sees what a submitter would.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Literal, Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import defaults, queries
from .exceptions import JobNotFound, PermissionDenied, RegistryError, RunnerError, SpecError
from .printable import finite
from .tags import MAX_NOTES


class TagsChange(BaseModel):
    """A change of a job's tags and notes (runner.tags): tags to add and to remove, and the notes
    (null: unchanged; "": cleared)."""

    add: list[str] = Field(default_factory=list, max_length=100)
    remove: list[str] = Field(default_factory=list, max_length=100)
    notes: Optional[str] = Field(None, max_length=MAX_NOTES)

State = Literal["queued", "preparing", "running", "succeeded", "failed", "cancelled"]


class FastJSON(JSONResponse):
    """JSON encoded once with the standard library (no per-field encoder pass); non-finite numbers as null."""

    def render(self, content) -> bytes:
        return self.encode(content)

    @staticmethod
    def encode(content) -> bytes:
        try:
            text = json.dumps(content, allow_nan=False, default=str, separators=(",", ":"))
        except ValueError:
            text = json.dumps(finite(content), allow_nan=False, default=str, separators=(",", ":"))
        return text.encode()


STORE_PROBE_SECONDS = 5.0
"""How often /healthz writes to the store (and its folder) to know that it still can."""


class _Writable:
    """Whether the store can be written, known by writing: a committed SQLite write that changes
    nothing (the header's application_id set to what it is) and a small file fsynced in the store's
    folder (a full disk, a read-only mount). At most one probe every STORE_PROBE_SECONDS."""

    def __init__(self, home, store):
        self.home, self.store = home, store
        self.at, self.problem = 0.0, None
        import threading

        self.lock = threading.Lock()

    def due(self, now: float) -> bool:
        return now - self.at >= STORE_PROBE_SECONDS

    def probe(self, now: float | None = None) -> str | None:
        """Write now if due; the problem in one line, or None. Runs in a worker thread."""
        import os
        import sqlite3

        now = time.time() if now is None else now
        if not self.due(now) or not self.lock.acquire(blocking=False):
            return self.problem
        try:
            self.at = now
            path = self.home.root / ".healthz-probe"
            try:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, b"\0" * 4096)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                    os.unlink(path)
                self.store.write_probe()
                self.problem = None
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):
                    return self.problem  # another writer held it: no verdict this time
                self.problem = f"the store cannot be written ({self.store.path}: {e}): submits are set aside"
            except OSError as e:
                self.problem = f"the store's folder cannot be written ({self.home.root}: {e.strerror}): submits are set aside"
            return self.problem
        finally:
            self.lock.release()


class _Fresh:
    """Answers kept while nothing they were read from has changed: the store (its data_version)
    and the spool folder. Many people on the same queue page cost one read, and never a stale one."""

    def __init__(self, home, store):
        self.home, self.store, self.entries = home, store, {}
        self.lock = threading.Lock()  # answers are made in worker threads: the tables are changed under it
        self.makers: dict = {}  # key -> the lock of whoever makes its answer

    def stamp(self):
        import os

        try:
            st = os.stat(self.home.spool)
            spool = (st.st_mtime_ns, st.st_nlink)
        except FileNotFoundError:
            spool = None
        return self.store.data_version(), spool

    MAX_BYTES = 32 << 20
    """Most bytes of answers kept (a hostile teammate's 4 queries of 290 MB answers each once held
    the daemon at 2.1 GB): answers read before the store last changed are dropped, not kept."""

    def kept(self, key, stamp=None):
        """The answer kept for key, if it is fresh (else None); quick: a stat and a PRAGMA."""
        hit = self.entries.get(key)
        return hit[1] if hit is not None and hit[0] == (self.stamp() if stamp is None else stamp) else None

    def get(self, key, make):
        stamp = self.stamp()
        body = self.kept(key, stamp)
        if body is not None:
            return body
        with self.lock:
            if len(self.makers) > 1024:
                self.makers.clear()
            maker = self.makers.setdefault(key, threading.Lock())
        with maker:  # one thread makes a key's answer; the others asking at once wait for it, then read it
            body = self.kept(key, stamp)
            if body is not None:
                return body
            body = make()
        with self.lock:
            self.entries = {k: v for k, v in self.entries.items() if v[0] == stamp}  # a stale answer is never served
            if len(self.entries) > 256 or sum(len(v[1]) for v in self.entries.values()) + len(body) > self.MAX_BYTES:
                self.entries.clear()
            if len(body) <= self.MAX_BYTES // 4:
                self.entries[key] = (stamp, body)
        return body


def create_app(home, daemon=None) -> FastAPI:
    """The app for one $RUNNER_HOME; `daemon` (when served by it) adds uptime, GPUs and loop health."""
    # docs_url, redoc_url None: FastAPI's pages load Swagger from a CDN; web.docs serves /docs from vendored files
    app = FastAPI(title="runner", version="0.1.0", default_response_class=FastJSON, docs_url=None, redoc_url=None,
                  description="The runner's queue, jobs, metrics, envs and GPUs.")
    store = daemon.store if daemon else home.store()
    fresh = _Fresh(home, store)
    from .web.reads import Reads

    app.state.reads = reads = Reads()
    from .tokens import TokenBook

    book = TokenBook(home)
    bind = getattr(daemon, "http_bind", None) or "127.0.0.1"
    host = bind.rpartition(":")[0] or bind
    open_reads = host in ("127.0.0.1", "localhost", "::1", "[::1]") or host.startswith("127.")
    share_logs = bool(home.config.get("server", {}).get("share_logs"))

    def caller(request: Request, required: bool = True):
        """The person behind the request's token (None when there is none and none is required)."""
        from .identity import person

        auth = request.headers.get("authorization", "")
        if not auth:
            if required:
                raise HTTPException(401, "this needs your token: Authorization: Bearer TOKEN (`runner token` prints it)")
            return None
        kind, _, token = auth.partition(" ")
        uid = book.uid(token.strip()) if kind.lower() == "bearer" else None
        if uid is None:
            raise HTTPException(401, "unknown token: give yours (`runner token` prints it)")
        try:
            return person(uid)
        except KeyError:
            raise HTTPException(401, f"the token's user (uid {uid}) no longer exists") from None

    from types import SimpleNamespace

    from .web.auth import COOKIE, Sessions

    sessions = Sessions(home, book)

    def reader(request: Request):
        """Whom a long read is for (web.reads.Reads shares its thread among them): the uid of the
        request's token or signed-in session, else the uid owning its loopback socket (reads on
        loopback need no token), else its address. Never what she may see: caller() and the pages
        decide that."""
        from .peer import loopback_uid

        kind, _, token = request.headers.get("authorization", "").partition(" ")
        uid = book.uid(token.strip()) if kind.lower() == "bearer" else None
        if uid is None:
            uid = sessions.uid(request.cookies.get(COOKIE))
        if uid is None and request.client is not None:
            uid = loopback_uid(request.client.host, request.client.port, request.scope.get("server"))
            return uid if uid is not None else request.client.host
        return uid

    async def _beyond_loopback(request: Request, call_next):
        path = request.url.path
        # open: health, the dashboard's static files and its sign-in page; the rest needs a token
        # or a signed-in session
        if path != "/healthz" and not path.startswith("/static/") and path != "/ui/login":
            kind, _, token = request.headers.get("authorization", "").partition(" ")
            if (kind.lower() != "bearer" or book.uid(token.strip()) is None) and sessions.uid(request.cookies.get(COOKIE)) is None:
                return FastJSON(status_code=401, content={"error": "the daemon is served beyond loopback: every request needs "
                                                                   "a valid Authorization: Bearer TOKEN (`runner token`)"})
        return await call_next(request)

    if not open_reads:  # only then: a middleware costs every request its own pass
        app.middleware("http")(_beyond_loopback)
    from .metrics_text import EndedTotals, GpuLook, HttpStats

    http_stats = HttpStats()  # requests by route template and their latency, for /metrics
    app.add_middleware(lambda app: http_stats.middleware(app))
    from .web.guard import MAX_BODY_BYTES, BodyTooLarge, Guard, Hosts

    server_cfg = home.config.get("server", {})
    # added last: the outermost layer, so a request for another Host or with too large a body
    # reaches nothing else
    app.add_middleware(Guard, hosts=Hosts(bind, server_cfg.get("hostnames", ())),
                       max_body=int(server_cfg.get("max_body_bytes", MAX_BODY_BYTES)))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_req: Request, exc: BodyTooLarge):
        return FastJSON(status_code=413, content={"error": str(exc)}, headers={"Connection": "close"})

    def registry():
        from .registry import load

        return daemon.registry if daemon else load(home)

    @app.exception_handler(JobNotFound)
    async def _not_found(_req: Request, exc: JobNotFound):
        return FastJSON(status_code=404, content={"error": str(exc)})

    @app.exception_handler(RegistryError)
    async def _registry(_req: Request, exc: RegistryError):
        return FastJSON(status_code=404, content={"error": str(exc)})

    @app.exception_handler(PermissionDenied)
    async def _denied(_req: Request, exc: PermissionDenied):
        return FastJSON(status_code=403, content={"error": str(exc)})

    @app.exception_handler(SpecError)
    async def _spec(_req: Request, exc: SpecError):
        return FastJSON(status_code=422, content={"error": "; ".join(exc.problems), "problems": exc.problems})

    from .privdrop import Busy

    @app.exception_handler(Busy)
    async def _busy(_req: Request, exc: Busy):
        return FastJSON(status_code=429, content={"error": str(exc)}, headers={"Retry-After": "2"})

    @app.exception_handler(RunnerError)
    async def _runner(_req: Request, exc: RunnerError):
        return FastJSON(status_code=409, content={"error": str(exc)})

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and the router's own 404/405
    async def _http(_req: Request, exc: StarletteHTTPException):
        return FastJSON(status_code=exc.status_code, content={"error": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        lines = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0])
            lines.append(f"{loc}: given {str(e.get('input'))[:40]!r}; expected {e['msg'].replace('Input should be ', '')}")
        return FastJSON(status_code=422, content={"error": "; ".join(lines), "problems": lines})

    # The quick reads are `async def` and return their JSON encoded once: they run on the event
    # loop one after another with one SQLite connection. As threads, 200 concurrent reads convoyed
    # on the GIL around each SQLite call (7 ms a request instead of 1), and FastAPI's encoder pass
    # over a returned dict cost more than the query. Reads that may take long (a log) stay in threads.

    writable = _Writable(home, store)

    @app.get("/healthz")
    async def healthz():
        # async: answered on the event loop even when every worker thread is busy with reads; the
        # store probe (a write, which may wait on the lock) runs in a thread, and only when due.
        if daemon is None:
            return {"ok": True}
        now = time.time()
        problem = writable.problem
        if writable.due(now):
            from starlette.concurrency import run_in_threadpool

            problem = await run_in_threadpool(writable.probe, now)
        age = now - daemon.last_tick
        backlog = queries.spool_backlog(home)
        body = {"ok": age < defaults.HEALTH_STALL_SECONDS and problem is None, "loop_seconds_since_pass": round(age, 3), **backlog}
        if age >= defaults.HEALTH_STALL_SECONDS:
            body["error"] = f"the daemon's loop has not completed a pass for {age:.0f}s: intake and reaping are stalled"
        elif problem:
            body["error"] = problem
        return FastJSON(status_code=200 if body["ok"] else 503, content=body)

    @app.get("/status")
    async def status():
        return FastJSON(queries.status(home, store, daemon))

    @app.get("/jobs")
    async def jobs(request: Request, state: Optional[list[State]] = Query(None), user: Optional[str] = Query(None, max_length=64), all: bool = True,
             limit: int = Query(100, ge=1, le=defaults.HTTP_MAX_LIMIT), offset: int = Query(0, ge=0, le=10**9),
             tag: Optional[str] = Query(None, max_length=40)):
        def make():
            spooled, jobs = queries.job_page(home, store, state or (), user, all, limit + 1, offset, tag=tag, step=25)  # (one more: is there a next page)
            # a job at a time: one json.dumps of the whole page holds the GIL for all of it (0.4 s at 66 MB);
            # at most HTTP_MAX_PAGE_BYTES of the store's jobs (at least one), the rest from next_offset
            head = list(map(FastJSON.encode, spooled))  # (the spool's, first page only: outside limit and offset, as before)
            parts, size, more = [], 0, False
            for j in jobs:
                b = FastJSON.encode(j)
                if len(parts) == limit or (parts and size + len(b) > defaults.HTTP_MAX_PAGE_BYTES):
                    more = True  # (the jobs after it are not read)
                    break
                parts.append(b)
                size += len(b) + 1
            nxt = b"%d" % (offset + len(parts)) if more else b"null"
            return b'{"jobs":[' + b",".join(head + parts) + b'],"limit":%d,"offset":%d,"next_offset":%s}' % (limit, offset, nxt)

        key = ("jobs", tuple(state or ()), user, all, limit, offset, tag)
        body = fresh.kept(key)
        if body is None:  # made off the loop: a page of 1,000 jobs with 1,000 metric names each is
            # 66 MB of JSON and ~2 s, which on the event loop held every other request (/healthz too)
            body = await reads(fresh.get, key, make, who=reader(request), request=request, key=key)
        return Response(body, media_type="application/json")

    @app.get("/jobs/{job_id}")
    async def job(request: Request, job_id: str):
        j = store.get_job(job_id)
        viewer = caller(request, required=False)  # a failed job's last log lines: for who may read its log
        return FastJSON(queries.job_view(store, j, full=True, tail=queries.log_tail_for(home, j, viewer.uid if viewer else None)))

    @app.get("/jobs/{job_id}/metrics")
    async def metrics(job_id: str, name: Optional[str] = Query(None, max_length=200),
                limit: int = Query(defaults.HTTP_MAX_METRICS, ge=1, le=defaults.HTTP_MAX_METRICS),
                offset: int = Query(0, ge=0, le=10**12)):
        j = store.get_job(job_id)
        total = store.count_metrics(j["id"], name)
        points = store.metrics(j["id"], name, limit, offset)
        nxt = offset + len(points) if offset + len(points) < total else None
        return FastJSON({"job": j["id"], "metrics": points, "total": total, "limit": limit, "offset": offset,
                         "next_offset": nxt, "latest": store.latest_metrics(j["id"]), "compacted": queries.compacted_view(store, j)})

    async def token_then_spec(request: Request):
        """(who, spec) of a POST /jobs: her token is checked before a byte of the body is read; the
        body is read within the guard's cap and must be one JSON object."""
        who = caller(request)
        raw = await request.body()
        try:
            spec = json.loads(raw)
        except ValueError as e:
            raise HTTPException(422, f"body: not JSON ({getattr(e, 'msg', e)}); expected a job spec as a JSON object") from None
        if not isinstance(spec, dict):
            raise HTTPException(422, f"body: given a JSON {type(spec).__name__}; expected a job spec as a JSON object")
        return who, spec

    @app.post("/jobs", status_code=201, openapi_extra={"requestBody": {
        "required": True, "description": "a job spec, as a job file holds it",
        "content": {"application/json": {"schema": {"type": "object"}}}}})
    def post_job(request: Request, posted: tuple = Depends(token_then_spec)):
        from pathlib import Path

        from . import writes

        who, spec = posted
        rec = writes.submit_as(home, store, spec, Path(who.home), who)
        return FastJSON(status_code=201, content={"id": rec["id"], "user": who.name, "warnings": rec["warnings"]})

    @app.post("/jobs/{job_id}/cancel")
    def post_cancel(request: Request, job_id: str):
        from . import writes

        who = caller(request)
        job = queries.find_job(home, store, job_id)
        requested = writes.cancel(home, job, who.uid, owner=(who.uid, who.gid))
        return FastJSON({"id": job["id"], "cancel_requested": requested, "state": job["state"]})

    @app.post("/jobs/{job_id}/tags", status_code=202)
    def post_tags(request: Request, job_id: str, change: TagsChange):
        """Add and remove tags, or set the notes, of a job of yours (root: anyone's). Applied by the
        daemon within a moment: GET /jobs/ID shows them then."""
        from . import writes

        who = caller(request)
        job = queries.find_job(home, store, job_id)
        writes.tag(home, job, who.uid, change.add, change.remove, change.notes, owner=(who.uid, who.gid))
        return FastJSON(status_code=202, content={"id": job["id"], "add": change.add, "remove": change.remove, "notes": change.notes})

    @app.post("/jobs/{job_id}/retry", status_code=201)
    def post_retry(request: Request, job_id: str):
        from . import writes

        who = caller(request)
        rec = writes.retry(home, store.get_job(job_id), who.uid, owner=(who.uid, who.gid))
        return FastJSON(status_code=201, content={"id": rec["id"], "retry_of": store.get_job(job_id)["id"]})

    @app.get("/jobs/{job_id}/log")
    def log(request: Request, job_id: str, tail: Optional[int] = Query(None, ge=0, le=100_000),
            offset: int = Query(0, ge=0, le=2**53), length: Optional[int] = Query(None, ge=1, le=defaults.HTTP_MAX_LOG_BYTES)):
        j = store.get_job(job_id)
        if not share_logs:
            who = caller(request)
            if who.uid not in (0, j["uid"]):
                raise HTTPException(403, f"job {j['id']} belongs to {j['user']}: its log is theirs ([server] share_logs is off)")
        job_dir = home.run_dir(j["id"])
        size = queries.log_size(job_dir)
        headers = {"X-Log-Size": str(size)}
        if tail is not None:
            return Response(queries.read_log(job_dir, tail), media_type="text/plain; charset=utf-8", headers=headers)
        if length is not None or offset:
            body = b"".join(queries.log_chunks(job_dir, offset, length or defaults.HTTP_MAX_LOG_BYTES))
            headers["X-Log-Offset"] = str(offset)
            return Response(body, media_type="text/plain; charset=utf-8", headers=headers)
        return StreamingResponse(queries.log_chunks(job_dir, 0, size), media_type="text/plain; charset=utf-8", headers=headers)

    gpu_look, ended_totals = GpuLook(getattr(daemon, "inventory", None)), EndedTotals()

    @app.get("/metrics", include_in_schema=False)
    def prometheus():
        # a thread: a look at the GPUs (NVML, at most every few seconds) must not hold up the event loop
        from .metrics_text import CONTENT_TYPE, render

        return Response(render(home, store, daemon, http_stats, gpu_look, ended_totals), media_type=CONTENT_TYPE)

    @app.get("/envs")
    async def envs():
        return FastJSON({"envs": store.envs(), "builds": store.env_builds()})

    @app.get("/gpus")
    def gpus():
        inv = daemon.inventory if daemon else __import__("runner.gpus", fromlist=["inventory"]).inventory(home.config)
        return {"source": inv.source, "available": inv.available, "note": inv.reason, "gpus": queries.gpu_view(store, inv)}

    @app.get("/share")
    def share():
        return queries.share_view(store, home.config, time.time())

    @app.get("/models")
    def models(framework: Optional[str] = None, task: Optional[str] = None, tags: Optional[str] = None, filter: str = "*"):
        return {"models": registry().list_models(filter, framework, task, (tags or "").split(","))}

    @app.get("/models/{framework}/{name:path}")
    def model(framework: str, name: str):
        m = registry().get_model(f"{framework}/{name}")
        if m is None:
            raise HTTPException(404, f"model {framework}/{name} is not in the registry (see /models)")
        return m

    @app.get("/frameworks/{name}/schema")
    def schema(name: str):
        from .resolve import framework_schema

        s = framework_schema(name)
        if s is None:
            raise HTTPException(404, f"framework {name!r} has no settings schema")
        return s

    from .web import mount

    mount(app, SimpleNamespace(home=home, store=store, daemon=daemon, book=book, registry=registry, share_logs=share_logs,
                               bearer=caller, sessions=sessions, reader=reader))
    return app
