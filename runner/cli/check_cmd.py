"""runner check MODEL... | --framework F"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import home, print_json


def _ensure_daemon(h):
    """A daemon for this home: the running one, or one started for the check and stopped after."""
    if h.daemon_pid():
        return None
    proc = subprocess.Popen([sys.executable, "-m", "runner", "daemon", "--home", str(h.root.resolve()), "--http", "none"], cwd="/",
                            stdout=subprocess.DEVNULL, stderr=open(h.root / "check-daemon.log", "ab"), start_new_session=True)
    for _ in range(100):
        if h.daemon_pid():
            break
        time.sleep(0.1)
    return proc


def _state(store, jid: str) -> str:
    try:
        return store.get_job(jid)["state"]
    except Exception:  # noqa: BLE001 - still in the spool
        return "submitted"


def _wait(h, store, ids: list, timeout: float) -> list:
    """Wait for the check jobs to end. At the timeout, those still queued or running are cancelled
    (and waited for, up to a minute, so that their rows say so): returns their ids."""
    from runner import spool
    from runner.states import ENDED as ended

    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(_state(store, j) in ended for j in ids):
            return []
        time.sleep(1.0)
    late = [j for j in ids if _state(store, j) not in ended]
    for j in late:
        spool.request_cancel(h, j)
    until = time.time() + 60
    while time.time() < until and not all(_state(store, j) in ended for j in late):
        time.sleep(0.5)
    return late


def check(args):
    """Submit one check job per model, wait for them, write report.md and report.json."""
    from runner import check as chk
    from runner import spool
    from runner.exceptions import RunnerError
    from runner.registry import load
    from runner.resolve import resolve
    from runner.spec import parse_spec

    h = home(args).ensure()
    reg = load(h)
    refs = list(args.models)
    if args.framework:
        refs += [m["ref"] for m in reg.list_models(framework=args.framework)]
    if not refs:
        raise RunnerError("check: name models (e.g. timm/resnet18) or --framework NAME")
    if args.keep_measured and not args.reuse:
        raise RunnerError("--keep-measured: give the earlier report with --reuse REPORT_JSON")
    again = set(getattr(args, "rerun", None) or [])
    if again - set(refs):
        raise RunnerError(f"--rerun: {sorted(again - set(refs))[0]} is not one of the models this check runs")
    out = Path(args.out or f"check-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunnerError(f"--out: cannot make {out} ({e.strerror}): give a folder you can write with --out") from None
    jobs, controls, made = {}, {}, {}
    reuse = {}

    def framework_of(model):
        from runner import checkdata

        name = model["framework"]
        return reg.get_framework(name) if name != "repo" else checkdata.repo_framework(reg.get_repo(model["model_name"]))

    def sizes_of(ref):  # a job made under another check table is not reused
        model = reg.get_model(ref)
        return None if model is None else chk.check_sizes(model, framework_of(model))

    kept_infer, kept = {}, {}
    if args.reuse:
        try:
            earlier = json.loads(Path(args.reuse).read_text())
            reuse = {r: v for r, v in chk.reusable(earlier, h.store(), sizes_of).items() if r not in again}
            if args.keep_measured:
                kept = {r: row for r, row in chk.kept_rows(earlier, h.store(), sizes_of).items() if r in refs and r not in reuse and r not in again}
        except (OSError, ValueError, AttributeError) as e:
            raise RunnerError(f"--reuse: {args.reuse} is not a report.json of runner check ({e})") from None
        kept_infer = {m["model"]: c for m in earlier.get("models") or [] if m.get("model") in reuse
                      for c in m.get("checks") or [] if c.get("name") == "infer" and c.get("ok")}
    for ref in refs:
        model = reg.get_model(ref)
        if model is None:
            raise RunnerError(f"check: {ref} is not in the registry (see `runner models`)")
        from runner import checkdata

        fw_name = model["framework"]
        fw = framework_of(model)
        t0 = time.monotonic()
        data_dir, fmt = checkdata.make(fw_name, model, fw, out / "data")  # (seeded: the same set each time)
        made[ref] = time.monotonic() - t0
        raw = chk.check_spec(model, fw, data_dir, fmt, gpus=args.gpus, input_size=args.input_size)
        if args.keep_checkpoints:
            raw["check"]["keep"] = True
        if ref in kept or ref in reuse:  # (its set was made for a job made before: not this job's time)
            made.pop(ref, None)
        if ref in kept:
            ctl = (chk.learns_of(kept[ref].get("checks")).get("detail") or {}).get("control")
            print(f"{ref}: kept as the report of {str(kept[ref]['kept_from'].get('commit'))[:12]} measured it (job {kept[ref]['job']}, "
                  f"not in this state folder)" + (f", control job {ctl['job']}" if ctl else ""), file=sys.stderr)
            if ctl or not chk.has_control(ref, fmt, raw["check"]["sizes"]) or args.no_new_controls:
                continue
        elif ref in reuse:
            jobs[ref], ctl = reuse[ref]
            if ctl:
                controls[ref] = ctl
            print(f"{ref}: job {jobs[ref]} reused" + (f", control job {ctl}" if ctl else ""), file=sys.stderr)
            if ctl or not chk.has_control(ref, fmt, raw["check"]["sizes"]) or args.no_new_controls:
                continue
        else:
            spec = parse_spec(raw)
            rec = spool.submit(h, resolve(spec, out, reg, []))
            jobs[ref] = rec["id"]
            print(f"{ref}: job {rec['id']}", file=sys.stderr)
        if chk.has_control(ref, fmt, raw["check"]["sizes"]):  # (a reused job made before controls existed gets its control now)
            # the shuffled-label control: the same run on the same images, the training labels shuffled
            # (each training image given another's label file, annotations, mask or caption)
            ctl = chk.control_spec(raw, checkdata.control_dataset(raw["dataset"], fmt, repo=ref.startswith("repo/")))
            rec = spool.submit(h, resolve(parse_spec(ctl), out, reg, []))
            controls[ref] = rec["id"]
            print(f"{ref}: control job {rec['id']} (training labels shuffled)", file=sys.stderr)
    proc = _ensure_daemon(h)
    store = h.store()
    try:
        late = _wait(h, store, [*jobs.values(), *controls.values()], args.timeout)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    if late:
        print(f"check: not finished after {args.timeout:.0f}s: cancelled {', '.join(late)}; the report says so", file=sys.stderr)
    import shlex

    # the command as typed (paths under the current folder relative: a committed report names no machine's folders)
    argv = [os.path.relpath(a) if os.path.isabs(a) and a.startswith(os.getcwd() + os.sep) else a for a in sys.argv[1:]]
    # a repo's inference runs here, with the job's checkpoint; a reused job's checkpoints were removed
    # after the report that measured it: that report's inference stands
    inferred = {ref: kept_infer.get(ref) or chk.repo_infer_check(h, store, reg, jid) for ref, jid in jobs.items() if ref.startswith("repo/")}
    try:  # the report this one replaces: its drift goes in the new one
        previous = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        previous = None
    report = chk.gather(store, h, jobs, inferred=inferred, controls=controls, previous=previous, kept=kept, sizes_of=sizes_of, order=refs, made=made,
                        command=os.environ.get("RUNNER_CHECK_COMMAND") or shlex.join(["runner", *argv]))
    if not args.keep_checkpoints:
        freed = chk.drop_checkpoints(store, {**jobs, **{f"{r} (control)": j for r, j in controls.items()}})
        print(f"check: removed {freed / 2**20:.0f} MB of check checkpoints (--keep-checkpoints keeps them)", file=sys.stderr)
    title = f"Plugin validation report: {args.framework or ', '.join(refs)}"
    from runner import atomic

    atomic.write_json(out / "report.json", report, indent=1)
    atomic.write_bytes(out / "report.md", chk.markdown(report, title).encode())
    if args.json:
        print_json(report)
    else:
        print((out / "report.md").read_text())
        print(f"report: {out / 'report.md'}")
    return 0 if report["summary"]["success"] == report["summary"]["total"] else 1
