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
from ..tags import sql_filter
from . import metricsview

ENDED = ("succeeded", "failed", "cancelled")
PAGE = 50
SORTS = {"seq": "seq", "name": "name", "user": "user", "model": "model", "state": "state", "created": "created_at",
         "time": "(COALESCE(finished_at, started_at) - started_at)"}
"""Columns the table sorts by in SQL (the name in a link -> the expression)."""
COMPARE_MAX = 10
USERS_SQL = """WITH RECURSIVE s(state) AS (SELECT MIN(state) FROM jobs
      UNION ALL SELECT (SELECT MIN(state) FROM jobs WHERE state>s.state) FROM s WHERE state IS NOT NULL),
    u(state, user) AS (SELECT state, (SELECT MIN(user) FROM jobs WHERE state=s.state) FROM s WHERE state IS NOT NULL
      UNION ALL SELECT state, (SELECT MIN(user) FROM jobs WHERE state=u.state AND user>u.user) FROM u WHERE user IS NOT NULL)
    SELECT DISTINCT user FROM u WHERE user IS NOT NULL ORDER BY user"""
"""Every user with a job, for the filter's list: each state's users off the (state, user) index, a
seek each (SELECT DISTINCT user read all 100,000 jobs' index entries: ~50 ms a page)."""


def routes(app, ctx, ui):
    """Add /ui/, its 3 s refresh (/ui/queue/rows) and /ui/compare."""
    from ..queries import JOB_FIELDS, _spooled, spooled_view
    from .pages import _flatten, _shown, _uid_of

    home, store = ctx.home, ctx.store
    fields = tuple(k for k in (*JOB_FIELDS, "uid") if k != "notes")  # a row's buttons are its owner's: the template compares uids
    best = metricsview.Best()

    def where(states, user, model, name, tag="") -> tuple[str, list]:
        sql, args = [f"state IN ({','.join('?' * len(states))})"], list(states)
        if tag:
            cond, arg = sql_filter(tag)
            sql.append(cond)
            args.append(arg)
        for column, value in (("user", user), ("model", model)):
            if value:
                sql.append(f"{column}=?")
                args.append(value)
        if name:
            sql.append("name LIKE ? ESCAPE '\\'")
            args.append("%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        return " WHERE " + " AND ".join(sql), args

    def select(states, user, model, name, tag, order="seq DESC", limit=None, offset=0) -> list[dict]:
        if order == "seq DESC" and limit is not None and not (user or model or name or tag):
            # a page of every job of these states, newest first: its seqs merged off the (state, seq)
            # index, one ordered run per state (the index alone: the last of 1,800 pages counts off
            # 90,000 index entries, not 90,000 rows read for their state), then its rows by seq
            runs = " UNION ALL ".join(["SELECT seq FROM jobs WHERE state=?"] * len(states))
            return store.conn.execute(f"SELECT {', '.join(fields)} FROM jobs WHERE seq IN ({runs} ORDER BY 1 DESC LIMIT ? OFFSET ?) "
                                      "ORDER BY seq DESC", [*states, limit, offset]).fetchall()
        w, args = where(states, user, model, name, tag)
        if order == "seq DESC" and limit is not None:
            # newest first: walk the seq index from the end and stop at the page (`+state` keeps SQLite
            # from taking the state index, which would sort all 10,000 ended jobs to give 50)
            w = w.replace(" WHERE state IN", " WHERE +state IN", 1)
        if limit is None:
            return store.conn.execute(f"SELECT {', '.join(fields)} FROM jobs{w} ORDER BY {order}", args).fetchall()
        # the page's seqs first, then its rows: the sort (by name, by time...) holds each job's key
        # and seq, not its whole row with its spec (sorted by name, 90,000 ended jobs took 2 s a page)
        return store.conn.execute(f"SELECT {', '.join(fields)} FROM jobs WHERE seq IN (SELECT seq FROM jobs{w} ORDER BY {order} LIMIT ? OFFSET ?) "
                                  f"ORDER BY {order}", [*args, limit, offset]).fetchall()

    def queue_page(u, m, n, t, limit) -> tuple[list[dict], int]:
        """The queued jobs that match, in the order they will start (the scheduler's plain order:
        priority, then age), `limit` of them (None: all) with their place in the whole queue, then
        those a backend holds in its own queue (Slurm's); and how many more match. Read off the
        queue-order index: a page of a 100,000-job queue costs that page, not a sort of the queue."""
        w, args = where(["queued"], u, m, n, t)
        total = store.conn.execute(f"SELECT COUNT(*) AS n FROM jobs{w}", args).fetchone()["n"]
        sql = (f"SELECT {', '.join(fields)} FROM jobs{w} AND backend_ref IS NULL ORDER BY priority DESC, created_at ASC, seq ASC"
               + (" LIMIT ?" if limit is not None else ""))
        rows = store.conn.execute(sql, args + ([limit] if limit is not None else [])).fetchall()
        if not (u or m or n or t):
            rows = [dict(r, position=i + 1) for i, r in enumerate(rows)]
        elif rows:  # a filtered row's place among every queued job: the ones ahead of it, counted off the index
            held_any = store.conn.execute("SELECT 1 FROM jobs WHERE state='queued' AND backend_ref IS NOT NULL LIMIT 1").fetchone()
            held = " AND backend_ref IS NULL" if held_any else ""  # (a backend's own queue, Slurm's, has no place in runner's)
            ahead = [f"SELECT COUNT(*) AS n FROM jobs WHERE state='queued' AND priority > ?{held}",
                     f"SELECT COUNT(*) AS n FROM jobs WHERE state='queued' AND priority = ? AND created_at < ?{held}",
                     f"SELECT COUNT(*) AS n FROM jobs WHERE state='queued' AND priority = ? AND created_at = ? AND seq < ?{held}"]

            def place(r):
                keys = ((r["priority"],), (r["priority"], r["created_at"]), (r["priority"], r["created_at"], r["seq"]))
                return 1 + sum(store.conn.execute(q, k).fetchone()["n"] for q, k in zip(ahead, keys))
            rows = [dict(r, position=place(r)) for r in rows]
        if limit is None or len(rows) < limit:
            held = store.conn.execute(f"SELECT {', '.join(fields)} FROM jobs{w} AND backend_ref IS NOT NULL ORDER BY seq"
                                      + (" LIMIT ?" if limit is not None else ""), args + ([limit - len(rows)] if limit is not None else []))
            rows += [dict(r, position=None) for r in held.fetchall()]
        return rows, total - len(rows)

    def data(f: dict) -> dict:
        u, m, n, t, state = f["user"] or None, f["model"] or None, f["name"], f["tag"], f["state"]
        active, queued, submitted, ended, total_ended, queued_more = [], [], [], [], 0, 0
        if not state or state in ("running", "preparing"):
            active = select([state] if state else ["running", "preparing"], u, m, n, t)
        if not state or state == "queued":
            queued, queued_more = queue_page(u, m, n, t, None if state == "queued" else PAGE)
        if (not state or state == "submitted") and not t:  # (a job in the spool has no tags yet)
            submitted = [dict(s, uid=_uid_of(s["user"])) for s in (spooled_view(r) for r in _spooled(home))
                         if (not u or s["user"] == u) and (not m or s.get("model") == m) and (not n or n.lower() in (s["name"] or "").lower())]
        ended_states = [state] if state in ENDED else ([] if state else list(ENDED))
        counts = store.count_by_state()
        if ended_states:
            w, args = where(ended_states, u, m, n, t)
            if u or m or n or t:
                total_ended = store.conn.execute(f"SELECT COUNT(*) AS n FROM jobs{w}", args).fetchone()["n"]
            else:  # the counts the page shows anyway: 90,000 ended jobs counted once, not twice
                total_ended = sum(counts.get(s, 0) for s in ended_states)
            col = SORTS.get(f["sort"])
            order = f"{col} {'DESC' if f['desc'] else 'ASC'}, seq DESC" if col else "seq DESC"
            ended = select(ended_states, u, m, n, t, order, PAGE, f["page"] * PAGE)
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
        users = [r["user"] for r in store.conn.execute(USERS_SQL).fetchall()]
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
        return [r["name"] for r in store.conn.execute(metricsview.NAMES_SQL, (jid,)).fetchall()]


def legend_names(jobs: list[dict]) -> list[str]:
    """A legend entry per job: its name, with its id where two jobs share a name."""
    names = [j.get("name") or j["id"] for j in jobs]
    return [f"{n} ({j['id']})" if names.count(n) > 1 else n for n, j in zip(names, jobs)]
