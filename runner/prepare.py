"""Turn a claimed job into JOB_DIR/launch.json: env, argv, environment, limits, sandbox.

Runs in a daemon worker thread during `preparing`; the env build (minutes, the first time) and
the repo checkout happen here, never in the main loop.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import envs, sandbox
from .exceptions import EnvBuildError

_ROOT = Path(__file__).resolve().parent.parent


def _write_json(path: Path, data, mode: int = 0o644):
    tmp = path.with_name(path.name + ".tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1))
    os.replace(tmp, path)


def job_secrets(home, job: dict) -> dict:
    """The job's env_vars with their values (kept apart from the store, readable by the daemon only)."""
    from .secrets import read

    return read(home, job["id"], job["spec"].get("env_vars") or {})


def env_request(env, config: dict):
    """The EnvRequest of a job's `env:` (None for 'system')."""
    if env in (None, "system"):
        return None
    if isinstance(env, str):
        return envs.named_request(env)
    if env.get("requirements") is not None:
        return envs.inline_request(env["requirements"], env.get("python"), config.get("envs"), name=env.get("name", "inline"))
    return envs.named_request(env["name"], env.get("python"))


def build_env(req, envmgr, job: dict, log) -> Path:
    """The job's env, built now if missing (uv's lines go to the job's log)."""
    log(f"runner: env {req.name} ({req.key}){' ready' if envmgr.ready(req.key) else ': building with uv'}")
    try:
        return envmgr.ensure(req, job_id=job["id"], log=log)
    except EnvBuildError as e:
        raise EnvBuildError(f"env {req.name}: {e}") from None


def write_launch(job: dict, home, argv: list, cwd: Path, path_dirs: list, extra_env: dict, network: bool,
                 writable: list, log) -> dict:
    """JOB_DIR/launch.json for the shim: the environment built from nothing (offline settings,
    the job's GPUs, the spec's variables), resource limits, and the sandbox around argv."""
    spec = job["spec"]
    job_dir = home.job_dir(job["id"])
    extra_env = dict(extra_env)
    if not network:
        extra_env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    uuids = job.get("gpu_uuids") or []
    extra_env.update({
        "CUDA_VISIBLE_DEVICES": ",".join(uuids),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "RUNNER_NUM_GPUS": str(len(uuids)),
        "RUNNER_JOB_ID": job["id"],
    })
    if spec.get("check"):
        extra_env["RUNNER_CHECK"] = "1"
        if spec["check"].get("keep"):
            extra_env["RUNNER_CHECK_KEEP"] = "1"
    extra_env.update(job_secrets(home, job))
    environ = sandbox.job_environment(job_dir, path_dirs, extra_env, job["user"], home.cache)
    wrapped, sandboxed = sandbox.wrap(argv, job_dir, writable, network=network, cwd=cwd, protect=[home.root])
    if not sandboxed and not network:
        log("runner: warning: bubblewrap is not available here, so network: false cannot be enforced")
    launch = {"argv": wrapped, "env": environ, "cwd": str(cwd), "rlimits": sandbox.rlimits(spec.get("resources", {})),
              "sandboxed": sandboxed}
    _write_json(job_dir / "launch.json", launch, mode=0o600)  # it holds the env_vars values
    return launch


class Prepared:
    """What prepare() found: the launch spec plus what the watcher needs (parser, checkpoints)."""

    def __init__(self, launch: dict, parser, checkpoints: list, env_hash: str | None, results_file: dict | None = None):
        self.launch, self.parser, self.checkpoints, self.env_hash = launch, parser, checkpoints, env_hash
        self.results_file = results_file  # a repo's own per-epoch file, compared with the parsed log


def prepare(job: dict, home, registry, envmgr, log) -> Prepared:
    """Build what the job needs and write its launch.json. Raises RunnerError subclasses."""
    spec = job["spec"]
    job_dir = home.job_dir(job["id"])
    job_dir.mkdir(parents=True, exist_ok=True)
    env_hash, path_dirs, extra_env = None, [], {}
    parser, checkpoints = spec.get("parser"), list(spec.get("checkpoints", []))
    env_spec = spec.get("env")
    if spec.get("model", "").startswith("repo/"):
        from . import repos

        return repos.prepare(job, home, registry, envmgr, log)
    req = env_request(env_spec, home.config)
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
        if isinstance(parser, str) and parser in registry.frameworks:
            parser = registry.frameworks[parser].get("parser")
    else:
        from config_translators import for_framework

        fw_name = spec["model"].split("/", 1)[0]
        fw = registry.get_framework(fw_name)
        model = registry.get_model(spec["model"]) or {"model_name": spec["model"].split("/", 1)[1], "framework": fw_name}
        settings = for_framework(fw_name).translate({"spec": spec, "model": model, "id": job["id"]}, str(job_dir))
        _write_json(job_dir / "job.json", settings)
        argv = [python, "-m", "adapters", "train", str(job_dir / "job.json")]
        cwd = job_dir
        extra_env["PYTHONPATH"] = str(_ROOT)
        parser = parser or fw.get("parser")
        checkpoints = checkpoints or fw.get("checkpoints", [])
    launch = write_launch(job, home, argv, cwd, path_dirs, extra_env, spec.get("network", True), [cwd, home.cache], log)
    return Prepared(launch, parser, checkpoints, env_hash)


def spawn_shim(job_dir: Path):
    """Start the shim for a prepared job in a session of its own; returns the Popen."""
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(Path(__file__).with_name("shim.py")), str(job_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
