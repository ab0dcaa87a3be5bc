"""The runs table (/ui/) and Compare: running jobs first, then queued ones in the order they will
start, then ended ones a page at a time; each row with its main metric (latest and best), sortable
columns, filters by user, state, model, name and tag (a row's tags are links to that filter), and boxes that open Compare with the jobs ticked.

Sorting by a job's column orders every ended job (SQL); sorting by the metric orders the rows shown.
"""

from __future__ import annotations

import json

from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse

from ..exceptions import JobNotFound
from ..store import pages as reads
from ..store.pages import SORTS
from . import metricsview

ENDED = ("succeeded", "failed", "cancelled")
PAGE = 50
COMPARE_MAX = 10


def routes(app, ctx, ui):
    """Add /ui/, its 3 s refresh (/ui/queue/rows) and /ui/compare."""
    from ..queries import JOB_FIELDS, _spooled, spooled_view
    from .pages import _flatten, _shown, _uid_of

    home, store = ctx.home, ctx.store
    fields = tuple(k for k in (*JOB_FIELDS, "uid") if k != "notes")  # a row's buttons are its owner's: the template compares uids
    best = metricsview.Best()

    def data(f: dict) -> dict:
        u, m, n, t, state = f["user"] or None, f["model"] or None, f["name"], f["tag"], f["state"]
        active, queued, submitted, ended, total_ended, queued_more = [], [], [], [], 0, 0
        if not state or state in ("running", "preparing"):
            active = reads.select(store, fields, [state] if state else ["running", "preparing"], u, m, n, t)
        if not state or state == "queued":
            queued, queued_more = reads.queue_page(store, fields, u, m, n, t, None if state == "queued" else PAGE)
        if (not state or state == "submitted") and not t:  # (a job in the spool has no tags yet)
            submitted = [dict(s, uid=_uid_of(s["user"])) for s in (spooled_view(r) for r in _spooled(home))
                         if (not u or s["user"] == u) and (not m or s.get("model") == m) and (not n or n.lower() in (s["name"] or "").lower())]
        ended_states = [state] if state in ENDED else ([] if state else list(ENDED))
        counts = store.count_by_state()
        if ended_states:
            if u or m or n or t:
                total_ended = reads.count_runs(store, ended_states, u, m, n, t)
            else:  # the counts the page shows anyway: 90,000 ended jobs counted once, not twice
                total_ended = sum(counts.get(s, 0) for s in ended_states)
            col = SORTS.get(f["sort"])
            order = f"{col} {'DESC' if f['desc'] else 'ASC'}, seq DESC" if col else "seq DESC"
            ended = reads.select(store, fields, ended_states, u, m, n, t, order, PAGE, f["page"] * PAGE)
        metrics = metricsview.main_metrics(store, active + ended, best)
        if f["sort"] in ("latest", "best"):  # the rows shown, by their main metric (jobs without one last)
            for rows in (active, ended):
                have = [r for r in rows if r["id"] in metrics and metrics[r["id"]][f["sort"]] is not None]
                rest = [r for r in rows if r not in have]
                have.sort(key=lambda r: metrics[r["id"]][f["sort"]], reverse=f["desc"])
                rows[:] = have + rest
        return {"active": active, "queued": queued, "submitted": submitted, "ended": ended, "total_ended": total_ended, "metrics": metrics,
                "queued_more": queued_more,
                "page": f["page"], "pages": max(1, -(-total_ended // PAGE)), "counts": counts}

    def filters(user, state, model, name, sort, desc, page, tag="") -> dict:
        f = {"user": user or "", "state": state or "", "model": model or "", "name": name or "", "tag": tag or "",
             "sort": sort if sort in (*SORTS, "latest", "best") else "",
             "desc": bool(desc), "page": page}
        from urllib.parse import urlencode

        f["query"] = urlencode({k: f[k] for k in ("user", "state", "model", "name", "tag")})
        f["sorted"] = urlencode({"sort": f["sort"], "desc": int(f["desc"])}) if f["sort"] else ""
        return f

    def query(user: str = Query("", max_length=64), state: str = Query("", max_length=16), model: str = Query("", max_length=200),
              name: str = Query("", max_length=200), sort: str = Query("", max_length=16), desc: int = Query(0, ge=0, le=1),
              page: int = Query(0, ge=0, le=10**6), tag: str = Query("", max_length=40)) -> dict:
        return filters(user, state, model, name, sort, desc, page, tag)

    @app.get("/ui/", response_class=HTMLResponse, include_in_schema=False)
    def runs(request: Request, f: dict = Depends(query)):
        users = reads.users(store)
        return ui.render(request, "queue.html", f=f, users=users, states=["running", "preparing", "queued", "submitted", *ENDED], **data(f))

    @app.get("/ui/queue/rows", response_class=HTMLResponse, include_in_schema=False)
    def runs_rows(request: Request, f: dict = Depends(query)):
        return ui.render(request, "_queue_rows.html", f=f, **data(f))

    @app.get("/ui/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare(request: Request, ids: list[str] = Query([], max_length=COMPARE_MAX * 4), metric: str = Query("", max_length=200)):
        """Up to ten jobs (ids=a,b or ids=a&ids=b, as the runs table's boxes send them) on one chart."""
        jobs, names = compared(ids)
        if metric not in names:  # the jobs' main metric (val accuracy, mAP50, mIoU, BLEU), else a loss
            main = next((n for n in metricsview.MAIN_METRICS if n in names), None)
            metric = main or next((n for n in ("val_loss", "train_loss", "loss") if n in names), names[0] if names else "")
        flat = [dict(_flatten(_shown(j["spec"]))) for j in jobs]
        keys = sorted(set().union(*flat)) if flat else []
        diff = [(k, [f.get(k, "") for f in flat]) for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
        labels = legend_names(jobs)
        return ui.render(request, "compare.html", jobs=jobs, labels=labels, names=names, metric=metric, diff=diff,
                         ids=",".join(j["id"] for j in jobs))

    @app.get("/ui/compare/charts", include_in_schema=False)
    def compare_charts(ids: list[str] = Query([], max_length=COMPARE_MAX * 4), points: int = Query(400, ge=4, le=4000)):
        """Every metric the compared jobs share, each job's series downsampled: the page's small
        multiples (metrics are public, as on GET /jobs/{id}/metrics)."""
        jobs, names = compared(ids)
        per_job = {j["id"]: metricsview.charts(store, j["id"], points, names)["series"] for j in jobs}
        return {"jobs": [j["id"] for j in jobs], "labels": legend_names(jobs), "groups": metricsview.groups(names),
                "series": {n: [per_job[j["id"]].get(n) for j in jobs] for n in names}}

    def compared(ids: list[str]) -> tuple[list[dict], list[str]]:
        """The jobs named (ids=a,b or ids=a&ids=b, as the runs table's boxes send them; at most ten,
        each once, unknown ones left out) and the metric names they all have."""
        refs = [i for v in ids for i in v.replace(" ", ",").split(",") if i][:COMPARE_MAX]
        jobs = []
        for r in refs:
            try:
                j = store.get_job(r)
            except JobNotFound:
                continue
            if j["id"] not in {x["id"] for x in jobs}:
                jobs.append(j)
        names = sorted(set.intersection(*[set(metric_names(j["id"])) for j in jobs])) if jobs else []
        return jobs, names

    def metric_names(jid: str) -> list[str]:
        return reads.metric_names(store, jid)


def legend_names(jobs: list[dict]) -> list[str]:
    """A legend entry per job: its name, with its id where two jobs share a name."""
    names = [j.get("name") or j["id"] for j in jobs]
    return [f"{n} ({j['id']})" if names.count(n) > 1 else n for n, j in zip(names, jobs)]
