"""The dashboard's own reads (runner/web/runs.py's runs table and queue, runner/web/metricsview.py's
main metrics), each shaped so that a page of a store of 100,000 jobs costs that page: read off an
index, not sorted or scanned (tests/test_web_pages_pinned.py holds what they give)."""

from __future__ import annotations

from .jobs import tag_filter

SORTS = {"seq": "seq", "name": "name", "user": "user", "model": "model", "state": "state", "created": "created_at",
         "time": "(COALESCE(finished_at, started_at) - started_at)"}
"""Columns the runs table sorts by in SQL (the name in a link -> the expression)."""

USERS_SQL = """WITH RECURSIVE s(state) AS (SELECT MIN(state) FROM jobs
      UNION ALL SELECT (SELECT MIN(state) FROM jobs WHERE state>s.state) FROM s WHERE state IS NOT NULL),
    u(state, user) AS (SELECT state, (SELECT MIN(user) FROM jobs WHERE state=s.state) FROM s WHERE state IS NOT NULL
      UNION ALL SELECT state, (SELECT MIN(user) FROM jobs WHERE state=u.state AND user>u.user) FROM u WHERE user IS NOT NULL)
    SELECT DISTINCT user FROM u WHERE user IS NOT NULL ORDER BY user"""
"""Every user with a job, for the filter's list: each state's users off the (state, user) index, a
seek each (SELECT DISTINCT user read all 100,000 jobs' index entries: ~50 ms a page)."""


def users(store) -> list[str]:
    """Every user with a job (USERS_SQL)."""
    return [r["user"] for r in store.conn.execute(USERS_SQL).fetchall()]


def metric_names(store, job_id: str) -> list[str]:
    """The names of a job's metrics, sorted (store/charts.py's NAMES_SQL)."""
    from .charts import NAMES_SQL

    return [r["name"] for r in store.conn.execute(NAMES_SQL, (job_id,)).fetchall()]


def where(states, user, model, name, tag="") -> tuple[str, list]:
    """The runs table's filter: " WHERE ..." and its arguments (state in `states`, then the tag, user,
    model and a part of the name, each when given)."""
    sql, args = [f"state IN ({','.join('?' * len(states))})"], list(states)
    if tag:
        cond, arg = tag_filter(tag)
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


def count_runs(store, states, user, model, name, tag="") -> int:
    """How many jobs the runs table's filter matches."""
    w, args = where(states, user, model, name, tag)
    return store.conn.execute(f"SELECT COUNT(*) AS n FROM jobs{w}", args).fetchone()["n"]


def select(store, fields, states, user, model, name, tag, order="seq DESC", limit=None, offset=0) -> list[dict]:
    """The runs table's rows (`fields` of each) that match, in `order` (an expression of SORTS, then seq), a page of
    `limit` from `offset` (None: all)."""
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


def queue_page(store, fields, u, m, n, t, limit) -> tuple[list[dict], int]:
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




def latest_points(cur, ids: list[str]) -> list[tuple]:
    """(job_id, name, value, id) of the newest point of each metric of each of these jobs (`cur`: a
    cursor whose rows are tuples)."""
    # a pack a row, its last point's value kept in it: the newest pack of each series, off the
    # (job_id, name, last_id) index (SQLite's bare columns: last_value is the MAX(last_id) row's)
    return cur.execute(f"SELECT job_id, name, last_value, MAX(last_id) FROM metric_packs WHERE job_id IN ({','.join('?' * len(ids))}) "
                       "GROUP BY job_id, name", ids).fetchall()


def best_between(cur, job_id: str, name: str, lower: bool, after: int, last_id: int):
    """The lowest (`lower`) or highest value of one metric of a job among its points with ids in (after, last_id]."""
    from .metrics import _between

    vals = [p[2] for p in _between(cur, job_id, after + 1, last_id, name) if p[2] is not None]
    return (min if lower else max)(vals) if vals else None
