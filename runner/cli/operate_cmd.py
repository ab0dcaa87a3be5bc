"""runner backup FILE | gc [--dry-run] | du: the admin's verbs for the store and the disk."""

from __future__ import annotations

import os
import stat
import sys

from .common import ago, fmt_size, home, print_json, table


def _admin(h, verb: str):
    """Only root, or the owner of the state folder (a daemon run by one person), may do `verb`."""
    import pwd

    from runner.exceptions import PermissionDenied

    try:
        owner = os.stat(h.root).st_uid
    except FileNotFoundError:
        from runner.exceptions import RunnerError

        raise RunnerError(f"{verb}: {h.root} does not exist (RUNNER_HOME: the daemon's state folder)") from None
    if os.geteuid() not in (0, owner):
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = f"uid {owner}"
        raise PermissionDenied(f"{verb}: the server's state belongs to {name}: only {name}"
                               f"{' ' if owner == 0 else ' or root '}may do this (run it with sudo)")


def backup(args):
    """A consistent copy of the store, taken while the daemon runs."""
    from runner.exceptions import RunnerError
    from runner.store import Store

    h = home(args)
    _admin(h, "backup")
    if not h.db.exists():
        raise RunnerError(f"backup: there is no store at {h.db} (RUNNER_HOME: the daemon's state folder)")
    dest = os.path.abspath(args.file)
    if os.path.isdir(dest):
        raise RunnerError(f"FILE: {dest} is a folder; expected the path of the copy to write, e.g. {dest.rstrip('/')}/runner.db")
    if not os.path.isdir(os.path.dirname(dest)):
        raise RunnerError(f"FILE: {os.path.dirname(dest)} does not exist; expected a file in an existing folder")
    store = os.path.realpath(h.db)
    if os.path.realpath(dest) in {store, *(store + end for end in ("-wal", "-shm", "-journal"))}:
        raise RunnerError(f"FILE: {dest} is the store itself; expected another path")
    import sqlite3

    try:
        done = Store(h.db, migrate=False).backup(dest)
    except OSError as e:
        raise RunnerError(f"backup: cannot write {dest}: {(e.strerror or str(e)).lower()}") from None
    except sqlite3.Error as e:
        raise RunnerError(f"backup: the copy of {h.db} failed ({e}); {dest} was left as it was") from None
    if args.json:
        print_json(done)
    else:
        print(f"{done['path']}: {fmt_size(done['bytes'])}, {done['jobs']} jobs, integrity ok, in {done['seconds']:.2f}s (mode 0600)")
    return 0


SUGGESTED = {"checkpoint_days": 14.0, "job_days": 90.0}
"""What `runner gc --dry-run` previews where the config has no [retention] (the values docs/server.md suggests)."""


def gc(args):
    """The retention policy: previewed (--dry-run) or applied now."""
    from runner import retention
    from runner.compaction import DEFAULT_BUCKET, check_bucket
    from runner.exceptions import RunnerError

    h = home(args)
    policy = retention.settings(h.config) or {"checkpoint_days": None, "job_days": None, "metrics_days": None,
                                               "metrics_bucket": DEFAULT_BUCKET}
    for key in retention.DAYS:
        v = getattr(args, key)
        if v is not None:
            if not 0 < v <= 100_000:
                raise RunnerError(f"--{key.replace('_', '-')}: given {v:g}; expected a number of days above 0")
            policy[key] = float(v)
    if args.metrics_bucket is not None:
        policy["metrics_bucket"] = check_bucket(args.metrics_bucket, "--metrics-bucket")
    if all(policy[k] is None for k in retention.DAYS) and args.dry_run:
        policy.update(checkpoint_days=SUGGESTED["checkpoint_days"], job_days=SUGGESTED["job_days"])
        print(f"(no [retention] in the config: previewing checkpoint_days = {SUGGESTED['checkpoint_days']:g}, "
              f"job_days = {SUGGESTED['job_days']:g}; docs/server.md)", file=sys.stderr)
    if all(policy[k] is None for k in retention.DAYS):
        raise RunnerError("gc: no [retention] in the config (checkpoint_days = 14, job_days = 90; docs/server.md), "
                          "and no --checkpoint-days, --job-days or --metrics-days given")
    if not h.db.exists():
        raise RunnerError(f"gc: there is no store at {h.db} (RUNNER_HOME: the daemon's state folder)")
    if policy["metrics_days"] is None:
        policy.pop("metrics_bucket", None)  # said only where it applies
    store = h.store(migrate=False)
    if args.dry_run:
        items = [vars(i) for i in retention.plan(h, store, policy)]
        problems = []
    else:
        _admin(h, "gc")
        done = retention.apply(h, store, policy)
        items, problems = done["items"], done["problems"]
    files = [i for i in items if i["points"] is None]
    compacted = [i for i in items if i["points"] is not None]
    total = sum(i["bytes"] for i in files)
    points = sum(i["points"] for i in compacted)
    if args.json:
        print_json({"dry_run": args.dry_run, "policy": policy, "items": items, "bytes": total, "metric_points": points,
                    "metric_bytes": sum(i["bytes"] for i in compacted), "problems": problems})
        return 0
    if items:
        table([[i["job_id"], i["user"], i["what"], fmt_size(i["bytes"]) if i["points"] is None else "~" + fmt_size(i["bytes"]),
                i["path"] if i["points"] is None else f"{i['points']} of {i['points'] + i['kept']} points"] for i in items],
              ["JOB", "USER", "WHAT", "SIZE", "PATH"])
    said = ", ".join(f"{k} = {v:g}" for k, v in policy.items() if v is not None)
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {fmt_size(total)} in {len(files)} item(s) ({said}){'; nothing was changed' if args.dry_run else ''}")
    if policy.get("metrics_days") is not None:
        print(f"{'would compact' if args.dry_run else 'compacted'} the metrics of {len(compacted)} job(s): {points} points "
              f"{'would go' if args.dry_run else 'went'} (~{fmt_size(sum(i['bytes'] for i in compacted))} of the store, "
              "reused by new points; the file shrinks only with VACUUM)")
    if args.dry_run and os.geteuid() != 0:
        print("(as you: only what you may read is counted; run it as root for everyone's)")
    for p in problems:
        print(f"left: {p}")
    return 0


def du(args):
    """Disk used per user (job folders, logs, caches) and per env."""
    from runner.envs import COMPLETE
    from runner.retention import tree_bytes

    h = home(args)
    owners = h.store(migrate=False).job_owners() if h.db.exists() else {}
    users: dict = {}
    unreadable = 0

    def measure(path) -> int | None:
        nonlocal unreadable
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
        except PermissionError:
            if path.parent == h.run:  # a run folder is the daemon's (0711): her own log in it she may still read
                log = path / "output.log"
                try:
                    st = os.lstat(log)
                    if stat.S_ISREG(st.st_mode) and os.access(log, os.R_OK):
                        return st.st_size
                except OSError:
                    pass
            unreadable += 1
            return None
        except OSError:
            return None
        return tree_bytes(path)

    for column, folder, owner_of in (("jobs", h.jobs, owners.get), ("logs", h.run, owners.get), ("cache", h.cache, lambda n: n)):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if name.startswith("."):
                continue
            n = measure(folder / name)
            if n is None:
                continue
            u = users.setdefault(owner_of(name) or "(no job row)", {"user": owner_of(name) or "(no job row)", "folders": 0,
                                                                    "jobs": 0, "logs": 0, "cache": 0})
            u[column] += n
            u["folders"] += column == "jobs"
    rows = sorted(users.values(), key=lambda u: -(u["jobs"] + u["logs"] + u["cache"]))
    for u in rows:
        u["total"] = u["jobs"] + u["logs"] + u["cache"]
    recorded = {r["hash"]: r for r in (h.store(migrate=False).envs() if h.db.exists() else [])}
    envs = []
    try:
        env_names = sorted(os.listdir(h.envs))
    except OSError:
        env_names = []
    for key in env_names:
        if key.startswith(".") or not (h.envs / key).is_dir():
            continue
        n = measure(h.envs / key)
        row = recorded.get(key, {})
        envs.append({"hash": key, "name": row.get("name") or "", "bytes": n, "complete": (h.envs / key / COMPLETE).exists(),
                     "last_used": row.get("last_used"), "jobs": row.get("jobs", 0)})
    other = {"repos": measure(h.repos) if h.repos.exists() else 0}
    if args.json:
        print_json({"users": rows, "envs": envs, "other": other, "unreadable": unreadable})
        return 0
    table([[u["user"], u["folders"], fmt_size(u["jobs"]), fmt_size(u["logs"]), fmt_size(u["cache"]), fmt_size(u["total"])] for u in rows],
          ["USER", "JOB FOLDERS", "JOBS", "LOGS", "CACHE", "TOTAL"])
    print()
    table([[e["hash"], e["name"], fmt_size(e["bytes"]) if e["bytes"] is not None else "?", ago(e["last_used"]), e["jobs"],
            "" if e["complete"] else "incomplete"] for e in envs], ["ENV", "NAME", "SIZE", "USED", "JOBS", ""])
    env_total = sum(e["bytes"] or 0 for e in envs)
    print(f"\nenvs {fmt_size(env_total)}, repos {fmt_size(other['repos'] or 0)}, job folders "
          f"{fmt_size(sum(u['jobs'] for u in rows))}, logs {fmt_size(sum(u['logs'] for u in rows))}"
          " (a file linked from several places is counted once, shared between them)")
    if unreadable:
        print(f"{unreadable} folder(s) you may not read were left out: run it as root for everyone's")
    return 0
