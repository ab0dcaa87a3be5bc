"""`runner check`: the plugin check matrix, run through the daemon like any job.

For each model: a tiny generated (easy) dataset, then one job that loads the model, trains one
epoch, validates, saves and reloads a checkpoint, runs inference, and trains on to the check's
`learns_epochs` to show that the model learns (beats chance by the thresholds the report states).
The adapter writes check.json; a repo's script is judged from its job (times, parsed metrics,
checkpoints). This module gathers them into the report (Markdown and JSON) with the commit, date,
machine and command that made it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Optional

CHECKS = ("load", "train", "validate", "checkpoint", "infer", "learns")


def check_sizes(model: dict, framework: dict) -> dict:
    """A model's check table: its framework's, then its own."""
    return {**framework.get("check", {}), **model.get("check", {})}


def check_spec(model: dict, framework: dict, data_dir: Path, fmt: str) -> dict:
    """The job spec of one model's check (sizes from the framework's and model's check tables)."""
    sizes = check_sizes(model, framework)
    train = {"epochs": int(sizes.get("epochs", 1)) if model.get("framework") == "repo" else 1, "pretrained": False}
    for k in ("batch_size", "input_size", "lr", "optimizer"):
        if sizes.get(k) is not None:
            train[k] = sizes[k]
    # check.train: further settings of the model's recipe (any of its framework's `train:` settings,
    # checked like a job's), e.g. { precise_bn = true, warmup_epochs = 1 }
    train.update({k: v for k, v in (sizes.get("train") or {}).items() if k not in ("epochs", "pretrained")})
    dataset = {"path": str(data_dir), "format": fmt}
    if fmt == "coco":
        dataset["annotations"] = str(Path(data_dir).parent / "annotations.json")
    return {"name": f"check-{model['model_name']}".replace("/", "_")[:100], "model": model["ref"], "task": model.get("task_type"),
            "dataset": dataset, "train": train, "check": {"sizes": sizes}}


LEARNS_MARGIN = 0.25
"""Classification learns when validation accuracy >= 1/classes + this (chance plus 25 points)."""
LEARNS_FLOOR = {"object_detection": 0.3, "obb_detection": 0.3, "instance_segmentation": 0.1, "pose_estimation": 0.3,
                "semantic_segmentation": 0.3, "image_captioning": 20.0}
"""Other tasks learn when the task's main held-out metric reaches this floor: mAP50 (boxes, masks,
keypoints), foreground mIoU, BLEU (0-100). Set from what the smallest model of each task reaches
from scratch on the easy set within the check (YOLOv8n: box 0.48, mask 0.12, pose 0.80, OBB 0.91;
SegFormer-B0 mIoU 0.58; BLIP BLEU 53), far above what boxes or masks placed by chance score (~0).
A check table's `learns_floor` overrides it."""
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
                         "the check cannot tell learning from chance here (more validation images?)"}
    return {**learns, "detail": d}


def status_of(checks: list) -> str:
    """success: all six checks ok or n/a, learns ok (never n/a); failed: none ok; else partial."""
    counted = [c for c in checks if c["ok"] is not None]
    n_ok = sum(bool(c["ok"]) for c in counted)
    learned = any(c["name"] == "learns" and c["ok"] for c in checks)
    return "success" if len(checks) == len(CHECKS) and n_ok == len(counted) and learned else ("failed" if n_ok == 0 else "partial")


def reusable(report: dict, store, sizes_of=None) -> dict:
    """{model ref: (job id, control job id or None)} of an earlier report whose jobs can stand in a
    new one: each is in this store, a check job of that model, and succeeded (its control too, where
    the report names one), and ran with the check table the model has now (`sizes_of(ref)`: the
    table's sizes, as check_spec merges them; None: not compared). A model whose job failed, was
    lost or is gone, or whose check table changed since, is run again."""
    out = {}
    for m in report.get("models") or []:
        ref, jid = m.get("model"), m.get("job")
        learns = next((c for c in m.get("checks") or [] if c.get("name") == "learns"), None) or {}
        ctl = ((learns.get("detail") or {}).get("control") or {}).get("job")
        ok = True
        for j in filter(None, (jid, ctl)):
            try:
                row = store.get_job(j)
            except Exception:  # noqa: BLE001 - gone (another state folder): run it again
                ok = False
                break
            ok = ok and row["state"] == "succeeded" and row.get("model") == ref and bool((row.get("spec") or {}).get("check"))
            if ok and sizes_of is not None:
                ok = ((row.get("spec") or {}).get("check") or {}).get("sizes") == sizes_of(ref)
        if ok and ref and jid and (ctl or not m.get("control_seconds")):
            out[ref] = (jid, ctl)
    return out


CONTROL_FORMATS = ("imagefolder", "yolo", "coco", "masks", "captions")
"""The check sets that have a shuffled-label control (checkdata.control_dataset); a repo's COCO set
has none (it validates on its training images)."""


def has_control(model: str, fmt: str | None, sizes: dict | None = None) -> bool:
    """Whether a model's check set has a shuffled-label control (checkdata.control_dataset): not a
    repo's COCO set, nor a check that fits its training images (`check.overfit`), where a control
    that memorised its shuffled labels would score as well as a run that learned."""
    return fmt in CONTROL_FORMATS and not (fmt == "coco" and str(model).startswith("repo/")) and not (sizes or {}).get("overfit")


def control_spec(spec: dict, dataset: dict) -> dict:
    """The shuffled-label control of a check job: the same model, sizes and epochs on the same
    images with the training labels shuffled (`dataset`: checkdata.control_dataset's)."""
    return {**spec, "name": ("check-control-" + spec["name"][len("check-"):])[:100],
            "dataset": dataset, "check": {**spec["check"], "control": True}}


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
    task = (job.get("spec") or {}).get("task")
    needs = ("metric",) if task in LEARNS_FLOOR else ("metric", "at_least")
    missing = "check.learns" if not isinstance(spec, dict) else next((f"check.learns.{k}" for k in needs if k not in spec), None)
    if missing:
        return {"name": "learns", "ok": False, "seconds": None,
                "error": f"the repo's table has no `{missing}`: learning cannot be judged "
                         '(set check.learns = { metric = "<held-out metric>", at_least = <floor> })'}
    floor = float(spec["at_least"]) if "at_least" in spec else LEARNS_FLOOR[task]
    crit = {"metric": spec["metric"], "at_least": floor}
    if "chance" in spec:
        crit.update(chance=float(spec["chance"]), rule=f"{spec['metric']} >= {floor:g} (chance {spec['chance']})")
    else:
        # a repo's COCO set is one annotations file, which its table maps to training and validation alike
        where = ("on its training images (a repo's COCO set is one annotations file for training and validation: "
                 "it fits them, which is not held out)") if ((job.get("spec") or {}).get("dataset") or {}).get("format") == "coco" else "on the held-out set"
        crit["rule"] = f"{spec['metric']} >= {floor:g} {where}" + ("" if "at_least" in spec else f" ({task}'s floor)")
    values = _series(store, job["id"], spec["metric"])
    losses = _series(store, job["id"], spec["loss"]) if spec.get("loss") else []
    verdict = judge(crit, values[-1] if values else None, losses)
    detail = {"epochs": len(values) or len(losses), "metric": spec["metric"], "value": values[-1] if values else None,
              "train_loss": losses, "loss_drop": verdict["loss_drop"], "criteria": crit}
    return {"name": "learns", "ok": verdict["ok"], "seconds": None, "reason": "measured over the repo's whole run (train)",
            "detail": detail, **({} if verdict["ok"] else {"error": verdict["why"]})}


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
    from .repos import infer as repo_infer
    from .envs import EnvManager

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


def _seconds(job: dict, now: float | None = None) -> float:
    """How long a job ran: from its start (its creation if it never started) to its end, or to now
    while it runs. 0.0 is a time, not a missing one."""
    end = job["finished_at"] if job["finished_at"] is not None else (time.time() if now is None else now)
    return end - (job["started_at"] if job["started_at"] is not None else job["created_at"])


def _job_report(store, home, ref: str, jid: str, infer: dict | None = None) -> tuple[dict, dict]:
    """(the job, its checks judged): from the adapter's check.json, or read off a repo's job."""
    from .queries import log_tail_for

    job = store.get_job(jid)
    job["log_tail"] = "\n".join(log_tail_for(home, job, os.geteuid()) or [])  # the checker's own jobs
    sizes = (job["spec"].get("check") or {}).get("sizes") or {}
    task = job["spec"].get("task")
    try:
        rep = json.loads((Path(job["job_dir"]) / "check.json").read_text())
        rep["checks"] = [judge_learns(c, sizes, rep.get("task") or task) if c["name"] == "learns" else c for c in rep.get("checks", [])]
    except (OSError, ValueError):
        rep = repo_checks(store, job, sizes, infer) if ref.startswith("repo/") else {"checks": [], "status": "failed"}
    return job, rep


def gather(store, home, jobs: dict, command: str | None = None, inferred: dict | None = None, controls: dict | None = None,
           previous: dict | None = None) -> dict:
    """The report from each job's check.json (or its failure, where it wrote none). controls: the
    shuffled-label control job of a model (ref -> job id), whose learns value goes beside the real
    run's and must stay below the threshold; previous: the report this one replaces (its drift)."""
    from .provenance import commit, machine

    models = []
    for ref, jid in jobs.items():
        job, rep = _job_report(store, home, ref, jid, (inferred or {}).get(ref))
        sizes = (job["spec"].get("check") or {}).get("sizes") or {}
        if ref in (controls or {}):
            _, ctl = _job_report(store, home, ref, controls[ref])
            ctl_learns = next((c for c in ctl.get("checks", []) if c["name"] == "learns"), None)
            rep["checks"] = [with_control(c, ctl_learns, controls[ref]) if c["name"] == "learns" and c.get("ok") else c
                             for c in rep.get("checks", [])]
            for c in rep["checks"]:  # a failed real run shows its control's value too, for the record
                if c["name"] == "learns" and c.get("detail") and "control" not in c["detail"] and ctl_learns and ctl_learns.get("detail"):
                    c["detail"]["control"] = {"job": controls[ref], "value": ctl_learns["detail"].get("value"), "reached": None}
        if rep.get("checks"):
            rep["status"] = status_of(rep["checks"])
        run = _seconds(job)
        entry = {"model": ref, "framework": ref.split("/", 1)[0], "task": rep.get("task") or (job["spec"].get("task")),
                 "job": jid, "job_state": job["state"], "status": rep.get("status", "failed"), "checks": rep.get("checks", []),
                 "seconds": run, "input_size": (job["spec"].get("train") or {}).get("input_size"),
                 "epochs": sizes.get("learns_epochs") or sizes.get("epochs"),
                 "format": (job["spec"].get("dataset") or {}).get("format"),
                 "note": "; ".join(filter(None, [job.get("note"), rep.get("note")])) or None}
        if ref.startswith("repo/"):  # which code was checked: the commit its job ran (recorded at prepare)
            try:
                ran = json.loads((home.run_dir(jid) / "repo.json").read_text())
                entry.update(repo_url=ran.get("url"), repo_commit=ran.get("commit"))
            except (OSError, ValueError):
                pass
        if ref in (controls or {}):
            cj = store.get_job(controls[ref])
            entry["control_seconds"] = _seconds(cj)
        if not rep.get("checks"):
            entry["error"] = f"job {job['state']} ({job['reason']}): " + (job.get("log_tail") or job.get("note") or "")[-1500:]
        models.append(entry)
    ok = sum(m["status"] == "success" for m in models)
    learned = sum(any(c["name"] == "learns" and c["ok"] for c in m["checks"]) for m in models)
    mach = machine()
    report = {"commit": commit(), "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": mach, "command": command,
              "criteria": criteria_text(models), "models": models,
              "summary": {"total": len(models), "success": ok, "partial": sum(m["status"] == "partial" for m in models),
                          "failed": sum(m["status"] == "failed" for m in models), "learns": learned,
                          "success_rate": ok / len(models) if models else 0.0}}
    if previous:
        report["drift"] = drift(previous, report)
    return report


def _learns_value(m: dict):
    c = next((c for c in m.get("checks", []) if c["name"] == "learns"), None)
    return (c.get("detail") or {}).get("value") if c else None


def drift(old: dict, new: dict) -> dict:
    """Per model, the previous report's status, learns value and job time beside this one's (a
    model new to the report, or gone from it, says so)."""
    before = {m["model"]: m for m in old.get("models", [])}
    rows = []
    for m in new["models"]:
        o = before.pop(m["model"], None)
        rows.append({"model": m["model"], "status": [o["status"] if o else None, m["status"]],
                     "learns": [_learns_value(o) if o else None, _learns_value(m)],
                     "seconds": [o.get("seconds") if o else None, m.get("seconds")]})
    rows += [{"model": ref, "status": [o["status"], None], "learns": [_learns_value(o), None], "seconds": [o.get("seconds"), None]}
             for ref, o in before.items()]
    return {"against": {"commit": old.get("commit"), "generated_at": old.get("generated_at"),
                        "success": (old.get("summary") or {}).get("success"), "total": (old.get("summary") or {}).get("total")},
            "models": rows}


def criteria_text(models: list | None = None) -> list[str]:
    """The report's rules, in words; which tasks' rows had a control, from the rows (`models`)."""
    floors = ", ".join(f"{t} {f:g}" for t, f in LEARNS_FLOOR.items())
    with_ctl, without = set(), set()
    for m in models or []:
        if m.get("task") in (None, "image_classification") or str(m.get("model", "")).startswith("repo/"):
            continue
        learns = next((c for c in m.get("checks") or [] if c.get("name") == "learns"), None) or {}
        ((with_ctl if (learns.get("detail") or {}).get("control") else without)).add(m["task"])
    if with_ctl:
        ctl = ("with a control for " + ", ".join(sorted(with_ctl)) + " (the same run with each training image given "
               "another training image's labels: its label file (YOLO), annotations (COCO), mask or caption, a seeded "
               "shuffle that leaves none in place; it must stay below the floor)")
        ctl += "; no control yet for " + ", ".join(sorted(without - with_ctl)) if without - with_ctl else ""
    else:
        ctl = "no control yet for these tasks"
    return [f"classification: validation accuracy >= 1/classes + {LEARNS_MARGIN:.2f} (chance plus {100 * LEARNS_MARGIN:.0f} points), "
            "and the shuffled-label control (the same run, the training labels shuffled so that they say nothing of the image) "
            "must stay below that threshold",
            f"detection, segmentation, pose, captioning: the task's main held-out metric at least a floor ({floors}; "
            "mAP50 for boxes, masks and keypoints, foreground mIoU, BLEU 0-100); the training loss's drop is shown, not judged; "
            + ctl,
            "within the model's stated epochs (column `epochs`) on the check's easy synthetic set (each class in its own colour), "
            "from scratch (`pretrained: false`), at the stated input size; repos: the metric of their `check.learns` table, "
            "at its `at_least`, else at their task's floor above (a classification repo must state its own; a table "
            "without `check.learns` fails learns); learns is never n/a"]


def drop_checkpoints(store, jobs: dict) -> int:
    """Delete the checkpoints of finished check jobs (a ViT-L one with its optimizer state is
    ~3.6 GB); the report keeps their sizes. Returns the bytes freed."""
    import shutil

    freed = 0
    for jid in jobs.values():
        job_dir = Path(store.get_job(jid)["job_dir"])
        for sub in ("checkpoints", "runs", "out", "hf"):
            d = job_dir / sub
            if d.is_dir():
                for root, _, files in os.walk(d):
                    freed += sum(os.path.getsize(os.path.join(root, f)) for f in files if os.path.isfile(os.path.join(root, f)))
                shutil.rmtree(d, ignore_errors=True)
    return freed


def _cell(c: dict | None) -> str:
    if c is None:
        return "—"
    secs = "" if c.get("seconds") is None else f" {c['seconds']:.1f}s"
    if c["ok"] is None:
        return "n/a" + secs
    if c["name"] == "learns" and c.get("detail") and c["detail"].get("value") is not None:
        d = c["detail"]
        return f"{'ok' if c['ok'] else 'NO'} {d['metric']}={d['value']:.3g}{secs}"
    return ("ok" if c["ok"] else "FAIL") + secs


def _num(v, fmt="{:.3g}") -> str:
    return "—" if v is None else fmt.format(v)


def _drift_lines(d: dict | None) -> list[str]:
    if not d:
        return []
    a = d["against"]
    lines = ["", f"## Drift against the previous report (commit `{(a.get('commit') or '?')[:12]}`, {a.get('generated_at')}: "
                 f"{a.get('success')}/{a.get('total')} passed)", "",
             "| model | status, before -> now | learns value, before -> now | job time, before -> now |", "|---|---|---|---|"]
    for r in d["models"]:
        (s0, s1), (v0, v1), (t0, t1) = r["status"], r["learns"], r["seconds"]
        change = f" ({100 * (t1 / t0 - 1):+.0f} %)" if t0 and t1 else ""
        lines.append(f"| {r['model']} | {s0 or 'not in it'} -> {s1 or 'gone'}{' (changed)' if s0 != s1 else ''} | {_num(v0)} -> {_num(v1)} | "
                     f"{_num(t0, '{:.0f}s')} -> {_num(t1, '{:.0f}s')}{change} |")
    return lines


def markdown(report: dict, title: str = "Plugin validation report") -> str:
    """The report as Markdown: provenance, criteria, a summary table, then each failed check's error."""
    s = report["summary"]
    lines = [f"# {title}", "",
             f"Commit `{report.get('commit')}`, made {report['generated_at']} on {report.get('machine', {}).get('line', 'an unknown machine')}",
             f"by `{report.get('command') or 'runner check'}`.", "",
             f"{s['success']}/{s['total']} models passed every check (success rate {100 * s['success_rate']:.0f} %; partial {s['partial']}, "
             f"failed {s['failed']}); {s.get('learns', 0)}/{s['total']} learn by the criteria below.", "",
             "**learns** means:", ""] + [f"- {c}" for c in report.get("criteria", [])] + [
             "", "Times are seconds measured in the job; `n/a` is a check that does not apply, with its reason below.", "",
             "| model | framework | task | input | epochs | status | " + " | ".join(CHECKS) + " | job time |",
             "|---|---|---|---|---|---|" + "---|" * len(CHECKS) + "---|"]
    for m in report["models"]:
        by = {c["name"]: c for c in m["checks"]}
        lines.append(f"| {m['model']} | {m['framework']} | {m['task'] or ''} | {m.get('input_size') or ''} | {m.get('epochs') or ''} | "
                     f"{m['status']} | " + " | ".join(_cell(by.get(n)) for n in CHECKS) + f" | {m['seconds']:.0f}s"
                     + (f" (control {m['control_seconds']:.0f}s)" if m.get("control_seconds") is not None else "") + " |")
    learns = [(m["model"], c) for m in report["models"] for c in m["checks"] if c["name"] == "learns" and c.get("detail")]
    if learns:
        lines += ["", "## learns, the numbers", "",
                  "| model | rule | value | shuffled-label control | training loss, first -> last | verdict |", "|---|---|---|---|---|---|"]
        fmt = {m["model"]: m.get("format") for m in report["models"]}
        for model, c in learns:
            d = c["detail"]
            tl = d.get("train_loss") or []
            loss = f"{tl[0]:.4g} -> {tl[-1]:.4g} ({-100 * d['loss_drop']:+.0f} %)" if len(tl) >= 2 and d.get("loss_drop") is not None else "—"
            val = "—" if d.get("value") is None else f"{d['value']:.4g}"
            ctl = d.get("control")
            none = ("none: judged on its training images" if "training images" in (d.get("criteria") or {}).get("rule", "")
                    else "not run: its job (reused) was made before the control existed" if has_control(model, fmt.get(model))
                    else "none for this task")
            ctl = none if ctl is None else ("no value" if ctl.get("value") is None else
                                                            f"{ctl['value']:.4g}" + {True: " (reached)", False: " (below)"}.get(ctl.get("reached"), ""))
            rule = (d.get("criteria") or {}).get("rule", "")
            lines.append(f"| {model} | {rule} | {val} | {ctl} | {loss} | {'learns' if c['ok'] else 'does not learn: ' + (c.get('error') or '')} |")
    repos = [m for m in report["models"] if m.get("repo_commit")]
    if repos:
        lines += ["", "Repos checked, at the commit each job ran:", ""] + [f"- {m['model']}: {m.get('repo_url') or ''} `{m['repo_commit']}`"
                                                                          for m in repos]
    lines += _drift_lines(report.get("drift"))
    na = [(m["model"], c) for m in report["models"] for c in m["checks"] if c["ok"] is None and c.get("reason")]
    if na:
        lines += ["", "## n/a", ""] + [f"- {model} {c['name']}: {c['reason']}" for model, c in na]
    notes = [(m["model"], m["note"]) for m in report["models"] if m.get("note")]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {model}: {note}" for model, note in notes]
    errs = [(m["model"], c) for m in report["models"] for c in m["checks"] if c["ok"] is False and (c["name"] != "learns" or not c.get("detail"))]
    errs += [(m["model"], {"name": "job", "error": m["error"]}) for m in report["models"] if m.get("error")]
    if errs:
        lines += ["", "## Errors", ""]
        for model, c in errs:
            lines += [f"### {model}: {c['name']}", "", "```", str(c.get("error", "")).strip()[:3000], "```", ""]
    return "\n".join(lines) + "\n"
