"""The exporters' outbox (runner/exporters/): one row per exporter and job, where its export stands."""

from __future__ import annotations

import json
import time
from typing import Iterable, Optional

_OUTBOX_COLUMNS = frozenset(("target", "run_id", "exported_id", "inflight_id", "status_sent", "done", "error", "attempts",
                             "next_try", "enrolled_at", "updated_at"))


def export_enrol(store, exporter: str, job_ids: Iterable[str], target: str, now: Optional[float] = None) -> int:
    """Export these jobs with `exporter` to `target` (a job already enrolled keeps its place); how many are new."""
    now = time.time() if now is None else now
    with store.transaction() as c:
        before = c.total_changes
        c.executemany("INSERT OR IGNORE INTO export_outbox (exporter, job_id, target, enrolled_at, updated_at) VALUES (?,?,?,?,?)",
                      [(exporter, j, target, now, now) for j in job_ids])
        return c.total_changes - before


def export_row(store, exporter: str, job_id: str) -> Optional[dict]:
    """A job's export position with `exporter` (its own fields of `extra` beside the columns), or None."""
    row = store.conn.execute("SELECT * FROM export_outbox WHERE exporter=? AND job_id=?", (exporter, job_id)).fetchone()
    if row is None:
        return None
    extra = json.loads(row.pop("extra") or "{}")
    return {**extra, **row}


def mlflow_row(store, job_id: str) -> Optional[dict]:
    """export_row of the MLflow exporter (the name its tests and bench read it by)."""
    return store.export_row("mlflow", job_id)


def export_due(store, exporter: str, now: float, limit: int = 100) -> list[dict]:
    """An exporter's jobs with work left whose retry time has come, the longest waiting first."""
    return store.conn.execute(
        "SELECT job_id FROM export_outbox WHERE exporter=? AND done=0 AND next_try<=? ORDER BY next_try, enrolled_at LIMIT ?",
        (exporter, now, limit)).fetchall()


def export_set(store, exporter: str, job_id: str, **fields):
    """Record progress of a job's export, all `fields` in one statement: an outbox column by its
    name, any other name as the exporter's own field (in `extra`; None is kept as null)."""
    fields.setdefault("updated_at", time.time())
    sets, args = [], []
    for k, v in fields.items():
        if k in _OUTBOX_COLUMNS:
            sets.append(f"{k}=?")
            args.append(v)
    own = {k: v for k, v in fields.items() if k not in _OUTBOX_COLUMNS}
    if own:
        if not all(k.isidentifier() for k in own):
            raise ValueError(f"an exporter's field is a name: given {sorted(own)}")
        sets.append("extra=json_set(COALESCE(extra, '{}')" + ", ?, json(?)" * len(own) + ")")
        for k, v in own.items():
            args += [f"$.{k}", json.dumps(v)]
    with store.transaction() as c:
        c.execute(f"UPDATE export_outbox SET {','.join(sets)} WHERE exporter=? AND job_id=?", [*args, exporter, job_id])


def export_lag(store, exporter: str) -> dict:
    """An exporter's backlog: jobs not yet fully exported, those whose last try failed, and
    when the longest waiting was enrolled."""
    return store.conn.execute(
        "SELECT COUNT(*) AS behind, SUM(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END) AS failing, "
        "MIN(enrolled_at) AS oldest FROM export_outbox WHERE exporter=? AND done=0", (exporter,)).fetchone()
