"""What each kind of spool file asks, as a table of one handler per kind (the end of its name):
a job (daemon/take_job.py), a cancel, tags, a token, an export. A handler raises SpoolFileError or
RunnerError to have its file set aside with that reason (daemon/intake.py does)."""

from __future__ import annotations

import os

from ..exceptions import JobNotFound, RunnerError
from ..spool import SpoolFileError, check_cancel_record, check_job_record, check_tags_record, user_name
from .take_job import take_job


class Requests:
    """The spool's handlers, each given a record, its owner's uid, `now`, and (jobs only) `again`
    (a file retried after a restart) and `born` (the file's last change)."""

    def __init__(self, store, home, exporters, request_cancel, mark):
        self.store = store
        self.home = home
        self.exporters = exporters  # runner.exporters.Exporters: a new job's outbox rows; `runner export`
        self.request_cancel = request_cancel  # (job, now): daemon.kills.Cancel.request
        self.mark = mark  # something may start now: schedule on the next pass

    def table(self) -> dict:
        """{name suffix: handler}, in the order a bad name's message lists them."""
        return {".job.json": self.job, ".cancel.json": self.cancel, ".tags.json": self.tags, ".token.json": self.token,
                ".export.json": self.export}

    def job(self, rec: dict, uid: int, now: float, again: bool = False, born: float | None = None):
        """`runner submit`: a new queued job."""
        if take_job(self.store, self.home, self.exporters, check_job_record(rec, now), uid, now, again=again, born=born):
            self.mark()

    def export(self, rec: dict, uid: int, now: float, again=False, born=None):
        """`runner export NAME`: export these past jobs (the requester's own; root's: anyone's)."""
        from ..exporters import EXPORTERS, unset_message

        name = rec.get("exporter", next(iter(EXPORTERS)))  # a request of a CLI from before there was a choice: the first
        if not isinstance(name, str) or name not in EXPORTERS:
            raise SpoolFileError(f"exporter: given {str(name)[:80]!r}; expected one of {', '.join(EXPORTERS)}")
        exporter = self.exporters.get(name)
        if exporter is None:
            raise SpoolFileError(f"this daemon's config has no {unset_message(name)}: nothing to export to")
        ids, experiment = rec.get("ids"), rec.get("experiment")
        if not isinstance(ids, list) or not ids or len(ids) > 50_000 or not all(isinstance(i, str) for i in ids):
            raise SpoolFileError("an export request is {\"ids\": [job ids], \"experiment\": name or null}")
        if experiment is not None and (not isinstance(experiment, str) or not experiment.strip() or len(experiment) > 500):
            raise SpoolFileError("experiment: expected a name of 1 to 500 characters")
        mine = []
        for ref in ids:
            try:
                job = self.store.get_job(ref)
            except JobNotFound:
                continue
            if uid in (0, job["uid"]):
                mine.append(job["id"])
        exporter.enrol(mine, experiment or exporter.default_target(), now=now)

    def token(self, rec: dict, uid: int, now: float, again=False, born=None):
        """`runner token`: the requester's token for HTTP writes, made (or made anew)."""
        from .. import tokens
        from ..identity import person

        if set(rec) - {"rotate"} or not isinstance(rec.get("rotate", False), bool):
            raise SpoolFileError("a token request is {\"rotate\": true|false}")
        if uid != os.geteuid() and os.geteuid() != 0:
            raise SpoolFileError(f"this daemon runs as {user_name(os.geteuid())} and serves only that user")
        tokens.ensure_dir(self.home)
        try:
            who = person(uid)
        except KeyError:
            raise SpoolFileError(f"uid {uid} is no user of this machine") from None
        tokens.write(self.home, uid, who.gid, rotate=rec.get("rotate", False))

    def tags(self, rec: dict, uid: int, now: float, again=False, born=None):
        """`runner tag`: a job's tags and notes, changed by its owner or root."""
        from ..tags import apply

        rec = check_tags_record(rec)
        job = self.store.get_job(rec["id"])
        if uid not in (0, job["uid"]):
            raise RunnerError(f"job {job['id']}: {user_name(uid)} may not tag a job of {job['user']}")
        fields = {"tags": apply(job.get("tags"), rec["add"], rec["remove"])}
        if rec["notes"] is not None:
            fields["notes"] = rec["notes"].strip() or None
        self.store.update_job(job["id"], **fields)

    def cancel(self, rec: dict, uid: int, now: float, again=False, born=None):
        """`runner cancel`: a job cancelled by its owner or root."""
        rec = check_cancel_record(rec, now)
        job = self.store.get_job(rec["id"])
        if uid not in (0, job["uid"]):
            raise RunnerError(f"job {job['id']}: {user_name(uid)} may not cancel a job of {job['user']}")
        self.request_cancel(job, now)
