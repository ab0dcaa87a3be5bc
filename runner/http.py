"""The read-only HTTP API (FastAPI; OpenAPI schema at /openapi.json). Loopback by default.

Each handler is one line of routing into the same functions the CLI uses (`queries.py`).
"""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from . import queries
from .exceptions import JobNotFound, RegistryError


def create_app(home, daemon=None) -> FastAPI:
    """The app for one $RUNNER_HOME; `daemon` (when served by it) adds uptime and GPUs."""
    app = FastAPI(title="runner", version="0.1.0", description="Read-only view of the runner's queue, jobs, metrics, envs and GPUs.")
    store = daemon.store if daemon else home.store()

    def registry():
        from .registry import load

        return daemon.registry if daemon else load(home)

    @app.exception_handler(JobNotFound)
    async def _not_found(_req: Request, exc: JobNotFound):
        return JSONResponse(status_code=404, content={"error": str(exc)})

    @app.exception_handler(RegistryError)
    async def _registry(_req: Request, exc: RegistryError):
        return JSONResponse(status_code=404, content={"error": str(exc)})

    @app.exception_handler(HTTPException)
    async def _http(_req: Request, exc: HTTPException):
        return JSONResponse(status_code=exc.status_code, content={"error": exc.detail})

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/status")
    def status():
        return queries.status(home, store, daemon)

    @app.get("/jobs")
    def jobs(state: Optional[list[str]] = Query(None), user: Optional[str] = None, all: bool = True,
             limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)):
        return {"jobs": queries.list_jobs(home, store, state or (), user, all, limit, offset), "limit": limit, "offset": offset}

    @app.get("/jobs/{job_id}")
    def job(job_id: str):
        return queries.job_view(store, store.get_job(job_id), full=True)

    @app.get("/jobs/{job_id}/metrics")
    def metrics(job_id: str, name: Optional[str] = None, limit: Optional[int] = Query(None, ge=1), offset: int = Query(0, ge=0)):
        j = store.get_job(job_id)
        return {"job": j["id"], "metrics": store.metrics(j["id"], name, limit, offset), "latest": store.latest_metrics(j["id"])}

    @app.get("/jobs/{job_id}/log", response_class=PlainTextResponse)
    def log(job_id: str, tail: Optional[int] = Query(None, ge=0)):
        return queries.read_log(store.get_job(job_id)["job_dir"], tail)

    @app.get("/envs")
    def envs():
        return {"envs": store.envs(), "builds": store.env_builds()}

    @app.get("/gpus")
    def gpus():
        inv = daemon.inventory if daemon else __import__("runner.gpus", fromlist=["inventory"]).inventory(home.config)
        return {"source": inv.source, "available": inv.available, "note": inv.reason, "gpus": queries.gpu_view(store, inv)}

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

    return app
