"""The one path of every write, whatever the face (CLI or HTTP): submit, cancel, retry.

Each validates the same way and answers with the same one-line errors; each ends as a spool file
owned by the person acting, so the daemon judges all of them by the kernel's word on who wrote it.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import spool
from .exceptions import PermissionDenied, RunnerError, SpecError
from .identity import Person

ENDED = ("succeeded", "failed", "cancelled")


def _abs(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)


def _their_home(data: dict, home: str) -> dict:
    """`~/x` in a job posted for someone is in her home, not in the daemon's."""
    def fix(v):
        return home + v[1:] if isinstance(v, str) and (v == "~" or v.startswith("~/")) else v
    data = dict(data)
    if isinstance(data.get("dataset"), dict):
        data["dataset"] = {k: fix(v) if k in ("path", "annotations") else v for k, v in data["dataset"].items()}
    if isinstance(data.get("train"), dict) and "resume" in data["train"]:
        data["train"] = {**data["train"], "resume": fix(data["train"]["resume"])}
    if "workdir" in data:
        data["workdir"] = fix(data["workdir"])
    return data


def submit(home, store, data: dict, base: Path, who: Person | None = None, quick: bool = False) -> tuple[dict, list[str]]:
    """Validate a job (a mapping, as a job file holds) and spool it; returns (record, warnings).

    `who` is the person behind an HTTP token when the daemon acts for her: the paths the job
    names are then checked as her before anything reads them. `store` is read only to find the
    jobs of `after` (None does for a job without it: `runner submit` then opens no store).
    `quick`: `runner submit`'s own check of the spec (specfast: the same verdicts and values
    without importing pydantic; anything it cannot vouch for goes to the model); the HTTP submit's
    helper and the daemon keep the pydantic model's.
    """
    from .identity import check_paths_as
    from .resolve import resolve

    if quick:
        from .specfast import parse_spec
    else:
        from .spec import parse_spec

    if who is not None:
        data = _their_home(data, who.home)
    spec = parse_spec(data, home.config)
    from .fairshare import priority_problem

    too_high = priority_problem(spec.priority, who.uid if who is not None else os.geteuid(), home.config)
    if too_high:
        raise SpecError([too_high])
    ds = dict(data.get("dataset") or {})
    probe = {"workdir": _abs(spec.workdir, base) if spec.workdir else (str(base) if spec.kind == "command" else None),
             "dataset": {k: _abs(ds[k], base) for k in ("path", "annotations") if isinstance(ds.get(k), str)},
             "train": {"resume": _abs(spec.train.resume, base)} if spec.train.resume and not spec.train.resume.isalnum() else {}}
    # Checked as the person submitting before anything reads them: through HTTP the daemon (root)
    # acts for `who`; from the CLI the caller is who she is.
    problems = check_paths_as(probe, who) if who is not None else _unreadable_by_caller(probe)
    if problems:
        raise SpecError(problems)
    registry = None
    if spec.kind == "model" or spec.parser not in (None, "generic", "none"):  # (a framework's parser, by name)
        from .registry import load

        registry = load(home)
    warnings: list[str] = []
    resolved = resolve(spec, base, registry, warnings, state_root=home.root)
    if spec.after:
        from .exceptions import JobNotFound
        from .queries import find_job

        ids = []
        for i, ref in enumerate(spec.after):
            try:
                ids.append(find_job(home, store, ref)["id"])
            except JobNotFound:
                raise SpecError([f"after.{i}: given {ref!r}; expected the id of a submitted job"]) from None
        resolved["after"] = ids
    rec = spool.submit(home, resolved, owner=(who.uid, who.gid) if who else None)
    return rec, warnings


def submit_as(home, store, data: dict, base: Path, who: Person) -> dict:
    """A job posted for `who` (HTTP, the dashboard): validated and spooled by a helper that has
    dropped to her, so every file the job names (dataset, requirements file, labels) is read with
    her permissions, never the daemon's. Returns {id, warnings}."""
    from .identity import drops_privileges

    if not drops_privileges(who.uid):
        rec, warnings = submit(home, store, data, base, who)
        return {"id": rec["id"], "warnings": warnings}
    from .privdrop import run_as

    answer = run_as(who, "submit", {"home": str(home.root), "data": _their_home(data, who.home), "base": str(base)}, timeout=120,
                    here=submit_here)
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
        raise RunnerError("submit: the helper gave no job id")
    warnings = answer.get("warnings")
    return {"id": answer["id"], "warnings": [str(w) for w in warnings] if isinstance(warnings, list) else []}


def submit_here(payload: dict) -> dict:
    """The submit verb's work in the helper (runner.privsep), as the person who posted the job: as if
    she had run `runner submit`."""
    from .home import Home

    home = Home(payload["home"])
    rec, warnings = submit(home, home.store(migrate=False), payload["data"], Path(payload["base"]))
    return {"id": rec["id"], "warnings": warnings}


def _unreadable_by_caller(probe: dict) -> list[str]:
    out = []
    for field, path in (("dataset.path", probe["dataset"].get("path")), ("dataset.annotations", probe["dataset"].get("annotations")),
                        ("train.resume", probe["train"].get("resume"))):
        if not path:
            continue
        try:
            st = os.stat(path)
        except PermissionError:  # a folder above it is closed to her
            out.append(f"{field}: {path} is not readable by you")
            continue
        except OSError:
            continue  # missing: the dataset checks say so in their own words
        import stat as st_

        if not os.access(path, os.R_OK | (os.X_OK if st_.S_ISDIR(st.st_mode) else 0)):
            out.append(f"{field}: {path} is not readable by you")
    return out


def check_may_act(job: dict, uid: int, verb: str):
    """Only a job's owner or root may cancel or retry it."""
    if job.get("uid") is not None and uid not in (0, job["uid"]):
        raise PermissionDenied(f"job {job['id']}: belongs to {job['user']}; only its owner or root may {verb} it")


def cancel(home, job: dict, uid: int, owner: tuple[int, int] | None = None) -> bool:
    """Ask for a job to be cancelled; False when it had already ended."""
    check_may_act(job, uid, "cancel")
    if job["state"] in ENDED:
        return False
    spool.request_cancel(home, job["id"], owner=owner)
    return True


def tag(home, job: dict, uid: int, add=(), remove=(), notes: str | None = None,
        owner: tuple[int, int] | None = None):
    """Change a job's tags (add, remove) and notes (None: unchanged; "": cleared): its owner or root."""
    from .tags import apply, check

    check_may_act(job, uid, "tag")
    problems = check(list(add), list(remove), notes)
    if problems:
        raise SpecError(problems)
    if job.get("seq") is None:
        raise RunnerError(f"job {job['id']}: is still in the spool; tag it once the daemon has taken it (a moment)")
    apply(job.get("tags"), add, remove)  # too many: said now, not only in the daemon's quarantine
    spool.request_tags(home, job["id"], list(add), list(remove), notes, owner=owner)


def retry(home, job: dict, uid: int, owner: tuple[int, int] | None = None) -> dict:
    """Queue a copy of an ended job; it stays its owner's, whoever asks.

    Root (or the dashboard, or a token of root's) may retry anyone's job: the copy is spooled as
    its owner's file, so it runs as her, with her env_vars values, never as root. `owner` is who
    acts, used only for a job from before jobs had owners.
    """
    check_may_act(job, uid, "retry")
    if job["state"] not in ENDED:
        raise RunnerError(f"job {job['id']}: is {job['state']}; only an ended job can be retried")
    if job.get("uid") is not None:
        from .identity import person

        try:
            who = person(job["uid"])
        except KeyError:
            raise RunnerError(f"job {job['id']}: its owner {job['user']} (uid {job['uid']}) is no longer a user here; "
                              "it cannot be retried as theirs (submit a copy as yourself)") from None
        owner = (who.uid, who.gid)
    spec = dict(job["spec"])
    spec["after"] = []
    return spool.submit(home, spec, retry_of=job["id"], owner=owner)
