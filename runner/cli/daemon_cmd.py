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
    from runner import defaults
    from runner.daemon import Daemon
    from runner.exceptions import RunnerError

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    h = home(args)
    from runner.home import home_problems

    unknown = home_problems(h)  # a misspelled key would be ignored: say it before anything starts
    if unknown:
        more = f" (and {len(unknown) - 1} more: `runner doctor` lists each)" if len(unknown) > 1 else ""
        raise RunnerError(unknown[0] + more)
    bind = args.http if args.http is not None else h.config.get("daemon", {}).get("http", defaults.HTTP_BIND)
    if not isinstance(bind, str):
        raise RunnerError(f"[daemon] http: given {bind!r}; expected \"HOST:PORT\" or \"none\"")
    http = None if bind in ("none", "", "off") else bind
    from runner.web.guard import raise_fd_limit

    before, after = raise_fd_limit()  # systemd's default soft limit (1,024) is too few for a team's connections and jobs
    if after != before:
        logging.getLogger("runner.daemon").info("open files limit raised from %d to %d", before, after)
    Daemon(h, http=http, max_running=args.max_running).run()
    return 0


def _served(bind: str, pid: int) -> tuple[str, str | None]:
    """(what answers on the daemon's HTTP bind, a problem or None), asked over HTTP: /status says
    which daemon (pid) answers, so another program or another daemon on that port shows."""
    import json
    import urllib.error
    import urllib.request

    host, _, port = bind.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    url = f"http://{host}:{port}/status"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy of the shell
    try:
        with opener.open(url, timeout=5) as r:
            answer = json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        if e.code == 401:  # bound beyond loopback: reads need a token; it answers, as runner does
            return f"served on {bind} (its reads need a token: bound beyond loopback)", None
        return f"NOT served on {bind}", f"http: {url} answers {e.code}, not as runner's daemon does: is another program on that port?"
    except (OSError, ValueError) as e:
        why = getattr(e, "reason", None) or e
        return f"NOT served on {bind}", (f"http: the daemon (pid {pid}) says it serves {bind}, but {url} does not answer ({why}): "
                                          "restart it (its log says why) or set --http / [daemon] http")
    other = answer.get("daemon_pid") if isinstance(answer, dict) else None
    if other != pid:
        return f"NOT served on {bind}", (f"http: {bind} is answered by another daemon (pid {other}, home {answer.get('home') if isinstance(answer, dict) else '?'}), "
                                          f"not by this one (pid {pid}): give one of them another --http or [daemon] http and restart it")
    return f"served on {bind} by this daemon (pid {pid})", None


def doctor(args):
    """What this machine supports (uv, NVML, bubblewrap, user namespaces, disk), what the running
    daemon serves and runs on, and every problem with its fix; exits 1 when there is one."""
    from runner import envs, gpus, sandbox

    h = home(args)
    pid = h.daemon_pid()
    report = {"python": sys.executable, "home": str(h.root), "daemon_pid": pid}
    problems: list[str] = []
    from runner.home import home_problems

    report["config_problems"] = home_problems(h)  # tables and keys runner does not read: misspellings
    problems += [f"config: {p}" for p in report["config_problems"]]
    try:
        uv = envs.uv_binary()
        report["uv"] = {"path": uv, "version": subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()}
    except Exception as e:
        report["uv"] = {"path": None, "error": str(e)}
        problems.append(f"uv: {e}; envs cannot be built (reinstall runner: uv comes with it)")
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
    if report["disk"]["problem"]:
        problems.append(f"disk: {report['disk']['problem']}: no job starts until space is freed")
    from runner.permissions import audit, daemon_info, python_for_everyone

    info = daemon_info(h) if pid else {}
    if pid and pid > 0 and info.get("pid") != pid:
        info = {}  # left by a daemon that has gone: it says nothing of the one running now
    from runner import uvcheck

    # what the daemon's env builds give uv (its unit's Environment= and [envs]), never this shell's
    settings, origin = uvcheck.daemon_settings(h, info)
    report["uv_settings"], report["uv_settings_from"] = envs.masked(settings), origin
    report["index"], problem = uvcheck.resolve(settings, report["uv"].get("path"))
    if not problem and (info.get("uid") == 0 if info else os.geteuid() == 0):  # a root daemon builds users' envs as the build user
        problem = uvcheck.bundle_for_builds(settings, h.config.get("envs"), str(h.root))
    if problem:
        problems.append(problem)
    team = []
    http = None
    if pid:
        if info and info.get("uid") != 0:
            team.append(f"the daemon runs as {info.get('user')}: it runs only that user's jobs (a team server runs it as root: docs/server.md)")
        bind = info.get("http")
        if not info:
            http = "unknown (this daemon wrote no daemon.json: restart it)"
        elif not bind:
            http = "none (the daemon was started with --http none: no API, no dashboard)"
        else:
            http, problem = _served(bind, pid)
            if problem:
                problems.append(problem)
            host = bind.rpartition(":")[0]
            if not (host.startswith("127.") or host in ("localhost", "::1", "[::1]")):
                team.append(f"HTTP is served on {bind}, beyond loopback: every request needs a token (`runner token`); "
                            "put it behind TLS (a reverse proxy) before people use it from other machines")
    report["daemon"] = info
    report["http"] = http
    report["server_notes"] = team
    report["permission_problems"] = audit(h)
    problems += [f"permissions: {p}" for p in report["permission_problems"]]
    # the interpreter jobs of other users start from: the running daemon's own (daemon.json), or,
    # before one runs, this one's when root asks (the install being checked)
    python = info.get("python") if info else (sys.executable if not pid and os.geteuid() == 0 else None)
    report["daemon_python"] = python
    if python and (not info or info.get("uid") == 0):
        bad_python = python_for_everyone(python)
        if bad_python:
            problems.append(f"python: {bad_python}")
    report["problems"] = problems
    if args.json:
        print_json(report)
        return 1 if problems else 0
    ok = lambda b: "yes" if b else "NO"  # noqa: E731
    print(f"home            {report['home']} (daemon {'pid ' + str(pid) if pid else 'not running'})")
    cfg = report["config_problems"]
    print(f"config          {str(len(cfg)) + ' unknown table(s) or key(s), below' if cfg else 'ok: every table and key is one runner reads'}")
    print(f"python          {report['python']}" + (f" (the daemon's: {python})" if python and python != report["python"] else ""))
    print(f"http            {http or '(daemon not running)'}")
    print(f"uv              {report['uv'].get('version') or report['uv'].get('error')}")
    shown = ", ".join(f"{k}={v}" for k, v in envs.masked(settings).items()) or "none: uv uses its defaults (https://pypi.org/simple)"
    print(f"uv settings     {shown} ({origin})")
    print(f"index           {report['index']}")
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
    perm = report["permission_problems"]
    print(f"permissions     {'ok: every part of ' + str(h.root) + ' is owned and closed as it should be' if not perm else str(len(perm)) + ' problem(s), below'}")
    print(f"problems        {len(problems) or 'none'}")
    for p in problems:
        print(f"  - {p}")
    return 1 if problems else 0
