"""`runner check`: the plugin check matrix, run through the daemon like any job.

For each model: a tiny generated dataset, then one job that loads the model, trains briefly,
validates, saves and reloads a checkpoint and runs inference; the adapter writes check.json and
this module gathers them into the validation report (Markdown and JSON).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

CHECKS = ("load", "train", "validate", "checkpoint", "infer")


def check_spec(model: dict, framework: dict, data_dir: Path, fmt: str) -> dict:
    """The job spec of one model's check (sizes from the framework's and model's check tables)."""
    sizes = {**framework.get("check", {}), **model.get("check", {})}
    train = {"epochs": 1, "pretrained": False}
    for k in ("batch_size", "input_size", "lr"):
        if sizes.get(k) is not None:
            train[k] = sizes[k]
    dataset = {"path": str(data_dir), "format": fmt}
    if fmt == "coco":
        dataset["annotations"] = str(Path(data_dir).parent / "annotations.json")
    return {"name": f"check-{model['model_name']}".replace("/", "_")[:100], "model": model["ref"], "task": model.get("task_type"),
            "dataset": dataset, "train": train, "check": {"sizes": sizes}}


def repo_checks(store, job: dict) -> dict:
    """A repo runs its own script: the checks are read off the job (it ran, trained, reported
    validation metrics, wrote checkpoints). Inference needs the repo's own predict script."""
    went = [t["to_state"] for t in store.transitions(job["id"])]
    t = (job["finished_at"] or time.time()) - (job["started_at"] or job["created_at"])
    metrics = store.latest_metrics(job["id"])
    val = {k: v for k, v in metrics.items() if any(s in k.lower() for s in ("val", "acc", "map", "precision", "recall"))}
    arts = store.artifacts(job["id"])
    err = None if job["state"] == "succeeded" else f"job {job['state']} ({job['reason']}): {(job.get('log_tail') or job.get('note') or '')[-1500:]}"
    checks = [
        {"name": "load", "ok": "running" in went, "seconds": 0.0, **({} if "running" in went else {"error": err})},
        {"name": "train", "ok": job["state"] == "succeeded", "seconds": round(t, 1), **({} if job["state"] == "succeeded" else {"error": err})},
        {"name": "validate", "ok": bool(val), "seconds": 0.0, "detail": val, **({} if val else {"error": "no validation metric parsed from the log"})},
        # paths relative to the job's folder: a report read elsewhere names no folder of this machine
        {"name": "checkpoint", "ok": bool(arts), "seconds": 0.0, "detail": [os.path.relpath(a["path"], job["job_dir"]) for a in arts][:4],
         **({} if arts else {"error": "no checkpoint matched the repo's globs"})},
    ]
    ok = sum(c["ok"] for c in checks)
    return {"checks": checks, "status": "success" if ok == len(checks) else ("failed" if ok == 0 else "partial"),
            "task": job["spec"].get("task"), "note": "inference: not run (a repo has its own predict script; not mapped)"}


def gather(store, home, jobs: dict) -> dict:
    """The report from each job's check.json (or its failure, where it wrote none)."""
    models = []
    for ref, jid in jobs.items():
        job = store.get_job(jid)
        job_dir = Path(job["job_dir"])
        try:
            rep = json.loads((job_dir / "check.json").read_text())
        except (OSError, ValueError):
            rep = repo_checks(store, job) if ref.startswith("repo/") else {"checks": [], "status": "failed"}
        entry = {"model": ref, "framework": ref.split("/", 1)[0], "task": rep.get("task") or (job["spec"].get("task")),
                 "job": jid, "job_state": job["state"], "status": rep.get("status", "failed"), "checks": rep.get("checks", []),
                 "seconds": round((job["finished_at"] or time.time()) - (job["started_at"] or job["created_at"]), 1),
                 "input_size": (job["spec"].get("train") or {}).get("input_size"), "note": "; ".join(filter(None, [job.get("note"), rep.get("note")])) or None}
        if not rep.get("checks"):
            entry["error"] = f"job {job['state']} ({job['reason']}): " + (job.get("log_tail") or job.get("note") or "")[-1500:]
        models.append(entry)
    ok = sum(m["status"] == "success" for m in models)
    return {"generated_at": time.strftime("%Y-%m-%d %H:%M:%S"), "models": models,
            "summary": {"total": len(models), "success": ok, "partial": sum(m["status"] == "partial" for m in models),
                        "failed": sum(m["status"] == "failed" for m in models),
                        "success_rate": round(ok / len(models), 3) if models else 0.0}}


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


def markdown(report: dict, title: str = "Plugin validation report") -> str:
    """The report as Markdown: a summary table, then each failed check's error."""
    s = report["summary"]
    lines = [f"# {title}", "", f"Generated {report['generated_at']}. {s['success']}/{s['total']} models passed every check "
             f"(success rate {100 * s['success_rate']:.0f} %; partial {s['partial']}, failed {s['failed']}).", "",
             "| model | framework | task | input | status | " + " | ".join(CHECKS) + " | job time |",
             "|---|---|---|---|---|" + "---|" * len(CHECKS) + "---|"]
    for m in report["models"]:
        cells = []
        by = {c["name"]: c for c in m["checks"]}
        for name in CHECKS:
            c = by.get(name)
            cells.append("—" if c is None else (f"ok {c['seconds']:.1f}s" if c["ok"] else f"FAIL {c['seconds']:.1f}s"))
        lines.append(f"| {m['model']} | {m['framework']} | {m['task'] or ''} | {m.get('input_size') or ''} | {m['status']} | "
                     + " | ".join(cells) + f" | {m['seconds']:.0f}s |")
    notes = [(m["model"], m["note"]) for m in report["models"] if m.get("note")]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {model}: {note}" for model, note in notes]
    errs = [(m["model"], c) for m in report["models"] for c in m["checks"] if not c["ok"]]
    errs += [(m["model"], {"name": "job", "error": m["error"]}) for m in report["models"] if m.get("error")]
    if errs:
        lines += ["", "## Errors", ""]
        for model, c in errs:
            lines += [f"### {model}: {c['name']}", "", "```", str(c.get("error", "")).strip()[:3000], "```", ""]
    return "\n".join(lines) + "\n"
