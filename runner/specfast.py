"""`runner submit`'s quick check of a job spec, without pydantic (whose import is ~130 ms of a
~220 ms submit).

It only ever says yes: a spec it takes is one `spec.JobSpec` takes, read into the same values
(the same `model_dump`, the same fields given), so the spool file is byte for byte the one the
pydantic model would make. Anything it is not sure of (a problem, a type it does not know, a
field it does not carry) goes to `spec.parse_spec`, which refuses it with its one-line errors, so
a bad spec gets exactly the words it always got, and the daemon checks every spool file with the
pydantic model still. Its table of fields (FIELDS) is held to the model's own fields, and its
verdicts and values to the model's on a broad corpus of specs, by tests/test_specfast.py; the
validators are the same functions (`specrules`).
"""

from __future__ import annotations

import math
import re

from . import specrules as rules

REQUIRED = "required"
"""The default of a field the spec must give."""

# model -> (extra keys: "forbid" or "allow", {field: (kind, optional, default, constraints)}), in
# the model's order (model_dump's order). kind: str, int, float, bool, any, list[str], list[int],
# dict[str,str], dict[str,any], ("literal", values) or ("model", NAME); a default "[]", "{}" or
# "NAME()" is a factory. Checked against spec.py's models by tests/test_specfast.py.
FIELDS: dict[str, tuple[str, dict[str, tuple]]] = {
    "EnvSpec": ("forbid", {
        "requirements": ("list[str]", True, None, {"max_length": 1000}),
        "requirements_file": ("str", True, None, {"max_length": 4096}),
        "python": ("str", True, None, {"max_length": 32}),
        "name": ("str", True, None, {"max_length": 64}),
    }),
    "Dataset": ("forbid", {
        "path": ("str", False, REQUIRED, {"max_length": 4096}),
        "format": (("literal", ("imagefolder", "yolo", "coco", "dota", "hrsc2016", "voc", "masks", "captions")), True, None, {}),
        "split": ("float", True, None, {"gt": 0, "lt": 1}),
        "annotations": ("str", True, None, {"max_length": 4096}),
        "keep_difficult": ("bool", False, False, {}),
        "tile": ("int", True, None, {"ge": 64, "le": 16384}),
        "overlap": ("int", False, 0, {"ge": 0, "le": 8192}),
    }),
    "Train": ("allow", {
        "epochs": ("int", False, 1, {"ge": 1, "le": 100_000}),
        "batch_size": ("int", True, None, {"ge": 1, "le": 65_536}),
        "lr": ("float", True, None, {"gt": 0, "le": 10, "allow_inf_nan": False}),
        "input_size": ("int", True, None, {"ge": 8, "le": 8192}),
        "pretrained": ("bool", False, False, {}),
        "optimizer": ("str", True, None, {"max_length": 64}),
        "auto_batch_size": ("bool", False, False, {}),
        "seed": ("int", False, 0, {"ge": 0, "le": 2**32 - 1}),
        "workers": ("int", False, 0, {"ge": 0, "le": 64}),
        "resume": ("str", True, None, {"max_length": 4096}),
    }),
    "Resources": ("forbid", {
        "gpus": ("int", False, 0, {"ge": 0, "le": 64}),
        "gpu_memory_gb": ("float", True, None, {"gt": 0, "le": 16_384, "allow_inf_nan": False}),
        "gpu_ids": ("list[int]", True, None, {"max_length": 64}),
        "memory_gb": ("float", True, None, {"gt": 0, "le": 1048576.0, "allow_inf_nan": False}),
        "max_open_files": ("int", True, None, {"ge": 16, "le": 1048576}),
        "max_processes": ("int", True, None, {"ge": 1, "le": 4194304}),
        "cpu_seconds": ("int", True, None, {"ge": 1, "le": 31622400}),
        "time_limit": ("float", True, None, {"gt": 0, "le": 31622400, "allow_inf_nan": False}),
    }),
    "SlurmOptions": ("forbid", {
        "partition": ("str", True, None, {"pattern": r"^[A-Za-z0-9_.-]{1,200}$"}),
        "account": ("str", True, None, {"pattern": r"^[A-Za-z0-9_.-]{1,200}$"}),
        "qos": ("str", True, None, {"pattern": r"^[A-Za-z0-9_.-]{1,200}$"}),
        "cpus_per_task": ("int", True, None, {"ge": 1, "le": 4096}),
        "sbatch_args": ("list[str]", False, "[]", {"max_length": 64}),
    }),
    "JobSpec": ("forbid", {
        "name": ("str", True, None, {}),
        "command": ("any", False, None, {}),
        "model": ("str", True, None, {"max_length": 200}),
        "framework": ("str", True, None, {"max_length": 64}),
        "model_name": ("str", True, None, {"max_length": 200}),
        "variant": ("str", True, None, {"max_length": 200}),
        "task": ("str", True, None, {"max_length": 64}),
        "dataset": (("model", "Dataset"), True, None, {}),
        "train": (("model", "Train"), False, "Train()", {}),
        "env": ("any", False, None, {}),
        "resources": (("model", "Resources"), False, "Resources()", {}),
        "network": ("bool", True, None, {}),
        "priority": ("int", False, 0, {"ge": -1000, "le": 1000}),
        "preemptible": ("bool", True, None, {}),
        "after": ("list[str]", False, "[]", {"max_length": 100}),
        "workdir": ("str", True, None, {"max_length": 4096}),
        "env_vars": ("dict[str,str]", False, "{}", {}),
        "parser": ("str", True, None, {"max_length": 4096}),
        "checkpoints": ("list[str]", False, "[]", {"max_length": 16}),
        "check": ("dict[str,any]", True, None, {}),
        "mlflow": ("any", False, None, {}),
        "slurm": (("model", "SlurmOptions"), True, None, {}),
    }),
}


VALIDATORS: dict[str, dict[str, tuple]] = {
    "EnvSpec": {"_specifiers": ("requirements",), "_python": ("python",), "_one_source": ()},
    "Dataset": {"_tiles": ()},
    "Train": {},
    "Resources": {"_ids_match": ()},
    "SlurmOptions": {"_options": ("sbatch_args",)},
    "JobSpec": {"_mlflow": ("mlflow",), "_name": ("name",), "_command": ("command",), "_env": ("env",),
                "_env_vars": ("env_vars",), "_workdir": ("workdir",), "_short_strings": ("after",),
                "_checkpoints": ("checkpoints",), "_what_to_run": ()},
}
"""Each model's validators (field validators with their fields; () for a model validator), all of
them run by _validators below; a validator added to spec.py and not here fails tests/test_specfast.py."""


class Unsure(Exception):
    """The quick check cannot vouch for this spec: the pydantic model decides (and words any problem)."""


def _plain(v, depth: int = 0):
    """v itself when it is plain JSON-like data (str, int, float, bool, None, lists, str-keyed
    dicts) that the model dumps as it is given; otherwise Unsure."""
    t = type(v)
    if t is str:
        if not v.isascii():
            v.encode()  # a lone surrogate (JSON's "\ud800") is no text to the model: UnicodeEncodeError
        return v
    if t is int or t is bool or v is None:
        return v
    if t is float:
        if not math.isfinite(v):
            raise Unsure
        return v
    if depth > 64:
        raise Unsure
    if t is list:
        return [_plain(x, depth + 1) for x in v]
    if t is dict:
        if any(type(k) is not str for k in v):
            raise Unsure
        return {_plain(k): _plain(x, depth + 1) for k, x in v.items()}
    raise Unsure


class Model:
    """A validated model's values, read as the pydantic model's are (attributes, model_dump,
    model_fields_set, model_extra)."""

    def __init__(self, name: str, values: dict, extra: dict | None, given: set):
        self.__dict__.update(values)
        self._name = name
        self._extra = extra
        self._given = given

    @property
    def model_fields_set(self) -> set:
        """The fields the spec gave (and those a validator set), as pydantic counts them."""
        return self._given

    @property
    def model_extra(self) -> dict | None:
        """Keys beyond the model's fields (Train's framework settings); None where none are allowed."""
        return self._extra

    def model_dump(self, exclude_none: bool = False) -> dict:
        """The values as plain data, in the model's field order and then its extra keys."""
        out = {}
        for name in FIELDS[self._name][1]:
            v = self.__dict__[name]
            if v is None and exclude_none:
                continue
            out[name] = v.model_dump(exclude_none=exclude_none) if isinstance(v, Model) else _plain(v)
        for name, v in (self._extra or {}).items():
            if not (v is None and exclude_none):
                out[name] = _plain(v)
        return out


class JobSpec(Model):
    """A job spec the quick check took."""

    @property
    def kind(self) -> str:
        """'command' or 'model'."""
        return "command" if self.command is not None else "model"


class EnvSpec(Model):
    """An inline env the quick check took."""

    @property
    def allows_urls(self) -> bool:
        """Whether this spec was checked under a site config that allows `name @ URL` requirements."""
        return self._allow_urls


_CLASSES = {"JobSpec": JobSpec, "EnvSpec": EnvSpec}


def _number(v, kind: str, c: dict):
    if kind == "int":
        if type(v) is not int:
            raise Unsure
    elif type(v) is int and abs(v) <= 2**53:
        v = float(v)  # the model takes an int for a float field and keeps it as a float
    elif type(v) is not float or not math.isfinite(v):
        raise Unsure
    if ("ge" in c and not v >= c["ge"]) or ("gt" in c and not v > c["gt"]) or ("le" in c and not v <= c["le"]) \
            or ("lt" in c and not v < c["lt"]):
        raise Unsure
    return v


def _field(kind, c: dict, v, site):
    """A field's value as the model keeps it, or Unsure."""
    if kind == "any":
        return v
    if kind == "str":
        if type(v) is not str or len(v) > c.get("max_length", len(v)):
            raise Unsure
        if "pattern" in c and ("\n" in v or not re.search(c["pattern"], v)):
            raise Unsure
        return v
    if kind in ("int", "float"):
        return _number(v, kind, c)
    if kind == "bool":
        if type(v) is not bool:
            raise Unsure
        return v
    if kind in ("list[str]", "list[int]"):
        item = str if kind == "list[str]" else int
        if type(v) is not list or len(v) > c.get("max_length", len(v)) or any(type(x) is not item for x in v):
            raise Unsure
        return list(v)
    if kind in ("dict[str,str]", "dict[str,any]"):
        if type(v) is not dict or any(type(k) is not str for k in v) \
                or kind == "dict[str,str]" and any(type(x) is not str for x in v.values()):
            raise Unsure
        return dict(v)
    if kind[0] == "literal":
        if type(v) is not str or v not in kind[1]:
            raise Unsure
        return v
    return _model(kind[1], v, site)


def _model(name: str, data, site) -> Model:
    extra_rule, fields = FIELDS[name]
    if type(data) is not dict:
        raise Unsure
    extra = {k: v for k, v in data.items() if k not in fields}
    if extra and extra_rule == "forbid":
        raise Unsure
    values = {}
    for fname, (kind, optional, default, c) in fields.items():
        if fname not in data:
            if default == REQUIRED:
                raise Unsure
            values[fname] = (_model(default[:-2], {}, site) if default.endswith("()") else [] if default == "[]" else {}) \
                if isinstance(default, str) and default != REQUIRED else default
            continue
        v = data[fname]
        values[fname] = None if v is None and optional else _field(kind, c, v, site)
    given = set(data)
    _validators(name, values, given, site)
    cls = _CLASSES.get(name, Model)
    model = cls(name, values, extra if extra_rule == "allow" else None, given)
    if name == "EnvSpec":
        model._allow_urls = rules.allows_urls(site)
    return model


def _ok(problem):
    if problem is not None:
        raise Unsure


def _validators(name: str, v: dict, given: set, site):
    """The model's own validators (the same rules), in its order; a validator's change is made as
    the model makes it (and counted among the fields given, as pydantic counts an assignment)."""
    if name == "EnvSpec":
        _ok(rules.requirements_problem(v["requirements"], rules.allows_urls(site)))
        _ok(rules.python_problem(v["python"]))
        _ok(rules.env_source_problem(v["requirements"], v["requirements_file"], v["name"]))
    elif name == "Dataset":
        _ok(rules.tiles_problem(v["tile"], v["overlap"], v["keep_difficult"], v["format"]))
    elif name == "Resources":
        _ok(rules.gpu_ids_problem(v["gpus"], v["gpu_ids"]))
        if v["gpu_ids"] is not None:
            v["gpus"] = len(v["gpu_ids"])
            given.add("gpus")
    elif name == "SlurmOptions":
        _ok(rules.sbatch_problem(v["sbatch_args"]))
    elif name == "JobSpec":
        _ok(rules.mlflow_problem(v["mlflow"]))
        _ok(rules.name_problem(v["name"]))
        _ok(rules.command_problem(v["command"]))
        env = v["env"]
        if isinstance(env, str):
            _ok(rules.env_name_problem(env))
        elif isinstance(env, dict):
            v["env"] = _model("EnvSpec", env, site)
        elif env is not None:
            raise Unsure
        _ok(rules.env_vars_problem(v["env_vars"]))
        _ok(rules.workdir_field_problem(v["workdir"]))
        _ok(rules.after_problem(v["after"]))
        _ok(rules.checkpoints_problem(v["checkpoints"]))
        _ok(rules.what_to_run_problem(v["model"], v["framework"], v["model_name"], v["command"], v["dataset"], v["env_vars"]))
        if v["framework"]:
            v["model"] = f"{v['framework']}/{v['model_name']}"
            v["framework"] = None
            given.update(("model", "framework"))


def quick_spec(data: object, site: dict | None = None) -> JobSpec | None:
    """The spec as JobSpec would read it, or None when the quick check cannot vouch for it."""
    try:
        if rules.mapping_problems(data):
            return None
        _plain(data)
        return _model("JobSpec", data, site or {})
    except Exception:  # Unsure, or anything it did not foresee (a lone surrogate): the model judges
        return None


def parse_spec(data: object, site: dict | None = None):
    """`spec.parse_spec` for `runner submit`: the quick check's spec when it takes it, else the
    pydantic model's verdict (its spec, or SpecError with its one-line errors)."""
    spec = quick_spec(data, site)
    if spec is not None:
        return spec
    from .spec import parse_spec as full

    return full(data, site)
