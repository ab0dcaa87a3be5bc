"""The submit form: its fields and the job spec a filled form stands for.

A model's form has the job's own fields (name, priority, dataset, limits), its framework's
settings from the ConfigSchema (types, ranges, choices, defaults, descriptions) and, for a repo,
the table's defaults; a command's form has the command, its env, workdir and parser. Both have
env_vars rows and a "more settings" YAML box for the rest of a job file.

What the form shows is what is submitted: every field with a value (its default included) is
written into the spec and into the YAML beside the form; a field left empty is not. The format a
dataset gets by default is its model's task's usual one (the registry's `task_formats`, as
`runner submit` picks it). The spec is then checked by the same code as `runner submit`.
"""

from __future__ import annotations

from .. import defaults

JOB = [
    {"name": "name", "label": "job name", "type": "str", "group": "job", "description": "Shown in the queue (empty: the model or the command)"},
    {"name": "priority", "label": "priority", "type": "int", "default": 0, "min": -1000, "max": 1000, "group": "job",
     "description": "Higher starts first; then the oldest"},
]

DATASET = [
    {"name": "dataset.path", "label": "dataset path", "type": "str", "group": "dataset", "required": True,
     "description": "A folder (or data.yaml) on this server that you can read"},
    {"name": "dataset.format", "label": "dataset format", "type": "choice", "group": "dataset",
     "description": "Default: the usual format of the model's task"},
    {"name": "dataset.annotations", "label": "annotations file", "type": "str", "group": "dataset",
     "description": "COCO only: the annotations JSON"},
]

COMMAND = [
    {"name": "command", "label": "command", "type": "str", "group": "command", "required": True,
     "description": "Run by /bin/sh in the workdir, e.g. python train.py --epochs 3"},
    {"name": "workdir", "label": "workdir", "type": "str", "group": "command",
     "description": "A folder of yours it runs in (empty: your home folder)"},
    {"name": "env", "label": "env", "type": "choice", "group": "command", "default": "system",
     "description": "system: the daemon's Python; a packaged env of envs/; or inline: env: {requirements: [...]} in more settings"},
    {"name": "parser", "label": "metrics parser", "type": "str", "group": "command",
     "description": "generic: its key=value lines become metrics (seen by everyone); or a framework's name"},
]

LIMITS = [
    {"name": "resources.gpus", "label": "GPUs", "type": "int", "default": 0, "min": 0, "max": 64, "group": "resources"},
    {"name": "resources.gpu_memory_gb", "label": "free GPU memory (GB)", "type": "float", "min": 0.1, "max": 16384, "group": "resources",
     "description": "Start only on GPUs with this much free"},
    {"name": "resources.memory_gb", "label": "memory limit (GB)", "type": "float", "min": 0.1, "max": defaults.MAX_MEMORY_GB,
     "group": "resources", "description": "Address-space limit of the job's processes"},
    {"name": "resources.time_limit", "label": "time limit (s)", "type": "float", "min": 1, "max": defaults.MAX_SECONDS,
     "group": "resources", "description": "Wall-clock seconds before it is stopped"},
    {"name": "resources.cpu_seconds", "label": "CPU time limit (s)", "type": "int", "min": 1, "max": defaults.MAX_SECONDS,
     "group": "resources", "advanced": True},
    {"name": "resources.max_processes", "label": "max processes", "type": "int", "min": 1, "max": defaults.MAX_PROCESSES,
     "group": "resources", "advanced": True},
    {"name": "resources.max_open_files", "label": "max open files", "type": "int", "min": 16, "max": defaults.MAX_OPEN_FILES,
     "group": "resources", "advanced": True},
]

MORE = {"name": "more", "label": "more settings (YAML)", "type": "text", "group": "more",
        "description": "Any other field of a job file (after, checkpoints, network, env, mlflow, ...), as YAML"}

INLINE_ENV = "inline"
"""The env choice that leaves `env:` to the more box (a list of requirements)."""

ENV_ROWS = 3
"""Empty env_vars rows a form offers beyond those it has."""

COMMAND_TARGET = {"ref": None, "kind": "command", "display_name": "a command"}
"""What a command job's form stands for (a model's form stands for its registry entry)."""


def _copy(fields):
    return [dict(f) for f in fields]


def command_fields() -> list[dict]:
    """A command job's form: the job's fields, the command, its limits and the more box."""
    from ..envs import named_env_names

    fields = _copy(JOB) + _copy(COMMAND)
    for f in fields:
        if f["name"] == "env":
            f["options"] = ["system", *named_env_names(), INLINE_ENV]
    return fields + _copy(LIMITS) + [dict(MORE)]


def fields_for(model: dict, registry) -> list[dict]:
    """The form's fields for a model: the job's and its dataset's, then its framework's settings
    as train.NAME (a repo: its table's), then limits and the more box."""
    from ..resolve import framework_schema, usual_format

    fields = _copy(JOB) + _copy(DATASET)
    if model["framework"] == "repo":
        repo = registry.get_repo(model["model_name"])
        formats = [repo.get("dataset", {}).get("format", "imagefolder")]
        usual = usual_format("repo", repo, model.get("task_type"))
        d = repo.get("defaults", {})
        schema = [{"name": "epochs", "type": "int", "default": d.get("epochs"), "min": 1, "group": "training"},
                  {"name": "batch_size", "type": "int", "default": d.get("batch_size"), "min": 1, "group": "training"},
                  {"name": "lr", "type": "float", "default": d.get("lr"), "min": 1e-7, "group": "optimizer"},
                  {"name": "input_size", "type": "int", "default": d.get("input_size"), "min": 16, "group": "data"}]
        from ..resolve import repo_train_keys

        takes = repo_train_keys(repo)
        schema = [f for f in schema if f["name"] in takes]  # a field its table passes to no flag would be refused
    else:
        fw = registry.get_framework(model["framework"])
        formats = list(fw.get("dataset_formats", ["imagefolder"]))
        usual = usual_format(model["framework"], fw, model.get("task_type"))
        schema = (framework_schema(model["framework"]) or {"fields": []})["fields"]
    for f in fields:
        if f["name"] == "dataset.format":
            f["options"], f["default"] = ([usual] + [x for x in formats if x != usual]), usual
    recommended = {"batch_size": model.get("recommended_batch_size"), "lr": model.get("recommended_lr"), "input_size": model.get("input_size")}
    # each group's fields together under one heading (groups in the order they first come; within
    # one, the everyday fields before the advanced ones), as the schema lists them otherwise
    first = {}
    for f in schema:
        first.setdefault(f.get("group"), len(first))
    for f in sorted(schema, key=lambda f: (first[f.get("group")], bool(f.get("advanced")))):
        g = dict(f, name=f"train.{f['name']}", label=f["name"].replace("_", " "))
        if recommended.get(f["name"]) is not None:
            g["default"] = recommended[f["name"]]
            if "registry" not in (g.get("description") or ""):
                g["description"] = (g.get("description") or "") + " (the model's recommended value)"
        fields.append(g)
    return fields + _copy(LIMITS) + [dict(MORE)]


def _convert(f: dict, raw):
    """A form value as the type the field wants; left as given where it is not one (the spec's
    check then names the field and what it expected)."""
    if f["type"] == "bool":
        return raw in (True, "on", "true", "1", "yes")
    if not isinstance(raw, str):
        return raw
    raw = raw.strip()
    try:
        if f["type"] == "int":
            return int(raw)
        if f["type"] == "float":
            return float(raw)
    except ValueError:
        return raw
    return raw


def shown_value(f: dict, values: dict, posted: bool):
    """The value a field shows: what the form holds, else (a form not yet posted) its default.
    A posted form leaves out an unticked checkbox: it shows false."""
    if f["name"] in values:
        return values[f["name"]]
    if f["type"] == "bool" and posted:
        return False
    return f.get("default")


def env_rows(values: dict) -> list[dict]:
    """The env_vars rows of a form: [{i, name, value}] (values as posted; a page never shows them)."""
    rows = []
    for i in range(defaults.MAX_ENV_VARS):
        if f"env_vars.{i}.name" not in values and f"env_vars.{i}.value" not in values:
            break
        rows.append({"i": i, "name": str(values.get(f"env_vars.{i}.name") or "").strip(),
                     "value": str(values.get(f"env_vars.{i}.value") or "")})
    return rows


def spec_from(target: dict, fields: list[dict], values: dict, hide_secrets: bool = False) -> tuple[dict, list[str]]:
    """(the job spec a form stands for, its problems). Every field showing a value is written
    (defaults too); `more` is merged in where it sets what no field does. `hide_secrets`: env_vars
    values as every view shows them (the YAML beside the form)."""
    from ..secrets import HIDDEN

    posted = bool(values.get("posted"))
    spec: dict = {"model": target["ref"]} if target.get("ref") else {}
    problems: list[str] = []
    for f in fields:
        if f["type"] == "text":
            continue
        raw = shown_value(f, values, posted)
        if f["name"] == "env" and raw == INLINE_ENV:
            continue
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            continue
        _put(spec, f["name"], _convert(f, raw))
    env: dict = {}
    for row in env_rows(values):
        if not row["name"]:
            if row["value"]:
                problems.append(f"env_vars.{row['i']}: a value without a name; give its name")
            continue
        if row["value"] == "":
            problems.append(f"env_vars.{row['name']}: no value; enter it (values are never sent back to a page, "
                            "so a cloned or refused form needs them again)")
            continue
        env[row["name"]] = HIDDEN if hide_secrets else row["value"]
    if env:
        spec["env_vars"] = env
    more = str(values.get("more") or "").strip()
    if more:
        names = {f["name"] for f in fields} - ({"env"} if "env" not in spec else set())
        problems += _merge_more(spec, more, names)
    return spec, problems


def _put(spec: dict, key: str, value):
    node = spec
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k in ("dataset", "train", "resources"):
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def _merge_more(spec: dict, text: str, field_names: set) -> list[str]:
    """Merge the more box (a YAML mapping of job fields) into the spec; a field the form has, or
    one the box and the form both set, is refused in one line."""
    from ..exceptions import SpecError
    from ..specfile import parse_yaml

    try:
        more = parse_yaml(text, "more")
    except SpecError as e:
        return [f"more: {p.removeprefix('more: ')}" for p in e.problems]
    if more is None:
        return []
    if not isinstance(more, dict):
        return ["more: expected a mapping of job fields (e.g. network: false), as in a job file"]
    problems = []
    for key, value in _leaves(more):
        if key in ("model", "command", "framework", "model_name") or key in field_names or key.startswith("env_vars"):
            what = "the env_vars rows" if key.startswith("env_vars") else f"its field {key!r} above"
            problems.append(f"more: {key} is set by {what}; give it there")
            continue
        _put(spec, key, value)
    return problems


def errors_by_field(problems: list[str]) -> dict:
    """{field: its problem line}, from the one-line problems of the spec check ("_": the rest)."""
    out: dict = {}
    for line in problems:
        head = line.split(":", 1)[0].strip()
        key = head if head and " " not in head else "_"
        out.setdefault(key, line)
    return out
