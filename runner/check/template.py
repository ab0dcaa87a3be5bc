"""The plan's template times of a check job, read off what the daemon recorded: setup (its env built
for it, or reused), configuration (the rest of its preparation: translation, dataset, launch),
first training (from its start to its first epoch's metrics), and the problems it met with what
runner did about each (an out-of-memory retry, a resume after a preemption, a node's failure...).
Read by `runner check` (the checker's own process, reading its own jobs)."""

from __future__ import annotations

import re

_OOM = re.compile(rb"^runner: out of memory at batch_size=(\d+); retrying once with batch_size=(\d+)")
_RESUMED = re.compile(rb"^runner: run (\d+) starts after a preemption, (.*)$")
_MAX_LOG = 64 << 20  # bytes of a log read for runner's own lines (a check job's is a few MB)


def problems_in_log(path) -> list[dict]:
    """What runner's own lines in a job's log say it met and did: [{problem, solution}]."""
    out = []
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_LOG)
    except OSError:
        return out
    for line in data.splitlines():
        if not line.startswith(b"runner: "):
            continue
        m = _OOM.match(line)
        if m:
            out.append({"problem": f"out of memory at batch size {int(m[1])}",
                        "solution": f"retried once at batch size {int(m[2])} (auto_batch_size)"})
            continue
        m = _RESUMED.match(line)
        if m:
            out.append({"problem": "preempted", "solution": f"run {int(m[1])} resumed {m[2].decode(errors='replace')[:200]}"})
    return out


def template(store, home, job: dict) -> dict:
    """{setup: {seconds, how}, configuration: seconds, first_training: seconds or None, problems: [...]}
    of a check job (None where it was not reached)."""
    jid = job["id"]
    steps = [(t["from_state"], t["to_state"], t["at"], t["reason"]) for t in store.transitions(jid)]
    prep = next((at for _, to, at, _ in steps if to == "preparing"), None)
    ran = next((at for frm, to, at, _ in steps if frm == "preparing" and to == "running"), None)
    out = {"setup": None, "configuration": None, "first_training": None, "problems": []}
    if prep is not None and ran is not None:
        # its env's build that ran while it was being prepared (by it, or by another job it waited for)
        builds = [(b["job_id"], b["started_at"], b["finished_at"]) for b in store.env_builds_during(job.get("env_hash"), prep, ran)]
        waited = sum(min(fin, ran) - max(start, prep) for _, start, fin in builds)
        how = "reused" if not builds else ("built" if any(b[0] == jid for b in builds) else f"waited for its build by job {builds[0][0]}")
        out["setup"] = {"seconds": round(waited, 3), "how": how}
        out["configuration"] = round(ran - prep - waited, 3)
    if job.get("started_at") is not None:
        first = store.first_epoch_point_at(jid)
        if first is not None:
            out["first_training"] = round(first - job["started_at"], 3)
    for frm, to, _, reason in steps:
        if frm in ("preparing", "running") and to == "queued":
            out["problems"].append({"problem": f"requeued from {frm} ({reason or 'no reason given'})",
                                    "solution": "prepared again" if reason == "daemon_restarted" else "run again"})
    out["problems"] += problems_in_log(home.run_dir(jid) / "output.log")
    if job.get("state") in ("failed", "cancelled"):
        out["problems"].append({"problem": f"{job['state']} ({job.get('reason') or 'no reason'})"
                                + (f": {job['note']}" if job.get("note") else ""), "solution": "none"})
    return out


def _secs(v) -> str:
    return "—" if v is None else f"{v:.1f}s"


def template_lines(report: dict) -> list[str]:
    """The plan's template, a row per model: setup, configuration, first training, problems and solutions."""
    lines = ["", "## The plan's template", "",
             "Setup: its env built for the job (or by another check job it waited for), or reused; configuration: the rest "
             "of its preparation (translation, dataset conversion, launch), and the check making its synthetic set; first training: from its start to its first epoch's "
             "metrics; problems: what runner met and what it did.", "",
             "| model | setup | configuration | first training | problems and solutions |", "|---|---|---|---|---|"]
    for m in report["models"]:
        t = m.get("template")
        if t is None:
            kept = m.get("kept_from") or {}
            why = f"not recorded (kept from the report of `{str(kept.get('commit'))[:12]}`)" if kept else "not recorded"
            lines.append(f"| {m['model']} | {why} | | | |")
            continue
        setup = "—" if t.get("setup") is None else f"{_secs(t['setup']['seconds'])} ({t['setup']['how']})"
        probs = "; ".join(f"{p['problem']}: {p['solution']}" for p in t.get("problems") or []) or "none"
        conf = _secs(t.get("configuration")) + (f" (+ {_secs(t['data_made'])} making its check set)" if t.get("data_made") is not None else "")
        lines.append(f"| {m['model']} | {setup} | {conf} | {_secs(t.get('first_training'))} | "
                     f"{probs.replace('|', '/')} |")
    return lines
