"""What the check judges and by what thresholds: its six checks, when a model learns (chance plus
a margin, or its task's floor), the shuffled-label control that must stay below, a model's status."""

from __future__ import annotations

import math
from typing import Optional

CHECKS = ("load", "train", "validate", "checkpoint", "infer", "learns")


LEARNS_MARGIN = 0.25
"""Classification learns when validation accuracy >= 1/classes + this (chance plus 25 points)."""
LEARNS_FLOOR = {"object_detection": 0.3, "obb_detection": 0.3, "instance_segmentation": 0.2, "pose_estimation": 0.3,
                "semantic_segmentation": 0.3, "image_captioning": 65.0}
"""Other tasks learn when the task's main held-out metric reaches this floor: mAP50 (boxes, masks,
keypoints), foreground mIoU, BLEU (0-100). Set below what every model of the task reaches from
scratch on the easy set within its check (the committed reports, AMD EPYC host: mAP50 boxes
0.36-0.73, masks 0.30-0.73, keypoints 0.34-0.85, OBB 0.995; SegFormer-B0 mIoU 0.58) and above what
its shuffled-label control reaches: boxes, keypoints and OBB below 0.08, mIoU 0.01; masks up to 0.10 (YOLOv8n-seg's control on an Intel Xeon host, 0.0016 for the
same seeded run on an AMD EPYC one: a mask model that learns where objects are but not which class
they are still scores a third of them right by chance), hence 0.2 and not the 0.1 it was.
Captioning's is set above what a caption that ignores the image scores on the check's own captions,
which share a template ("a <shape> in the <top|bottom> <left|right>"): one caption for every image
already scores BLEU ~51, the template with shape and place wrong ~17 (tests/test_check_captioning.py;
BLIP reaches 70.6). A check table's `learns_floor` overrides it."""
DEFAULT_FLOOR = 0.3


def learns_criteria(metric: str, classes: Optional[int], sizes: dict, task: Optional[str] = None) -> dict:
    """The thresholds of the learns check, as the report states them."""
    if classes:
        at_least = min(1.0, 1.0 / classes + float(sizes.get("learns_margin", LEARNS_MARGIN)))
        return {"metric": metric, "at_least": round(at_least, 4), "chance": round(1.0 / classes, 4),
                "rule": f"{metric} >= {at_least:.2f} (chance 1/{classes} + {float(sizes.get('learns_margin', LEARNS_MARGIN)):.2f})"}
    floor = float(sizes.get("learns_floor", LEARNS_FLOOR.get(task or "", DEFAULT_FLOOR)))
    where = (f"on its training images (the check fits a fixed small set: {sizes['overfit']})" if sizes.get("overfit")
             else "on the held-out set")
    return {"metric": metric, "at_least": floor, "rule": f"{metric} >= {floor:g} {where}"}


def judge(crit: dict, value, losses: list) -> dict:
    """Whether the held-out metric reaches the floor; why not, in one line. The training loss's
    drop is reported beside it, not judged: a loss can fall by memorising."""
    first, last = (losses[0], losses[-1]) if losses else (None, None)
    drop = (1.0 - last / first) if first and last is not None and math.isfinite(first) and math.isfinite(last) and first > 0 else None
    if value is None or not math.isfinite(float(value)):
        return {"ok": False, "loss_drop": drop, "why": f"no {crit['metric']} after training"}
    ok = value >= crit["at_least"]
    chance = f" (chance {crit['chance']:.4g})" if crit.get("chance") is not None else ""
    return {"ok": ok, "loss_drop": drop, "why": None if ok else f"{crit['metric']} {value:.4g} < {crit['at_least']:.4g}{chance}"}


def judge_learns(c: dict, sizes: dict, task: Optional[str] = None) -> dict:
    """An adapter's learns numbers with the verdict and the thresholds filled in. Never n/a: an
    adapter that did not run the step fails it, with its reason."""
    if c.get("ok") is None and c.get("verdict") != "pending":
        return {**{k: v for k, v in c.items() if k != "reason"}, "ok": False,
                "error": f"learns was not run: {c.get('reason') or 'no reason given'}"}
    if c.get("verdict") != "pending":
        return c
    d = dict(c["detail"])
    crit = learns_criteria(d["metric"], d.get("classes"), sizes, task)
    v = judge(crit, d.get("value"), d.get("train_loss") or [])
    d.update(criteria=crit, loss_drop=v["loss_drop"])
    out = {k: val for k, val in c.items() if k != "verdict"}
    return {**out, "ok": v["ok"], "detail": d, **({} if v["ok"] else {"error": v["why"]})}


def with_control(learns: dict, control: Optional[dict], control_job: Optional[str] = None) -> dict:
    """The learns check with its shuffled-label control beside it: it passes only if the real run
    reached the threshold and the control (same run, training labels shuffled) did not. control:
    the control run's judged learns check (None: the control job wrote none)."""
    d = dict(learns.get("detail") or {})
    if control is None or not control.get("detail") or control["detail"].get("value") is None:
        why = (control or {}).get("error") or "the control job wrote no learns numbers"
        d["control"] = {"job": control_job, "value": None, "reached": None}
        return {**learns, "ok": False, "detail": d, "error": f"the shuffled-label control gave no value ({why}): learning is not shown"}
    value = control["detail"]["value"]
    crit = d.get("criteria") or control["detail"].get("criteria") or {}
    reached = crit.get("at_least") is not None and value >= crit["at_least"]
    d["control"] = {"job": control_job, "value": value, "reached": reached, "train_loss": control["detail"].get("train_loss")}
    if reached:
        return {**learns, "ok": False, "detail": d,
                "error": f"the shuffled-label control also reached {d.get('metric')} {value:.4g} >= {crit['at_least']:.4g}: "
                         "the check cannot tell learning from chance here: a run that never saw which label goes with which "
                         "image reaches it too, from what all labels share (the most frequent class, the captions' template) "
                         "or by luck on a small validation set (raise the floor above that, or give more validation images)"}
    return {**learns, "detail": d}


def status_of(checks: list) -> str:
    """success: all six checks ok or n/a, learns ok (never n/a); failed: none ok; else partial."""
    counted = [c for c in checks if c["ok"] is not None]
    n_ok = sum(bool(c["ok"]) for c in counted)
    learned = any(c["name"] == "learns" and c["ok"] for c in checks)
    return "success" if len(checks) == len(CHECKS) and n_ok == len(counted) and learned else ("failed" if n_ok == 0 else "partial")


CONTROL_FORMATS = ("imagefolder", "yolo", "coco", "masks", "captions")
"""The check sets that have a shuffled-label control (checkdata.control_dataset); a repo's COCO set
has none (it validates on its training images)."""


def has_control(model: str, fmt: str | None, sizes: dict | None = None) -> bool:
    """Whether a model's check set has a shuffled-label control (checkdata.control_dataset): not a
    repo's COCO set, nor a check that fits its training images (`check.overfit`), where a control
    that memorised its shuffled labels would score as well as a run that learned."""
    return fmt in CONTROL_FORMATS and not (fmt == "coco" and str(model).startswith("repo/")) and not (sizes or {}).get("overfit")
