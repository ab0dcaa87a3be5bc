"""Transformers through the same contract: four tasks trained for real through the daemon with
HF_HUB_OFFLINE=1 and models built from their configs; resume; inference; the schema at submit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_oom_policy
from runner.synth import make_shapes
from runner.synth_tasks import make_captions, make_coco, make_masks

pytestmark = [pytest.mark.slow,
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)

# Small configs keep a 2-core CPU run short; the registry's own configs are the real architectures
# (`runner check --framework transformers` builds those).
SMALL_VIT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
SMALL = {"google/vit-base-patch16-224": SMALL_VIT,
         "facebook/detr-resnet-50": {"use_timm_backbone": True, "backbone": "resnet18", "use_pretrained_backbone": False,
                                     "num_queries": 10, "d_model": 64, "encoder_layers": 1, "decoder_layers": 1,
                                     "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                                     "encoder_ffn_dim": 128, "decoder_ffn_dim": 128},
         "Salesforce/blip-image-captioning-base": {"text": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                                            "intermediate_size": 128},
                                                   "vision": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                                              "intermediate_size": 128}}}


def _reloaded_in_a_fresh_process(m):
    """The checkpoint check's real reload: the model at the end of training, loaded in another
    process, predicts the same on its fixed images (adapters.base.prediction_difference)."""
    rl = {c["name"]: c for c in m["checks"]}["checkpoint"]["detail"]["reload"]
    assert rl["images"] >= 1 and rl["numbers"] > 0 and rl["max_difference"] <= rl["tolerance"] == 1e-3 and rl["fresh_process_seconds"] > 0, (m["model"], rl)
    assert rl["epoch"] == {c["name"]: c for c in m["checks"]}["learns"]["detail"]["epochs"]


def _site(home, overrides: dict):
    from runner import sitereg

    for name, cfg in overrides.items():
        sitereg.put(home / "registry.toml", f'models.transformers."{name}"', {"config": cfg})


def datasets(tmp_path):
    images, ann = make_coco(tmp_path / "coco", train=6, val=2)
    return {
        "google/vit-base-patch16-224": {"path": str(make_shapes(tmp_path / "cls", per_class=6, val_per_class=3)), "format": "imagefolder"},
        "facebook/detr-resnet-50": {"path": str(images), "annotations": str(ann), "format": "coco"},
        "nvidia/segformer-b0-finetuned-ade-512-512": {"path": str(make_masks(tmp_path / "masks")), "format": "masks"},
        "Salesforce/blip-image-captioning-base": {"path": str(make_captions(tmp_path / "captions")), "format": "captions"},
    }


def test_four_tasks_train_resume_and_infer(runner, daemon, home, tmp_path):
    _site(home, SMALL)  # (SegFormer-B0 is small already)
    expected = {"google/vit-base-patch16-224": ("image_classification", {"val_accuracy", "val_top5"}, "top5_predictions"),
                "facebook/detr-resnet-50": ("object_detection", set(), "boxes"),
                "nvidia/segformer-b0-finetuned-ade-512-512": ("semantic_segmentation", {"val_mean_iou", "val_pixel_accuracy"}, "masks"),
                "Salesforce/blip-image-captioning-base": ("image_captioning", {"val_bleu"}, "caption")}
    ids = {}
    for name, ds in datasets(tmp_path).items():
        spec = tmp_path / f"{name.split('/')[1]}.json"
        spec.write_text(json.dumps({"model": f"transformers/{name}", "dataset": ds,
                                    "train": {"epochs": 2, "batch_size": 4, "lr": 0.0001, "input_size": 64}}))
        ids[name] = runner.submit(spec)
    for name, jid in ids.items():
        task, metrics, field = expected[name]
        job = runner.wait_state(jid, timeout=1200)
        assert job["state"] == "succeeded", job.get("log_tail")
        assert {"train_loss", "val_loss", "lr", "epoch_time"} | metrics <= set(job["metrics"]), job["metrics"]
        from runner.store import Store

        epochs = [m["epoch"] for m in Store(home / "runner.db").metrics(job["id"], "val_loss")]
        assert epochs == [1, 2]
        arts = [a["path"] for a in job["artifacts"]]
        assert any(a.endswith("checkpoints/best/model.safetensors") for a in arts)
        assert (Path(arts[0]).parent / "config.json").exists()  # save_pretrained form
        img = next(p for p in Path(datasets_root(tmp_path, name)).rglob("*.png") if p.parent.name != "masks")
        out = json.loads(runner.run("infer", jid, img).stdout)
        assert out["task"] == task and field in out, out
    # resume the classifier from its Trainer checkpoint for one more epoch
    vit = runner.show(ids["google/vit-base-patch16-224"])
    ckpt = sorted((Path(vit["job_dir"]) / "hf").glob("checkpoint-*"))[-1]
    spec = tmp_path / "resume.json"
    spec.write_text(json.dumps({"model": "transformers/google/vit-base-patch16-224", "dataset": datasets(tmp_path)["google/vit-base-patch16-224"],
                                "train": {"epochs": 3, "batch_size": 4, "input_size": 64, "resume": str(ckpt)}}))
    r = runner.wait_state(runner.submit(spec), timeout=600)
    log = runner.run("logs", r["id"]).stdout
    assert r["state"] == "succeeded" and "resumed from" in log
    assert "missing keys in the checkpoint" not in log  # ViT's weights came back (the Trainer's own loading misses their renamed layers)
    assert "[metrics] epoch=3/3" in log and "[metrics] epoch=1/3" not in log


def datasets_root(tmp_path, name):
    return {"google/vit-base-patch16-224": tmp_path / "cls" / "val", "facebook/detr-resnet-50": tmp_path / "coco" / "images",
            "nvidia/segformer-b0-finetuned-ade-512-512": tmp_path / "masks" / "val" / "images",
            "Salesforce/blip-image-captioning-base": tmp_path / "captions" / "val"}[name]


def test_schema_rejects_out_of_range_at_submit(runner, home, tmp_path):
    ds = make_shapes(tmp_path / "cls", per_class=2, val_per_class=1)
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"model": "transformers/google/vit-base-patch16-224", "dataset": {"path": str(ds)},
                                "train": {"warmup_ratio": 1.5, "lr_scheduler_type": "exotic"}}))
    r = runner.run("submit", spec, check=False)
    assert r.returncode == 2
    assert "train.warmup_ratio: given 1.5; expected <= 1.0" in r.stderr
    assert "train.lr_scheduler_type: given 'exotic'; expected one of linear, cosine, constant" in r.stderr
    spec.write_text(json.dumps({"model": "transformers/facebook/detr-resnet-50", "dataset": {"path": str(ds), "format": "imagefolder"}}))
    assert "expected 'coco' for object_detection" in runner.run("submit", spec, check=False).stderr


def test_check_two_transformers_models_learn(runner, tmp_path):
    out = tmp_path / "check"
    r = runner.run("check", "transformers/google/vit-base-patch16-224", "transformers/nvidia/segformer-b0-finetuned-ade-512-512",
                   "--out", out, check=False)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["success"] == 2 and report["summary"]["learns"] == 2, r.stdout + r.stderr
    by = {m["model"]: {c["name"]: c for c in m["checks"]} for m in report["models"]}
    vit = by["transformers/google/vit-base-patch16-224"]
    assert vit["validate"]["detail"]["val_accuracy"] is not None and vit["validate"]["seconds"] > 0  # evaluated, not cached
    assert vit["learns"]["detail"]["value"] >= 0.58
    seg = by["transformers/nvidia/segformer-b0-finetuned-ade-512-512"]["learns"]["detail"]
    assert seg["metric"] == "val_mean_iou_fg" and seg["value"] > 0 and seg["loss_drop"] >= 0.2
    # its shuffled-label control (each training image given another's mask) ran and stayed below the floor
    assert seg["control"]["job"] and seg["control"]["value"] is not None and seg["control"]["reached"] is False, seg
    assert "with a control for semantic_segmentation" in report["criteria"][1]
    for m in report["models"]:
        _reloaded_in_a_fresh_process(m)


@pytest.mark.skipif("not config.getoption('--full-checks')", reason="every Transformers model: run with --full-checks (about an hour with the rest)")
def test_check_every_transformers_model(runner, tmp_path):
    out = tmp_path / "check"
    runner.run("check", "--framework", "transformers", "--out", out, check=False)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["total"] == 5 and [m["model"] for m in report["models"] if m["status"] == "failed" or len(m["checks"]) != 6
                                                                  or not all(c["ok"] for c in m["checks"][:5])] == []


@pytest.mark.parametrize("auto", [True, False])
def test_oom_is_reported_and_auto_batch_size_retries_once_with_half(runner, daemon, home, tmp_path, auto):
    _site(home, {"google/vit-base-patch16-224": SMALL_VIT})
    spec = tmp_path / "oom.json"
    spec.write_text(json.dumps({"model": "transformers/google/vit-base-patch16-224",
                                "dataset": {"path": str(make_shapes(tmp_path / "cls", per_class=4, val_per_class=2)), "format": "imagefolder"},
                                "train": {"epochs": 1, "batch_size": 8, "input_size": 32, "auto_batch_size": auto},
                                "env_vars": {"FAULT_OOM_ABOVE_BATCH": "4"}}))
    assert_oom_policy(runner, spec, auto)
