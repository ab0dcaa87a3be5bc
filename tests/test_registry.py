"""The registry: every model carries the plan's fields; filters; a site registry merges over it."""

from __future__ import annotations

import pytest

from runner.registry import MODEL_FIELDS, TASK_TYPES, Registry, load

REG = load()


@pytest.mark.parametrize("ref", sorted(REG.models))
def test_model_metadata_is_complete(ref):
    m = REG.get_model(ref)
    missing = [f for f in MODEL_FIELDS if m.get(f) in (None, "")]
    assert not missing, f"{ref} lacks {missing}"
    assert m["task_type"] in TASK_TYPES
    if m["framework"] != "repo":
        assert m["framework"] in REG.frameworks


def test_plan_models_are_listed():
    timm = {m["model_name"] for m in REG.list_models(framework="timm")}
    assert timm == {"resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "vgg19", "efficientnet_b0", "efficientnet_b1",
                    "efficientnet_b4", "vit_base_patch16_224", "vit_large_patch16_224", "mobilenetv3_large_100", "mobilenetv3_small_100"}


def test_filters():
    assert [m["ref"] for m in REG.list_models("resnet1*", framework="timm")] == ["timm/resnet101", "timm/resnet18"]
    assert all("mobile" in m["tags"] for m in REG.list_models(tags=["mobile"]))
    assert REG.list_models(task="image_classification", tags=["vit", "large"])[0]["ref"] == "timm/vit_large_patch16_224"


def test_site_registry_merges_over_packaged(tmp_path):
    site = tmp_path / "registry.toml"
    site.write_text('[models.timm.resnet18]\nrecommended_lr = 0.5\n[models.timm.convnext_tiny]\ndisplay_name = "ConvNeXt-T"\n'
                    'task_type = "image_classification"\n')
    from runner.registry import PACKAGED

    r = Registry([PACKAGED, site])
    assert r.get_model("timm/resnet18")["recommended_lr"] == 0.5
    assert r.get_model("timm/resnet18")["display_name"] == "ResNet-18"
    assert r.get_model("timm/convnext_tiny")["display_name"] == "ConvNeXt-T"


def test_models_cli_and_http(runner, daemon):
    rows = runner.json("models", "--framework", "timm", "--tags", "efficientnet")
    assert [r["ref"] for r in rows] == ["timm/efficientnet_b0", "timm/efficientnet_b1", "timm/efficientnet_b4"]
    status, body = daemon.get("/models?framework=timm&tags=vgg")
    assert [m["model_name"] for m in body["models"]] == ["vgg16", "vgg19"]
    assert daemon.get("/models/timm/resnet50")[1]["params"] == 25_600_000
    status, body = daemon.get("/models/timm/nope")
    assert status == 404 and "not in the registry" in body["error"]
    status, body = daemon.get("/frameworks/timm/schema")
    assert {f["name"] for f in body["fields"]} >= {"epochs", "lr", "optimizer", "weight_decay"}
    schema = runner.json("schema", "timm")
    assert schema == body
