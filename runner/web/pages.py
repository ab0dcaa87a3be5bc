"""The dashboard's routes: models, submit, GPUs, envs, check reports, sign-in, cancel and retry (the runs table and
compare: runs.py; a job's page: jobpage.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

from .. import queries
from ..exceptions import PermissionDenied, RunnerError, SpecError
from . import HERE, LICENSE_WARN, auth, forms, license_warning, series



def _env():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
    env.filters["age"] = lambda t: "" if not t else _dur(time.time() - t)
    env.filters["dur"] = lambda s: "" if s is None else _dur(s)
    env.filters["size"] = _size
    env.filters["when"] = lambda t: "" if not t else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    env.filters["words"] = lambda s: (s or "").replace("_", " ")
    return env


def _dur(s: float) -> str:
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _size(n) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def routes(app, ctx):
    env = _env()
    home, store = ctx.home, ctx.store
    sessions = ctx.sessions
    warn_patterns = tuple(home.config.get("web", {}).get("license_warn", ())) or LICENSE_WARN

    def viewer(request: Request):
        """The person signed in (session cookie) or behind the request's token, else None."""
        from ..identity import person

        uid = sessions.uid(request.cookies.get(auth.COOKIE))
        if uid is None and request.headers.get("authorization"):
            try:
                return ctx.bearer(request)
            except Exception:
                return None
        try:
            return person(uid) if uid is not None else None
        except KeyError:
            return None

    def render(request: Request, name: str, status: int = 200, **kw) -> HTMLResponse:
        who = viewer(request)
        cookie = request.cookies.get(auth.COOKIE)
        kw.update(who=who, csrf=sessions.csrf(cookie) if cookie and who else "", path=request.url.path, now=time.time())
        return HTMLResponse(env.get_template(name).render(**kw), status_code=status)

    def actor(request: Request, csrf: str | None):
        """Who may write from a page: a session with its CSRF value from this site, or a token."""
        if request.headers.get("authorization"):
            return ctx.bearer(request)
        cookie = request.cookies.get(auth.COOKIE)
        who = viewer(request)
        if who is None:
            raise PermissionDenied("sign in first: run `runner web-login` on the server (or use your token)")
        import hmac

        why = auth.cross_site(request)
        if why:
            raise PermissionDenied(why)
        sent = csrf or request.headers.get("x-runner-csrf") or ""
        if not hmac.compare_digest(str(sent), sessions.csrf(cookie)):
            raise PermissionDenied("csrf: missing or not this session's; expected the form of a runner page (cross-site request refused)")
        return who

    def can_act(who, job) -> bool:
        return who is not None and (who.uid == 0 or who.uid == job.get("uid"))

    def may_read_log(request, job) -> bool:
        who = viewer(request)
        return ctx.share_logs or (who is not None and who.uid in (0, job.get("uid")))

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/ui/", status_code=307)

    # -- one job (its page, charts, log and files: jobpage.py) -----------------------------------
    @app.get("/jobs/{job_id}/series", tags=["jobs"])
    async def job_series(request: Request, job_id: str, name: str = Query(..., max_length=200), points: int = Query(series.MAX_POINTS, ge=4, le=20000),
                         lo: float | None = Query(None, allow_inf_nan=False), hi: float | None = Query(None, allow_inf_nan=False)):
        """One metric for a chart: x (step, epoch or index), y, downsampled to at most `points`
        (the min and max of each bucket: every spike stays), with the stored count. `lo`, `hi`: only
        the points with lo <= x <= hi (a zoomed chart): every one of them when they are at most
        `points`, else reduced again. Every point stored: GET /jobs/{id}/metrics. Off the event loop
        (web.reads.Reads): a zoom into a long series reads its packs."""
        def make():
            j = store.get_job(job_id)
            return {**series.series(store, j["id"], name, points, lo, hi), "compacted": queries.compacted_view(store, j)}
        return JSONResponse(await app.state.reads(make, who=ctx.reader(request), request=request))

    @app.post("/ui/jobs/{job_id}/cancel", include_in_schema=False)
    async def ui_cancel(request: Request, job_id: str):
        from .. import writes

        form = await request.form()
        who = actor(request, form.get("csrf"))
        job = queries.find_job(home, store, job_id)
        if job.get("seq") is None:  # still in the spool: its owner is its file's
            job = dict(job, uid=_uid_of(job.get("user")))
        writes.cancel(home, job, who.uid, owner=(who.uid, who.gid))
        return RedirectResponse(auth.safe_next(form.get("next"), f"/ui/jobs/{job['id']}"), status_code=303)

    @app.post("/ui/jobs/{job_id}/retry", include_in_schema=False)
    async def ui_retry(request: Request, job_id: str):
        from .. import writes

        form = await request.form()
        who = actor(request, form.get("csrf"))
        rec = writes.retry(home, store.get_job(job_id), who.uid, owner=(who.uid, who.gid))
        return RedirectResponse(f"/ui/jobs/{rec['id']}", status_code=303)

    # -- models and submit ------------------------------------------------------------------------
    @app.get("/ui/models", response_class=HTMLResponse, include_in_schema=False)
    def models(request: Request, q: str = Query("", max_length=100), framework: str = Query("", max_length=50),
               task: str = Query("", max_length=50), tags: str = Query("", max_length=200)):
        reg = ctx.registry()
        every = reg.list_models()
        chosen = [m for m in reg.list_models("*", framework or None, task or None, tags.split(","))
                  if not q or q.lower() in (m["ref"] + " " + (m.get("display_name") or "") + " " + " ".join(m.get("tags", []))).lower()]
        for m in chosen:
            m["warning"] = license_warning(m.get("license"), warn_patterns)
        return render(request, "models.html", models=chosen, total=len(every), f={"q": q, "framework": framework, "task": task, "tags": tags},
                      frameworks=sorted({m["framework"] for m in every}), tasks=sorted({m.get("task_type") or "" for m in every} - {""}),
                      all_tags=sorted({t for m in every for t in m.get("tags", [])}))

    from . import submitform

    submitform.routes(app, ctx, render, actor, viewer, _yaml)

    # -- GPUs, envs, check reports ----------------------------------------------------------------
    @app.get("/ui/gpus", response_class=HTMLResponse, include_in_schema=False)
    def gpus(request: Request):
        inv = ctx.daemon.inventory if ctx.daemon else __import__("runner.gpus", fromlist=["inventory"]).inventory(home.config)
        rows = queries.gpu_view(store, inv)
        holders = {j["id"]: j for j in store.list_jobs(states=["running", "preparing"], columns=("id", "user", "name", "model"))}
        return render(request, "gpus.html", gpus=rows, inv=inv, holders=holders)

    @app.get("/ui/envs", response_class=HTMLResponse, include_in_schema=False)
    def envs(request: Request):
        return render(request, "envs.html", envs=store.envs(), builds=store.env_builds(50))

    @app.get("/ui/checks", response_class=HTMLResponse, include_in_schema=False)
    def checks(request: Request):
        return render(request, "checks.html", reports=check_reports(home))

    # -- signing in -------------------------------------------------------------------------------
    # Signing in or out changes who the browser is for every later page: only a request from this
    # site (or a link opened from the address bar) may do it, never a page of another site.
    @app.get("/ui/login", response_class=HTMLResponse, include_in_schema=False)
    def login(request: Request, u: Optional[int] = None, e: Optional[int] = None, n: str = Query("", max_length=64),
              s: str = Query("", max_length=128), next: str = Query("", max_length=2000)):
        goto = auth.safe_next(next)
        if u is None:
            return render(request, "login.html", error=None, next=goto)
        why = auth.cross_site(request) or sessions.check_link(u, e or 0, n, s)
        if why:
            return render(request, "login.html", error=why, next=goto, status=403)
        return _signed_in(request, u, goto)

    @app.post("/ui/login", include_in_schema=False)
    async def login_token(request: Request):
        why = auth.cross_site(request)
        if why:
            return render(request, "login.html", error=why, next="/ui/", status=403)
        form = await request.form()
        goto = auth.safe_next(form.get("next"))
        uid = ctx.book.uid(str(form.get("token", "")).strip())
        if uid is None:
            return render(request, "login.html", error="token: unknown; expected yours (`runner token` prints it)", next=goto, status=403)
        return _signed_in(request, uid, goto)

    def _signed_in(request, uid: int, goto: str):
        r = RedirectResponse(goto, status_code=303)
        r.set_cookie(auth.COOKIE, sessions.make(uid), max_age=auth.SESSION_SECONDS, httponly=True, samesite="strict",
                     secure=request.url.scheme == "https", path="/")
        return r

    @app.post("/ui/logout", include_in_schema=False)
    async def logout(request: Request):
        why = auth.cross_site(request)
        if why:
            raise PermissionDenied(why)
        r = RedirectResponse("/ui/", status_code=303)
        r.delete_cookie(auth.COOKIE, path="/")
        return r

    @app.exception_handler(PermissionDenied)
    async def _denied(request: Request, exc: PermissionDenied):
        if request.url.path.startswith("/ui/"):
            return HTMLResponse(env.get_template("error.html").render(message=str(exc), who=viewer(request), csrf="", path=""), status_code=403)
        return JSONResponse(status_code=403, content={"error": str(exc)})

    from types import SimpleNamespace

    return SimpleNamespace(render=render, viewer=viewer, can_act=can_act, may_read_log=may_read_log, actor=actor)


def _uid_of(name) -> int | None:
    """The uid of a login name (a spooled job's owner, named from its file's owner), or None."""
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid if name else None
    except KeyError:
        return None


def _shown(spec):
    """A spec as a page may show it: env_vars values hidden, whoever looks (a job still in the
    spool carries them as submitted)."""
    from ..secrets import HIDDEN

    if not isinstance(spec, dict) or not isinstance(spec.get("env_vars"), dict):
        return spec
    return {**spec, "env_vars": {k: HIDDEN for k in spec["env_vars"]}}


def _yaml(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True) if data else ""


def _flatten(d, prefix=""):
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def check_reports(home) -> list[dict]:
    """The plugin check reports this install can show: docs/checks/*/report.json of the source tree
    and $RUNNER_HOME/checks/*/report.json."""
    out = []
    roots = [Path(__file__).resolve().parents[2] / "docs" / "checks", home.root / "checks"]
    for root in roots:
        for p in sorted(root.glob("*/report.json")):
            try:
                rep = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            out.append({"name": p.parent.name, **rep})
    return out
