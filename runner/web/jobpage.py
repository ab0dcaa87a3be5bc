"""One job's page and what it reads while it is open: its charts (every metric, downsampled, in one
response), a live refresh (header fields and the points recorded since the last one), its log
(a tail, a search, the whole file streamed) and its checkpoints to download.

A job's log and files are its owner's, root's, or everyone's under [server] share_logs
(`ui.may_read_log`); anyone else (another user, an anonymous client) gets 403 from every route here.
A checkpoint is served only when it is a file the daemon recorded for the job and, opened again
component by component without following a link (watch.open_job_file), it is still that same
regular file of the job's user: a link planted in the job folder never makes the root daemon
read another file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fastapi import Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse

from .. import queries
from ..exceptions import PermissionDenied
from . import metricsview

ACTIVE = ("queued", "preparing", "running")
LOG_LINES = 500  # lines of the log a page shows (and refreshes)
SEARCH_LINES = 20_000  # lines of the log's end that a search looks through
SEARCH_HITS = 1000  # most matching lines a search shows
CHUNK = 1 << 20


def routes(app, ctx, ui):
    """Add the job page's routes. `ui` carries the page helpers of pages.routes (render, viewer,
    can_act, may_read_log)."""
    from log_parsers.stream import strip_ansi

    from .pages import _dur, _shown, _size, _uid_of, _yaml

    home, store = ctx.home, ctx.store

    def denied(job) -> PermissionDenied:
        return PermissionDenied(f"the log and files of {job['id']} are {job['user']}'s: sign in as {job['user']} to read them")

    def header(job: dict) -> dict:
        """The header fields a live page refreshes, as text."""
        started, finished = job.get("started_at"), job.get("finished_at")  # 0.0 is a time
        dur = ((time.time() if finished is None else finished) - started) if started is not None else None
        usage = []
        if job.get("max_rss_kb"):
            usage.append(f"peak {_size(job['max_rss_kb'] * 1024)}")
        if job.get("cpu_seconds"):
            usage.append(f"{_dur(job['cpu_seconds'])} CPU")
        if not usage and job["state"] == "running":
            now = process_usage(home.run_dir(job["id"]))
            if now:
                usage.append(f"{_size(now[0])} now, {_dur(now[1])} CPU ({now[2]} process{'es' if now[2] != 1 else ''})")
        gpus = ", ".join(job.get("gpus") or []) or "none"
        if job.get("peak_gpu_mem_mb"):
            gpus += f" · peak {round(job['peak_gpu_mem_mb'])} MB"
        return {"state": job["state"], "reason": (job.get("reason") or "").replace("_", " "),
                "duration": "" if dur is None else ("ran " if job.get("finished_at") else "running for ") + _dur(dur),
                "ended": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["finished_at"])) if job.get("finished_at") else "—",
                "usage": " · ".join(usage), "gpus": gpus,
                "exit": "" if job.get("exit_code") is None else str(job["exit_code"]) + (f" signal {job['signal']}" if job.get("signal") else "")}

    def latest_table(latest: dict) -> list[dict]:
        """The best/latest table as the server renders it: each metric's latest value (the page's
        script adds the best and the count from the charts it reads, and keeps them current)."""
        rows = [{"name": n, "latest": v, "lower": metricsview.lower_is_better(n)} for n, v in latest.items()]
        return sorted(rows, key=lambda m: (m["name"].startswith("gpu"), metricsview.group_key(m["name"]), m["name"]))

    @app.get("/ui/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def job_page(request: Request, job_id: str):
        return page(request, job_id)

    @app.post("/ui/jobs/{job_id}/tags", response_class=HTMLResponse, include_in_schema=False)
    async def job_tags(request: Request, job_id: str):
        """The job page's tags and notes form (its owner's, or root's): the tags box is the whole
        new set (what it lost is removed), the notes box replaces the notes. Applied by the daemon
        through the spool; the page comes back once it shows them (a moment)."""
        import asyncio

        from .. import writes
        from ..exceptions import SpecError
        from ..tags import split

        form = await request.form(max_files=0, max_fields=4)
        who = ui.actor(request, form.get("csrf"))
        job = store.get_job(job_id)
        if not ui.can_act(who, job):
            raise PermissionDenied(f"job {job['id']}: belongs to {job['user']}; only its owner or root may tag it")
        old, new = job.get("tags") or [], split(str(form.get("tags") or ""))
        notes = str(form.get("notes") or "").replace("\r\n", "\n").strip()
        add, remove = [t for t in new if t not in old], [t for t in old if t not in new]
        if notes == (job.get("notes") or ""):
            notes = None  # unchanged: a second tab's edit of the notes is not undone by a tag
        if not add and not remove and notes is None:
            return RedirectResponse(f"/ui/jobs/{job['id']}", status_code=303)
        try:
            writes.tag(home, job, who.uid, add, remove, notes, owner=(who.uid, who.gid))
        except SpecError as e:
            return page(request, job["id"], tag_errors=e.problems, status=422,
                        tag_form={"tags": str(form.get("tags") or ""), "notes": str(form.get("notes") or "")})
        for _ in range(30):  # until the daemon has applied it (it wakes on the spool file)
            now = store.get_job(job["id"])
            if set(add) <= set(now.get("tags") or []) and not set(remove) & set(now.get("tags") or []) and \
                    (notes is None or (now.get("notes") or "") == notes):
                break
            await asyncio.sleep(0.1)
        return RedirectResponse(f"/ui/jobs/{job['id']}", status_code=303)

    def page(request: Request, job_id: str, tag_errors=None, status: int = 200, tag_form=None):
        job = queries.find_job(home, store, job_id)
        who = ui.viewer(request)
        if job.get("seq") is None:  # still in the spool: what is known of it (its owner is the file's)
            job = dict(job, uid=_uid_of(job.get("user")))
            return ui.render(request, "job.html", job=job, view=job, head=None, table=[], env_lock=None, arts=[],
                             spec_yaml=_yaml(_shown(job.get("spec"))), can_act=ui.can_act(who, job), log_ok=ui.may_read_log(request, job),
                             log="", spooled=True, active=True)
        view = queries.job_view(store, job, full=True)
        env_lock = None
        if job.get("env_hash"):
            row = next((e for e in store.envs() if e["hash"] == job["env_hash"]), None)
            if row:
                try:
                    env_lock = (Path(row["path"]) / "requirements.lock").read_text()[:20000]
                except OSError:
                    env_lock = None
        log_ok = ui.may_read_log(request, job)
        tracking = (home.config.get("mlflow") or {}).get("tracking_uri", "").rstrip("/")
        return ui.render(request, "job.html", job=job, view=view, head=header(job), table=latest_table(view["metrics"]), env_lock=env_lock,
                         arts=checkpoints(job) if log_ok else [], mlflow=view.get("mlflow"),
                         compacted_line=queries.compacted_line(view["metrics_compacted"]) if view.get("metrics_compacted") else None,
                         mlflow_ui=tracking if tracking.startswith(("http://", "https://")) else None,
                         spec_yaml=_yaml(_shown(job["spec"])), can_act=ui.can_act(who, job), log_ok=log_ok,
                         log=log_text(job, LOG_LINES) if log_ok else "", active=job["state"] in ACTIVE,
                         tag_errors=tag_errors, tag_form=tag_form, status=status)

    @app.get("/ui/jobs/{job_id}/charts", include_in_schema=False)
    async def job_charts(request: Request, job_id: str, points: int = Query(metricsview.CHART_POINTS, ge=4, le=20000)):
        """Every metric of the job, downsampled, grouped for small multiples (metrics are public,
        as on GET /jobs/{id}/metrics). Off the event loop (web.reads.Reads), a series' JSON at a time:
        a job of 1,000 metrics of 4,000 points took ~1-2 s, which on the loop held every request."""
        def make():
            j = store.get_job(job_id)
            return metricsview.json_by_series({**metricsview.charts(store, j["id"], points), "compacted": queries.compacted_view(store, j)})
        return Response(await app.state.reads(make, who=ctx.reader(request), request=request), media_type="application/json")

    @app.get("/ui/jobs/{job_id}/live", include_in_schema=False)
    async def job_live(request: Request, job_id: str, after: int = Query(..., ge=0, le=2**62)):
        """What changed since a page's last look: the header, the points after `after`, the log's size."""
        j = store.get_job(job_id)
        out = {"id": j["id"], "active": j["state"] in ACTIVE, "head": header(j), **metricsview.since(store, j["id"], after)}
        if ui.may_read_log(request, j):
            out["log_size"] = queries.log_size(home.run_dir(j["id"]))
        return JSONResponse(out)

    def log_text(job: dict, tail: int, q: str = "") -> str:
        from ..watch import tail_lines

        path = home.run_dir(job["id"]) / "output.log"
        if not q:
            return strip_ansi("\n".join(tail_lines(path, tail)))
        low = q.lower()
        hits = [line for line in tail_lines(path, SEARCH_LINES, 64 << 20) if low in line.lower()]
        return strip_ansi("\n".join(hits[-SEARCH_HITS:]))

    @app.get("/ui/jobs/{job_id}/log", response_class=PlainTextResponse, include_in_schema=False)
    def job_log(request: Request, job_id: str, tail: int = Query(LOG_LINES, ge=1, le=5000), q: str = Query("", max_length=200)):
        """The log's last lines, or (q) the lines of its last SEARCH_LINES that contain q, any case."""
        job = store.get_job(job_id)
        if not ui.may_read_log(request, job):
            return PlainTextResponse(f"(the log of {job['id']} is {job['user']}'s: sign in as {job['user']} to read it)", status_code=403)
        return PlainTextResponse(log_text(job, tail, q.strip()))

    @app.get("/ui/jobs/{job_id}/output.log", include_in_schema=False)
    def job_log_whole(request: Request, job_id: str, download: bool = False):
        """The whole log, streamed as it is on disk (memory stays flat whatever its size)."""
        job = store.get_job(job_id)
        if not ui.may_read_log(request, job):
            raise denied(job)
        run_dir = home.run_dir(job["id"])
        size = queries.log_size(run_dir)
        headers = {"Content-Length": str(size)}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{job["id"]}-output.log"'
        return StreamingResponse(queries.log_chunks(run_dir, 0, size), media_type="text/plain; charset=utf-8", headers=headers)

    def checkpoints(job: dict) -> list[dict]:
        """The job's recorded checkpoints: path relative to its folder, size, when."""
        prefix = str(home.job_dir(job["id"])) + "/"
        return [{"rel": a["path"][len(prefix):], "size": a["size"], "at": a["at"]}
                for a in store.artifacts(job["id"])[-queries.MAX_ARTIFACTS:] if a["path"].startswith(prefix)]

    @app.get("/ui/jobs/{job_id}/checkpoint", include_in_schema=False)
    def job_checkpoint(request: Request, job_id: str, path: str = Query(..., max_length=4096)):
        """One recorded checkpoint of the job, for its owner (or everyone under share_logs)."""
        from ..watch import Refused, open_job_file, read_identities

        job = store.get_job(job_id)
        if not ui.may_read_log(request, job):
            raise denied(job)
        job_dir = home.job_dir(job["id"])
        if path not in {c["rel"] for c in checkpoints(job)}:
            return JSONResponse(status_code=404, content={"error": f"path: {path!r} is not a checkpoint recorded for {job['id']} (see its page)"})
        known = read_identities(home.run_dir(job["id"])).get(str(job_dir / path))
        try:
            f, st = open_job_file(job_dir, path, job["uid"])
        except Refused as e:
            return JSONResponse(status_code=403, content={"error": f"path: {path}: refused ({e}); only the job user's own files in its folder are served"})
        except OSError:
            return JSONResponse(status_code=404, content={"error": f"path: {path} is gone from {job['id']}'s folder (removed since it was recorded)"})
        if known is None or (known.dev, known.ino) != (st.st_dev, st.st_ino):
            f.close()
            return JSONResponse(status_code=409, content={"error": f"path: {path} was replaced since it was recorded; try again in a few seconds"})

        def body(size=st.st_size):
            with f:
                left = size
                while left > 0:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        return
                    left -= len(data)
                    yield data

        name = os.path.basename(path).replace('"', "")
        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"Content-Length": str(st.st_size), "Content-Disposition": f'attachment; filename="{name}"'})


MAX_IMAGE_BYTES = 8 << 20
"""Largest image the job page's infer box takes (the request body cap, [server] max_body_bytes, may be lower)."""


def image_kind(data: bytes) -> str | None:
    """The suffix of an image's kind from its first bytes (PNG, JPEG, BMP, TIFF), or None."""
    for magic, suffix in ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif")):
        if data.startswith(magic):
            return suffix
    return None


def infer_routes(app, ctx, ui):
    """POST /ui/jobs/ID/infer: an image uploaded from the job page, answered with the job's model's
    InferenceResult. Its owner (or root) only, as `runner infer`: the checkpoint is loaded, and the
    image read, by a helper running as the job's user (runner.privsep), never by the root daemon."""
    import asyncio
    import base64

    from starlette.datastructures import UploadFile

    home, store = ctx.home, ctx.store

    @app.post("/ui/jobs/{job_id}/infer", include_in_schema=False)
    async def job_infer(request: Request, job_id: str):
        form = await request.form(max_files=1, max_fields=4)
        who = ui.actor(request, form.get("csrf"))
        job = store.get_job(job_id)
        if not ui.can_act(who, job):
            return JSONResponse(status_code=403, content={"error": f"{job['id']} is {job['user']}'s: only they (or root) run inference with its model"})
        if job["state"] != "succeeded":
            return JSONResponse(status_code=409, content={"error": f"{job['id']} is {job['state']}; inference takes a job that succeeded"})
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            return JSONResponse(status_code=400, content={"error": "image: missing; expected an image file (PNG, JPEG, BMP or TIFF)"})
        data = await upload.read(MAX_IMAGE_BYTES + 1)
        kind = image_kind(data)
        if len(data) > MAX_IMAGE_BYTES or kind is None:
            return JSONResponse(status_code=400, content={"error": f"image: {'over 8 MB' if kind else 'not a PNG, JPEG, BMP or TIFF file'}; "
                                                                   "expected an image file of at most 8 MB"})
        from ..exceptions import RunnerError
        from ..identity import person
        from ..privsep import Busy, run_as

        payload = {"home": str(home.root), "source": job["id"], "images": [], "model": None,
                   "upload": {"suffix": kind, "data": base64.b64encode(data).decode()}}
        try:
            # never waits for a slot: one user's flood of requests must not hold the server's threads
            results = await asyncio.to_thread(run_as, person(job["uid"]), "infer", payload, 300.0, None, False)
        except Busy:
            raise
        except RunnerError as e:
            return JSONResponse(status_code=422, content={"error": str(e).splitlines()[0][:500]})
        res = results[0] if isinstance(results, list) and results else results
        if isinstance(res, dict):
            res = {**res, "image": upload.filename or "upload"}
        return JSONResponse(res)


def process_usage(run_dir: Path) -> tuple[int, float, int] | None:
    """(resident bytes, CPU seconds, processes) of a running job's whole process tree (its main
    process and every descendant: data loader workers, a launcher's children), from /proc (the
    kernel's word, not a file of the job's), or None where it is not this host's or has ended."""
    import psutil

    try:
        with open(run_dir / "child.json", "rb") as fh:
            child = json.loads(fh.read(4096))
        root = psutil.Process(int(child["pid"]))
        if abs(root.create_time() - float(child["started_at"])) >= 5:  # a reused pid, not the job's
            return None
        procs = [root, *root.children(recursive=True)]
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    rss, cpu, n = 0, 0.0, 0
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                rss += p.memory_info().rss
                cpu += t.user + t.system + t.children_user + t.children_system  # and its reaped children's
                n += 1
        except psutil.Error:  # ended meanwhile
            continue
    return (rss, cpu, n) if n else None
