"""Turn a claimed job into JOB_DIR/launch.json: env, argv, environment, limits, sandbox.

Runs in a daemon worker thread during `preparing`; the env build (minutes, the first time) and
the repo checkout happen here, never in the main loop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import envs
from .backends.local_launcher import ShimLauncher, spawn_shim  # noqa: F401  (re-exported: the local backend's, its old place)
from .exceptions import RunnerError
from .identity import check_paths_as, drops_privileges, hand_over
# what prepare and runner/repos/ share lives in launchspec (repos imports it, not prepare: no cycle);
# prepare's callers and privsep's table still find these names here
from .launchspec import (  # noqa: F401
    USER_SIDE_PREFIX, Prepared, _write_json, _write_text, build_env, checked_report, datasets_cache, job_dir_mode,
    job_person, job_secrets, log_dataset_report, log_mode, place_dataset_part, translate_as, translate_here, write_launch)

_ROOT = Path(__file__).resolve().parent.parent


def env_request(env, config: dict, owner: int | None = None, state_root: Path | None = None):
    """The EnvRequest of a job's `env:` (None for 'system'). A packaged env is named, never given
    by a path (checked again here: a spool record may have been written by hand); inline
    requirements are `owner`'s, locked and built by the build user (runner.envjail), with the
    state folder out of its sight."""
    econf = config.get("envs")
    if env in (None, "system"):
        return None
    if isinstance(env, str):
        return envs.named_request(env, config=econf)
    if not isinstance(env, dict):
        raise RunnerError(f"env: given {str(env)[:60]!r}; expected an env name or {{requirements: [...]}}")
    if env.get("requirements") is not None:
        return envs.inline_request(env["requirements"], env.get("python"), econf, name=env.get("name", "inline"),
                                   owner=owner, state_root=state_root)
    if env.get("requirements_file") is not None:  # runner submit reads it; a record that still names it was not made by runner
        raise RunnerError("env.requirements_file: not read at submit; submit the job with `runner submit` or POST /jobs")
    return envs.named_request(env.get("name"), env.get("python"), econf)


def waiting_envs(store, config: dict) -> tuple[set, set, set]:
    """(env keys, repo env names, inline inputs) that queued and preparing jobs will use: a job's
    env is recorded only once it runs, so `runner envs gc` and `rm` must not remove these
    meanwhile. A repo's env key is known only after its requirements are resolved at prepare: its
    name ("repo:X") stands in; an inline env's, only once locked: what was asked for
    (envs.inline_inputs, kept with the env) stands in, so nothing here runs uv."""
    import json

    keys, names, inputs, seen = set(), set(), set(), set()
    rows = store.waiting_specs()
    for row in rows:
        spec = row["spec"] if isinstance(row["spec"], dict) else json.loads(row["spec"] or "{}")
        if str(spec.get("model", "")).startswith("repo/"):
            names.add("repo:" + spec["model"].split("/", 1)[1])
            continue
        env = spec.get("env")
        if isinstance(env, dict) and isinstance(env.get("requirements"), list):
            inputs.add(envs.inline_inputs(env["requirements"], env.get("python"), row["uid"]))
            continue
        sig = json.dumps(env, sort_keys=True)
        if sig in seen:
            continue
        seen.add(sig)
        try:
            req = env_request(env, config)
        except Exception:  # an env that no longer resolves: its job will fail at prepare, nothing to keep
            continue
        if req is not None:
            keys.add(req.key)
    return keys, names, inputs


def default_command_parser(home, log):
    """The parser of a command job that asked for none. Metrics are seen by everyone: a team
    server whose logs are private makes none from a log unless the job asks (`parser: generic`),
    and says so in the log; a single-user daemon or one with [server] share_logs parses as before."""
    if os.geteuid() != 0 or home.config.get("server", {}).get("share_logs"):
        return "generic"
    log("runner: this job's log is private, so key=value lines it prints are not made into metrics (which everyone can see); "
        "to have them, submit with `parser: generic` in the job file or `runner submit --parser generic`")
    return "none"


def fresh_job_dir(home, job_id: str) -> Path:
    """The job's folder, made new by the daemon: one left from an earlier try that its user could
    write is moved aside first, so the daemon never writes into a folder a user controls."""
    job_dir = home.job_dir(job_id)
    try:
        st = os.lstat(job_dir)
    except FileNotFoundError:
        pass
    else:
        if st.st_uid != os.geteuid() or not os.path.isdir(job_dir) or os.path.islink(job_dir):
            os.rename(job_dir, job_dir.with_name(f"{job_id}.earlier-{os.getpid()}-{int(st.st_mtime)}"))
    job_dir.mkdir(parents=True, exist_ok=True)
    run = home.run_dir(job_id)
    run.mkdir(parents=True, exist_ok=True)
    os.chmod(run, 0o711)
    return job_dir


def prepare(job: dict, home, registry, envmgr, log) -> Prepared:
    """Build what the job needs and write its launch.json. Raises RunnerError subclasses."""
    spec = job["spec"]
    who = job_person(job)
    problems = check_paths_as(spec, who) if drops_privileges(who.uid) else []
    if problems:
        raise RunnerError("; ".join(problems))
    job_dir = fresh_job_dir(home, job["id"])
    env_hash, path_dirs, extra_env = None, [], {}
    parser, checkpoints = spec.get("parser"), list(spec.get("checkpoints", []))
    env_spec = spec.get("env")
    if isinstance(parser, str) and parser in registry.frameworks:  # a framework's log format, by its name
        parser = registry.frameworks[parser].get("parser")
    if spec.get("model", "").startswith("repo/"):
        from . import repos

        return repos.prepare(job, home, registry, envmgr, log)
    hand_over(job_dir, who, job_dir_mode(home))  # hers from here on: the daemon writes no more there
    if "model" in spec:
        # Her dataset is read, checked and converted by a helper running as her, before any env
        # is built: a dataset that cannot work fails in seconds, not after a build.
        fw_name = spec["model"].split("/", 1)[0]
        fw = registry.get_framework(fw_name)
        model = registry.get_model(spec["model"]) or {"model_name": spec["model"].split("/", 1)[1], "framework": fw_name}
        answer = translate_as(who, "framework", {"spec": spec, "model": model, "id": job["id"],
                                                 "datasets_cache": str(datasets_cache(home, who))}, job_dir, framework=fw_name)
        if checked_report(answer):
            log_dataset_report(spec, checked_report(answer), log)
    req = env_request(env_spec, home.config, owner=who.uid, state_root=home.root)
    if req is not None:
        env_dir = build_env(req, envmgr, job, log)
        env_hash = req.key
        python = str(env_dir / "bin" / "python")
        path_dirs.append(str(env_dir / "bin"))
        extra_env["VIRTUAL_ENV"] = str(env_dir)
    else:
        python = sys.executable
        path_dirs.append(os.path.dirname(sys.executable))
    if "command" in spec:
        cmd = spec["command"]
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        cwd = Path(spec.get("workdir") or job_dir)
        if parser is None and not spec.get("parser"):
            parser = default_command_parser(home, log)
    else:
        argv = [python, "-m", "adapters", "train", str(job_dir / "job.json")]
        cwd = job_dir
        extra_env["PYTHONPATH"] = str(_ROOT)
        parser = parser or fw.get("parser")
        checkpoints = checkpoints or fw.get("checkpoints", [])
    launch = write_launch(job, home, argv, cwd, path_dirs, extra_env, spec.get("network", True), [cwd, home.cache], log)
    return Prepared(launch, parser, checkpoints, env_hash)
