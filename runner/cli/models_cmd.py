"""runner models, runner schema, runner gpus, runner infer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .common import home, print_json, store, table


def models(args):
    """The registry's models, filtered."""
    from runner.registry import load

    rows = load(home(args)).list_models(args.filter, args.framework, args.task, [t for t in args.tags.split(",") if t])
    if args.json:
        print_json(rows)
        return 0
    table([[r["ref"], r.get("display_name", ""), r.get("task_type", ""), f"{(r.get('params') or 0) / 1e6:.1f}M" if r.get("params") else "",
            r.get("input_size", ""), r.get("license", ""), ",".join(r.get("tags", []))] for r in rows],
          ["MODEL", "NAME", "TASK", "PARAMS", "INPUT", "LICENSE", "TAGS"])
    return 0


def schema(args):
    """A framework's settings schema (what a UI renders as a form)."""
    from runner.exceptions import RegistryError
    from runner.resolve import framework_schema

    s = framework_schema(args.framework)
    if s is None:
        raise RegistryError(f"schema: framework {args.framework!r} has no settings schema")
    if args.json:
        print_json(s)
        return 0
    table([[f["name"], f["type"], f.get("default"), f.get("min"), f.get("max"), ",".join(map(str, f.get("options") or [])),
            f.get("group", ""), "yes" if f.get("advanced") else "", f.get("description", "")] for f in s["fields"]],
          ["NAME", "TYPE", "DEFAULT", "MIN", "MAX", "OPTIONS", "GROUP", "ADV", "DESCRIPTION"])
    return 0


def gpus(args):
    """The GPUs, their processes and which job holds each."""
    from runner.gpus import inventory
    from runner.queries import gpu_view

    h = home(args)
    inv = inventory(h.config)
    rows = gpu_view(store(h), inv) if inv.available else []
    if args.json:
        print_json({"source": inv.source, "available": inv.available, "note": inv.reason, "gpus": rows})
        return 0
    if not inv.available:
        print(f"no GPUs: {inv.reason}")
        return 0
    table([[g["index"], g["uuid"], g["name"], f"{g['memory_used_mb']:.0f}/{g['memory_total_mb']:.0f} MB", g.get("utilization"),
            g.get("temperature"), g.get("job") or "", ", ".join(f"{p['pid']}({p.get('user')})" for p in g["processes"])] for g in rows],
          ["#", "UUID", "NAME", "MEMORY", "UTIL%", "TEMP", "JOB", "PROCESSES"])
    return 0


def infer(args):
    """Run inference with a job's best checkpoint (or a checkpoint path) in the job's env.

    As the checkpoint's owner: root's `runner infer` on a user's job (or on a file of hers) runs
    as her, in a helper that dropped to her (runner.privsep), so what her checkpoint or checkout
    makes a framework run never runs as root; another user's job is refused."""
    from runner.exceptions import PermissionDenied, RunnerError
    from runner.identity import drops_privileges, person
    from runner.queries import find_job
    from runner.spool import user_name

    h = home(args)
    images = [str(Path(i).resolve()) for i in args.images]
    src = Path(args.source)
    if src.exists():
        source = str(src.resolve())
        uid = os.stat(source).st_uid
        if uid != os.geteuid() and os.geteuid() != 0:
            raise PermissionDenied(f"{args.source}: belongs to {user_name(uid)}; run inference only on checkpoints of yours "
                                   "(loading a checkpoint may run code as whoever loads it)")
        if uid == 0 and os.geteuid() == 0 and _others_may_swap(source):
            raise PermissionDenied(f"{args.source}: lies in a folder that others may write; root loads checkpoints only "
                                   "from folders no one else can change (copy it into one)")
    else:
        job = find_job(h, store(h), args.source)
        if job.get("uid") is None:
            raise RunnerError(f"job {job['id']}: has not run yet; it has no checkpoint to infer with")
        uid, source = job["uid"], job["id"]
        if uid != os.geteuid() and os.geteuid() != 0:
            raise PermissionDenied(f"job {job['id']}: belongs to {job.get('user')}; only they (or root, as them) may run "
                                   "inference with its checkpoints")
    if drops_privileges(uid):
        from runner.privdrop import run_as

        try:
            who = person(uid)
        except KeyError:
            raise RunnerError(f"{args.source}: its owner (uid {uid}) is not a user of this machine; nobody to run it as") from None
        results = run_as(who, "infer", {"home": str(h.root), "source": source, "images": images, "model": args.model,
                                        "table": args.table}, here=infer_here)
    else:
        results = run_inference(h, source, images, args.model, args.table)
    import sys

    for note in dict.fromkeys(r["note"] for r in results if isinstance(r, dict) and isinstance(r.get("note"), str)):
        print(f"runner: {note}", file=sys.stderr)
    print_json(results if len(results) != 1 else results[0])
    return 0


UPLOAD_SUFFIXES = (".png", ".jpg", ".bmp", ".tif")
"""The file names an uploaded image may get (by its kind, told from its first bytes by the dashboard)."""


def infer_here(payload: dict):
    """The infer verb's work in the helper (runner.privsep), as the owner of the job or checkpoint:
    what her checkpoint (a pickle, for some frameworks) or her checkout makes the framework run, runs
    as her, never as root."""
    import base64  # (loaded before the helper drops: the verb's modules in runner.privsep name it)
    import shutil
    import tempfile

    from runner.home import Home

    upload = payload.get("upload")
    if not upload:
        return run_inference(Home(payload["home"]), payload["source"], payload["images"], payload.get("model"), payload.get("table") or "job")
    # an image sent to the dashboard: written by her, in a folder of hers, for the length of the inference
    folder = tempfile.mkdtemp(prefix="runner-infer-")
    try:
        image = os.path.join(folder, "upload" + (upload["suffix"] if upload.get("suffix") in UPLOAD_SUFFIXES else ".png"))
        with open(image, "xb") as f:
            f.write(base64.b64decode(upload["data"], validate=True))
        return run_inference(Home(payload["home"]), payload["source"], [image], payload.get("model"), payload.get("table") or "job")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _others_may_swap(path: str) -> bool:
    """Whether anyone but root could replace `path` or a folder above it (between root's look at
    its owner and the load): a folder or link on the way not root's, or one others may write
    without the sticky bit's protection."""
    import stat as st_

    p = Path(path)
    for part in [p, *p.parents]:
        try:
            st = os.lstat(part)
        except OSError:
            return True
        if st.st_uid != 0:
            return True
        if part != p and st.st_mode & 0o022 and not st.st_mode & st_.S_ISVTX:
            return True
    return False


def _sidecar(ckpt: Path, name: str) -> dict:
    """A checkpoint's metadata file (which framework loads it), trusted only when it is the
    checkpoint owner's own regular file: a teammate's file beside it does not choose the loader."""
    path = ckpt.with_suffix(".json") if name == ".json" else ckpt / name
    try:
        st, own = os.lstat(path), os.stat(ckpt)
    except OSError:
        return {}
    import stat as st_

    if not st_.S_ISREG(st.st_mode) or st.st_uid != own.st_uid:
        return {}
    try:
        data = json.loads(path.read_bytes()[:1 << 20])
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_inference(h, source: str, images: list[str], model: str | None = None, table: str = "job") -> list[dict]:
    """InferenceResult dicts, one per image, from a job (id) or a checkpoint file, in its env: run
    by whoever calls it (the job's owner: see infer). `table`: for a repo job, whose table makes
    the checkout (runner.repos.infer.TABLES)."""
    from runner.envs import EnvManager, named_request
    from runner.exceptions import RunnerError
    from runner.queries import find_job

    s = store(h)
    src = Path(source)
    if src.is_absolute() and src.exists():
        ckpt = src
        meta = _sidecar(src, ".json") or (_sidecar(src, "runner_meta.json") if src.is_dir() else {})
        env_name = meta.get("framework", "timm") if isinstance(meta.get("framework", "timm"), str) else "timm"
        env_hash = None
        framework = env_name if not model else model.split("/", 1)[0]
    else:
        job = find_job(h, s, source)
        if (job.get("model") or "").startswith("repo/"):  # the repo's own predict script, as its table maps it
            from runner.repos import infer as repo_infer
            from runner.registry import load

            mgr = EnvManager(h.envs, s, h.config.get("envs"))
            return repo_infer.infer(h, s, load(h), mgr, job, images, table_of=table)
        arts = [a["path"] for a in s.artifacts(job["id"])]
        # best, then last: a file named so, or a save_pretrained folder named so
        best = ([a for a in arts if "best" in (Path(a).stem, Path(a).parent.name)]
                or [a for a in arts if "last" in (Path(a).stem, Path(a).parent.name)] or arts)
        if not best:
            raise RunnerError(f"job {job['id']}: has no checkpoint to infer with")
        ckpt = Path(best[0])
        env_name, env_hash = job["env"], job["env_hash"]
        if job.get("kind") == "command" or not job.get("model"):
            raise RunnerError(f"job {job['id']}: is a command job; runner infers with a model job's checkpoint "
                              "(a framework's or a repo's), not with what a command wrote")
        framework = job["model"].split("/", 1)[0]
    if table != "job":
        raise RunnerError(f"--table {table}: only a repo job's checkout is made by a table; {source} is not a repo job")
    mgr = EnvManager(h.envs, s, h.config.get("envs"))
    if env_hash and mgr.ready(env_hash):
        python = mgr.python(env_hash)
    else:
        req = named_request(env_name)
        python = mgr.python(req.key) if mgr.ready(req.key) else mgr.ensure(req) / "bin" / "python"
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "CUDA_VISIBLE_DEVICES": ""}
    # cwd "/": `-m` imports from the folder it runs in first, which may be /tmp or a teammate's folder
    r = subprocess.run([str(python), "-m", "adapters", "infer", "--framework", framework, os.path.abspath(ckpt),
                        *map(os.path.abspath, images)], capture_output=True, text=True, env=env, cwd="/")
    if r.returncode != 0:
        last = [l for l in r.stderr.strip().splitlines() if l.strip()][-1:] or [f"exit status {r.returncode}"]
        raise RunnerError(f"inference failed: {last[0].removeprefix('runner: ')[:1000]}")
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
