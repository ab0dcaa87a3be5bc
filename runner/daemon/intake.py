"""Spool intake: every file that lands in the spool is taken into the store, applied (a cancel, a
token request) or set aside with a reason, and never crashes or stalls the daemon."""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from pathlib import Path

from .. import defaults
from ..exceptions import InvalidTransition, JobNotFound, RunnerError, SpecError
from ..proctl import kill_tree
from ..spec import parse_spec
from ..printable import plain_name
from ..spool import SpoolFileError, check_cancel_record, check_job_record, check_tags_record, pending, quarantine, read_record, user_name
from ..states import JobState, Reason
from .faults import own_trouble, rollback

log = logging.getLogger("runner.daemon.intake")

MAX_NAME = 200
"""The longest spool file name taken (runner's own are under 60 characters)."""


BORN_SLACK = 5.0
"""Seconds a record's submitted_at may precede its file's last change (the writer's clock against the kernel's)."""


class Intake:
    """The daemon's spool intake (a part of Daemon)."""

    _born: dict  # spool file name -> its ctime when taken (set by Daemon)

    def ingest(self, now: float):
        """Take every spool file: jobs into the store, cancel requests applied, bad files quarantined.

        Each file is first moved into spool/.taking/ (the daemon's own folder), so a user can no
        longer swap it, and so a file that takes the daemon down with it is not taken twice: one
        left there by a daemon that died is retried once (a SIGKILL mid-intake loses no job), and
        set aside if it is found there again. A file the daemon could not take for a trouble of
        its own (a full disk, a read-only store) goes back to the spool and is taken later.
        """
        mono = time.monotonic()
        for name, path in list(self._held.items()):  # waiting in .taking: they could not go back
            if self._later.due(name, mono):
                self._take(path, now)
        for path in pending(self.home):
            if path.name in self._unmovable or path.name in self._held or not self._later.due(path.name, mono):
                continue  # (a name held in .taking is not moved over: the held file is someone's)
            taking = self.home.taking / path.name
            try:
                # When the file was last changed, by the kernel's clock: its writer can make this
                # later (any change does), never earlier, so a record's own submitted_at may not
                # backdate the job before it (a forged 1970 would head the queue).
                born = os.lstat(path).st_ctime
                os.rename(path, taking)
            except FileNotFoundError:
                continue
            except OSError as e:
                if os.geteuid() == 0 or e.errno not in (errno.EPERM, errno.EACCES):
                    self._wait(path.name, f"cannot move it into spool/.taking: {e.strerror}")
                    continue
                self._unmovable.add(path.name)
                why = (f"this daemon runs as {user_name(os.geteuid())} and runs only that user's jobs; a daemon "
                       f"that serves a team runs as root (docs/server.md)")
                try:
                    fd = os.open(self.home.quarantine / (path.name[:200] + ".reason"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                    os.write(fd, (why + " (the file is left in the spool: only its owner may remove it)\n").encode())
                    os.close(fd)
                except OSError:
                    pass
                log.warning("cannot take spool file %s: %s", path.name, why)
                continue
            self._born[path.name] = born
            if len(path.name) > MAX_NAME:  # no room for .retry or .reason beside it; runner's names are short
                self._born.pop(path.name, None)
                self._set_aside(taking, path.name, f"a name of {len(path.name)} characters; a spool file's name has at most {MAX_NAME}")
                continue
            self._take(taking, now)

    def _resume_intake(self, now: float):
        """Files a previous daemon was taking in when it died: retry each once, then set it aside."""
        try:
            names = sorted(os.listdir(self.home.taking))
        except OSError as e:
            log.error("cannot read %s: %s", self.home.taking, e.strerror)
            return
        for name in names:
            path = self.home.taking / name
            if name.endswith(".retry"):
                self._set_aside(path, name.removesuffix(".retry"), "the daemon stopped twice while taking this file in; "
                                "it is set aside (submit it again if it is yours)")
                continue
            retry = path.with_name(name + ".retry")
            try:
                os.rename(path, retry)
            except OSError as e:  # a read-only disk: take it unmarked
                log.warning("cannot mark %s as retried: %s", name, e.strerror)
                retry = path
            self._take(retry, now)

    def _take(self, path: Path, now: float):
        """Take one file from spool/.taking; whatever it holds, it costs that file at most, never the daemon."""
        name = path.name.removesuffix(".retry")
        born = self._born.pop(name, None)
        try:
            owner = os.lstat(path).st_uid
            if owner != os.geteuid() and os.geteuid() != 0:
                raise SpoolFileError(f"this daemon runs as {user_name(os.geteuid())} and runs only that user's jobs; "
                                     f"{user_name(owner)}'s file is set aside (a daemon that serves a team runs as root)")
            rec, uid = read_record(path)
            if name.endswith(".cancel.json"):
                self._cancel(check_cancel_record(rec, now), uid, now)
            elif name.endswith(".token.json"):
                self._token(rec, uid)
            elif name.endswith(".tags.json"):
                self._tags(check_tags_record(rec), uid)
            elif name.endswith(".export.json"):
                self._export(rec, uid, now)
            elif name.endswith(".job.json"):
                self._ingest_job(check_job_record(rec, now), uid, now, again=path.name != name, born=born)
            else:
                raise SpoolFileError("not a .job.json, .cancel.json, .tags.json, .token.json or .export.json file")
        except (SpoolFileError, RunnerError) as e:
            rollback(self.store)
            self._set_aside(path, name, f"{type(e).__name__}: {e}")
            return
        except Exception as e:  # a bug here must cost one file, never the daemon (signals are not Exceptions)
            rollback(self.store)
            why = own_trouble(e)
            if why:
                self._wait(name, why, path)
                return
            log.exception("quarantined %s: intake failed", name)
            self._set_aside(path, name, f"internal error while taking it in: {type(e).__name__}: {str(e)[:200]}")
            return
        self._later.done(name)
        self._held.pop(name, None)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:  # taken; a restart finds it in .taking and knows its job (see _ingest_job)
            log.warning("took %s but cannot remove it: %s", name, e.strerror)

    def _set_aside(self, path: Path, name: str, reason: str):
        self._later.done(name)
        self._held.pop(name, None)
        quarantine(self.home, path, reason)
        log.warning("quarantined %s: %s", name, reason)

    def _wait(self, name: str, why: str, path: Path | None = None):
        """The daemon's own trouble kept it from taking this file: it goes back to the spool (or
        stays in .taking when it cannot) and is tried again after a while, without end."""
        first = name not in self._later
        delay = self._later.failed(name, time.monotonic())
        if path is not None:
            back = self.home.spool / name
            try:
                os.link(path, back)  # never over a name someone made meanwhile
            except OSError:
                self._held[name] = path
            else:
                try:
                    os.unlink(path)
                    self._held.pop(name, None)
                except OSError:
                    try:
                        os.unlink(back)
                    except OSError:
                        pass
                    self._held[name] = path
        if first:
            log.warning("cannot take %s now (%s); it waits in the spool and is tried again every %.0fs at most",
                        name, why, self._later.cap)
        else:
            log.debug("cannot take %s yet (%s); next try in %.0fs", name, why, delay)

    def _ingest_job(self, rec: dict, uid: int, now: float, again: bool = False, born: float | None = None):
        spec = parse_spec(rec["spec"], self.home.config)
        job_id = rec["id"]
        from ..fairshare import priority_problem

        too_high = priority_problem(spec.priority, uid, self.home.config)
        if too_high:  # (runner submit says so first; a file written into the spool by hand ends here)
            raise SpecError([too_high])
        if spec.workdir is not None:
            from ..resolve import workdir_problems

            if not os.path.isabs(spec.workdir):
                raise SpecError([f"workdir: given {spec.workdir!r}; expected an absolute path (runner submit makes it one)"])
            problems = [p for p in workdir_problems(spec.workdir, self.home.root) if "not writable by you" not in p]
            if uid != os.geteuid():
                from ..identity import may_access, person

                try:
                    writable = may_access(spec.workdir, person(uid), "w")
                except KeyError:  # no such user: nothing of hers to write
                    writable = False
                if not writable:
                    problems.append(f"workdir: {spec.workdir} is not writable by {user_name(uid)}")
            if problems:
                raise SpecError(problems)
        after = []
        for ref in spec.after:
            try:
                after.append(self.store.get_job(ref)["id"])
            except JobNotFound:
                after.append(ref)
        retry_of = rec.get("retry_of")
        if retry_of:  # a retry is of one's own job (root's copy of hers is spooled as her file): no forged history
            try:
                was = self.store.get_job(retry_of)
            except JobNotFound:
                retry_of = None  # gone (removed by [retention]): nothing to link to
            else:
                if uid not in (0, os.geteuid(), was["uid"]):
                    raise SpoolFileError(f"retry_of: given {retry_of!r}, a job of {was['user']}; expected a job of yours "
                                         "(runner retry ID queues a copy of your own ended job)")
                retry_of = was["id"]
        name = spec.name or plain_name((spec.model.split("/", 1)[1] if spec.model else (spec.command if isinstance(spec.command, str) else " ".join(spec.command)))[:60])
        env = rec["spec"].get("env")
        if isinstance(env, dict):
            env = env.get("name", "inline")
        elif env is None and (spec.model or "").startswith("repo/"):
            env = f"repo:{spec.model[5:]}"  # a repo's env comes from its registry table
        stored = rec["spec"]
        env_vars = stored.get("env_vars")
        if env_vars:
            from ..secrets import HIDDEN

            stored = {**stored, "env_vars": {k: HIDDEN for k in env_vars}}
        targets = self.exporters.targets(stored)  # {exporter: where this job goes}; {} when none is on
        # The id is the record's word; whether it names a new job is the store's. The row is made
        # first, and only under an id that row has just claimed is anything written (the secrets),
        # so no record can write into a job that exists, whoever's it is.
        wrote_secrets = False
        try:
            with self.store.transaction():  # a job, its secrets and its place in each exporter's outbox, together
                made = self.store.insert_job({
                    "id": job_id, "name": name, "user": user_name(uid), "uid": uid, "kind": spec.kind, "model": spec.model,
                    "priority": spec.priority, "spec": stored, "env": env,
                    "after": after, "created_at": max(rec["submitted_at"], (born or 0.0) - BORN_SLACK),
                    "job_dir": str(self.home.job_dir(job_id)),
                    "gpus": [], "retry_of": retry_of,
                }, now=now)
                if not made:
                    if again and self.store.get_job(job_id)["uid"] == uid:
                        return  # this very file, taken in just before the daemon stopped
                    raise SpoolFileError(f"id: given {job_id!r}; expected a new job id (a job by that id exists; "
                                         "runner submit picks a new one)")
                if env_vars:
                    from ..secrets import keep

                    retry_uid = None
                    if retry_of:
                        retry_uid = self.store.get_job(retry_of)["uid"]
                    wrote_secrets = True
                    keep(self.home, job_id, env_vars, uid, retry_of, retry_uid)
                self.exporters.enrol(job_id, targets, now=now)
        except BaseException:
            if wrote_secrets:  # the row is gone with the transaction: so are its values
                from ..secrets import forget

                forget(self.home, job_id)
            raise
        self._dirty = True

    def _export(self, rec: dict, uid: int, now: float):
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

    def _token(self, rec: dict, uid: int):
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

    def _tags(self, rec: dict, uid: int):
        """`runner tag`: a job's tags and notes, changed by its owner or root."""
        from ..tags import apply

        job = self.store.get_job(rec["id"])
        if uid not in (0, job["uid"]):
            raise RunnerError(f"job {job['id']}: {user_name(uid)} may not tag a job of {job['user']}")
        fields = {"tags": apply(job.get("tags"), rec["add"], rec["remove"])}
        if rec["notes"] is not None:
            fields["notes"] = rec["notes"].strip() or None
        self.store.update_job(job["id"], **fields)

    def _cancel(self, rec: dict, uid: int, now: float):
        job = self.store.get_job(rec["id"])
        if uid not in (0, job["uid"]):
            raise RunnerError(f"job {job['id']}: {user_name(uid)} may not cancel a job of {job['user']}")
        self.request_cancel(job, now)

    def request_cancel(self, job: dict, now: float):
        """Cancel a job in whatever state it is in; killing a running one takes the whole tree."""
        self._dirty = True
        state = JobState(job["state"])
        if self.backend.cancel(job, now):
            return
        if state == JobState.QUEUED:
            try:
                self.store.transition(job["id"], JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, now=now, expect=JobState.QUEUED)
                return
            except InvalidTransition:
                job = self.store.get_job(job["id"])
                state = JobState(job["state"])
        if state in (JobState.PREPARING, JobState.RUNNING):
            self.store.update_job(job["id"], cancel_requested=1)
            if state == JobState.RUNNING:
                kill_tree(self.home.run_dir(job["id"]), signal.SIGTERM)
                self.killing[job["id"]] = time.monotonic() + defaults.CANCEL_GRACE_SECONDS  # a clock nobody sets
