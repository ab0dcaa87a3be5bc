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
import os
import time
from pathlib import Path
from typing import Optional

from .criteria import (  # noqa: F401 (the check's names, here as before)
    CHECKS, CONTROL_FORMATS, DEFAULT_FLOOR, LEARNS_FLOOR, LEARNS_MARGIN, has_control, judge, judge_learns, learns_criteria,
    status_of, with_control,
)
from .repo import (  # noqa: F401
    VALIDATION_PREFIXES, _reloaded, _series, _span, _val_image, repo_checks, repo_criteria, repo_infer_check, repo_learns,
    repo_verdict, validation_metrics,
)
from .template import template
from .report import _cell, _drift_lines, _learns_value, _num, criteria_text, drift, markdown  # noqa: F401

def check_sizes(model: dict, framework: dict) -> dict:
    """A model's check table: its framework's, then its own."""
    return {**framework.get("check", {}), **model.get("check", {})}


def check_spec(model: dict, framework: dict, data_dir: Path, fmt: str, gpus: int = 0, input_size=None) -> dict:
    """The job spec of one model's check (sizes from the framework's and model's check tables).
    gpus: GPUs each check job asks for (0: the CPU); input_size: the size it trains at instead of
    the check table's ("usual": the model's own, as the registry states it)."""
    sizes = check_sizes(model, framework)
    if input_size is not None:  # (in the sizes too: the report and --reuse see what the job ran at)
        usual = model.get("input_size")
        if input_size == "usual" and not usual:
            from ..exceptions import RunnerError
            raise RunnerError(f"--input-size usual: {model['ref']} states no input_size in the registry")
        sizes = {**sizes, "input_size": int(usual if input_size == "usual" else input_size)}
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
    spec = {"name": f"check-{model['model_name']}".replace("/", "_")[:100], "model": model["ref"], "task": model.get("task_type"),
            "dataset": dataset, "train": train, "check": {"sizes": sizes}}
    if gpus:
        spec["resources"] = {"gpus": gpus}
    return spec


def reusable(report: dict, store, sizes_of=None) -> dict:
    """{model ref: (job id, control job id or None)} of an earlier report whose jobs can stand in a
    new one: each is in this store, a check job of that model, and succeeded, and ran with the check
    table the model has now (`sizes_of(ref)`: the table's sizes, as check_spec merges them; None: not
    compared). A model whose job failed, was lost or is gone, or whose check table changed since, is
    run again with its control. A control that cannot stand while its job can (it failed: the kernel's
    OOM killer took it while the real run saved its checkpoint beside it) is None: only the control
    runs again, not hours of the model's training."""

    def stands(j, ref):
        try:
            row = store.get_job(j)
        except Exception:  # noqa: BLE001 - gone (another state folder): run it again
            return False
        ok = row["state"] == "succeeded" and row.get("model") == ref and bool((row.get("spec") or {}).get("check"))
        return ok and (sizes_of is None or ((row.get("spec") or {}).get("check") or {}).get("sizes") == sizes_of(ref))

    out = {}
    for m in report.get("models") or []:
        ref, jid = m.get("model"), m.get("job")
        ctl = ((learns_of(m.get("checks")).get("detail") or {}).get("control") or {}).get("job")
        if ref and jid and stands(jid, ref):
            out[ref] = (jid, ctl if ctl and stands(ctl, ref) else None)
    return out


def learns_of(checks: list) -> dict:
    """The learns check among a row's (or a check.json's) checks; {} where there is none."""
    return next((c for c in checks or [] if c.get("name") == "learns"), None) or {}


def kept_rows(report: dict, store, sizes_of) -> dict:
    """{model ref: row} of an earlier report whose job is not in this store (made in another state
    folder, or its folder cleaned since) and that passed every check with the check table the model
    has now (`sizes_of(ref)`): with --keep-measured its row stands as that report measured it, and
    the new report says so. The table: the row's `sizes` (rows name them since 2026-12-04); an
    older row's input size and epochs, the two a check table sets that a row shows."""
    out = {}
    for m in report.get("models") or []:
        ref, jid = m.get("model"), m.get("job")
        if not ref or not jid or m.get("status") != "success":
            continue
        try:
            store.get_job(jid)
            continue  # in this store: --reuse's to take, or to run again
        except Exception:  # noqa: BLE001 - not here
            pass
        sizes = sizes_of(ref)
        if sizes is None:
            continue
        if "sizes" in m:
            same = m["sizes"] == sizes
        else:
            same = (m.get("input_size") == sizes.get("input_size")
                    and m.get("epochs") == (sizes.get("learns_epochs") or sizes.get("epochs")))
        if same:
            out[ref] = {**m, "kept_from": m.get("kept_from") or {"commit": report.get("commit"), "generated_at": report.get("generated_at")}}
    return out


def _rejudged(row: dict, sizes: dict, control: Optional[dict], control_job: Optional[str]) -> list:
    """A kept row's checks with its learns judged again by today's criteria from the numbers it
    measured, beside its control: the one run now (`control`, a judged learns check), else the one
    it had."""
    checks = []
    for c in row.get("checks") or []:
        if c.get("name") == "learns" and c.get("detail") and c["detail"].get("metric"):
            d = {k: v for k, v in c["detail"].items() if k not in ("criteria", "loss_drop", "control")}
            old_ctl = c["detail"].get("control")
            if str(row.get("model")).startswith("repo/"):  # a repo's table states its own (runner/check/repo.py)
                crit = repo_criteria(sizes.get("learns"), row.get("task"), row.get("format"))
                c = ({"name": "learns", "ok": False, "seconds": None, "error": crit["error"]} if "error" in crit
                     else repo_verdict(crit, d))
            else:
                c = judge_learns({"name": "learns", "seconds": c.get("seconds"), "verdict": "pending", "detail": d}, sizes, row.get("task"))
            if control is not None or control_job is not None:
                c = with_control(c, control, control_job)
            elif old_ctl:
                c = with_control(c, {"detail": {"value": old_ctl.get("value"), "train_loss": old_ctl.get("train_loss")}}, old_ctl.get("job"))
        checks.append(c)
    return checks


def control_spec(spec: dict, dataset: dict) -> dict:
    """The shuffled-label control of a check job: the same model, sizes and epochs on the same
    images with the training labels shuffled (`dataset`: checkdata.control_dataset's)."""
    return {**spec, "name": ("check-control-" + spec["name"][len("check-"):])[:100],
            "dataset": dataset, "check": {**spec["check"], "control": True}}


def _seconds(job: dict, now: float | None = None) -> float:
    """How long a job ran: from its start (its creation if it never started) to its end, or to now
    while it runs. 0.0 is a time, not a missing one."""
    end = job["finished_at"] if job["finished_at"] is not None else (time.time() if now is None else now)
    return end - (job["started_at"] if job["started_at"] is not None else job["created_at"])


def _job_report(store, home, ref: str, jid: str, infer: dict | None = None) -> tuple[dict, dict]:
    """(the job, its checks judged): from the adapter's check.json, or read off a repo's job."""
    from ..queries import log_tail_for

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
           previous: dict | None = None, kept: dict | None = None, sizes_of=None, order: list | None = None, made: dict | None = None) -> dict:
    """The report from each job's check.json (or its failure, where it wrote none). controls: the
    shuffled-label control job of a model (ref -> job id), whose learns value goes beside the real
    run's and must stay below the threshold; previous: the report this one replaces (its drift);
    kept: rows of an earlier report that stand as measured (kept_rows), judged again by today's
    criteria (`sizes_of(ref)`: the model's check table) beside their control; order: the models'
    order in the report (default: the kept rows', then the jobs'); made: seconds the checker took to
    make each model's check set (part of its configuration time)."""
    from ..provenance import commit, machine

    models = []
    controls = controls or {}

    def control_learns(ref):  # the control job's judged learns check ({} where it wrote none)
        return learns_of(_job_report(store, home, ref, controls[ref])[1].get("checks"))

    for ref, row in (kept or {}).items():
        entry = {**row, "checks": _rejudged(row, sizes_of(ref) if sizes_of else row.get("sizes") or {},
                                            control_learns(ref) if ref in controls else None, controls.get(ref))}
        entry["status"] = status_of(entry["checks"])
        if ref in controls:
            entry["control_seconds"] = _seconds(store.get_job(controls[ref]))
        models.append(entry)
    for ref, jid in jobs.items():
        job, rep = _job_report(store, home, ref, jid, (inferred or {}).get(ref))
        sizes = (job["spec"].get("check") or {}).get("sizes") or {}
        if ref in controls:
            ctl_learns = control_learns(ref)
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
                 "format": (job["spec"].get("dataset") or {}).get("format"), "sizes": sizes,
                 "note": "; ".join(filter(None, [job.get("note"), rep.get("note")])) or None}
        if ref.startswith("repo/"):  # which code was checked: the commit its job ran (recorded at prepare)
            try:
                ran = json.loads((home.run_dir(jid) / "repo.json").read_text())
                entry.update(repo_url=ran.get("url"), repo_commit=ran.get("commit"))
            except (OSError, ValueError):
                pass
        if ref in controls:
            cj = store.get_job(controls[ref])
            entry["control_seconds"] = _seconds(cj)
        try:  # the plan's template times (a report is still written without them)
            entry["template"] = template(store, home, job)
            if (made or {}).get(ref) is not None:
                entry["template"]["data_made"] = round(made[ref], 3)
        except Exception as e:  # noqa: BLE001
            entry["template"] = {"setup": None, "configuration": None, "first_training": None,
                                 "problems": [{"problem": f"its times could not be read ({type(e).__name__}: {e})", "solution": "none"}]}
        if not rep.get("checks"):
            entry["error"] = f"job {job['state']} ({job['reason']}): " + (job.get("log_tail") or job.get("note") or "")[-1500:]
        models.append(entry)
    if order:
        models.sort(key=lambda m: order.index(m["model"]) if m["model"] in order else len(order))
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


