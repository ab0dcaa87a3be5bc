"""What jobs leave and use on disk: their recorded files (checkpoints...), the envs they run in and
each env build with its time."""

from __future__ import annotations

import time
from typing import Optional


def add_artifact(store, job_id: str, path: str, kind: str, size: int, now: Optional[float] = None) -> bool:
    """Record a checkpoint or other file; a path already known only has its size refreshed."""
    now = time.time() if now is None else now
    with store.transaction() as c:
        cur = c.execute(
            "INSERT INTO artifacts (job_id, path, kind, size, at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(job_id, path) DO UPDATE SET size=excluded.size, at=excluded.at",
            (job_id, path, kind, size, now),
        )
        return cur.rowcount > 0


def artifacts(store, job_id: str) -> list[dict]:
    """A job's recorded files."""
    return store.conn.execute("SELECT path, kind, size, at FROM artifacts WHERE job_id=? ORDER BY id", (job_id,)).fetchall()


def upsert_env(store, row: dict):
    """Record a built env (or refresh its row)."""
    cols = ",".join(row)
    updates = ",".join(f"{k}=excluded.{k}" for k in row if k != "hash")
    with store.transaction() as c:
        c.execute(
            f"INSERT INTO envs ({cols}) VALUES ({','.join('?' * len(row))}) ON CONFLICT(hash) DO UPDATE SET {updates}",
            list(row.values()),
        )


def touch_env(store, env_hash: str, now: Optional[float] = None):
    """Mark an env as just used."""
    with store.transaction() as c:
        c.execute("UPDATE envs SET last_used=? WHERE hash=?", (time.time() if now is None else now, env_hash))


def envs(store) -> list[dict]:
    """Every recorded env, with how many jobs used it."""
    return store.conn.execute(
        "SELECT e.*, (SELECT COUNT(*) FROM jobs j WHERE j.env_hash=e.hash) AS jobs, "
        "(SELECT COUNT(*) FROM jobs j WHERE j.env_hash=e.hash AND j.state IN ('queued','preparing','running')) AS active "
        "FROM envs e ORDER BY name, built_at"
    ).fetchall()


def delete_env(store, env_hash: str):
    """Forget an env row."""
    with store.transaction() as c:
        c.execute("DELETE FROM envs WHERE hash=?", (env_hash,))


def add_env_build(store, row: dict):
    """Record one env build attempt and its duration."""
    cols = ",".join(row)
    with store.transaction() as c:
        c.execute(f"INSERT INTO env_builds ({cols}) VALUES ({','.join('?' * len(row))})", list(row.values()))


def env_builds(store, limit: int = 100) -> list[dict]:
    """Recent env builds, newest first."""
    return store.conn.execute("SELECT * FROM env_builds ORDER BY id DESC LIMIT ?", (limit,)).fetchall()


def env_builds_during(store, env_hash: str, start: float, end: float) -> list[dict]:
    """The successful builds of an env that overlapped [start, end] (a job's preparation), by any job."""
    return store.conn.execute("SELECT job_id, started_at, finished_at FROM env_builds WHERE hash = ? AND ok = 1 "
                              "AND finished_at >= ? AND started_at <= ? ORDER BY id", (env_hash, start, end)).fetchall()


def env_build_stats(store) -> list[dict]:
    """Env builds counted by outcome (ok 1 or 0), with their seconds summed."""
    return store.conn.execute("SELECT COALESCE(ok, 0) AS ok, COUNT(*) AS n, TOTAL(seconds) AS seconds "
                             "FROM env_builds GROUP BY COALESCE(ok, 0)").fetchall()


def env_totals(store) -> dict:
    """How many envs are recorded and their bytes as measured when built."""
    return store.conn.execute("SELECT COUNT(*) AS n, TOTAL(size) AS bytes FROM envs").fetchone()
