"""Jobs: their rows, state transitions (checked against the table of runner/states.py, each one
stored with its time and reason), GPU claims, and the reads of the queue and of fair share's use."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Iterable, Optional

from ..exceptions import InvalidTransition, JobNotFound
from ..states import ENDED, JobState, allowed
from .schema import JSON_COLUMNS


def insert_job(store, row: dict, now: Optional[float] = None) -> bool:
    """Record a new queued job. False if a job with that id is already there (idempotent ingest)."""
    now = time.time() if now is None else now
    row = dict(row)
    sid = row.pop("slurm_job_id", None)  # an older caller's row (the column is derived now): Slurm's job id
    if sid is not None:
        row["backend"], row["backend_ref"] = "slurm", sid
    for key in JSON_COLUMNS:
        if key in row and not isinstance(row[key], (str, type(None))):
            row[key] = json.dumps(row[key])
    row.setdefault("state", JobState.QUEUED.value)
    row.setdefault("queued_at", now)
    with store.transaction() as c:
        if c.execute("SELECT 1 FROM jobs WHERE id=?", (row["id"],)).fetchone():
            return False
        row["seq"] = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM jobs").fetchone()["n"]
        cols = ",".join(row)
        c.execute(f"INSERT INTO jobs ({cols}) VALUES ({','.join('?' * len(row))})", list(row.values()))
        c.execute(
            "INSERT INTO transitions (job_id, from_state, to_state, at, reason) VALUES (?,?,?,?,?)",
            (row["id"], None, row["state"], now, row.get("reason") or "submitted"),
        )
    return True


def update_job(store, job_id: str, **fields):
    """Set plain (non-state) fields of a job."""
    if not fields:
        return
    for key in JSON_COLUMNS:
        if key in fields and not isinstance(fields[key], (str, type(None))):
            fields[key] = json.dumps(fields[key])
    sets = ",".join(f"{k}=?" for k in fields)
    with store.transaction() as c:
        c.execute(f"UPDATE jobs SET {sets} WHERE id=?", [*fields.values(), job_id])


def transition(store, job_id: str, to: JobState | str, reason: Optional[str] = None, now: Optional[float] = None, expect=None, **fields) -> dict:
    """Move a job to state `to`, checked against the transition table, with time and reason.

    `expect`, if given, is the state (or states) the caller believes the job is in; a job that
    moved meanwhile raises InvalidTransition rather than being changed twice. Extra keyword
    fields are written in the same transaction.
    """
    to = JobState(to)
    now = time.time() if now is None else now
    with store.transaction() as c:
        cur = c.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        if cur is None:
            raise JobNotFound(f"job {job_id}: no such job")
        src = JobState(cur["state"])
        if expect is not None:
            expected = {JobState(expect)} if isinstance(expect, (str, JobState)) else {JobState(e) for e in expect}
            if src not in expected:
                raise InvalidTransition(f"job {job_id}: is {src.value}, not {'/'.join(sorted(e.value for e in expected))}")
        if not allowed(src, to):
            raise InvalidTransition(f"job {job_id}: cannot go from {src.value} to {to.value}")
        if to == JobState.PREPARING:
            fields.setdefault("started_at", None)
        if to == JobState.RUNNING:
            fields.setdefault("started_at", now)
        if to in ENDED:
            fields.setdefault("finished_at", now)
        fields["state"] = to.value
        fields["reason"] = reason if to != JobState.RUNNING else None
        for key in JSON_COLUMNS:
            if key in fields and not isinstance(fields[key], (str, type(None))):
                fields[key] = json.dumps(fields[key])
        sets = ",".join(f"{k}=?" for k in fields)
        c.execute(f"UPDATE jobs SET {sets} WHERE id=?", [*fields.values(), job_id])
        c.execute(
            "INSERT INTO transitions (job_id, from_state, to_state, at, reason) VALUES (?,?,?,?,?)",
            (job_id, src.value, to.value, now, reason),
        )
        if to in ENDED or to == JobState.QUEUED:
            c.execute("DELETE FROM gpu_allocations WHERE job_id=?", (job_id,))
    return {"from": src.value, "to": to.value}


def get_job(store, ref: str) -> dict:
    """A job by id, unique id prefix, or `#seq`. Raises JobNotFound."""
    c = store.conn
    if ref.startswith("#") and ref[1:].isdigit() or ref.isdigit():
        row = c.execute("SELECT * FROM jobs WHERE seq=?", (int(ref.lstrip("#")),)).fetchone()
        if row:
            return row
    row = c.execute("SELECT * FROM jobs WHERE id=?", (ref,)).fetchone()
    if row:
        return row
    rows = c.execute("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (ref.replace("%", "") + "%",)).fetchall()
    if len(rows) == 1:
        return rows[0]
    if len(rows) > 1:
        raise JobNotFound(f"job {ref}: ambiguous prefix (give more characters)")
    raise JobNotFound(f"job {ref}: no such job (see `runner ls --all`)")


def tag_filter(tag: str) -> tuple[str, str]:
    """(SQL condition, its argument) for jobs carrying `tag` (runner/tags.py): tags are a JSON list of words
    without quotes, so the quoted word is the tag (never a part of another)."""
    return "instr(tags, ?) > 0", json.dumps(tag)


def _job_filter(states: Iterable[str], user: Optional[str], model: Optional[str], tag: Optional[str] = None) -> tuple[str, list]:
    where, args = [], []
    if tag:
        cond, arg = tag_filter(tag)
        where.append(cond)
        args.append(arg)
    states = list(states)
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        args += states
    for column, value in (("user", user), ("model", model)):
        if value:
            where.append(f"{column}=?")
            args.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), args


def count_jobs(store, states: Iterable[str] = (), user: Optional[str] = None, model: Optional[str] = None,
               tag: Optional[str] = None) -> int:
    """How many jobs list_jobs would give without a limit."""
    where, args = _job_filter(states, user, model, tag)
    return store.conn.execute(f"SELECT COUNT(*) AS n FROM jobs{where}", args).fetchone()["n"]


def list_jobs(store, states: Iterable[str] = (), user: Optional[str] = None, limit: Optional[int] = None,
              offset: int = 0, newest_first: bool = True, columns: Optional[Iterable[str]] = None,
              model: Optional[str] = None, tag: Optional[str] = None) -> list[dict]:
    """Jobs filtered by state, user, model and tag, newest first by default (only `columns`, when given)."""
    where, args = _job_filter(states, user, model, tag)
    sql = f"SELECT {', '.join(columns) if columns else '*'} FROM jobs" + where
    sql += " ORDER BY seq " + ("DESC" if newest_first else "ASC")
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    return store.conn.execute(sql, args).fetchall()


def active_by_user(store) -> dict:
    """{user: {state: count}} of the queued, preparing and running jobs."""
    out: dict = {}
    for r in store.conn.execute("SELECT user, state, COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'preparing', 'running') "
                               "GROUP BY user, state").fetchall():
        out.setdefault(r["user"], {})[r["state"]] = r["n"]
    return out


def count_by_state(store) -> dict:
    """{state: count} over all jobs."""
    rows = store.conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
    return {r["state"]: r["n"] for r in rows}


def queued_jobs(store, limit: int | None = None) -> list[dict]:
    """Queued jobs in scheduling order: highest priority, then oldest (the first `limit`); not
    those already handed to a backend that keeps its own queue (Slurm's), which wait there."""
    sql = ("SELECT id, user, priority, created_at, queued_at, after, spec, reason FROM jobs WHERE state='queued' "
           "AND backend_ref IS NULL ORDER BY priority DESC, created_at ASC, seq ASC")
    return store.conn.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()


def queued_heads(store, per_user: int) -> list[dict]:
    """The first `per_user` queued jobs of each user (as queued_jobs orders them), in that order:
    enough of everyone's queue for fair share, without re-reading a deep queue on each pass
    (index _m7: each user's head is a short range of it)."""
    users = [r["user"] for r in store.conn.execute(  # one index seek per user, not a scan of the queue
        "WITH RECURSIVE u(user) AS (SELECT MIN(user) FROM jobs WHERE state='queued' UNION ALL SELECT (SELECT MIN(user) FROM jobs "
        "WHERE state='queued' AND user > u.user) FROM u WHERE u.user IS NOT NULL) SELECT user FROM u WHERE user IS NOT NULL").fetchall()]
    rows = []
    for user in users:
        rows += store.conn.execute(
            "SELECT id, user, priority, created_at, queued_at, after, spec, reason, seq FROM jobs WHERE state='queued' AND user=? "
            "AND backend_ref IS NULL ORDER BY priority DESC, created_at ASC, seq ASC LIMIT ?", (user, per_user)).fetchall()
    rows.sort(key=lambda r: (-(r["priority"] or 0), r["created_at"] or 0.0, r["seq"]))
    return rows


_USAGE_COLUMNS = "user, gpus, started_at, finished_at, prior_use, prior_ended_at"


def usage_rows(store, since: float, running: bool = False) -> list[dict]:
    """What fair share weighs: (user, gpus, started_at, finished_at, prior_use, prior_ended_at)
    of the jobs that ended after `since` (running: of the jobs that run or prepare now)."""
    cols = _USAGE_COLUMNS
    if running:
        # and the jobs back in the queue after preemption, for what their earlier runs used
        sql = (f"SELECT {cols} FROM jobs WHERE state IN ('running', 'preparing') AND (started_at IS NOT NULL OR restarts > 0) "
               f"UNION ALL SELECT {cols} FROM jobs WHERE state='queued' AND restarts > 0")
        return store.conn.execute(sql).fetchall()
    sql = (f"SELECT {cols} FROM jobs WHERE finished_at >= ? AND state IN ('succeeded','failed','cancelled') "
           "AND (started_at IS NOT NULL OR prior_use > 0)")  # (index _m7)
    return store.conn.execute(sql, (since,)).fetchall()


_UNITS = "MAX(1, CASE WHEN json_valid(gpus) AND json_type(gpus)='array' THEN json_array_length(gpus) ELSE 0 END)"


def ended_use(store, t0: float, half_life_s: float) -> dict:
    """{user: sum over ended jobs of slot-seconds x 2^((end - t0) / half_life)} for the jobs that
    ended at or after t0, each earlier run (a preempted job's) weighed at its own end: fair
    share's decayed use is this times 2^(-(now - t0) / half_life), summed in SQL (no row comes
    to Python). None when this SQLite has no pow() (built without its math functions)."""
    sql = (f"SELECT user, TOTAL(CASE WHEN started_at IS NOT NULL THEN {_UNITS} * MAX(0, finished_at - started_at) "
           "* pow(2.0, (finished_at - :t0) / :hl) END) + TOTAL(COALESCE(prior_use, 0) * pow(2.0, (COALESCE(prior_ended_at, "
           "finished_at) - :t0) / :hl)) AS use FROM jobs WHERE finished_at >= :t0 AND state IN ('succeeded','failed','cancelled') "
           "GROUP BY user")  # (index _m7 on finished_at)
    try:
        rows = store.conn.execute(sql, {"t0": t0, "hl": half_life_s}).fetchall()
    except sqlite3.OperationalError as e:
        if "no such function" in str(e):
            return None
        raise
    return {r["user"]: r["use"] for r in rows if r["use"]}


def ended_usage_rows(store, after_id: int, upto_id: int) -> list[dict]:
    """usage_rows of the jobs that ended by a transition with an id in (after_id, upto_id]."""
    return store.conn.execute(
        f"SELECT {_USAGE_COLUMNS} FROM jobs WHERE id IN (SELECT job_id FROM "
        "transitions WHERE id > ? AND id <= ? AND to_state IN ('succeeded','failed','cancelled'))", (after_id, upto_id)).fetchall()


def transitions(store, job_id: str) -> list[dict]:
    """The job's state history, oldest first."""
    return store.conn.execute("SELECT * FROM transitions WHERE job_id=? ORDER BY id", (job_id,)).fetchall()


def gpu_allocations(store) -> dict:
    """{gpu_uuid: job_id} for every GPU held by a job."""
    return {r["gpu_uuid"]: r["job_id"] for r in store.conn.execute("SELECT gpu_uuid, job_id FROM gpu_allocations").fetchall()}


def claim(store, job_id: str, gpus: list[tuple[int, str]], now: Optional[float] = None) -> dict:
    """queued -> preparing and the job's GPUs taken, in one transaction.

    Raises InvalidTransition if the job is no longer queued or a GPU was taken meanwhile.
    """
    now = time.time() if now is None else now
    with store.transaction() as c:
        for index, uuid in gpus:
            held = c.execute("SELECT job_id FROM gpu_allocations WHERE gpu_uuid=?", (uuid,)).fetchone()
            if held:
                raise InvalidTransition(f"GPU {uuid} is held by job {held['job_id']}")
            c.execute("INSERT INTO gpu_allocations (gpu_uuid, job_id, gpu_index, at) VALUES (?,?,?,?)", (uuid, job_id, index, now))
        return store.transition(
            job_id, JobState.PREPARING, "scheduled", now=now, expect=JobState.QUEUED,
            gpus=[i for i, _ in gpus], gpu_uuids=[u for _, u in gpus],
        )


def referenced_by_active(store) -> set:
    """Ids of jobs that a queued, preparing or running job still names (retry_of, train.resume):
    their folders are not removed from under it."""
    rows = store.conn.execute(
        "SELECT retry_of AS ref FROM jobs WHERE state IN ('queued','preparing','running') AND retry_of IS NOT NULL "
        "UNION SELECT json_extract(spec, '$.train.resume') FROM jobs WHERE state IN ('queued','preparing','running') "
        "AND json_valid(spec) AND json_type(spec, '$.train.resume')='text'").fetchall()
    return {r["ref"] for r in rows if r["ref"]}


def waiting_specs(store) -> list[dict]:
    """spec and uid of the queued and preparing jobs (the envs they will use: runner/prepare.py's waiting_envs)."""
    return store.conn.execute("SELECT spec, uid FROM jobs WHERE state IN ('queued', 'preparing')").fetchall()


def job_owners(store) -> dict:
    """{job id: user} of every job."""
    return {r["id"]: r["user"] for r in store.conn.execute("SELECT id, user FROM jobs").fetchall()}
