"""runner envs ls | build NAME | rm HASH | gc [--days N] | lock NAME"""

from __future__ import annotations

import sys
import time

from .common import ago, fmt_size, home, print_json, table


def _owner(uid) -> str:
    """Whose requirements an env was built from ('shared' for a packaged or repo env)."""
    if uid is None:
        return "shared"
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def envs(args):
    """Dispatch the envs sub-verbs."""
    from runner import defaults
    from runner.envs import EnvManager, lock_named, named_request
    from runner.exceptions import RunnerError

    h = home(args).ensure()
    s = h.store()
    mgr = EnvManager(h.envs, s, h.config.get("envs"))

    waiting = None

    def in_use(row) -> int:
        """Jobs that run in this env or wait to (queued and preparing jobs record theirs only at start)."""
        nonlocal waiting
        if waiting is None:  # once per command, and only by the verbs that remove
            from runner.prepare import waiting_envs

            waiting = waiting_envs(s, h.config)
        keys, names, inputs = waiting
        return row["active"] + int(row["hash"] in keys or row["name"] in names or (row.get("inputs") or "") in inputs)
    if args.action == "ls":
        rows = mgr.listing()
        if args.json:
            print_json(rows)
        else:
            table([[r["hash"], r["name"], r["python"], _owner(r.get("owner")), fmt_size(r["size"]), ago(r["built_at"]),
                    ago(r["last_used"]), r["jobs"], f"{r['build_seconds']:.1f}s" if r.get("build_seconds") else ""] for r in rows],
                  ["HASH", "NAME", "PYTHON", "OWNER", "SIZE", "BUILT", "USED", "JOBS", "BUILD"])
        return 0
    if args.action in ("build", "lock") and not args.target:
        raise RunnerError(f"envs {args.action}: give an env name (from envs/)")
    if args.action == "build":
        req = named_request(args.target, args.python, h.config.get("envs"))
        if mgr.ready(req.key):
            print(f"{args.target}: {req.key} already built at {mgr.path(req.key)}")
            return 0
        t0 = time.time()
        path = mgr.ensure(req, log=lambda line: print(f"  {line}", file=sys.stderr))
        print(f"{args.target}: built {req.key} in {time.time() - t0:.1f}s at {path}")
        return 0
    if args.action == "lock":
        out = lock_named(args.target, args.python, h.config.get("envs"))
        print(f"locked {out}")
        return 0
    if args.action == "rm":
        if not args.target:
            raise RunnerError("envs rm: give an env hash (see `runner envs ls`)")
        matches = [r for r in mgr.listing() if r["hash"].startswith(args.target)]
        if len(matches) != 1:
            raise RunnerError(f"envs rm: {args.target!r} matches {len(matches)} envs; give more of the hash")
        if in_use(matches[0]):
            raise RunnerError(f"envs rm: {matches[0]['hash']} is used by a running job or one that waits for it")
        mgr.remove(matches[0]["hash"])
        print(f"removed {matches[0]['hash']} ({matches[0]['name']})")
        return 0
    if args.action == "gc":
        days = args.days if args.days is not None else h.config.get("envs", {}).get("gc_days", defaults.ENV_GC_DAYS)
        cutoff = time.time() - days * 86400
        removed = []
        for r in mgr.listing():
            last = r["last_used"] if r["last_used"] is not None else r["built_at"]
            if last < cutoff and not in_use(r):
                mgr.remove(r["hash"])
                removed.append(r)
        if args.json:
            print_json(removed)
        else:
            for r in removed:
                print(f"removed {r['hash']} ({r['name']}, unused {ago(r['last_used'] or r['built_at'])})")
            print(f"{len(removed)} env(s) removed")
        return 0
    return 2
