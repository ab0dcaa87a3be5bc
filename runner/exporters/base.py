"""The interface every exporter implements, and what all of them share: the outbox, the loop, the backoff.

An exporter mirrors jobs of the store to another system (MLflow's tracking server, say). It is
handed what it needs (the home, the store, its own checked config table) and keeps its position
per job in the store's outbox (Store.export_*), one row per exporter and job: the target it was
enrolled for, the run it made on the other side, the last metric row the other side acknowledged,
the batch in flight, the job state last sent, done, and the retry schedule; anything else it must
remember goes in the row's own fields (`set(job_id, name=value)` keeps names the outbox has no
column for, in the same statement). A job never waits for an exporter: the daemon runs each one's
loop in a thread of its own.

A subclass gives `settings`, `target` and `export` (and, for the read side, may widen `view`).
"""

from __future__ import annotations

import logging
import threading
import time

from ..exceptions import RunnerError

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0  # seconds before a retry after an error, doubling
DUE_PER_PASS = 100  # jobs one pass takes (the longest waiting first)


class Exporter:
    """One exporter. Its name is its key in EXPORTERS and the name of its config table."""

    title = ""
    """The other system's name as people write it ("MLflow"): in log lines and /metrics' help."""
    unset = ""
    """What a config lacks when the exporter is off, as a user reads it ("[mlflow] tracking_uri")."""
    keys: tuple = ()
    """The keys of its config table (for a table runner.config.KEYS does not list)."""
    row_defaults: dict = {}
    """The exporter's own fields of an outbox row before it first sets them."""
    quiet_errors: tuple = ()
    """Errors of the other side that are expected (down, refusing): logged without a traceback."""

    def __init__(self, name: str, home, store, conf: dict):
        self.name, self.home, self.store, self.conf = name, home, store, conf
        self.log = logging.getLogger(f"runner.exporters.{name}")

    # -- chosen by the config ---------------------------------------------------------------
    @classmethod
    def settings(cls, table) -> dict:
        """The exporter's config table (present and not empty: the exporter is on), checked: a bad
        value raises RunnerError in one line. The result holds interval_seconds (the loop's pause)."""
        if not isinstance(table, dict):
            raise RunnerError(f"{cls.unset or 'its table'}: expected a table")
        return {"interval_seconds": 2.0, **table}

    @classmethod
    def target(cls, name: str, spec: dict, conf: dict) -> str | None:
        """Where a new job goes on the other side (an experiment, a project), or None when the job
        asks not to be exported. By default a job's own `NAME:` field: false, or {target: ...}."""
        own = spec.get(name, True)
        if own is False:
            return None
        return own.get("target") if isinstance(own, dict) and own.get("target") else conf.get("target", name)

    def default_target(self) -> str | None:
        """Where a job goes when neither it nor the request names a target (a job with no own field)."""
        return type(self).target(self.name, {}, self.conf)

    def describe(self) -> str:
        """One line for the daemon's log when the loop starts."""
        return f"exporting jobs to {self.title or self.name}"

    # -- enrol ------------------------------------------------------------------------------
    def enrol(self, job_ids, target: str, now: float | None = None) -> int:
        """Export these jobs to `target` (a job already enrolled keeps its place); how many are new.
        Joins the caller's transaction, so a new job and its place in the outbox are made together."""
        return self.store.export_enrol(self.name, job_ids, target, now=now)

    # -- the export loop --------------------------------------------------------------------
    def run(self, stop: threading.Event):
        """Export what is due every interval_seconds until `stop` is set (the daemon's thread)."""
        while not stop.is_set():
            try:
                self.pass_once(stop)
            except Exception:  # a bug here must not take the daemon's thread down for good
                self.log.exception("%s export pass failed", self.name)
            stop.wait(self.conf["interval_seconds"])

    def pass_once(self, stop: threading.Event | None = None, now: float | None = None):
        """One pass: a turn for each job whose retry time has come, the longest waiting first."""
        now = time.time() if now is None else now
        for row in self.store.export_due(self.name, now, limit=DUE_PER_PASS):
            if stop is not None and stop.is_set():
                return
            self.sync(row["job_id"])

    def sync(self, job_id: str) -> bool:
        """One turn of one job's export; True when it is complete. An error is recorded with the
        next try (backoff), never raised: the next turn goes on from the stored position."""
        row = self.row(job_id)
        if row is None or row["done"]:
            return bool(row)
        try:
            done = self.export(job_id, row)
        except Exception as e:  # the other side down or refusing, or a bug: this job waits, the others go on
            if not isinstance(e, self.quiet_errors):
                self.log.exception("job %s: %s export failed", job_id, self.name)
            attempts = row["attempts"] + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempts - 1))
            self.set(job_id, error=str(e)[:1000], attempts=attempts, next_try=time.time() + delay)
            if attempts == 1 or attempts % 10 == 0:
                self.log.warning("job %s: %s export: %s (try %d; next in %.0fs)", job_id, self.name, e, attempts, delay)
            return False
        if row["error"] or row["attempts"]:
            self.set(job_id, error=None, attempts=0, next_try=0.0)
        return done

    def export(self, job_id: str, row: dict) -> bool:
        """The exporter's work for one turn of one job: send what the other side lacks after the
        row's position, recording progress with `set` as it goes; True when the job is ended and
        all of it was sent (the row is then marked done). Raise on any failure."""
        raise NotImplementedError

    # -- the outbox row ---------------------------------------------------------------------
    def row(self, job_id: str) -> dict | None:
        """The job's outbox row with the exporter's own fields (row_defaults where unset), or None."""
        row = self.store.export_row(self.name, job_id)
        return None if row is None else {**self.row_defaults, **row}

    def set(self, job_id: str, **fields):
        """Record progress of a job's export, every field given in one statement."""
        self.store.export_set(self.name, job_id, **fields)

    # -- the read side (runner show, the API, /metrics): no instance, no network ------------
    @classmethod
    def view(cls, store, row: dict) -> dict:
        """How far a job's export is: its run, the points sent of the points stored, the status
        sent, done, the error and when the next try is."""
        total = store.count_metrics(row["job_id"])
        sent = store.metric_count_upto(row["job_id"], row["exported_id"]) if row["exported_id"] else 0
        return {"run_id": row["run_id"], "points_exported": sent, "points": total, "status": row["status_sent"],
                "done": bool(row["done"]), "error": row["error"], "next_try": row["next_try"] if row["error"] else None}

    @classmethod
    def show_line(cls, view: dict) -> str:
        """A view in the one line `runner show` prints."""
        state = "complete" if view["done"] else ("behind: " + view["error"] if view["error"] else "following")
        return f"run {view['run_id'] or '(not made yet)'}; {view['points_exported']}/{view['points']} points exported; {state}"
