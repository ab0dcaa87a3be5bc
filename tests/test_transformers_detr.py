"""DETR built from its config (as `runner check` trains it, from scratch) tells its object queries
apart in eval mode: transformers 5.24 initialises them N(0, 0.02), and then its 100 queries gave one
box 100 times in eval mode while dropout's noise told them apart in training (the check's mAP50
0.333 on its own training images). Runs in the transformers env the runner builds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared_envs]

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys, tomllib, torch
from adapters.transformers_adapter import TransformersAdapter
from runner import check as chk
from runner.synth_tasks import make_coco
reg = tomllib.loads(open("registry.toml").read())
model = reg["models"]["transformers"]["facebook/detr-resnet-50"]
sizes = chk.check_sizes(model, reg["frameworks"]["transformers"])
images, ann = make_coco(sys.argv[1], train=9, val=3, easy=True, overfit=True)
a = TransformersAdapter({"framework": "transformers", "task": "object_detection", "model_type": "detr", "model_name": "detr",
                         "input_size": 64, "output_dir": sys.argv[1], "lr": 1e-4, "batch_size": 4, "seed": 0,
                         "dataset": {"path": str(images), "annotations": str(ann)}, "config_overrides": model["config"],
                         "check": {"sizes": sizes}})
a.prepare_dataset(); a.prepare_model()
a.model.eval()
with torch.no_grad():
    out = a.model(pixel_values=a._collate(a.val_ds)["pixel_values"])
print(json.dumps({"logits_spread": out.logits.std(1).mean().item(), "dropout": a.model.config.dropout}))
"""


def test_detr_from_scratch_tells_its_queries_apart_in_eval_mode(runner, home, tmp_path):
    runner.run("envs", "build", "transformers")
    python = next(p for p in sorted((home / "envs").glob("*/bin/python")))
    r = subprocess.run([str(python), "-c", PROBE, str(tmp_path / "coco")], cwd=ROOT, capture_output=True, text=True,
                       env={**runner.env, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # the class scores of its 100 queries differ (N(0, 0.02) queries: ~6e-5, all alike; N(0, 1): ~3e-3)
    assert got["logits_spread"] > 1e-3, got
    assert got["dropout"] == 0.0, got  # its check's own config: training sees what evaluation sees
