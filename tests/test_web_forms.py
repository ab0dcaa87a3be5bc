"""The submit form without a browser: per-task dataset formats, every shown value written into the
spec (and so into the YAML beside the form), secrets hidden in that YAML, the more box, and clone
values that give back the job they came from."""

from __future__ import annotations

import pytest

from runner.registry import load
from runner.spec import parse_spec
from runner.web import forms, submitform

REG = load()


def form(ref):
    model = REG.get_model(ref)
    return model, forms.fields_for(model, REG)


@pytest.mark.parametrize("ref,usual", [
    ("ultralytics/yolov8n", "yolo"), ("ultralytics/yolov8n-seg", "yolo"), ("ultralytics/yolov8n-cls", "imagefolder"),
    ("transformers/facebook/detr-resnet-50", "coco"), ("transformers/google/vit-base-patch16-224", "imagefolder"),
    ("transformers/nvidia/segformer-b0-finetuned-ade-512-512", "masks"),
    ("transformers/Salesforce/blip-image-captioning-base", "captions"),
    ("timm/resnet18", "imagefolder"), ("repo/yolov7", "yolo"),
])
def test_the_dataset_format_defaults_to_the_models_task_usual_one(ref, usual):
    model, fields = form(ref)
    fmt = next(f for f in fields if f["name"] == "dataset.format")
    assert fmt["default"] == usual and fmt["options"][0] == usual
    spec, problems = forms.spec_from(model, fields, {})
    assert spec["dataset"]["format"] == usual and problems == []


@pytest.mark.parametrize("ref", sorted(REG.models))
def test_every_value_a_fresh_form_shows_is_in_its_spec_and_the_spec_is_valid(ref):
    from runner.resolve import check_settings, framework_schema

    model, fields = form(ref)
    spec, problems = forms.spec_from(model, fields, {"dataset.path": "/data/x"})
    assert problems == []
    flat = dict(forms._leaves(spec))
    for f in fields:
        shown = forms.shown_value(f, {}, posted=False)
        if shown is not None and f["type"] != "text":
            assert flat[f["name"]] == shown, f["name"]
    if model["framework"] != "repo":  # the schema's defaults are its own valid values
        assert check_settings(spec["train"], framework_schema(model["framework"])) == []
        assert spec["train"]["epochs"] == next(f["default"] for f in fields if f["name"] == "train.epochs")
    parse_spec(spec)


def test_a_posted_form_writes_what_it_shows_unticked_boxes_false_cleared_fields_absent():
    model, fields = form("timm/resnet18")
    posted = {"posted": "1", "dataset.path": "/d", "dataset.format": "imagefolder", "train.epochs": "3", "train.lr": "",
              "train.batch_size": " 8 ", "resources.memory_gb": "2.5", "resources.time_limit": "600", "resources.gpus": ""}
    spec, problems = forms.spec_from(model, fields, posted)
    assert problems == []
    assert spec["train"]["epochs"] == 3 and spec["train"]["batch_size"] == 8 and "lr" not in spec["train"]
    assert spec["train"]["pretrained"] is False and spec["train"]["amp"] is False  # unticked: false, as shown
    assert spec["resources"] == {"memory_gb": 2.5, "time_limit": 600.0}  # GPUs cleared: not written
    assert spec["train"]["optimizer"] == "adamw"  # a field the post left out shows its default: written


def test_env_vars_are_hidden_in_the_yaml_and_a_name_without_a_value_is_refused():
    target, fields = forms.COMMAND_TARGET, forms.command_fields()
    values = {"posted": "1", "command": "python train.py", "env": "system", "env_vars.0.name": "API_KEY",
              "env_vars.0.value": "hunter2", "env_vars.1.name": "", "env_vars.1.value": ""}
    shown, _ = forms.spec_from(target, fields, values, hide_secrets=True)
    sent, problems = forms.spec_from(target, fields, values)
    assert shown["env_vars"] == {"API_KEY": "<hidden>"} and sent["env_vars"] == {"API_KEY": "hunter2"} and problems == []
    assert {k: v for k, v in shown.items() if k != "env_vars"} == {k: v for k, v in sent.items() if k != "env_vars"}
    _, problems = forms.spec_from(target, fields, {**values, "env_vars.0.value": ""})
    assert problems == ["env_vars.API_KEY: no value; enter it (values are never sent back to a page, so a cloned or refused form "
                        "needs them again)"]
    _, problems = forms.spec_from(target, fields, {**values, "env_vars.1.value": "x"})
    assert problems == ["env_vars.1: a value without a name; give its name"]


def test_the_more_box_adds_fields_and_refuses_those_the_form_has():
    target, fields = forms.COMMAND_TARGET, forms.command_fields()
    base = {"posted": "1", "command": "true", "env": "system"}
    spec, problems = forms.spec_from(target, fields, {**base, "more": "network: false\ncheckpoints: ['out/*.pt']\nresources: {gpu_ids: [1]}"})
    assert problems == [] and spec["network"] is False and spec["checkpoints"] == ["out/*.pt"]
    assert spec["resources"] == {"gpus": 0, "gpu_ids": [1]}
    _, problems = forms.spec_from(target, fields, {**base, "more": "priority: 5\nenv_vars: {A: b}"})
    assert problems == ["more: priority is set by its field 'priority' above; give it there",
                        "more: env_vars is set by the env_vars rows; give it there"]
    _, problems = forms.spec_from(target, fields, {**base, "more": "[1, 2"})
    assert len(problems) == 1 and problems[0].startswith("more: ")
    spec, problems = forms.spec_from(target, fields, {**base, "env": "inline", "more": "env: {requirements: [six==1.16.0]}"})
    assert problems == [] and spec["env"] == {"requirements": ["six==1.16.0"]}


def test_clone_values_give_back_the_job_they_came_from():
    # a command job as the store keeps it (resolved: defaults filled, env_vars values hidden)
    stored = parse_spec({"name": "cmd", "command": ["python3", "train.py", "--name", "a b"], "workdir": "/home/a/w", "env": "system",
                         "env_vars": {"API_KEY": "<hidden>"}, "resources": {"memory_gb": 4.0, "time_limit": 600.0},
                         "checkpoints": ["out/*.pt"], "network": True, "priority": 3}).model_dump(exclude_none=True)
    fields = forms.command_fields()
    values = submitform.clone_values(fields, stored, REG)
    assert values["command"] == "python3 train.py --name 'a b'" and values["workdir"] == "/home/a/w"
    assert values["env_vars.0.name"] == "API_KEY" and values["env_vars.0.value"] == ""  # to enter again
    assert values["more"] == "checkpoints:\n- out/*.pt\n"  # network true is a command's default: not repeated
    spec, problems = forms.spec_from(forms.COMMAND_TARGET, fields, {**values, "env_vars.0.value": "hunter2"})
    assert problems == []
    assert spec == {"name": "cmd", "priority": 3, "command": "python3 train.py --name 'a b'", "workdir": "/home/a/w", "env": "system",
                    "resources": {"gpus": 0, "memory_gb": 4.0, "time_limit": 600.0}, "env_vars": {"API_KEY": "hunter2"},
                    "checkpoints": ["out/*.pt"]}


def test_a_model_clone_keeps_its_settings_and_what_the_form_has_no_field_for():
    model, fields = form("ultralytics/yolov8n")
    stored = parse_spec({"model": "ultralytics/yolov8n", "dataset": {"path": "/d/data.yaml", "format": "yolo"}, "env": "ultralytics",
                         "train": {"epochs": 2, "input_size": 64, "mosaic": 0.0, "pretrained": False}, "network": False,
                         "after": ["abc123"]}).model_dump(exclude_none=True)
    values = submitform.clone_values(fields, stored, REG)
    assert values["train.epochs"] == 2 and values["train.mosaic"] == 0.0 and values["dataset.format"] == "yolo"
    assert values["more"] == "after:\n- abc123\n"  # env and network are what resolve gives it anyway
    spec, problems = forms.spec_from(model, fields, values)
    assert problems == [] and spec["after"] == ["abc123"] and spec["train"]["epochs"] == 2 and spec["train"]["batch_size"] == 16


def test_clone_is_for_whoever_may_see_the_spec():
    from types import SimpleNamespace

    stored = {"id": "a1", "seq": 4, "user": "root"}
    spooled = {"id": "b2", "seq": None, "user": "root"}  # still in the spool: its owner's and root's alone
    someone = SimpleNamespace(uid=54321)
    assert submitform.may_clone(None, stored) and submitform.may_clone(someone, stored)  # its page shows the spec to all
    assert submitform.may_clone(SimpleNamespace(uid=0), spooled)
    assert not submitform.may_clone(someone, spooled) and not submitform.may_clone(None, spooled)


@pytest.mark.parametrize("ref", ["timm/resnet18", "ultralytics/yolov8n", "transformers/google/vit-base-patch16-224"])
def test_each_settings_group_is_one_heading_with_its_everyday_fields_first(ref):
    """The form's headings come from runs of one group: each group's fields together, so a heading
    appears once (a newcomer saw "training" five times), the advanced ones after the everyday ones."""
    _, fields = form(ref)
    groups = [f["group"] for f in fields if f["name"].startswith("train.")]
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert len(runs) == len(set(runs)), runs
    for g in set(groups):
        adv = [bool(f.get("advanced")) for f in fields if f["name"].startswith("train.") and f["group"] == g]
        assert adv == sorted(adv), g
