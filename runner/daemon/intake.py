"""Spool intake: every file that lands in the spool is taken into the store, applied (a cancel, a
token request) or set aside with a reason, and never crashes or stalls the daemon."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from .. import defaults
from ..exceptions import InvalidTransition, JobNotFound, RunnerError, SpecError
from ..proctl import kill_tree
from ..spec import parse_spec
from ..spool import SpoolFileError, check_cancel_record, check_job_record, pending, quarantine, read_record, user_name
from ..states import JobState, Reason

log = logging.getLogger("runner.daemon.intake")


class Intake:
    """The daemon's spool intake (a part of Daemon)."""

    def ingest(self, now: float):
        """Take every spool file: jobs into the store, cancel requests applied, bad files quarantined.

        Each file is first moved into spool/.taking/ (the daemon's own folder), so a user can no
        longer swap it, and so a file that takes the daemon down with it is not taken twice: one
        left there by a daemon that died is retried once (a SIGKILL mid-intake loses no job), and
        set aside if it is found there again.
        """
        for path in pending(self.home):
            if path.name in self._unmovable:
                continue
            taking = self.home.taking / path.name
            try:
                os.rename(path, taking)
            except FileNotFoundError:
                continue
            except OSError as e:
                self._unmovable.add(path.name)
                why = (f"this daemon runs as {user_name(os.geteuid())} and runs only that user's jobs; a daemon "
                       f"that serves a team runs as root (docs/server.md)") if os.geteuid() != 0 else f"cannot take it: {e.strerror}"
                try:
                    fd = os.open(self.home.quarantine / (path.name + ".reason"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                    os.write(fd, (why + " (the file is left in the spool: only its owner may remove it)\n").encode())
                    os.close(fd)
                except OSError:
                    pass
                log.warning("cannot take spool file %s: %s", path.name, why)
                continue
            self._take(taking, now)

    def _resume_intake(self, now: float):
        """Files a previous daemon was taking in when it died: retry each once, then set it aside."""
        for name in sorted(os.listdir(self.home.taking)):
            path = self.home.taking / name
            if name.endswith(".retry"):
                quarantine(self.home, path, "the daemon stopped twice while taking this file in; it is set aside "
                                            "(submit it again if it is yours)")
                log.warning("quarantined %s: the daemon died twice while taking it in", name)
                continue
            retry = path.with_name(name + ".retry")
            os.rename(path, retry)
            self._take(retry, now)

    def _take(self, path: Path, now: float):
        name = path.name.removesuffix(".retry")
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
            elif name.endswith(".export.json"):
                self._export(rec, uid, now)
            elif name.endswith(".job.json"):
                self._ingest_job(check_job_record(rec, now), uid, now)
            else:
                raise SpoolFileError("not a .job.json, .cancel.json, .token.json or .export.json file")
            path.unlink(missing_ok=True)
        except (SpoolFileError, RunnerError) as e:
            quarantine(self.home, path, f"{type(e).__name__}: {e}")
            log.warning("quarantined %s: %s", name, e)
        except Exception as e:  # a bug here must cost one file, never the daemon (signals are not Exceptions)
            log.exception("quarantined %s: intake failed", name)
            quarantine(self.home, path, f"internal error while taking it in: {type(e).__name__}: {str(e)[:200]}")

    def _ingest_job(self, rec: dict, uid: int, now: float):
        spec = parse_spec(rec["spec"], self.home.config)
        job_id = rec["id"]
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
        name = spec.name or (spec.model.split("/", 1)[1] if spec.model else (spec.command if isinstance(spec.command, str) else " ".join(spec.command)))[:60]
        env = rec["spec"].get("env")
        if isinstance(env, dict):
            env = env.get("name", "inline")
        elif env is None and (spec.model or "").startswith("repo/"):
            env = f"repo:{spec.model[5:]}"  # a repo's env comes from its registry table
        stored = rec["spec"]
        if stored.get("env_vars"):
            from ..secrets import keep

            retry_uid = None
            if rec["retry_of"]:
                try:
                    retry_uid = self.store.get_job(rec["retry_of"])["uid"]
                except JobNotFound:
                    pass
            stored = {**stored, "env_vars": keep(self.home, job_id, stored["env_vars"], uid, rec["retry_of"], retry_uid)}
        self._dirty = True
        experiment = None
        if self.mirror_conf:
            from ..mirror import job_experiment

            experiment = job_experiment(stored, self.mirror_conf)
        with self.store.transaction():  # a job and its place in the MLflow mirror, together
            self.store.insert_job({
                "id": job_id, "name": name, "user": user_name(uid), "uid": uid, "kind": spec.kind, "model": spec.model,
                "priority": spec.priority, "spec": stored, "env": env,
                "after": after, "created_at": rec["submitted_at"], "job_dir": str(self.home.job_dir(job_id)),
                "gpus": [], "retry_of": rec.get("retry_of"),
            }, now=now)
            if experiment:
                self.store.mlflow_enroll([job_id], experiment, now=now)

    def _export(self, rec: dict, uid: int, now: float):
        """`runner export mlflow`: mirror these past jobs (the requester's own; root's: anyone's)."""
        if not self.mirror_conf:
            raise SpoolFileError("this daemon's config has no [mlflow] tracking_uri: nothing to export to")
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
        self.store.mlflow_enroll(mine, experiment or self.mirror_conf["experiment"], now=now)

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
                self.killing[job["id"]] = now + defaults.CANCEL_GRACE_SECONDS
