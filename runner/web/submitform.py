"""The submit form's routes: a model's or a command's form, its YAML beside it, the submit, and
clone (the form filled in from a job, to edit and submit again).

    GET  /ui/submit?model=REF | ?kind=command | ?clone=ID
    POST /ui/submit/preview   the YAML of the form as it stands (env_vars values hidden)
    POST /ui/submit           through `writes.submit_as`: the same checks as `runner submit`

A clone carries every value of the job's spec: fields the form has fill them, the rest goes into
the more box as YAML. env_vars values are never sent to a page: a clone lists their names and
asks for the values again.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from .. import queries
from ..exceptions import JobNotFound, RunnerError, SpecError
from . import LICENSE_WARN, forms, license_warning

_WHOLE = ("model", "command", "framework", "model_name", "env_vars")
"""Spec keys a clone never puts in the more box: the form's target and its env_vars rows."""


def target_for(reg, model_ref: str, kind: str):
    """(what the form stands for, its fields): a registry model, the command form, or (None, [])."""
    if kind == "command":
        return forms.COMMAND_TARGET, forms.command_fields()
    model = reg.get_model(model_ref) if model_ref else None
    if model is None:
        return None, []
    return model, forms.fields_for(model, reg)


def may_clone(who, job: dict) -> bool:
    """Whether a viewer may clone a job: whoever may see its spec. A stored job's spec (env_vars
    values hidden) is on its page and in GET /jobs/ID for everyone; a job still in the spool is
    known only to its owner and root."""
    if job.get("seq") is not None:
        return True
    import pwd

    try:
        owner = pwd.getpwnam(job.get("user") or "").pw_uid
    except KeyError:
        return False
    return who is not None and who.uid in (0, owner)


def _spec_defaults() -> dict:
    """{leaf: value} that a stored spec holds when its file left the field out."""
    from ..spec import Dataset, JobSpec

    base = dict(forms._leaves(JobSpec.model_validate({"command": "true"}).model_dump(exclude_none=True)))
    base.update({f"dataset.{k}": v for k, v in Dataset.model_validate({"path": "x"}).model_dump(exclude_none=True).items() if k != "path"})
    return base


def _resolved_default(spec: dict, key: str, reg) -> object:
    """What resolve gives a field the job file left out (network, a model job's env), else a
    sentinel that equals nothing."""
    model = spec.get("model") or ""
    fw, _, name = model.partition("/")
    if key == "network":
        if not model:
            return True
        if fw == "repo":
            try:
                return bool(reg.get_repo(name).get("network", False))
            except RunnerError:
                return object()
        return bool((spec.get("train") or {}).get("pretrained", False))
    if key == "env" and model and fw != "repo":
        return (reg.frameworks.get(fw) or {}).get("env", object())
    return object()


def clone_values(fields: list[dict], spec: dict, reg) -> dict:
    """A form's values from a job's spec: its fields filled in, env_vars names listed (values
    left to re-enter), everything else in the more box, less what a job file need not say."""
    import yaml

    names = {f["name"] for f in fields}
    values: dict = {}
    rest: dict = {}
    base = _spec_defaults()
    for key, value in forms._leaves({k: v for k, v in spec.items() if k not in _WHOLE}):
        if key in names and not (key == "env" and not isinstance(value, str)):
            values[key] = value
            continue
        if key == "env" and isinstance(value, dict) and "env" in names:
            values["env"] = forms.INLINE_ENV
        if key in base and base[key] == value and type(base[key]) is type(value):
            continue
        if value == _resolved_default(spec, key, reg):
            continue
        forms._put(rest, key, value)
    if spec.get("command") is not None:
        cmd = spec["command"]
        values["command"] = cmd if isinstance(cmd, str) else shlex.join(cmd)
    for i, key in enumerate(spec.get("env_vars") or {}):
        values[f"env_vars.{i}.name"], values[f"env_vars.{i}.value"] = key, ""
    if rest:
        values["more"] = yaml.safe_dump(rest, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return values


def preview_text(spec: dict, problems: list[str], to_yaml) -> str:
    """The YAML beside the form: the spec, then its problems as comments."""
    return to_yaml(spec) + "".join(f"# {p}\n" for p in problems)


def routes(app, ctx, render, actor, viewer, to_yaml):
    """Add the submit form's routes; `render`, `actor`, `viewer` and `to_yaml` are the pages'."""
    home, store = ctx.home, ctx.store
    warn_patterns = tuple(home.config.get("web", {}).get("license_warn", ())) or LICENSE_WARN

    def page(request, target, fields, values: dict, errors: dict, status=200, general=None, clone=None, reg=None):
        reg = reg or ctx.registry()
        if target is None:
            return render(request, "submit.html", target=None, models=reg.list_models(), fields=[], values={}, errors={},
                          general=general, yaml="", status=status)
        spec, problems = forms.spec_from(target, fields, values, hide_secrets=True)
        rows = forms.env_rows(values)
        rows += [{"i": len(rows) + i, "name": "", "value": ""} for i in range(forms.ENV_ROWS)]
        warning = license_warning(target.get("license"), warn_patterns) if target.get("ref") else None
        names = {f["name"] for f in fields}
        loose = [line for key, line in errors.items() if key not in names and not key.startswith("env_vars")]  # no field to sit by
        return render(request, "submit.html", target=target, models=[], fields=fields, values=values, errors=errors, general=general,
                      loose=loose, env_errors=[line for key, line in errors.items() if key.startswith("env_vars")],
                      shown={f["name"]: forms.shown_value(f, values, bool(values.get("posted"))) for f in fields}, env_rows=rows, clone=clone, yaml=preview_text(spec, problems, to_yaml),
                      warning=warning, status=status)

    @app.get("/ui/submit", response_class=HTMLResponse, include_in_schema=False)
    def submit_form(request: Request, model: str = Query("", max_length=200), kind: str = Query("", max_length=16),
                    clone: str = Query("", max_length=64)):
        reg = ctx.registry()
        if clone:
            job = queries.find_job(home, store, clone)
            if not may_clone(viewer(request), job):
                raise JobNotFound(f"no such job: {clone}")
            spec = job.get("spec") or {}
            target, fields = target_for(reg, spec.get("model") or "", "command" if spec.get("command") is not None else "")
            if target is None:
                return page(request, None, [], {}, {}, 404, reg=reg,
                            general=f"job {job['id']}: its model {spec.get('model')!r} is not in the registry; clone it as a file "
                                    "(`runner show --json`) instead")
            return page(request, target, fields, clone_values(fields, spec, reg), {}, clone=job, reg=reg)
        target, fields = target_for(reg, model, kind)
        if target is None and model:
            return page(request, None, [], {}, {}, 404, general=f"model {model!r} is not in the registry", reg=reg)
        return page(request, target, fields, {}, {}, reg=reg)

    @app.post("/ui/submit/preview", response_class=PlainTextResponse, include_in_schema=False)
    async def submit_preview(request: Request):
        form = dict(await request.form())
        target, fields = target_for(ctx.registry(), str(form.get("model", "")), str(form.get("kind", "")))
        if target is None:
            return PlainTextResponse("")
        spec, problems = forms.spec_from(target, fields, form, hide_secrets=True)
        return PlainTextResponse(preview_text(spec, problems, to_yaml))

    @app.post("/ui/submit", include_in_schema=False)
    async def submit(request: Request):
        from starlette.concurrency import run_in_threadpool

        from .. import writes

        form = dict(await request.form())
        who = actor(request, form.get("csrf"))
        reg = ctx.registry()
        target, fields = target_for(reg, str(form.get("model", "")), str(form.get("kind", "")))
        if target is None:
            return page(request, None, [], {}, {}, 404, general=f"model {form.get('model')!r} is not in the registry", reg=reg)
        spec, problems = forms.spec_from(target, fields, form)
        try:
            if problems:
                raise SpecError(problems)
            rec = await run_in_threadpool(writes.submit_as, home, store, spec, Path(who.home), who)
        except SpecError as e:
            errors = forms.errors_by_field(e.problems)
            return page(request, target, fields, form, errors, 422, reg=reg,
                        general=None if errors.keys() - {"_"} else "; ".join(e.problems))
        except RunnerError as e:
            return page(request, target, fields, form, {}, 409, general=str(e), reg=reg)
        return RedirectResponse(f"/ui/jobs/{rec['id']}", status_code=303)
