"""Verbs on jobs: submit, ls, show, logs, cancel, retry."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .common import ago, home, print_json, span, store, table


def _overrides(args, data: dict):
    if args.name:
        data["name"] = args.name
    if args.gpus is not None:
        data.setdefault("resources", {})["gpus"] = args.gpus
    if args.priority is not None:
        data["priority"] = args.priority
    if args.env:
        data["env"] = args.env
    if args.after:
        data["after"] = list(data.get("after") or []) + args.after
    if args.no_network:
        data["network"] = False
    if args.workdir:
        data["workdir"] = args.workdir
    if args.parser:
        data["parser"] = args.parser
    if getattr(args, "preemptible", None) is not None:
        data["preemptible"] = args.preemptible


def submit(args):
    """runner submit job.yaml | runner submit [options] -- CMD ARGS..."""
    from runner.exceptions import SpecError
    from runner.specfile import load_spec_file

    command = args.command
    if args.file and command:
        raise SpecError(["give a job file or a command after --, not both"])
    if args.file:
        data = load_spec_file(args.file)
        base = Path(args.file).resolve().parent
        if not isinstance(data, dict):
            raise SpecError([f"{args.file}: expected a mapping of fields (name:, command: or model:, ...)"])
    elif command:
        data = {"command": command}
        base = Path.cwd()
    else:
        raise SpecError(["nothing to run: give a job file, or -- CMD ARGS..."])
    _overrides(args, data)
    from runner import writes

    h = home(args).ensure()
    # the store is read only to find the jobs of `after`: a plain submit is the spool write alone
    rec, warnings = writes.submit(h, store(h) if data.get("after") else None, data, base, quick=True)
    for w in warnings:
        print(f"runner: warning: {w}", file=sys.stderr)
    if args.json:
        print_json({"id": rec["id"], "state": "submitted", "spec": rec["spec"], "user": rec["user"]})
    else:
        print(rec["id"])
    return 0


def _when(j):
    if j.get("started_at") is not None:  # 0.0 is a time
        return span((time.time() if j.get("finished_at") is None else j["finished_at"]) - j["started_at"])
    return ago(j["created_at"]) + " ago" if j.get("created_at") is not None else ""


def ls(args):
    """runner ls [--state S] [--user U] [--all] [--json]"""
    from runner import defaults
    from runner.queries import count_jobs, list_jobs

    h = home(args)
    if args.limit is not None and args.limit < 0:
        raise SystemExit(f"runner: --limit: given {args.limit}; expected 0 (every job) or more")
    limit = (args.limit or None) if (args.limit is not None or args.json) else defaults.LS_ROWS
    everything = args.all or bool(args.state)
    if not h.db.exists() and not h.spool.exists():
        rows = []
    else:
        rows = list_jobs(h, store(h), args.state, args.user, everything, limit, tag=args.tag)
    if args.json:
        print_json(rows)
        return 0
    if limit is not None and len(rows) >= limit:
        total = count_jobs(store(h), args.state, args.user, everything, tag=args.tag)
        shown = sum(1 for r in rows if r.get("seq") is not None)
        if total > shown:
            print(f"({len(rows)} shown, {total - shown:,} more: --limit N, or --limit 0 for all; --state or --user to narrow)",
                  file=sys.stderr)
    table([[r["id"], r.get("seq") or "", (r["name"] or "")[:40], r["user"], r["state"], r.get("reason") or "",
            _when(r), ",".join(map(str, r.get("gpus") or [])) or "-"] for r in rows],
          ["ID", "#", "NAME", "USER", "STATE", "REASON", "TIME", "GPUS"])
    return 0


def show(args):
    """runner show ID [--json]"""
    from runner.queries import find_job, job_view, log_tail_for

    h = home(args)
    s = store(h)
    job = find_job(h, s, args.id)
    view = job if job.get("spooled") else job_view(s, job, full=True, tail=log_tail_for(h, job, os.geteuid()))
    for a in view.get("artifacts") or []:  # looked at as the user who asks (the daemon never reads her files)
        a["removed"] = _checkpoint_gone(a["path"])
    if args.json:
        print_json(view)
        return 0
    keys = ["id", "name", "user", "state", "reason", "exit_code", "signal", "model", "env", "env_hash", "gpus", "priority",
            "restarts", "after", "retry_of", "note", "peak_gpu_mem_mb", "job_dir"]
    from runner.printable import printable

    for k in keys:
        if view.get(k) not in (None, [], "") and not (k == "restarts" and not view[k]):
            print(f"{k + ':':<16}{printable(view[k])}")  # a teammate's words cannot drive your terminal
    if view.get("tags"):
        print(f"{'tags:':<16}{', '.join(view['tags'])}")
    if view.get("notes"):
        print(f"{'notes:':<16}" + ("\n" + " " * 16).join(printable(line) for line in view["notes"].split("\n")))
    for k in ("created_at", "started_at", "finished_at"):
        if view.get(k):
            print(f"{k + ':':<16}{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(view[k]))}")
    if view.get("duration") is not None:
        print(f"{'duration:':<16}{span(view['duration'])}")
    if view.get("metrics"):
        print("metrics:")
        for k, v in sorted(view["metrics"].items()):
            print(f"  {k:<30}{'nan' if v is None else format(v, '.6g')}")  # SQLite keeps a NaN as NULL
    if view.get("metrics_compacted"):
        from runner.queries import compacted_line

        print(f"{'points:':<16}{compacted_line(view['metrics_compacted'])}")
    from runner.exporters import show_lines

    for name, line in show_lines(view):  # each exporter's place, for a job it exports
        print(f"{name + ':':<16}{line}")
    if view.get("artifacts"):
        print("artifacts:")
        for a in view["artifacts"]:
            print(f"  {a['path']} ({a['size']} bytes)" + (" (removed)" if a["removed"] else ""))
    if view.get("log_tail") and view.get("state") == "failed":
        print("last lines of the log:")
        for line in view["log_tail"].splitlines():
            print(f"  | {line}")
    return 0


def _complete(data: bytes) -> int:
    """How much of `data` to print now: all, unless it ends inside an escape sequence."""
    from log_parsers.stream import strip_ansi  # the parser's own pattern: what it reads is what you see

    i = data.rfind(b"\x1b", max(0, len(data) - 64))
    if i < 0 or strip_ansi(data[i:]) != data[i:] or len(data) - i >= 64:
        return len(data)
    return i


def metrics(args):
    """runner metrics ID [--name NAME] [--json]: a job's per-epoch (or per-step) series."""
    from runner.queries import find_job

    h = home(args)
    s = store(h)
    job = find_job(h, s, args.id)
    points = s.metrics(job["id"], args.name)
    if args.name and not points:
        from runner.exceptions import RunnerError

        known = sorted(s.latest_metrics(job["id"]))
        raise RunnerError(f"--name: job {job['id']} has no metric {args.name!r} (it has: {', '.join(known) or 'none'})")
    series: dict = {}
    for p in points:
        series.setdefault(p["name"], []).append({"epoch": p["epoch"], "step": p["step"], "value": p["value"], "at": p["at"]})
    from runner.queries import compacted_line, compacted_view

    compacted = compacted_view(s, job)
    if args.json:
        print_json({"job": job["id"], "series": series, "compacted": compacted})
        return 0
    if not series:
        ended = job["state"] in ("succeeded", "failed", "cancelled")
        hint = "" if job.get("model") or job["spec"].get("parser") else " (a command job's key=value lines become metrics with `parser: generic`)"
        print(f"job {job['id']}: no metrics{'' if ended else ' yet'}{hint}")
        return 0
    by_epoch = all(p["epoch"] is not None for pts in series.values() for p in pts)
    key = "epoch" if by_epoch else "step"
    rows: dict = {}
    for name, pts in series.items():
        for i, p in enumerate(pts):
            k = p[key] if p[key] is not None else i + 1
            rows.setdefault(k, {})[name] = p["value"]  # the last value of that epoch (or step)
    names = sorted(series)

    def fmt(v):
        return "" if v is ... else "nan" if v is None else f"{v:.6g}"  # SQLite keeps a NaN as NULL
    table([[k, *[fmt(rows[k].get(n, ...)) for n in names]] for k in sorted(rows, key=lambda x: (x is None, x))], [key.upper(), *names])
    if compacted:
        print(f"({compacted_line(compacted)})")
    return 0


def logs(args):
    """runner logs ID [-f] [--tail N]"""
    from runner.queries import find_job, read_log

    h = home(args)
    s = store(h)
    job = find_job(h, s, args.id)
    path = h.run_dir(job["id"]) / "output.log"
    if path.exists() and not os.access(path, os.R_OK):
        from runner.exceptions import PermissionDenied

        raise PermissionDenied(f"job {job['id']}: belongs to {job['user']}; its log is theirs (an admin may set [server] share_logs)")
    gone = _log_gone(h, s, job, path)
    if gone:
        from runner.exceptions import RunnerError

        raise RunnerError(gone)
    from log_parsers.stream import strip_ansi

    clean = (lambda b: b) if args.raw else strip_ansi
    if not args.follow:
        sys.stdout.write(clean(read_log(path.parent, args.tail).encode()).decode("utf-8", "replace"))
        return 0
    out = sys.stdout.buffer
    if args.tail is not None:
        out.write(clean(read_log(path.parent, args.tail).encode()))
        pos = path.stat().st_size if path.exists() else 0
    else:
        pos = 0
    from runner.exceptions import JobNotFound

    while True:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data and not args.raw:
            data = data[:_complete(data)]  # an escape sequence cut by the read waits for its end
        if data:
            out.write(clean(data))
            out.flush()
            pos += len(data)
            continue
        try:
            state = s.get_job(job["id"])["state"]
        except JobNotFound:
            state = "submitted"
        if state in ("succeeded", "failed", "cancelled"):
            with open(path, "rb") if path.exists() else open(os.devnull, "rb") as f:
                f.seek(pos)
                rest = f.read()
            out.write(clean(rest))
            out.flush()
            return 0
        time.sleep(0.2)


def _log_gone(h, s, job: dict, path: Path) -> str | None:
    """Why an ended job that had a log has none now (the [retention] policy, or a hand), or None."""
    if job.get("state") not in ("succeeded", "failed", "cancelled"):
        return None
    failed_preparing = job["state"] == "failed" and any(t["from_state"] == "preparing" for t in s.transitions(job["id"]))
    if not job.get("started_at") and not failed_preparing:
        return None  # it never had a log: ended before it ran (cancelled, its dependency failed)
    try:
        os.lstat(path)
        return None
    except PermissionError:
        return None  # not hers to look at: said by the check above
    except FileNotFoundError:
        pass
    from runner import retention
    from runner.exceptions import RunnerError

    try:
        days = (retention.settings(h.config) or {}).get("job_days")
    except RunnerError:
        days = None
    ended = job.get("finished_at")
    why = (f"removed by the [retention] policy (job_days = {days:g}: a job's folder and log go {days:g} days after it ended)"
           if days and ended and time.time() - ended >= days * 86400 else f"removed from {path.parent}")
    return f"job {job['id']}: its log is gone: {why}; `runner show {job['id']}` keeps its states and metrics"


def _checkpoint_gone(path: str) -> bool:
    """Whether a recorded checkpoint is no longer there, as the viewer sees it (one she may not look
    at is not said to be gone)."""
    try:
        os.lstat(path)
        return False
    except FileNotFoundError:
        return True
    except OSError:
        return False


def tag(args):
    """runner tag ID [TAG ...] [--rm TAG] [--notes TEXT]: only the job's owner or root may."""
    from runner import writes
    from runner.queries import find_job

    notes = args.notes
    if notes == "-":
        notes = sys.stdin.read()
    if not args.tags and not args.rm and notes is None:
        raise SystemExit("runner tag: give tags to add, --rm TAG to remove one, or --notes TEXT")
    h = home(args)
    job = find_job(h, store(h), args.id)
    writes.tag(h, job, os.getuid(), args.tags, args.rm, notes)
    if args.json:
        print_json({"id": job["id"], "add": args.tags, "remove": args.rm, "notes": notes})
    else:
        tags = [t for t in (job.get("tags") or []) if t not in args.rm] + [t for t in args.tags if t not in (job.get("tags") or [])]
        print(f"job {job['id']}: tags {', '.join(tags) or '(none)'}" + ("; notes set" if notes else "; notes cleared" if notes == "" else "")
              + ("" if h.daemon_pid() else " (daemon not running: applied when it starts)"))
    return 0


def cancel(args):
    """runner cancel ID: only the job's owner or root may."""
    import signal

    from runner.proctl import kill_tree
    from runner.queries import find_job

    from runner import writes

    h = home(args)
    s = store(h)
    job = find_job(h, s, args.id)
    if not writes.cancel(h, job, os.getuid()):
        print(f"job {job['id']} already {job['state']}")
        return 0
    if h.daemon_pid() is None and job["state"] == "running":
        kill_tree(h.run_dir(job["id"]), signal.SIGKILL)
        note = "; daemon not running: processes killed now, the state is recorded when it starts"
    elif h.daemon_pid() is None:
        note = "; daemon not running: applied when it starts"
    else:
        note = ""
    if args.json:
        print_json({"id": job["id"], "cancel_requested": True})
    else:
        print(f"cancel requested for {job['id']}{note}")
    return 0


def retry(args):
    """runner retry ID: queue a copy of an ended job (its owner or root)."""
    from runner.queries import find_job

    from runner import writes

    h = home(args)
    job = find_job(h, store(h), args.id)
    rec = writes.retry(h, job, os.getuid())
    if args.json:
        print_json({"id": rec["id"], "retry_of": job["id"]})
    else:
        print(rec["id"])
    return 0


def site_url(h) -> str | None:
    """[server] url: the dashboard's address as teammates' browsers reach it, or None."""
    from runner.exceptions import RunnerError

    url = (h.config.get("server") or {}).get("url")
    if url is None:
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or any(c in url for c in " ?#\"\n"):
        raise RunnerError(f"[server] url: given {str(url)[:80]!r}; expected the dashboard's address, as http://HOST:PORT or https://HOST")
    return url.rstrip("/")


def web_login(args):
    """runner web-login [--url URL]: a link, valid once for 5 minutes, that signs you in to the
    dashboard as yourself (signed with your token, which only you and the daemon can read)."""
    from runner.permissions import daemon_info
    from runner.web.auth import new_link

    h = home(args)
    url = args.url
    if not url:
        from runner.exceptions import RunnerError

        pid, info = h.daemon_pid(), daemon_info(h)
        if not pid or (pid > 0 and info.get("pid") != pid):  # daemon.json of a daemon that has gone names no server
            raise RunnerError(f"no daemon runs for {h.root}: start it (`runner daemon`, or systemctl start runner), or pass --url")
        bind = info.get("http")
        if not bind:
            raise RunnerError("the daemon serves no HTTP (started with --http none?); pass --url")
        host, _, port = bind.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]", ""):
            import socket

            host = socket.getfqdn()
        # the address browsers reach it by, where the site says (an SSH tunnel's end, a TLS proxy)
        url = site_url(h) or f"http://{host}:{port}"
    print(new_link(h, my_token(h), os.getuid(), url))  # the token is yours, made on first use
    return 0


def token(args):
    """runner token [--rotate]: your personal token for the HTTP API."""
    print(my_token(home(args), rotate=args.rotate))
    return 0


def my_token(h, rotate: bool = False) -> str:
    """The caller's token: read, or made (by the daemon, asked through the spool, unless the
    home is the caller's own) on first use or with rotate."""
    from runner import spool, tokens
    from runner.exceptions import RunnerError

    uid = os.getuid()
    current = tokens.read(h, uid)
    if current and not rotate:
        return current
    if os.access(h.root, os.W_OK) and (not h.tokens.exists() or os.access(h.tokens, os.W_OK)):
        tokens.ensure_dir(h)  # a daemon of one's own: no one else is asked
        return tokens.write(h, uid, os.getgid(), rotate=rotate)
    if h.daemon_pid() is None:
        raise RunnerError("the daemon is not running; it makes tokens (ask the admin to start it)")
    before = tokens.token_path(h, uid).stat().st_mtime_ns if current else None
    spool.request_token(h, rotate=rotate)
    deadline = time.time() + 15
    while time.time() < deadline:
        new = tokens.read(h, uid)
        if new and (before is None or tokens.token_path(h, uid).stat().st_mtime_ns != before):
            return new
        time.sleep(0.05)
    raise RunnerError("the daemon did not make a token within 15 s (see `runner doctor`)")


def share(args):
    """runner share [--json]: each user's decayed use, share and order (fair share, [scheduler])."""
    from runner.queries import share_view

    h = home(args)
    view = share_view(store(h), h.config, time.time()) if h.db.exists() else {"fairshare": True, "users": []}
    if args.json:
        print_json(view)
        return 0
    if not view["fairshare"]:
        print("fair share is off ([scheduler] fairshare = false): the queue goes by priority, then age")
    else:
        print(f"fair share: among equal priority, the user with the least use per share goes first "
              f"(use halves every {view['half_life_days']:g} days)")
    table([[r["order"], r["user"], f"{r['use_gpu_hours']:.2f}", f"{r['share']:g}", f"{r['use_per_share']:.2f}", r["running"], r["queued"]]
           for r in view["users"]], ["ORDER", "USER", "GPU-HOURS", "SHARE", "PER-SHARE", "RUNNING", "QUEUED"])
    return 0
