"""The rules of a job spec that need no pydantic, shared by `spec.JobSpec` (the daemon, the HTTP
submit's helper, `runner check`) and `specfast` (the quick check of `runner submit`), so that the
two cannot differ in them.

A rule returns None when the value passes, or the problem: a string (what was expected; the model
raises it as a ValueError, which `spec.format_errors` prints as `field: given X; expected ...`), or
a list of finished `field: problem` lines.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import defaults

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

RESERVED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "PYTHONUNBUFFERED", "XDG_CACHE_HOME", "VIRTUAL_ENV",
                "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HF_DATASETS_OFFLINE", "GCONV_PATH", "GLIBC_TUNABLES")
"""Variables a job file may not set: runner sets them itself, or the loader reads them before the sandbox."""

RESERVED_ENV_PREFIXES = ("LD_", "RUNNER_")
"""Prefixes of variables a job file may not set: the dynamic loader's, and runner's own."""

SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
               "/sys", "/usr", "/var/lib", "/var/log", "/var/spool", "/var/cache", "/var/run", "/snap")
"""A workdir may not be one of these or inside them: the job's bind mount would make them writable."""

SHARED_PARENTS = ("/", "/home", "/tmp", "/var", "/var/tmp", "/opt", "/srv", "/mnt", "/media", "/data")
"""A workdir may be inside these but not one of them: they hold other people's folders."""


def workdir_problem(path: str) -> str | None:
    """Why an absolute workdir may not be used, or None."""
    p = os.path.normpath(path)
    if p in SHARED_PARENTS or p == "//":
        return f"{p} is a system folder shared by everyone; give a folder of your own inside it"
    for d in SYSTEM_DIRS:
        if p == d or p.startswith(d + "/"):
            return f"{p} is a system folder ({d}); give a folder of your own"
    return None


def describe_input(value) -> str:
    """A given value as a one-line message shows it (cut at 60 characters)."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key(part) -> str:
    """A field name or index as it goes into a one-line message (odd user keys quoted, cut short)."""
    text = str(part)
    return text if re.fullmatch(r"[\w.\-]{1,64}", text) else json.dumps(text[:40])


ENVS_SRC = Path(__file__).resolve().parent.parent / "envs"
"""The packaged envs: a folder each, with its requirements.in and lock (runner.envs builds them)."""


def named_env_names() -> list[str]:
    """Env names defined under envs/ (the packaged envs a job may name, with 'system')."""
    return sorted(p.name for p in ENVS_SRC.iterdir() if (p / "requirements.in").exists()) if ENVS_SRC.exists() else []


def known_envs() -> list[str]:
    """The packaged envs a job may name (envs/'s folders)."""
    return named_env_names()


def checkpoint_pattern_problem(pattern) -> str | None:
    """Why a checkpoint glob may not be used (it must stay inside the job folder), or None."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "an empty pattern; expected a glob relative to the job folder, e.g. checkpoints/*.pt"
    if pattern.startswith(("/", "~")) or "\\" in pattern or "\x00" in pattern:
        return f"{pattern!r} is not relative to the job folder; expected a glob inside it, e.g. checkpoints/*.pt"
    if ".." in pattern.split("/"):
        return f"{pattern!r} leaves the job folder (..); expected a glob inside it, e.g. checkpoints/*.pt"
    return None


def unknown_env() -> str:
    """What a job's env: name should have been."""
    return f"an env name: 'system' or one of envs/: {', '.join(known_envs())}"


def allows_urls(site) -> bool:
    """Whether a site config lets requirements be `name @ URL` ([envs] allow_requirement_urls)."""
    site = site if isinstance(site, dict) else {}
    return bool((site.get("envs") or {}).get("allow_requirement_urls"))


# --- EnvSpec -----------------------------------------------------------------------------------

def requirements_problem(v, allow: bool):
    """env.requirements: each line goes to `uv pip compile` as a line of a requirements file: a
    URL, a path or an option there would fetch or run what the user points at."""
    if v is None:
        return None
    from .requirement import requirement_problem

    problems = [f"env.requirements.{i}: given {describe_input(r)}; expected {p}"
                for i, r in enumerate(v) if (p := requirement_problem(r, allow))]
    return problems or None


def python_problem(v):
    """env.python: a version such as 3.11."""
    if v is not None and not re.fullmatch(r"3\.\d{1,2}(\.\d{1,3})?", v):
        return 'a Python version such as "3.11"'
    return None


def env_source_problem(requirements, requirements_file, name):
    """An inline env has one source (a list or a file); a packaged one is named, never a path."""
    inline = requirements is not None or requirements_file is not None
    if requirements is not None and requirements_file is not None or not inline and name is None:
        return "give exactly one of requirements (a list) or requirements_file (a path), or name"
    if not inline and name not in known_envs():  # a packaged env: never a path
        return [f"env.name: given {describe_input(name)}; expected one of envs/: {', '.join(known_envs())}"]
    if inline and name is not None and not _ENV_NAME.match(name):  # only a label for `runner envs ls`
        return [f"env.name: given {describe_input(name)}; expected letters, digits, '_', '.', '-' "
                "(at most 64, starting with a letter or digit)"]
    return None


# --- Dataset, Resources, SlurmOptions ------------------------------------------------------------

def tiles_problem(tile, overlap, keep_difficult, format):
    """Tiling options apply to the aerial and VOC formats, and a tile is larger than its overlap."""
    if tile is not None and overlap >= tile:
        return f"overlap ({overlap}) must be smaller than tile ({tile})"
    if (tile is not None or keep_difficult) and format not in ("dota", "hrsc2016", "voc"):
        return "tile and keep_difficult apply to the dota, hrsc2016 and voc formats"
    return None


def gpu_ids_problem(gpus, gpu_ids):
    """gpu_ids: distinct indexes, as many as gpus (when both are given)."""
    if gpu_ids is not None:
        if any(not 0 <= i < 1024 for i in gpu_ids):
            return "gpu_ids are GPU indexes from 0 to 1023"
        if len(set(gpu_ids)) != len(gpu_ids):
            return "gpu_ids must not repeat a GPU"
        if gpus not in (0, len(gpu_ids)):
            return f"gpus is {gpus} but gpu_ids names {len(gpu_ids)}"
    return None


def sbatch_problem(v):
    """slurm.sbatch_args: long options only, one line each."""
    if any(not a.startswith("--") or len(a) > 1000 or "\n" in a for a in v):
        return "sbatch options, each starting with -- (e.g. --constraint=a100)"
    return None


# --- JobSpec ---------------------------------------------------------------------------------------

def mlflow_problem(v):
    """mlflow: false, true, or {experiment: NAME}."""
    what = "false (not mirrored), true, or {experiment: NAME} (the run's MLflow experiment)"
    if v is None or isinstance(v, bool):
        return None
    if not isinstance(v, dict) or set(v) - {"experiment"}:
        return what
    exp = v.get("experiment")
    if exp is not None and (not isinstance(exp, str) or not exp.strip() or len(exp) > 500):
        return "{experiment: NAME} with a name of 1 to 500 characters"
    return None


def name_problem(v):
    """name: a short label of safe characters."""
    if v is not None and not _NAME.match(v):
        return "letters, digits, '_', '.', '-' (at most 100, starting with a letter or digit)"
    return None


def command_problem(v):
    """command: a string for the shell or a list of strings, within the kernel's limits (one clear
    message instead of one per member of a str | list[str] union)."""
    if v is None:
        return None
    what = "a non-empty command (a string for the shell, or a list of strings)"
    if isinstance(v, str):
        if not v.strip():
            return what
        if len(v.encode()) > defaults.MAX_ARG_BYTES:
            return f"a command of at most {defaults.MAX_ARG_BYTES} bytes"
        return None
    if not isinstance(v, list) or not v or not all(isinstance(a, str) for a in v) or not v[0]:
        return what
    if len(v) > defaults.MAX_ARGS:
        return f"at most {defaults.MAX_ARGS} arguments (given {len(v)})"
    for i, a in enumerate(v):
        if len(a.encode()) > defaults.MAX_ARG_BYTES:
            return f"arguments of at most {defaults.MAX_ARG_BYTES} bytes (argument {i} has {len(a.encode())})"
    return None


def env_name_problem(v: str):
    """env: NAME: 'system' or a folder of envs/; never a path."""
    if not _ENV_NAME.match(v) or v != "system" and v not in known_envs():
        return unknown_env()
    return None


def env_vars_problem(v: dict):
    """env_vars: valid names, none that runner or the loader owns, values within the kernel's limits."""
    if len(v) > defaults.MAX_ENV_VARS:
        return f"at most {defaults.MAX_ENV_VARS} variables (given {len(v)})"
    problems = []
    for name, value in v.items():
        if not _VAR_NAME.match(name):
            problems.append(f"env_vars: {json.dumps(name[:40])} is not a valid environment variable name (letters, digits, '_')")
        elif name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
            problems.append(f"env_vars.{name}: may not be set by a job: runner sets it, or the loader reads it before the "
                            f"sandbox (reserved: {', '.join(RESERVED_ENV)}, {', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)})")
        elif len(value.encode()) > defaults.MAX_ARG_BYTES:
            problems.append(f"env_vars.{name}: {len(value.encode())} bytes; expected at most {defaults.MAX_ARG_BYTES}")
    return problems or None


def workdir_field_problem(v):
    """workdir: an absolute one is not a system folder (a relative one is resolved at submit)."""
    if v is not None and os.path.isabs(v):
        problem = workdir_problem(v)
        if problem:
            return f"a folder of your own, not a system folder: {problem}"
    return None


def after_problem(v):
    """after: job ids (or prefixes) of bounded length."""
    if any(len(x) > 4096 for x in v):
        return "strings of at most 4096 characters"
    return None


def checkpoints_problem(v):
    """checkpoints: globs the daemon follows in the job folder, never out of it (the files it
    records are uploaded to MLflow and offered to `runner infer`)."""
    problems = []
    for i, pattern in enumerate(v):
        problem = "at most 4096 characters" if len(pattern) > 4096 else checkpoint_pattern_problem(pattern)
        if problem:
            problems.append(f"checkpoints.{i}: {problem}")
    return problems or None


def what_to_run_problem(model, framework, model_name, command, dataset, env_vars):
    """Exactly one of a command or a model (FRAMEWORK/NAME, or framework: with model_name:), and a
    model job has a dataset and leaves PYTHONPATH to runner."""
    if model and framework:
        return "give model: FRAMEWORK/NAME, or framework: with model_name:, not both"
    if framework and not model_name:
        return "framework: needs model_name:"
    if framework:
        model = f"{framework}/{model_name}"
    runs_model = model is not None
    if runs_model == (command is not None):
        return "give exactly one of command: (any program) or model: (e.g. timm/resnet18)"
    if runs_model and "/" not in model:
        return f"model {model!r}: expected FRAMEWORK/NAME, e.g. timm/resnet18 or repo/yolov7"
    if runs_model and dataset is None:
        return "a model job needs dataset: {path: ..., format: ...}"
    if runs_model and "PYTHONPATH" in env_vars:
        return "env_vars: PYTHONPATH is set by runner for model jobs (it finds the adapters there)"
    return None


# --- the whole mapping, before its fields ----------------------------------------------------------

def nul_problems(data, path: str, out: list, depth: int = 0):
    """NUL bytes, nesting past MAX_SPEC_DEPTH and non-finite numbers anywhere in a spec, as lines."""
    if depth > defaults.MAX_SPEC_DEPTH:
        out.append(f"{path or '(job)'}: nested deeper than {defaults.MAX_SPEC_DEPTH} levels")
        return
    if isinstance(data, str):
        if "\x00" in data:
            out.append(f"{path or '(job)'}: contains a NUL byte; expected text without NUL")
    elif isinstance(data, dict):
        for k, v in data.items():
            if "\x00" in str(k):
                out.append(f"{path or '(job)'}: a key contains a NUL byte")
                continue
            nul_problems(v, f"{path}.{key(k)}" if path else key(k), out, depth + 1)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            nul_problems(v, f"{path}.{i}" if path else str(i), out, depth + 1)
    elif isinstance(data, float) and data != data or data in (float("inf"), float("-inf")):
        out.append(f"{path or '(job)'}: given {data}; expected a finite number")


def mapping_problems(data) -> list[str]:
    """What is wrong with a spec as a whole before its fields are read: not a mapping, a NUL byte,
    too deep, a non-finite number, too big. [] when nothing."""
    if not isinstance(data, dict):
        return [f"(job): given {describe_input(data)}; expected a mapping of fields (name:, command: or model:, ...)"]
    problems: list[str] = []
    nul_problems(data, "", problems)
    if problems:
        return problems
    size = len(json.dumps(data, default=str))
    if size > defaults.MAX_SPEC_BYTES:
        return [f"(job): the spec is {size} bytes; at most {defaults.MAX_SPEC_BYTES} (keep data in files, not in the spec)"]
    return []
