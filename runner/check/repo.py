"""A repo's check, judged from its job: its times, its parsed metrics (validation ones by their
names), its checkpoints and its own inference mapped by its table."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from .criteria import LEARNS_FLOOR, judge, status_of

def _span(store, job_id: str, start: str, end_states=("succeeded", "failed", "cancelled")):
    """Seconds from entering `start` to the next transition out of it (or to the end)."""
    ts = store.transitions(job_id)
    t0 = next((t["at"] for t in ts if t["to_state"] == start), None)
    if t0 is None:
        return None
    t1 = next((t["at"] for t in ts if t["at"] >= t0 and t["from_state"] == start), None)
    return None if t1 is None else t1 - t0


def _series(store, job_id: str, name: str) -> list:
    """One metric's values, one per epoch (the last value of each epoch), in epoch order."""
    by_epoch = {}
    for p in store.metrics(job_id, name):
        if p["value"] is not None and math.isfinite(p["value"]):
            by_epoch[p["epoch"] if p["epoch"] is not None else len(by_epoch)] = p["value"]
    return [by_epoch[e] for e in sorted(by_epoch)]


def repo_learns(store, job: dict, sizes: dict) -> dict:
    """The learns check of a repo job, from its parsed metrics and the repo's `check.learns` table
    {metric, at_least?, chance?, loss?}: the held-out metric's last value must reach at_least (the
    loss, where named, is reported beside it). Without at_least, a task other than classification
    takes its task's floor (LEARNS_FLOOR: a segmentation repo's foreground mIoU 0.3, as for the
    frameworks). A table without what it needs fails the check, saying which key."""
    spec = sizes.get("learns")
    crit = repo_criteria(spec, (job.get("spec") or {}).get("task"), ((job.get("spec") or {}).get("dataset") or {}).get("format"))
    if "error" in crit:
        return {"name": "learns", "ok": False, "seconds": None, "error": crit["error"]}
    values = _series(store, job["id"], spec["metric"])
    losses = _series(store, job["id"], spec["loss"]) if spec.get("loss") else []
    detail = {"epochs": len(values) or len(losses), "metric": spec["metric"], "value": values[-1] if values else None, "train_loss": losses}
    return repo_verdict(crit, detail)


def repo_verdict(crit: dict, detail: dict) -> dict:
    """A repo's learns check: its numbers (`detail`: metric, value, train_loss, epochs) judged by
    its criteria (repo_criteria's)."""
    verdict = judge(crit, detail.get("value"), detail.get("train_loss") or [])
    return {"name": "learns", "ok": verdict["ok"], "seconds": None, "reason": "measured over the repo's whole run (train)",
            "detail": {**detail, "loss_drop": verdict["loss_drop"], "criteria": crit}, **({} if verdict["ok"] else {"error": verdict["why"]})}


def repo_criteria(spec, task, fmt) -> dict:
    """A repo's learns thresholds from its `check.learns` table (task: its task_type; fmt: its check
    set's format), or {"error": why} where the table lacks what they need."""
    needs = ("metric",) if task in LEARNS_FLOOR else ("metric", "at_least")
    missing = "check.learns" if not isinstance(spec, dict) else next((f"check.learns.{k}" for k in needs if k not in spec), None)
    if missing:
        return {"error": f"the repo's table has no `{missing}`: learning cannot be judged "
                         '(set check.learns = { metric = "<held-out metric>", at_least = <floor> })'}
    floor = float(spec["at_least"]) if "at_least" in spec else LEARNS_FLOOR[task]
    crit = {"metric": spec["metric"], "at_least": floor}
    if "chance" in spec:
        crit.update(chance=float(spec["chance"]), rule=f"{spec['metric']} >= {floor:g} (chance {spec['chance']})")
    else:
        # a repo's COCO set is one annotations file, which its table maps to training and validation alike
        where = ("on its training images (a repo's COCO set is one annotations file for training and validation: "
                 "it fits them, which is not held out)") if fmt == "coco" else "on the held-out set"
        crit["rule"] = f"{spec['metric']} >= {floor:g} {where}" + ("" if "at_least" in spec else f" ({task}'s floor)")
    return crit


VALIDATION_PREFIXES = ("val_", "test_")


def validation_metrics(metrics: dict, sizes: dict) -> dict:
    """The parsed metrics that are validation ones: named val_*/test_* or listed in the table's
    `check.validation_metrics` (not any name that happens to contain "acc" or "map")."""
    declared = set(sizes.get("validation_metrics") or [])
    return {k: v for k, v in metrics.items() if not k.startswith("file/") and (k.lower().startswith(VALIDATION_PREFIXES) or k in declared)}


def _val_image(spec: dict) -> str | None:
    """One image of the check's dataset that the model was validated on (or trained on)."""
    ds = spec["dataset"]
    root = Path(ds["path"])
    if root.suffix in (".yaml", ".yml"):
        root = root.parent / "images" / "val"
    elif (root / "val").is_dir():
        root = root / "val"
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
            return str(p)
    return None


def repo_infer_check(home, store, registry, jid: str) -> dict:
    """The infer check of a repo job: its table's inference on one image with the checkpoint the
    run wrote (so the checkpoint is reloaded by the repo's own code); n/a when it maps none."""
    from ..repos import infer as repo_infer
    from ..envs import EnvManager

    job = store.get_job(jid)
    name = job["spec"]["model"].split("/", 1)[1]
    if not (registry.get_repo(name).get("infer")):
        return {"name": "infer", "ok": None, "seconds": None, "reason": f"the table maps no inference ([repos.{name}.infer])"}
    if job["state"] != "succeeded":
        return {"name": "infer", "ok": False, "seconds": None, "error": "the run did not succeed"}
    image = _val_image(job["spec"])
    if image is None:
        return {"name": "infer", "ok": False, "seconds": None, "error": f"no image in the check's dataset {job['spec']['dataset']['path']}"}
    t0 = time.time()
    try:
        res = repo_infer.infer(home, store, registry, EnvManager(home.envs, store, home.config.get("envs")), job, [image])[0]
    except Exception as e:  # the report says why; the check goes on
        return {"name": "infer", "ok": False, "seconds": time.time() - t0, "error": str(e)[-3000:]}
    task = res.get("task")
    # what a prediction of each task must hold (a task not listed: any field beside task and checkpoint)
    ok = {"image_classification": res.get("predicted_label_id") is not None or res.get("predicted_label") is not None,
          "object_detection": isinstance(res.get("boxes"), list) and len(res["boxes"]) > 0,
          "semantic_segmentation": isinstance(res.get("masks"), list) and len(res["masks"]) > 0,
          "instance_segmentation": bool(res.get("boxes")) and bool(res.get("masks")),
          "obb_detection": bool(res.get("rotated_boxes")),
          "image_captioning": bool((res.get("caption") or "").strip()),
          "pose_estimation": bool(res.get("keypoints")) and len(res["keypoints"][0]) > 0}.get(
        task, bool(set(res) - {"task", "checkpoint", "image", "warnings", "note"}))
    detail = {"image": os.path.basename(image), "checkpoint": os.path.relpath(res["checkpoint"], job["job_dir"]),
              **{k: res[k] for k in ("predicted_label", "confidence") if k in res},
              **({"boxes": len(res["boxes"])} if "boxes" in res else {}),
              **({"masks": [m.get("label", m.get("label_id")) for m in res["masks"]]} if "masks" in res else {}),
              **({"rotated_boxes": len(res["rotated_boxes"])} if "rotated_boxes" in res else {}),
              **({"caption": res["caption"]} if "caption" in res else {}),
              **({"people": len(res["keypoints"]), "keypoints": len(res["keypoints"][0]) if res["keypoints"] else 0} if "keypoints" in res else {})}
    if res.get("warnings"):  # records that mapped to nothing fail the check, whatever else mapped
        return {"name": "infer", "ok": False, "seconds": time.time() - t0, "detail": detail,
                "error": "the repo's inference gave records that map to nothing: " + "; ".join(res["warnings"])}
    return {"name": "infer", "ok": ok, "seconds": time.time() - t0, "detail": detail,
            **({} if ok else {"error": f"the repo's inference gave no {task} prediction: {json.dumps(res)[:500]}"})}


def _reloaded(ckpts: list, infer: dict | None) -> dict:
    """The checkpoint check of a repo: its files found, and reloaded by the table's inference."""
    if not ckpts:
        return {"ok": False, "error": "no checkpoint matched the repo's globs"}
    if not infer or infer.get("ok") is None:
        return {"ok": None, "reason": "files written and found; no inference mapped to reload them"}
    if infer["ok"]:
        return {"ok": True, "reason": "reloaded by the repo's own inference (infer)"}
    return {"ok": False, "error": "the repo's inference could not use it: " + str(infer.get("error"))[:500]}


def repo_checks(store, job: dict, sizes: dict, infer: dict | None = None) -> dict:
    """A repo runs its own script: the checks are read off the job. load: the time spent preparing
    it (checkout, env, import check); train: the script's run, validation included; validate: the
    validation metrics parsed from its log; checkpoint: the files its globs found, reloaded by the
    table's inference when it maps one; infer: the table's inference on one image
    (repo_infer_check); learns: from the parsed metrics."""
    went = [t["to_state"] for t in store.transitions(job["id"])]
    started = "running" in went
    succeeded = job["state"] == "succeeded"
    err = None if succeeded else f"job {job['state']} ({job['reason']}): {(job.get('log_tail') or job.get('note') or '')[-1500:]}"
    metrics = store.latest_metrics(job["id"])
    val = validation_metrics(metrics, sizes)
    arts = store.artifacts(job["id"])
    ckpts = [{"path": os.path.relpath(a["path"], job["job_dir"]), "bytes": a["size"]} for a in arts]
    run = (job["finished_at"] - job["started_at"]) if job.get("finished_at") and job.get("started_at") else None
    checks = [
        {"name": "load", "ok": started, "seconds": _span(store, job["id"], "preparing"),
         "detail": {"what": "checkout, env, import check (time in preparing)"}, **({} if started else {"error": err})},
        {"name": "train", "ok": succeeded, "seconds": run, "detail": {"what": "the script's whole run, its validation included"},
         **({} if succeeded else {"error": err})},
        {"name": "validate", "ok": bool(val), "seconds": None, "reason": "validation runs inside the script; its time is part of train",
         "detail": val, **({} if val else {"error": "no validation metric (val_*, test_* or check.validation_metrics) parsed from the log"})},
        {"name": "checkpoint", **_reloaded(ckpts, infer), "seconds": None, "detail": ckpts[:4]},
        infer or {"name": "infer", "ok": None, "seconds": None, "reason": "the table maps no inference"},
        repo_learns(store, job, sizes) if succeeded else {"name": "learns", "ok": False, "seconds": None, "error": "the run did not succeed"},
    ]
    return {"checks": checks, "status": status_of(checks), "task": job["spec"].get("task")}
