"""A job's env_vars values (API keys, tokens) reach the job and nobody else.

At intake the daemon moves the values out of the spec into $RUNNER_HOME/secrets/ID.json (a
folder only the daemon may enter, files 0600); the store, `runner show`, the HTTP API and every
view keep the names with HIDDEN in place of each value. A retry by the same user reuses the
values of the job it copies.
"""

from __future__ import annotations

import json
import os

from .exceptions import SpecError

HIDDEN = "<hidden>"
"""What every view shows in place of an env_vars value."""


def _dir(home):
    """The secrets folder, made if missing; the daemon's alone (0700)."""
    d = home.secrets
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    os.chmod(d, 0o700)
    return d


def keep(home, job_id: str, env_vars: dict, uid: int, retry_of: str | None = None, retry_uid: int | None = None) -> dict:
    """Store the values of a new job's env_vars; returns them hidden, for the store.

    The caller has made sure that job_id is new (its row claimed in the same transaction): this
    replaces whatever file has that name.

    A value given as HIDDEN (a retry copies a hidden spec) is taken from the job it retries, when
    that job was the same user's.
    """
    values = dict(env_vars)
    hidden = [k for k, v in values.items() if v == HIDDEN]
    if hidden:
        old = read(home, retry_of, {}) if retry_of and retry_uid == uid else {}
        missing = [k for k in hidden if k not in old]
        if missing:
            raise SpecError([f"env_vars.{missing[0]}: its value is hidden and only a retry of your own job can reuse it; give the value"])
        values.update({k: old[k] for k in hidden})
    if values:
        from .atomic import write_json

        write_json(_dir(home) / f"{job_id}.json", values, mode=0o600)
    return {k: HIDDEN for k in values}


def forget(home, job_id: str):
    """Remove the values kept for a job (one whose row was not stored after all)."""
    try:
        os.unlink(home.secrets / f"{job_id}.json")
    except FileNotFoundError:
        pass


def read(home, job_id: str | None, stored: dict) -> dict:
    """The values of a job's env_vars (the stored spec's own values for a job from before secrets were kept apart)."""
    if job_id:
        try:
            with open(home.secrets / f"{job_id}.json") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            pass
    return {k: v for k, v in stored.items() if v != HIDDEN}
