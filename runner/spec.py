"""The job spec: a pydantic model loaded from YAML or JSON.

A bad spec is refused at submit with one line per problem (field path, what was given, what is
expected) and nothing is queued. Only the shape is checked here; `resolve.py` checks the spec
against the world (files, registry, framework schemas). The daemon validates every spool record
with the same `parse_spec`, so a file dropped in the spool by hand meets the same rules.

Values are not coerced: `network: 'no'` or `priority: "5"` are refused. The documented exceptions
are made by the YAML loader: items of `command` and values of `env_vars` are taken as the text
written, so `command: [true]` runs the program `true` and `OMP_NUM_THREADS: 4` is the string "4".
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from . import defaults
from .exceptions import SpecError

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


def _lines(lines: list[str]):
    """An error made of finished `field: problem` lines (format_errors passes them through)."""
    return PydanticCustomError("runner_lines", "{lines}", {"lines": "\n".join(lines)})


def workdir_problem(path: str) -> str | None:
    """Why an absolute workdir may not be used, or None."""
    p = os.path.normpath(path)
    if p in SHARED_PARENTS or p == "//":
        return f"{p} is a system folder shared by everyone; give a folder of your own inside it"
    for d in SYSTEM_DIRS:
        if p == d or p.startswith(d + "/"):
            return f"{p} is a system folder ({d}); give a folder of your own"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _allows_urls(info: ValidationInfo) -> bool:
    """Whether the site config given to parse_spec lets requirements be `name @ URL` ([envs] allow_requirement_urls)."""
    site = info.context if isinstance(info.context, dict) else {}
    return bool((site.get("envs") or {}).get("allow_requirement_urls"))


def _known_envs() -> list[str]:
    from .envs import named_env_names  # a folder listing; env building itself is not loaded

    return named_env_names()


def _unknown_env() -> str:
    return f"an env name: 'system' or one of envs/: {', '.join(_known_envs())}"


class EnvSpec(_Strict):
    """An env given inline: a requirements list or file, and optionally a Python version; or a
    packaged env by name (with another Python). Requirements are package specifiers only."""

    requirements: Optional[list[str]] = Field(None, max_length=1000)
    requirements_file: Optional[str] = Field(None, max_length=4096)
    python: Optional[str] = Field(None, max_length=32)
    name: Optional[str] = Field(None, max_length=64)
    _allow_urls: bool = PrivateAttr(False)

    @field_validator("requirements")
    @classmethod
    def _specifiers(cls, v, info: ValidationInfo):
        # Each line goes to `uv pip compile` as a line of a requirements file: a URL, a path or an
        # option there would fetch or run what the user points at.
        if v is None:
            return v
        from .envs import requirement_problem

        allow = _allows_urls(info)
        problems = [f"env.requirements.{i}: given {_describe_input(r)}; expected {p}"
                    for i, r in enumerate(v) if (p := requirement_problem(r, allow))]
        if problems:
            raise _lines(problems)
        return v

    @field_validator("python")
    @classmethod
    def _python(cls, v):
        if v is not None and not re.fullmatch(r"3\.\d{1,2}(\.\d{1,3})?", v):
            raise ValueError('a Python version such as "3.11"')
        return v

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo):
        inline = self.requirements is not None or self.requirements_file is not None
        if self.requirements is not None and self.requirements_file is not None or not inline and self.name is None:
            raise ValueError("give exactly one of requirements (a list) or requirements_file (a path), or name")
        if not inline and self.name not in _known_envs():  # a packaged env: never a path
            raise _lines([f"env.name: given {_describe_input(self.name)}; expected one of envs/: {', '.join(_known_envs())}"])
        if inline and self.name is not None and not _ENV_NAME.match(self.name):  # only a label for `runner envs ls`
            raise _lines([f"env.name: given {_describe_input(self.name)}; expected letters, digits, '_', '.', '-' "
                          "(at most 64, starting with a letter or digit)"])
        self._allow_urls = _allows_urls(info)
        return self

    @property
    def allows_urls(self) -> bool:
        """Whether this spec was validated under a site config that allows `name @ URL` requirements."""
        return self._allow_urls


class Dataset(_Strict):
    """Where the data is and in what layout."""

    path: str = Field(max_length=4096)
    format: Optional[Literal["imagefolder", "yolo", "coco", "dota", "hrsc2016", "voc", "masks", "captions"]] = Field(
        None, description="default: the usual format of the model's task (the registry's task_formats)")
    split: Optional[float] = Field(None, gt=0, lt=1, description="val fraction when there is no val/ folder")
    annotations: Optional[str] = Field(None, max_length=4096)
    keep_difficult: bool = Field(False, description="dota/hrsc2016/voc: keep objects marked difficult")
    tile: Optional[int] = Field(None, ge=64, le=16384, description="dota/hrsc2016/voc: cut larger images into tiles of this size")
    overlap: int = Field(0, ge=0, le=8192, description="pixels two neighbouring tiles share")

    @model_validator(mode="after")
    def _tiles(self):
        if self.tile is not None and self.overlap >= self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile ({self.tile})")
        if (self.tile is not None or self.keep_difficult) and self.format not in ("dota", "hrsc2016", "voc"):
            raise ValueError("tile and keep_difficult apply to the dota, hrsc2016 and voc formats")
        return self


class Train(BaseModel):
    """Training settings. Fields beyond these are framework settings, checked against its schema."""

    model_config = ConfigDict(extra="allow", strict=True)

    epochs: int = Field(1, ge=1, le=100_000)
    batch_size: Optional[int] = Field(None, ge=1, le=65_536)
    lr: Optional[float] = Field(None, gt=0, le=10, allow_inf_nan=False)
    input_size: Optional[int] = Field(None, ge=8, le=8192)
    pretrained: bool = False
    optimizer: Optional[str] = Field(None, max_length=64)
    auto_batch_size: bool = False
    seed: int = Field(0, ge=0, le=2**32 - 1)
    workers: int = Field(0, ge=0, le=64)
    resume: Optional[str] = Field(None, max_length=4096)


class Resources(_Strict):
    """What a job needs from the machine."""

    gpus: int = Field(0, ge=0, le=64)
    gpu_memory_gb: Optional[float] = Field(None, gt=0, le=16_384, allow_inf_nan=False)
    gpu_ids: Optional[list[int]] = Field(None, max_length=64)
    memory_gb: Optional[float] = Field(None, gt=0, le=defaults.MAX_MEMORY_GB, allow_inf_nan=False, description="address-space limit")
    max_open_files: Optional[int] = Field(None, ge=16, le=defaults.MAX_OPEN_FILES)
    max_processes: Optional[int] = Field(None, ge=1, le=defaults.MAX_PROCESSES)
    cpu_seconds: Optional[int] = Field(None, ge=1, le=defaults.MAX_SECONDS)
    time_limit: Optional[float] = Field(None, gt=0, le=defaults.MAX_SECONDS, allow_inf_nan=False, description="wall-clock seconds")

    @model_validator(mode="after")
    def _ids_match(self):
        if self.gpu_ids is not None:
            if any(not 0 <= i < 1024 for i in self.gpu_ids):
                raise ValueError("gpu_ids are GPU indexes from 0 to 1023")
            if len(set(self.gpu_ids)) != len(self.gpu_ids):
                raise ValueError("gpu_ids must not repeat a GPU")
            if self.gpus not in (0, len(self.gpu_ids)):
                raise ValueError(f"gpus is {self.gpus} but gpu_ids names {len(self.gpu_ids)}")
            self.gpus = len(self.gpu_ids)
        return self


class SlurmOptions(_Strict):
    """Where a job goes on a Slurm cluster (the site's [backend] gives the defaults)."""

    partition: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    account: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    qos: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    cpus_per_task: Optional[int] = Field(None, ge=1, le=4096)
    sbatch_args: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("sbatch_args")
    @classmethod
    def _options(cls, v):
        if any(not a.startswith("--") or len(a) > 1000 or "\n" in a for a in v):
            raise ValueError("sbatch options, each starting with -- (e.g. --constraint=a100)")
        return v


class JobSpec(_Strict):
    """One job: a command, or a model to train, with its data, env and resources."""

    name: Optional[str] = None
    command: Any = None
    model: Optional[str] = Field(None, max_length=200)
    framework: Optional[str] = Field(None, max_length=64)
    model_name: Optional[str] = Field(None, max_length=200)
    variant: Optional[str] = Field(None, max_length=200)
    task: Optional[str] = Field(None, max_length=64)
    dataset: Optional[Dataset] = None
    train: Train = Field(default_factory=Train)
    env: Any = None
    resources: Resources = Field(default_factory=Resources)
    network: Optional[bool] = None
    priority: int = Field(0, ge=-1000, le=1000)
    preemptible: Optional[bool] = None  # None: by kind (timm, Ultralytics, Transformers yes; commands, repos without resume no)
    after: list[str] = Field(default_factory=list, max_length=100)
    workdir: Optional[str] = Field(None, max_length=4096)
    env_vars: dict[str, str] = Field(default_factory=dict)
    parser: Optional[str] = Field(None, max_length=4096)
    checkpoints: list[str] = Field(default_factory=list, max_length=16)
    check: Optional[dict[str, Any]] = None
    mlflow: Any = None
    slurm: Optional[SlurmOptions] = None

    @field_validator("mlflow")
    @classmethod
    def _mlflow(cls, v):
        what = "false (not mirrored), true, or {experiment: NAME} (the run's MLflow experiment)"
        if v is None or isinstance(v, bool):
            return v
        if not isinstance(v, dict) or set(v) - {"experiment"}:
            raise ValueError(what)
        exp = v.get("experiment")
        if exp is not None and (not isinstance(exp, str) or not exp.strip() or len(exp) > 500):
            raise ValueError("{experiment: NAME} with a name of 1 to 500 characters")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and not _NAME.match(v):
            raise ValueError("letters, digits, '_', '.', '-' (at most 100, starting with a letter or digit)")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v):
        # One clear message instead of one per member of a str | list[str] union.
        if v is None:
            return v
        what = "a non-empty command (a string for the shell, or a list of strings)"
        if isinstance(v, str):
            if not v.strip():
                raise ValueError(what)
            if len(v.encode()) > defaults.MAX_ARG_BYTES:
                raise ValueError(f"a command of at most {defaults.MAX_ARG_BYTES} bytes")
            return v
        if not isinstance(v, list) or not v or not all(isinstance(a, str) for a in v) or not v[0]:
            raise ValueError(what)
        if len(v) > defaults.MAX_ARGS:
            raise ValueError(f"at most {defaults.MAX_ARGS} arguments (given {len(v)})")
        for i, a in enumerate(v):
            if len(a.encode()) > defaults.MAX_ARG_BYTES:
                raise ValueError(f"arguments of at most {defaults.MAX_ARG_BYTES} bytes (argument {i} has {len(a.encode())})")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v, info: ValidationInfo):
        if v is None:
            return v
        if isinstance(v, str):
            if not _ENV_NAME.match(v) or v != "system" and v not in _known_envs():
                raise ValueError(_unknown_env())  # never a path: the name picks a folder of envs/
            return v
        if isinstance(v, dict):
            try:
                return EnvSpec.model_validate(v, context=info.context)
            except ValidationError as err:
                raise _lines(format_errors(err, prefix="env")) from None
        if isinstance(v, EnvSpec):
            return v
        raise ValueError("an env name (e.g. 'timm', 'system') or a mapping {requirements: [...]} / {requirements_file: ...}")

    @field_validator("env_vars")
    @classmethod
    def _env_vars(cls, v):
        if len(v) > defaults.MAX_ENV_VARS:
            raise ValueError(f"at most {defaults.MAX_ENV_VARS} variables (given {len(v)})")
        problems = []
        for key, value in v.items():
            if not _VAR_NAME.match(key):
                problems.append(f"env_vars: {json.dumps(key[:40])} is not a valid environment variable name (letters, digits, '_')")
            elif key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIXES):
                problems.append(f"env_vars.{key}: may not be set by a job: runner sets it, or the loader reads it before the "
                                f"sandbox (reserved: {', '.join(RESERVED_ENV)}, {', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)})")
            elif len(value.encode()) > defaults.MAX_ARG_BYTES:
                problems.append(f"env_vars.{key}: {len(value.encode())} bytes; expected at most {defaults.MAX_ARG_BYTES}")
        if problems:
            raise _lines(problems)
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v):
        if v is not None and os.path.isabs(v):
            problem = workdir_problem(v)
            if problem:
                raise ValueError(f"a folder of your own, not a system folder: {problem}")
        return v

    @field_validator("after")
    @classmethod
    def _short_strings(cls, v):
        if any(len(x) > 4096 for x in v):
            raise ValueError("strings of at most 4096 characters")
        return v

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, v):
        # Globs the daemon follows in the job folder: never out of it (the files it records are
        # uploaded to MLflow and offered to `runner infer`).
        from .watch import checkpoint_pattern_problem

        problems = []
        for i, pattern in enumerate(v):
            problem = "at most 4096 characters" if len(pattern) > 4096 else checkpoint_pattern_problem(pattern)
            if problem:
                problems.append(f"checkpoints.{i}: {problem}")
        if problems:
            raise _lines(problems)
        return v

    @model_validator(mode="after")
    def _what_to_run(self):
        if self.model and self.framework:
            raise ValueError("give model: FRAMEWORK/NAME, or framework: with model_name:, not both")
        if self.framework and not self.model_name:
            raise ValueError("framework: needs model_name:")
        if self.framework:
            self.model = f"{self.framework}/{self.model_name}"
            self.framework = None
        runs_model = self.model is not None
        if runs_model == (self.command is not None):
            raise ValueError("give exactly one of command: (any program) or model: (e.g. timm/resnet18)")
        if runs_model and "/" not in self.model:
            raise ValueError(f"model {self.model!r}: expected FRAMEWORK/NAME, e.g. timm/resnet18 or repo/yolov7")
        if runs_model and self.dataset is None:
            raise ValueError("a model job needs dataset: {path: ..., format: ...}")
        if runs_model and "PYTHONPATH" in self.env_vars:
            raise ValueError("env_vars: PYTHONPATH is set by runner for model jobs (it finds the adapters there)")
        return self

    @property
    def kind(self) -> str:
        """'command' or 'model'."""
        return "command" if self.command is not None else "model"


def _describe_input(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(part) -> str:
    """A field name or index as it goes into a one-line message (odd user keys quoted, cut short)."""
    text = str(part)
    return text if re.fullmatch(r"[\w.\-]{1,64}", text) else json.dumps(text[:40])


def _loc(parts, prefix: str = "") -> str:
    # pydantic names the member of a union or a validator in the location ("list[str]",
    # "function-after[...]"): a user knows fields and indexes only.
    keep = [_key(p) for p in parts if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "bool")))]
    return ".".join(([prefix] if prefix else []) + keep) or "(job)"


def format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: `field.path: given X; expected Y`."""
    lines = []
    for e in err.errors():
        loc = _loc(e["loc"], prefix)
        msg = e["msg"].removeprefix("Value error, ").replace("Input should be ", "")
        if e["type"] == "runner_lines":
            lines += [l for l in e["ctx"]["lines"].split("\n") if l not in lines]
            continue
        if e["type"] == "missing":
            line = f"{loc}: missing; this field is required"
        elif e["type"] == "extra_forbidden":
            line = f"{loc}: unknown field (given {_describe_input(e.get('input'))}); check the spelling"
        else:
            line = f"{loc}: given {_describe_input(e.get('input'))}; expected {msg}"
        if line not in lines:
            lines.append(line)
    return lines


def _nul_problems(data, path: str, out: list, depth: int = 0):
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
            _nul_problems(v, f"{path}.{_key(k)}" if path else _key(k), out, depth + 1)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _nul_problems(v, f"{path}.{i}" if path else str(i), out, depth + 1)
    elif isinstance(data, float) and data != data or data in (float("inf"), float("-inf")):
        out.append(f"{path or '(job)'}: given {data}; expected a finite number")


def parse_spec(data: Any, site: dict | None = None) -> JobSpec:
    """Validate a mapping into a JobSpec, or raise SpecError with one line per problem. `site` is
    the site config (Home.config): its [envs] allow_requirement_urls lets requirements be URLs."""
    if not isinstance(data, dict):
        raise SpecError([f"(job): given {_describe_input(data)}; expected a mapping of fields (name:, command: or model:, ...)"])
    problems: list[str] = []
    _nul_problems(data, "", problems)
    if problems:
        raise SpecError(problems)
    size = len(json.dumps(data, default=str))
    if size > defaults.MAX_SPEC_BYTES:
        raise SpecError([f"(job): the spec is {size} bytes; at most {defaults.MAX_SPEC_BYTES} (keep data in files, not in the spec)"])
    try:
        return JobSpec.model_validate(data, context=site or {})
    except ValidationError as err:
        raise SpecError(format_errors(err)) from None
