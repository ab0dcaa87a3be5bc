"""runner daemon, runner doctor."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

from .common import home, print_json


def daemon(args):
    """Run the queue in the foreground."""
    from runner.daemon import Daemon

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    http = None if args.http in ("none", "", "off") else args.http
    from runner.web.guard import raise_fd_limit

    before, after = raise_fd_limit()  # systemd's default soft limit (1,024) is too few for a team's connections and jobs
    if after != before:
        logging.getLogger("runner.daemon").info("open files limit raised from %d to %d", before, after)
    Daemon(home(args), http=http, max_running=args.max_running).run()
    return 0


def doctor(args):
    """What this machine supports: uv, NVML, bubblewrap, user namespaces, disk."""
    from runner import envs, gpus, sandbox

    h = home(args)
    report = {"python": sys.executable, "home": str(h.root), "daemon_pid": h.daemon_pid()}
    try:
        uv = envs.uv_binary()
        report["uv"] = {"path": uv, "version": subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()}
    except Exception as e:
        report["uv"] = {"path": None, "error": str(e)}
    inv = gpus.inventory(h.config)
    report["gpus"] = {"source": inv.source, "available": inv.available, "note": inv.reason, "count": len(inv.gpus()) if inv.available else 0}
    if not inv.available:
        report["gpus"]["note"] += "; the daemon runs CPU jobs only, GPU jobs wait with reason no_gpus_on_this_host"
    report["sandbox"] = sandbox.report()
    target = h.root if h.root.exists() else h.root.parent
    while not target.exists():
        target = target.parent
    du = shutil.disk_usage(target)
    report["disk"] = {"path": str(target), "free_gb": round(du.free / 1e9, 1), "total_gb": round(du.total / 1e9, 1)}
    from runner import diskspace

    report["disk"]["problem"] = diskspace.low_space(h) if h.root.exists() else None  # below [jobs] min_free_mb: no job starts
    uv_vars = {k: v for k, v in os.environ.items() if k.startswith("UV_")}
    report["uv_settings"] = sorted(uv_vars)
    from runner.permissions import audit, daemon_info

    info = daemon_info(h)
    team = []
    if info and report["daemon_pid"]:
        if info.get("uid") != 0:
            team.append(f"the daemon runs as {info.get('user')}: it runs only that user's jobs (a team server runs it as root: docs/server.md)")
        bind = info.get("http") or ""
        host = bind.rpartition(":")[0]
        if bind and not (host.startswith("127.") or host in ("localhost", "::1", "[::1]")):
            team.append(f"HTTP is served on {bind}, beyond loopback: every request needs a token (`runner token`); "
                        "put it behind TLS (a reverse proxy) before people use it from other machines")
    report["daemon"] = info
    report["server_notes"] = team
    report["permission_problems"] = audit(h)
    if info.get("uid") == 0 or os.geteuid() == 0:
        from runner.permissions import python_for_everyone

        bad_python = python_for_everyone()
        if bad_python:
            team.append(bad_python)
    if args.json:
        print_json(report)
        return 0
    ok = lambda b: "yes" if b else "NO"  # noqa: E731
    print(f"home            {report['home']} (daemon {'pid ' + str(report['daemon_pid']) if report['daemon_pid'] else 'not running'})")
    print(f"python          {report['python']}")
    print(f"uv              {report['uv'].get('version') or report['uv'].get('error')}")
    print(f"uv settings     {', '.join(report['uv_settings']) or '(none: uv uses its defaults)'}")
    print(f"gpus            {ok(inv.available)}: {report['gpus']['note']} ({report['gpus']['count']} GPU(s))")
    sb = report["sandbox"]
    print(f"bubblewrap      {ok(sb['bubblewrap_works'])}: {sb['bubblewrap'] or 'not installed (apt-get install bubblewrap)'}")
    print(f"user namespaces {ok(sb['user_namespaces'])}")
    print(f"isolation       {sb['isolation']}")
    print(f"disk            {report['disk']['free_gb']} GB free of {report['disk']['total_gb']} GB at {report['disk']['path']}")
    if report["disk"]["problem"]:
        print(f"disk            NO: jobs do not start: {report['disk']['problem']}")
    for note in team:
        print(f"server          {note}")
    problems = report["permission_problems"]
    print(f"permissions     {'ok: every part of ' + str(h.root) + ' is owned and closed as it should be' if not problems else str(len(problems)) + ' problem(s):'}")
    for p in problems:
        print(f"  - {p}")
    return 1 if problems or report["disk"]["problem"] else 0
