"""`runner submit`'s quick check of a spec (runner/specfast.py) says what the pydantic model says
(#30): its table is the model's fields, it takes exactly the specs the model takes, reads them
into the same values (and so the same spool file), and a spec it does not take gets the model's
own one-line errors; `runner submit` of a good job file imports no pydantic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import spec as full, specfast
from runner.exceptions import SpecError

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"JobSpec": full.JobSpec, "EnvSpec": full.EnvSpec, "Dataset": full.Dataset, "Train": full.Train,
          "Resources": full.Resources, "SlurmOptions": full.SlurmOptions}


# -- the table is the model's ------------------------------------------------------------------------

def _kind(annotation) -> tuple[object, bool]:
    """(specfast's kind, optional) of a pydantic field's annotation."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) is typing.Union and type(None) in args
    if optional:
        (annotation,) = [a for a in args if a is not type(None)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return "any", optional
    if annotation in (str, int, float, bool):
        return annotation.__name__, optional
    if origin is typing.Literal:
        return ("literal", args), optional
    if origin is list:
        return f"list[{args[0].__name__}]", optional
    if origin is dict:
        return f"dict[{args[0].__name__},{'any' if args[1] is typing.Any else args[1].__name__}]", optional
    if isinstance(annotation, type) and issubclass(annotation, full.BaseModel):
        return ("model", annotation.__name__), optional
    raise AssertionError(f"a field type specfast does not know: {annotation!r}")


def _table(model) -> tuple[str, dict]:
    fields = {}
    for name, f in model.model_fields.items():
        kind, optional = _kind(f.annotation)
        if f.default_factory is not None:
            default = {list: "[]", dict: "{}"}.get(f.default_factory) or f.default_factory.__name__ + "()"
        else:
            default = specfast.REQUIRED if f.is_required() else f.default
        constraints = {}
        for m in f.metadata:
            for key in ("max_length", "ge", "gt", "le", "lt", "pattern", "allow_inf_nan"):
                if getattr(m, key, None) is not None:
                    constraints[key] = getattr(m, key)
        fields[name] = (kind, optional, default, constraints)
    return model.model_config["extra"], fields


@pytest.mark.parametrize("name", list(MODELS))
def test_the_quick_check_runs_the_models_validators(name):
    """A validator added to (or moved in) spec.py and not mirrored in specfast fails here."""
    d = MODELS[name].__pydantic_decorators__
    found = {k: tuple(v.info.fields) for k, v in d.field_validators.items()} | {k: () for k in d.model_validators}
    assert all(v.info.mode == "after" for v in [*d.field_validators.values(), *d.model_validators.values()])
    assert not d.field_serializers and not d.model_serializers and not d.computed_fields
    assert specfast.VALIDATORS[name] == found


@pytest.mark.parametrize("name", list(MODELS))
def test_the_quick_checks_table_is_the_models_fields(name):
    """A field, a bound, a default or a type changed in spec.py and not in specfast.FIELDS fails here."""
    assert MODELS[name].model_config.get("strict") is True
    assert specfast.FIELDS[name] == _table(MODELS[name])
    assert set(specfast.FIELDS) == set(MODELS)


# -- the same verdicts, values and errors on a broad corpus ----------------------------------------

def _around(kind, c: dict) -> list:
    """Values at and past a field's bounds, and of the wrong types."""
    out: list = [None, True, "x", 3, 2.5, [], {}]
    if kind in ("int", "float"):
        for key in ("ge", "gt", "le", "lt"):
            if key in c:
                b = c[key]
                out += [b, b - 1, b + 1, float(b), b - 0.5, b + 0.5]
        out += [0, 1, -1, 0.0, 2**53 + 1, 10**30]
    if kind == "str":
        n = c.get("max_length", 300)
        out += ["", "a", "a" * n, "a" * (n + 1), "a\n", "A_b.c-1", "x y", "-x", "ü", "\ud800"]
    if kind.startswith("list"):
        n = c.get("max_length", 5)
        item = "a" if kind == "list[str]" else 1
        out += [[item], [item] * n, [item] * (n + 1), ["a", 1], [True], [""], ("a",)]
    if kind.startswith("dict"):
        out += [{"A": "1"}, {"A": 1}, {1: "a"}, {"a": None}, {"a": {"b": None}}]
    return out


def _values(model: str, field: str):
    kind, optional, default, c = specfast.FIELDS[model][1][field]
    if isinstance(kind, tuple) and kind[0] == "model":
        return _spec_of(kind[1]) | st.sampled_from([None, "x", 1, [], {}])
    if isinstance(kind, tuple):
        return st.sampled_from([*kind[1], None, "other", "", 1, ["yolo"]])
    special = SPECIAL.get((model, field), [])
    return st.sampled_from(_around(kind, c) + special) | st.sampled_from(special) if special else st.sampled_from(_around(kind, c))


SPECIAL = {
    ("JobSpec", "name"): ["job-1", "a" * 100, "a" * 101, "_x", "a/b", "j.1"],
    ("JobSpec", "command"): [["/bin/true"], ["echo", "hi"], "echo hi", " ", "", [], [""], ["a", 1], ["a", ""],
                             ["a"] * 5000, "x" * 200_000, ["y" * 200_000], ["a", "\udc80"], "\ud800"],
    ("JobSpec", "model"): ["timm/resnet18", "repo/yolov7", "resnet18", "ultralytics/yolov8n", ""],
    ("JobSpec", "framework"): ["timm", "", "ultralytics"],
    ("JobSpec", "model_name"): ["resnet18", "", "yolov8n"],
    ("JobSpec", "env"): ["system", "timm", "nope", "../x", "system\n", {"requirements": ["numpy"]},
                         {"requirements": ["numpy==1.26"], "python": "3.11", "name": "mine"},
                         {"requirements": ["-e ."]}, {"requirements": ["x @ https://e.org/x.whl"]}, {"name": "timm"},
                         {"name": "nope"}, {"requirements_file": "r.txt"}, {"requirements_file": "r.txt", "name": "a b"},
                         {"requirements": [], "requirements_file": "r"}, {}, {"python": "2.7", "requirements": []},
                         {"requirements": ["numpy"], "python": None}, {"requirements": ["numpy"], "extra": 1}, 5, ["system"]],
    ("JobSpec", "env_vars"): [{"OMP_NUM_THREADS": "4"}, {"PATH": "/x"}, {"LD_PRELOAD": "x"}, {"1A": "x"}, {"PYTHONPATH": "/x"},
                              {"A": "x" * 200_000}, {f"V{i}": "1" for i in range(300)}, {"A": "1", "B": "2"}, {"A": "\ud800"}],
    ("JobSpec", "workdir"): ["/etc", "/etc/x", "/home", "/home/a/w", "rel/dir", "/tmp", "/tmp/mine", "//", "/var/lib/x"],
    ("JobSpec", "checkpoints"): [["ckpt/*.pt"], ["/abs/*.pt"], ["../x"], [""], ["a" * 5000], ["a\\b"]],
    ("JobSpec", "after"): [["abcd1234"], [""], ["a" * 5000]],
    ("JobSpec", "mlflow"): [False, {"experiment": "e"}, {"experiment": ""}, {"experiment": None}, {"x": 1}, "yes",
                            {"experiment": 5}, {}],
    ("JobSpec", "check"): [{"learns": {"metric": "val_acc", "floor": None}}, {"a": [1, 2.5, None]}, {"\ud800": 1}, {"a": ["\udfff"]}],
    ("JobSpec", "parser"): ["generic", "none", "timm"],
    ("JobSpec", "priority"): [5, -5, 999],
    ("Dataset", "format"): ["dota", "voc", "yolo"],
    ("Dataset", "path"): ["d", "/data/x", "~/d"],
    ("Dataset", "tile"): [64, 640, 100],
    ("Dataset", "overlap"): [0, 64, 640, 700],
    ("Resources", "gpu_ids"): [[0], [0, 1], [0, 0], [1023], [1024], [-1], [True]],
    ("Resources", "gpus"): [1, 2, 3],
    ("SlurmOptions", "sbatch_args"): [["--constraint=a100"], ["-N1"], ["--x\n--y"], ["--" + "a" * 1000]],
    ("SlurmOptions", "partition"): ["gpu", "a b", "gpu\n", "a" * 200, "a" * 201],
    ("Train", "resume"): ["last", "ckpt/last.pt", "~/x.pt"],
}

GOOD_SPECIAL = {
    ("JobSpec", "name"): ["job-1", "a" * 100, "j.1"],
    ("JobSpec", "command"): [["/bin/true"], ["echo", "hi"], "echo hi"],
    ("JobSpec", "model"): [None],
    ("JobSpec", "framework"): [None],
    ("JobSpec", "model_name"): ["resnet18", None],
    ("JobSpec", "env"): ["system", "timm", {"requirements": ["numpy"]}, {"requirements_file": "r.txt", "name": "mine"},
                         {"requirements": ["numpy==1.26"], "python": "3.11", "name": "mine"}, {"name": "timm", "python": "3.12"},
                         {"requirements": ["x @ https://e.org/x.whl"]}, None],
    ("JobSpec", "env_vars"): [{"OMP_NUM_THREADS": "4"}, {"A": "1", "B": ""}, {}],
    ("JobSpec", "workdir"): ["/home/a/w", "rel/dir", "/tmp/mine", None],
    ("JobSpec", "checkpoints"): [["ckpt/*.pt"], [], ["a/b", "*.ckpt"]],
    ("JobSpec", "after"): [["abcd1234"], []],
    ("JobSpec", "mlflow"): [False, True, {"experiment": "e"}, {}, {"experiment": None}, None],
    ("JobSpec", "parser"): ["generic", "none", "timm", None],
    ("Dataset", "format"): ["dota", "voc", "hrsc2016", None],
    ("Dataset", "tile"): [640, 1024, None],
    ("Dataset", "overlap"): [0, 64],
    ("Resources", "gpu_ids"): [[0], [0, 1], [3, 1, 2], None],
    ("Resources", "gpus"): [0, 1, 2, 3],
    ("SlurmOptions", "sbatch_args"): [["--constraint=a100"], []],
    ("EnvSpec", "requirements"): [["numpy"], ["torch>=2", "timm==1.0.3"]],
    ("EnvSpec", "requirements_file"): [None],
    ("EnvSpec", "name"): ["mine", None],
    ("EnvSpec", "python"): ["3.11", "3.10.4", None],
}


def _good(model: str, field: str):
    """Values a field takes (within its bounds), so that many specs are taken and their values compared."""
    kind, optional, default, c = specfast.FIELDS[model][1][field]
    if (model, field) in GOOD_SPECIAL:
        return st.sampled_from(GOOD_SPECIAL[model, field])
    none = [st.none()] if optional else []
    if isinstance(kind, tuple) and kind[0] == "model":
        return st.one_of(_good_spec(kind[1]), *none)
    if isinstance(kind, tuple):
        return st.sampled_from(kind[1]) | st.one_of(*none) if none else st.sampled_from(kind[1])
    if kind == "int":
        return st.one_of(st.integers(c.get("ge", -10**6), c.get("le", 10**6)), *none)
    if kind == "float":
        lo, hi = c.get("ge", c.get("gt", -1e6)), c.get("le", c.get("lt", 1e6))
        return st.one_of(st.floats(lo, hi, exclude_min="gt" in c, exclude_max="lt" in c, allow_nan=False),
                         st.integers(int(lo) + 1, int(hi)) if int(hi) > int(lo) + 1 else st.nothing(), *none)
    if kind == "bool":
        return st.one_of(st.booleans(), *none)
    if kind == "str":
        text = st.from_regex(c["pattern"].replace("$", r"\Z"), fullmatch=True) if "pattern" in c else \
            st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=c.get("max_length", 40))
        return st.one_of(text, *none)
    if kind == "list[str]":
        return st.lists(st.text("ab-", max_size=5), max_size=min(c.get("max_length", 4), 4))
    if kind == "dict[str,any]":
        return st.one_of(st.dictionaries(st.text("ab", max_size=3), st.none() | st.integers() | st.text(max_size=3), max_size=3), *none)
    raise AssertionError(kind)


def _good_spec(model: str):
    fields = specfast.FIELDS[model][1]
    need = {f: _good(model, f) for f, (_, _, default, _) in fields.items() if default == specfast.REQUIRED}
    spec = st.fixed_dictionaries(need, optional={f: st.deferred(lambda m=model, f=f: _good(m, f)) for f in fields if f not in need})
    if model != "Train":
        return spec
    settings = st.dictionaries(st.sampled_from(["mosaic", "zz", "label_smoothing"]), st.sampled_from(ODD), max_size=2)
    return st.tuples(spec, settings).map(lambda t: {**t[0], **t[1]})  # a framework's settings: any names and values


ODD = [None, 0.5, 1, "x", {"b": None}, [1, None], True]


@st.composite
def _near(draw, model: str):
    """A good mapping of a model with one field drawn from the wide pool, and sometimes an unknown key."""
    fields = specfast.FIELDS[model][1]
    out = draw(_good_spec(model))
    f = draw(st.sampled_from(sorted(fields)))
    kind = fields[f][0]
    out[f] = draw(_near(kind[1]) if isinstance(kind, tuple) and kind[0] == "model" and draw(st.booleans()) else _values(model, f))
    if draw(st.integers(0, 4)) == 4:
        out[draw(st.sampled_from(_EXTRA_KEYS[model]))] = draw(st.sampled_from(ODD))
    return out


_EXTRA_KEYS = {"Train": ["mosaic", "label_smoothing", "zz"], "JobSpec": ["nmae", "spec"], "Dataset": ["paht"],
               "Resources": ["gpu"], "SlurmOptions": ["nodes"], "EnvSpec": ["req"]}


def _spec_of(model: str):
    """A mapping of some of a model's fields (good, bad and odd values), sometimes an unknown key."""
    fields = specfast.FIELDS[model][1]
    extra = st.sampled_from(_EXTRA_KEYS[model])
    return st.fixed_dictionaries({}, optional={f: st.deferred(lambda m=model, f=f: _values(m, f)) for f in fields}) \
        .flatmap(lambda d: st.dictionaries(extra, st.sampled_from([None, 0.5, 1, "x", {"b": None}, [1]]), max_size=1)
                 .map(lambda e: {**d, **e}))


@st.composite
def _plausible(draw):
    """A spec near a good one: one kind of job, some fields of good values, and at most one drawn
    from the wide pool (good, bad and odd)."""
    base = draw(st.sampled_from([
        {"command": ["/bin/true"]}, {"command": "echo hi"}, {"model": "timm/resnet18", "dataset": {"path": "d"}},
        {"framework": "timm", "model_name": "resnet18", "dataset": {"path": "d", "format": "imagefolder"}},
        {"model": "ultralytics/yolov8n", "dataset": {"path": "d", "format": "dota", "tile": 640, "overlap": 64},
         "train": {"epochs": 3, "lr": 1, "mosaic": 0.5}}]))
    fields = [f for f in specfast.FIELDS["JobSpec"][1] if f not in ("model", "framework", "command", "model_name")]
    good = {f: draw(_good("JobSpec", f)) for f in draw(st.lists(st.sampled_from(fields), max_size=8, unique=True))}
    if draw(st.booleans()):
        return {**base, **good}
    return {**good, **draw(_near("JobSpec"))} if draw(st.integers(0, 3)) == 3 else \
        {**base, **good, **{k: v for k, v in draw(_near("JobSpec")).items() if k not in base or draw(st.booleans())}}


def _verdict(parse, data, site):
    try:
        s = parse(data, site)
    except SpecError as e:
        return ("refused", e.problems)
    return ("taken", _values_of(s))


def _values_of(s) -> dict:
    """Everything of a spec that resolve() and the spool file read."""
    env = s.env if not isinstance(s.env, (str, type(None))) else None
    return {"dump": json.dumps(s.model_dump(exclude_none=True), default=repr), "all": repr(s.model_dump()), "kind": s.kind,
            "set": sorted(s.model_fields_set), "train_set": sorted(s.train.model_fields_set), "extra": s.train.model_extra,
            "train": json.dumps(s.train.model_dump(exclude_none=True)), "res_set": sorted(s.resources.model_fields_set),
            "model_extra": s.model_extra, "res_extra": s.resources.model_extra,
            "env": env and (env.requirements_file, env.name, env.python, env.requirements, env.allows_urls, sorted(env.model_fields_set)),
            "dataset": s.dataset and (s.dataset.format, s.dataset.path, s.dataset.annotations, sorted(s.dataset.model_fields_set)),
            "attrs": [repr(getattr(s, f)) for f in ("name", "model", "framework", "network", "priority", "after", "parser",
                                                  "workdir", "preemptible", "checkpoints", "env_vars", "command", "mlflow", "check")]}


SITES = [{}, {"envs": {"allow_requirement_urls": True}}]


def _is_plain(data) -> bool:
    try:
        specfast._plain(data)
    except Exception:
        return False
    return True


def _same(data, site):
    want = _verdict(full.parse_spec, data, site)
    quick = specfast.quick_spec(data, site)
    # the quick check takes only what the model takes, and all of it that is plain text and numbers
    # (or it would not spare the model's import); the rest (a lone surrogate) is the model's to judge
    assert quick is None or want[0] == "taken", (data, want)
    assert quick is not None or want[0] == "refused" or not _is_plain(data), (data, want)
    if quick is not None:
        assert ("taken", _values_of(quick)) == want, data
    # and runner submit's parse answers as the model does, errors word for word
    assert _verdict(specfast.parse_spec, data, site) == want, data


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(_plausible(), _plausible(), _spec_of("JobSpec")), st.sampled_from(SITES))
def test_the_quick_check_gives_the_models_verdict_values_and_errors(data, site):
    _same(data, site)


GOOD = [
    {"command": ["/bin/true"]},
    {"name": "sweep-3", "command": ["python3", "train.py", "--lr", "0.1"], "resources": {"gpus": 1, "gpu_memory_gb": 12,
     "time_limit": 3600}, "priority": 5, "env_vars": {"OMP_NUM_THREADS": "4"}, "network": False, "checkpoints": ["ckpt/*.pt"],
     "workdir": "/home/a/w", "preemptible": True, "mlflow": {"experiment": "e"}, "after": ["abcd1234"], "parser": "generic"},
    {"model": "timm/resnet18", "dataset": {"path": "data", "split": 0.2}, "train": {"epochs": 30, "lr": 0.1, "mosaic": 0.5,
     "label_smoothing": None}},
    {"framework": "ultralytics", "model_name": "yolov8n-obb", "dataset": {"path": "/d", "format": "dota", "tile": 1024,
     "overlap": 200, "keep_difficult": True}, "resources": {"gpu_ids": [0, 1]}, "slurm": {"partition": "gpu", "sbatch_args": ["--x=1"]}},
    {"command": "echo hi", "env": {"requirements": ["numpy==1.26", "x @ https://e.org/x.whl"], "python": "3.11"}},
    {"command": ["x"], "env": {"name": "timm", "python": "3.12"}, "check": {"learns": {"floor": None}}},
    {"command": ["x"], "env": "system", "train": {"epochs": 3}},
]


@pytest.mark.parametrize("data", GOOD, ids=range(len(GOOD)))
@pytest.mark.parametrize("site", SITES, ids=["site", "urls"])
def test_good_specs_are_taken_quickly_with_the_models_values(data, site):
    if "@" in json.dumps(data) and not site:
        with pytest.raises(SpecError):
            full.parse_spec(data, site)
    _same(data, site)


BAD = [
    [], "x", {"command": ["a"], "nmae": 1}, {"command": ["a"], "priority": "5"}, {"command": ["a"], "network": "no"},
    {"model": "timm/resnet18"}, {"command": ["a\x00"]}, {"command": ["a"], "resources": {"time_limit": float("inf")}},
    {"command": ["a"], "env": {"requirements": ["numpy"], "requirements_file": "r"}}, {"command": ["a"], "env_vars": {"PATH": "x"}},
    {"command": ["a"], "x": {"y": {}}}, {"command": ["a"], "name": "x" * 101},
    {"command": ["a"], "task": "\ud800"}, {"command": ["\ud800"]},  # a lone surrogate (JSON's "\ud800") is no text
]


@pytest.mark.parametrize("data", BAD, ids=range(len(BAD)))
def test_bad_specs_get_the_models_one_line_errors(data):
    with pytest.raises(SpecError) as want:
        full.parse_spec(data)
    assert specfast.quick_spec(data) is None
    with pytest.raises(SpecError) as got:
        specfast.parse_spec(data)
    assert got.value.problems == want.value.problems


# -- the spool file, and what runner submit imports ------------------------------------------------

def test_the_spool_file_is_byte_for_byte_the_models(tmp_path, monkeypatch):
    """writes.submit with the quick check writes the same file, byte for byte, as with the model."""
    from runner import spool, writes
    from runner.home import Home

    (tmp_path / "w").mkdir()
    (tmp_path / "r.txt").write_text("numpy==1.26\n# a comment\nrequests\n")
    monkeypatch.setattr(spool, "new_id", lambda: "abcd2345")
    monkeypatch.setattr(spool.time, "time", lambda: 1700000000.5)
    monkeypatch.setattr(spool.time, "time_ns", lambda: 1700000000500000000)
    jobs = [g for g in GOOD if "model" not in g and "framework" not in g and "@" not in json.dumps(g)]
    from runner.synth import make_shapes

    data = make_shapes(tmp_path / "shapes", per_class=2, val_per_class=1)
    jobs += [{"command": ["x"], "env": {"requirements_file": "r.txt"}, "workdir": "w"},
             {"command": ["x"], "workdir": str(tmp_path / "w"), "train": {"epochs": 2, "zz": None}},
             {"model": "timm/resnet18", "dataset": {"path": "shapes"}, "train": {"epochs": 3, "lr": 1, "workers": 2},
              "resources": {"gpu_ids": [1, 0], "time_limit": 60}, "priority": 3},
             {"framework": "timm", "model_name": "resnet18", "dataset": {"path": str(data), "split": 0.5}, "network": False,
              "env_vars": {"OMP_NUM_THREADS": "2"}, "checkpoints": ["*.pt"], "mlflow": {"experiment": "x"}}]
    for i, job in enumerate(jobs):
        files = []
        for quick in (False, True):
            home = Home(tmp_path / f"h{i}{quick}").ensure()
            if "command" in job:
                job = {**job, "workdir": job["workdir"] if job.get("workdir", "").startswith(str(tmp_path)) else "w"}
            job.pop("after", None)
            writes.submit(home, None, job, tmp_path, quick=quick)
            (f,) = (home.spool).glob("*.job.json")
            files.append(f.read_bytes())
        assert files[0] == files[1], job


def _submit_in_a_process(tmp_path, text: str) -> subprocess.CompletedProcess:
    (tmp_path / "job.yaml").write_text(text)
    code = ("import sys, runpy; sys.argv = ['runner', 'submit', sys.argv[1]]\n"
            "try:\n    runpy.run_module('runner', run_name='__main__')\nexcept SystemExit as e: code = e.code\n"
            "print('PYDANTIC', 'pydantic' in sys.modules, 'EXIT', code, 'ALSO', [m for m in ('runner.envs', 'runner.watch') if m in sys.modules])")
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "job.yaml")], capture_output=True, text=True, cwd=tmp_path,
                          env={"RUNNER_HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "PYTHONPATH": str(ROOT)})


def test_runner_submit_of_a_good_file_imports_no_pydantic_and_a_bad_one_is_refused_as_before(tmp_path):
    r = _submit_in_a_process(tmp_path, "name: hello\ncommand: [python3, train.py]\nresources: {gpus: 0, time_limit: 60}\n"
                                       "checkpoints: [ckpt/*.pt]\nenv: {requirements: [numpy]}\n")
    assert "PYDANTIC False EXIT 0 ALSO []" in r.stdout, r.stdout + r.stderr  # nor the env builder, nor the daemon's watch
    assert len(list((tmp_path / "home" / "spool").glob("*.job.json"))) == 1
    r = _submit_in_a_process(tmp_path, "name: hello\ncommand: [python3, train.py]\npriority: high\n")
    assert "PYDANTIC True EXIT 2" in r.stdout, r.stdout + r.stderr
    assert r.stderr == "runner: priority: given 'high'; expected a valid integer\n"
    assert len(list((tmp_path / "home" / "spool").glob("*.job.json"))) == 1  # nothing more spooled


def test_a_spec_the_quick_check_cannot_vouch_for_is_the_models_to_judge():
    """A YAML date in check: is plain data to the model, not to the quick check: the model takes it."""
    import datetime

    data = {"command": ["a"], "check": {"at": datetime.date(2024, 1, 2)}}
    assert specfast.quick_spec(data) is None
    assert _values_of(specfast.parse_spec(data)) == _values_of(full.parse_spec(data))
