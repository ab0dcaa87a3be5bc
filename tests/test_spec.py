"""The job spec: good specs load, malformed ones are refused with one clear line per problem."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.exceptions import SpecError
from runner.spec import parse_spec


def test_command_and_model_specs():
    s = parse_spec({"command": ["echo", "hi"], "priority": 3})
    assert s.kind == "command" and s.priority == 3
    m = parse_spec({"model": "timm/resnet18", "dataset": {"path": "d"}, "train": {"epochs": 2, "mosaic": 0.5}})
    assert m.kind == "model" and m.train.model_extra == {"mosaic": 0.5}
    f = parse_spec({"framework": "timm", "model_name": "resnet50", "dataset": {"path": "d"}})
    assert f.model == "timm/resnet50"


@pytest.mark.parametrize("data, field, expected", [
    ({"command": "x", "priority": "high"}, "priority", "valid integer"),
    ({"command": "x", "resources": {"gpus": -1}}, "resources.gpus", "greater than or equal to 0"),
    ({"command": "x", "colour": "red"}, "colour", "unknown field"),
    ({"model": "resnet18", "dataset": {"path": "d"}}, "(job)", "FRAMEWORK/NAME"),
    ({"model": "timm/x"}, "(job)", "dataset"),
    ({"command": "x", "model": "timm/x", "dataset": {"path": "d"}}, "(job)", "exactly one"),
    ({"command": "x", "env": "not a name!"}, "env", "env name"),
    ({"command": []}, "command", "non-empty"),
    ({"command": "x", "resources": {"gpus": 1, "gpu_ids": [0, 1]}}, "resources", "gpu_ids names 2"),
    ({"model": "timm/x", "dataset": {"path": "d", "format": "csv"}}, "dataset.format", "imagefolder"),
])
def test_bad_specs_name_the_field(data, field, expected):
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    line = next(l for l in e.value.problems if l.startswith(field))
    assert expected in line


def test_cli_refuses_bad_file_and_queues_nothing(runner, home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("command: [echo]\npriority: high\nresources: {gpus: many}\n")
    r = runner.run("submit", bad, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert sorted(lines) == ["runner: priority: given 'high'; expected a valid integer",
                             "runner: resources.gpus: given 'many'; expected a valid integer"]
    assert not list((home / "spool").glob("*.json")) if (home / "spool").exists() else True
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("command: [unclosed\n")
    r = runner.run("submit", notyaml, check=False)
    assert r.returncode == 2 and "not valid YAML/JSON" in r.stderr


def test_a_bad_parser_is_refused_with_the_values_it_may_have(runner, home, tmp_path):
    r = runner.run("submit", "--parser", "yolo", "--", "echo", "hi", check=False, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "runner: parser: given 'yolo'; expected one of generic, none, timm, transformers, ultralytics "
        "(generic: key=value lines become metrics; none: no metrics; a framework: its log format)"), r.stderr
    assert not list((home / "spool").glob("*.json")) if (home / "spool").exists() else True
    for ok in ("ultralytics", "generic", "none"):
        assert runner.run("submit", "--parser", ok, "--", "echo", "hi", cwd=tmp_path).stdout.strip()


_json = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(string.ascii_lowercase, max_size=8), c, max_size=3),
                     max_leaves=8)
_keys = st.sampled_from(["name", "command", "model", "dataset", "train", "env", "resources", "priority", "after", "network",
                         "workdir", "env_vars", "gpus", "epochs", "x"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json, st.dictionaries(_keys, _json, max_size=6)))
def test_fuzzed_specs_are_refused_cleanly_or_valid(data):
    """Any input: either a valid JobSpec or SpecError with one non-empty line per problem."""
    try:
        spec = parse_spec(data)
    except SpecError as e:
        assert e.problems and all(isinstance(p, str) and p and "\n" not in p for p in e.problems)
        assert all(":" in p for p in e.problems)
        return
    assert spec.kind in ("command", "model")
    json.dumps(spec.model_dump())


def test_a_command_jobs_spec_carries_no_model_settings_it_did_not_give(tmp_path):
    """The job page's Spec and `runner show` of a command job show what it was given, not a train
    block of defaults (found by a newcomer: `train: {epochs: 1, pretrained: false, ...}`)."""
    from runner.registry import load
    from runner.resolve import resolve

    reg = load()
    plain = resolve(parse_spec({"command": ["python3", "train.py"], "parser": "generic"}), tmp_path, reg, [])
    assert "train" not in plain and plain["command"] == ["python3", "train.py"]
    given = resolve(parse_spec({"command": ["python3", "train.py"], "train": {"epochs": 3}}), tmp_path, reg, [])
    assert given["train"]["epochs"] == 3
    from runner.synth import make_shapes

    data = make_shapes(tmp_path / "shapes", per_class=2, val_per_class=1)
    model = resolve(parse_spec({"model": "timm/resnet18", "dataset": {"path": str(data)}}), tmp_path, reg, [])
    assert model["train"]["epochs"] >= 1  # a model job keeps its settings, defaults filled
