"""The submit form: fields from a framework's ConfigSchema (types, ranges, choices, defaults,
descriptions) plus the job's own (name, dataset, GPUs, priority), and the job spec a filled form
stands for. The spec is checked by the same code as `runner submit`; its one-line problems are
shown next to the field they name."""

from __future__ import annotations

PLATFORM = [
    {"name": "name", "label": "job name", "type": "str", "group": "job", "description": "Shown in the queue (default: the model)"},
    {"name": "resources.gpus", "label": "GPUs", "type": "int", "default": 0, "min": 0, "max": 64, "group": "job"},
    {"name": "priority", "label": "priority", "type": "int", "default": 0, "min": -1000, "max": 1000, "group": "job",
     "description": "Higher starts first; then the oldest"},
    {"name": "dataset.path", "label": "dataset path", "type": "str", "group": "dataset", "required": True,
     "description": "A folder (or data.yaml) on this server that you can read"},
    {"name": "dataset.format", "label": "dataset format", "type": "choice", "group": "dataset"},
    {"name": "dataset.annotations", "label": "annotations file", "type": "str", "group": "dataset",
     "description": "COCO only: the annotations JSON"},
]


def fields_for(model: dict, registry) -> list[dict]:
    """The form's fields for a model: the job's, then its framework's settings as train.NAME."""
    from ..resolve import framework_schema

    fields = [dict(f) for f in PLATFORM]
    if model["framework"] == "repo":
        repo = registry.get_repo(model["model_name"])
        formats = [repo.get("dataset", {}).get("format", "imagefolder")]
        d = repo.get("defaults", {})
        schema = [{"name": "epochs", "type": "int", "default": d.get("epochs"), "min": 1, "group": "training"},
                  {"name": "batch_size", "type": "int", "default": d.get("batch_size"), "min": 1, "group": "training"},
                  {"name": "lr", "type": "float", "default": d.get("lr"), "min": 1e-7, "group": "optimizer"},
                  {"name": "input_size", "type": "int", "default": d.get("input_size"), "min": 16, "group": "data"}]
    else:
        fw = registry.get_framework(model["framework"])
        formats = fw.get("dataset_formats", ["imagefolder"])
        schema = (framework_schema(model["framework"]) or {"fields": []})["fields"]
    for f in fields:
        if f["name"] == "dataset.format":
            f["options"], f["default"] = formats, formats[0]
    recommended = {"batch_size": model.get("recommended_batch_size"), "lr": model.get("recommended_lr"), "input_size": model.get("input_size")}
    for f in schema:
        g = dict(f, name=f"train.{f['name']}", label=f["name"].replace("_", " "))
        if recommended.get(f["name"]) is not None:
            g["default"] = recommended[f["name"]]
            g["description"] = (g.get("description") or "") + " (the model's recommended value)"
        fields.append(g)
    return fields


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


def spec_from(model: dict, fields: list[dict], values: dict, strict: bool = False) -> dict:
    """The job spec a form stands for: only what differs from the defaults (and what is required)."""
    spec: dict = {"model": model["ref"]}
    for f in fields:
        key = f["name"]
        if f["type"] == "bool":
            if key not in values and not any(k.startswith("train.") for k in values):
                continue  # an untouched form: the default
            value = _convert(f, values.get(key, False))
        else:
            raw = values.get(key)
            if raw is None or (isinstance(raw, str) and raw.strip() == ""):
                continue
            value = _convert(f, raw)
        if value == f.get("default") and not f.get("required"):
            continue
        node = spec
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    if strict and "dataset" not in spec:
        spec["dataset"] = {}
    return spec


def errors_by_field(problems: list[str]) -> dict:
    """{field: its problem line}, from the one-line problems of the spec check ("_": the rest)."""
    out: dict = {}
    for line in problems:
        head = line.split(":", 1)[0].strip()
        key = head if head and " " not in head else "_"
        out.setdefault(key, line)
    return out
