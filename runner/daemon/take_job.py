"""The handler of a spool job file: its record checked against the config and the submitter's
rights (priority, workdir, retry_of), then made a queued job in one transaction."""

from __future__ import annotations

import os

from ..exceptions import JobNotFound, SpecError
from ..printable import plain_name
from ..spec import parse_spec
from ..spool import SpoolFileError, user_name

BORN_SLACK = 5.0
"""Seconds a record's submitted_at may precede its file's last change (the writer's clock against the kernel's)."""


def take_job(store, home, exporters, rec: dict, uid: int, now: float, again: bool = False, born: float | None = None) -> bool:
    """A checked job record, `uid`'s (the spool file's owner), into the store as a queued job, with
    its secrets and its place in each exporter's outbox; False: this very file was taken before
    the daemon stopped. `born`: the file's last change, by the kernel's clock (no backdated job)."""
    spec = parse_spec(rec["spec"], home.config)
    job_id = rec["id"]
    from ..fairshare import priority_problem

    too_high = priority_problem(spec.priority, uid, home.config)
    if too_high:  # (runner submit says so first; a file written into the spool by hand ends here)
        raise SpecError([too_high])
    if spec.workdir is not None:
        from ..resolve import workdir_problems

        if not os.path.isabs(spec.workdir):
            raise SpecError([f"workdir: given {spec.workdir!r}; expected an absolute path (runner submit makes it one)"])
        problems = [p for p in workdir_problems(spec.workdir, home.root) if "not writable by you" not in p]
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
            after.append(store.get_job(ref)["id"])
        except JobNotFound:
            after.append(ref)
    retry_of = rec.get("retry_of")
    if retry_of:  # a retry is of one's own job (root's copy of hers is spooled as her file): no forged history
        try:
            was = store.get_job(retry_of)
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
    targets = exporters.targets(stored)  # {exporter: where this job goes}; {} when none is on
    # The id is the record's word; whether it names a new job is the store's. The row is made
    # first, and only under an id that row has just claimed is anything written (the secrets),
    # so no record can write into a job that exists, whoever's it is.
    wrote_secrets = False
    try:
        with store.transaction():  # a job, its secrets and its place in each exporter's outbox, together
            made = store.insert_job({
                "id": job_id, "name": name, "user": user_name(uid), "uid": uid, "kind": spec.kind, "model": spec.model,
                "priority": spec.priority, "spec": stored, "env": env,
                "after": after, "created_at": max(rec["submitted_at"], (born or 0.0) - BORN_SLACK),
                "job_dir": str(home.job_dir(job_id)),
                "gpus": [], "retry_of": retry_of,
            }, now=now)
            if not made:
                if again and store.get_job(job_id)["uid"] == uid:
                    return False  # this very file, taken in just before the daemon stopped
                raise SpoolFileError(f"id: given {job_id!r}; expected a new job id (a job by that id exists; "
                                     "runner submit picks a new one)")
            if env_vars:
                from ..secrets import keep

                retry_uid = None
                if retry_of:
                    retry_uid = store.get_job(retry_of)["uid"]
                wrote_secrets = True
                keep(home, job_id, env_vars, uid, retry_of, retry_uid)
            exporters.enrol(job_id, targets, now=now)
    except BaseException:
        if wrote_secrets:  # the row is gone with the transaction: so are its values
            from ..secrets import forget

            forget(home, job_id)
        raise
    return True
