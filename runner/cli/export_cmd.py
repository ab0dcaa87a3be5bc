"""runner export NAME: export past jobs with an exporter of the site config (runner/exporters/)."""

from __future__ import annotations

import time

from .common import home, print_json, store


def _since(text: str) -> float:
    """'2026-11-01', '2026-11-01T12:00' or '2026-11-01 12:00' (local time) as epoch seconds."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            continue
    from runner.exceptions import RunnerError

    raise RunnerError(f"--since: given {text!r}; expected a date, YYYY-MM-DD or YYYY-MM-DDTHH:MM")


def export(args):
    """runner export NAME ID... | --all [--since DATE] [--experiment NAME] [--no-wait]"""
    from runner.exceptions import RunnerError
    from runner.exporters import configured, unset_message, view
    from runner.queries import find_job
    from runner.spool import request_export, user_name

    h = home(args)
    name = args.target
    if name not in configured(h.config):
        raise RunnerError(f"{unset_message(name)} is not set in the config (docs/{name}.md): nothing to export to")
    if bool(args.ids) == bool(args.all):
        raise RunnerError("give job ids, or --all (with --since DATE for the jobs submitted since)")
    s = store(h)
    if args.all:
        since = _since(args.since) if args.since else 0.0
        import os

        user = None if os.geteuid() == 0 else user_name()
        jobs = [j for j in s.list_jobs(user=user, columns=("id", "created_at", "state"))
                if (j["created_at"] or 0) >= since and j["state"] in ("succeeded", "failed", "cancelled", "running")]
    else:
        jobs = [find_job(h, s, ref) for ref in args.ids]
    ids = [j["id"] for j in jobs]
    if not ids:
        print("no jobs to export")
        return 0
    if h.daemon_pid() is None:
        raise RunnerError("the daemon is not running: it does the export (start it with `runner daemon`)")
    request_export(h, ids, args.experiment, exporter=name)
    if args.no_wait:
        print(f"export of {len(ids)} job(s) requested")
        return 0
    deadline = time.time() + args.timeout
    while True:
        views = {i: view(s, name, i) for i in ids}
        if all(v and v["done"] for v in views.values()) or time.time() > deadline:
            break
        time.sleep(0.5)
    if args.json:
        print_json(views)
    else:
        for i, v in views.items():
            if v is None:
                print(f"{i}  not taken yet (is the daemon running?)")
            else:
                state = "done" if v["done"] else (f"waiting: {v['error']}" if v["error"] else "in progress")
                print(f"{i}  run {v['run_id'] or '-'}  {v['points_exported']}/{v['points']} points  {state}")
    return 0 if all(v and v["done"] for v in views.values()) else 1
