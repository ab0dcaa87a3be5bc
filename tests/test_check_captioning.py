"""BLIP's captioning floor means learning: a caption that ignores the image stays below it on
the check's own validation captions, which share a template ("a <shape> in the <top|bottom>
<left|right>"), so BLEU rewards the template alone. Pure: the check's data and adapters.base's BLEU."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from adapters.base import bleu
from runner import check as chk
from runner import synth_tasks

ROOT = Path(__file__).resolve().parent.parent
BLIP = "Salesforce/blip-image-captioning-base"
POSITIONS = [f"{v} {h}" for v in ("top", "bottom") for h in ("left", "right")]


def _val_captions(tmp_path) -> tuple:
    """BLIP's check: its validation captions and the floor it is judged by."""
    reg = tomllib.loads((ROOT / "registry.toml").read_text())
    model = {**reg["models"]["transformers"][BLIP], "task_type": "image_captioning"}
    sizes = chk.check_sizes(model, reg["frameworks"]["transformers"])
    path, fmt = synth_tasks.make("captions", model, sizes, tmp_path)
    assert fmt == "captions"
    refs = [json.loads(ln)["caption"] for ln in (path / "val" / "captions.jsonl").read_text().splitlines() if ln.strip()]
    return refs, chk.learns_criteria("val_bleu", None, sizes, "image_captioning")["at_least"]


def test_a_caption_that_ignores_the_image_stays_below_the_floor(tmp_path):
    refs, floor = _val_captions(tmp_path)
    # the best one caption for every image: what a run that learnt the captions but not the images reaches at most
    blind = max(bleu(refs, [f"a {s} in the {p}"] * len(refs)) for s in synth_tasks.NAMES for p in POSITIONS)
    # the template right, the shape and the place wrong
    def other(ref):
        words = ref.split()
        shape = synth_tasks.NAMES[(synth_tasks.NAMES.index(words[1]) + 1) % len(synth_tasks.NAMES)]
        return f"a {shape} in the " + next(p for p in POSITIONS if p != " ".join(words[4:]))
    template = bleu(refs, [other(r) for r in refs])
    assert template < blind < floor - 10, (template, blind, floor)
    assert bleu(refs, refs) == 100.0 >= floor
    # any captioning model's check has these captions: the task's own floor (no learns_floor) is above them too
    assert blind < chk.LEARNS_FLOOR["image_captioning"] - 10, (blind, chk.LEARNS_FLOOR)


def test_a_control_that_reaches_the_floor_names_why():
    learns = {"name": "learns", "ok": True, "detail": {"metric": "val_bleu", "value": 80.0,
                                                       "criteria": {"metric": "val_bleu", "at_least": 65.0}}}
    out = chk.with_control(learns, {"detail": {"value": 70.0}}, "c1")
    assert out["ok"] is False and out["detail"]["control"]["reached"] is True
    assert "the captions' template" in out["error"] and "raise the floor" in out["error"], out["error"]
    assert chk.with_control(learns, {"detail": {"value": 50.0}}, "c1").get("error") is None
