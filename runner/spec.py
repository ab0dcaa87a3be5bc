"""The job spec: a pydantic model loaded from YAML or JSON.

A bad spec is refused at submit with one line per problem (field path, what was given, what is
expected) and nothing is queued. Only the shape is checked here; `resolve.py` checks the spec
against the world (files, registry, framework schemas). The daemon validates every spool record
with the same `parse_spec`, so a file dropped in the spool by hand meets the same rules.
`runner submit` checks first with `specfast` (the same verdicts and values without importing
pydantic; what it cannot vouch for comes here): a field changed here is changed in its FIELDS too,
or tests/test_specfast.py says so. The validators' rules live in `specrules`, shared by both.

Values are not coerced: `network: 'no'` or `priority: "5"` are refused. The documented exceptions
are made by the YAML loader: items of `command` and values of `env_vars` are taken as the text
written, so `command: [true]` runs the program `true` and `OMP_NUM_THREADS: 4` is the string "4".
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from . import defaults
from .exceptions import SpecError
from .specrules import (_ENV_NAME, _NAME, _VAR_NAME, RESERVED_ENV, RESERVED_ENV_PREFIXES, SHARED_PARENTS,  # noqa: F401 (named here too)
                        SYSTEM_DIRS, after_problem, allows_urls, checkpoints_problem, command_problem, env_name_problem,
                        env_source_problem, env_vars_problem, gpu_ids_problem, mapping_problems, mlflow_problem,
                        name_problem, python_problem, requirements_problem, sbatch_problem, tiles_problem,
                        what_to_run_problem, workdir_field_problem, workdir_problem)
from .specrules import describe_input as _describe_input, key as _key, known_envs as _known_envs  # noqa: F401
from .specrules import nul_problems as _nul_problems, unknown_env as _unknown_env  # noqa: F401


def _lines(lines: list[str]):
    """An error made of finished `field: problem` lines (format_errors passes them through)."""
    return PydanticCustomError("runner_lines", "{lines}", {"lines": "\n".join(lines)})


def _check(problem):
    """Raise a rule's problem (specrules) as the model's error: finished lines, or what was expected."""
    if isinstance(problem, list):
        raise _lines(problem)
    if problem is not None:
        raise ValueError(problem)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _allows_urls(info: ValidationInfo) -> bool:
    """Whether the site config given to parse_spec lets requirements be `name @ URL` ([envs] allow_requirement_urls)."""
    return allows_urls(info.context)


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
        _check(requirements_problem(v, _allows_urls(info)))
        return v

    @field_validator("python")
    @classmethod
    def _python(cls, v):
        _check(python_problem(v))
        return v

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo):
        _check(env_source_problem(self.requirements, self.requirements_file, self.name))
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
        _check(tiles_problem(self.tile, self.overlap, self.keep_difficult, self.format))
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
        _check(gpu_ids_problem(self.gpus, self.gpu_ids))
        if self.gpu_ids is not None:
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
        _check(sbatch_problem(v))
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
        _check(mlflow_problem(v))
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        _check(name_problem(v))
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v):
        _check(command_problem(v))
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v, info: ValidationInfo):
        if v is None:
            return v
        if isinstance(v, str):
            _check(env_name_problem(v))  # never a path: the name picks a folder of envs/
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
        _check(env_vars_problem(v))
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v):
        _check(workdir_field_problem(v))
        return v

    @field_validator("after")
    @classmethod
    def _short_strings(cls, v):
        _check(after_problem(v))
        return v

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, v):
        _check(checkpoints_problem(v))
        return v

    @model_validator(mode="after")
    def _what_to_run(self):
        _check(what_to_run_problem(self.model, self.framework, self.model_name, self.command, self.dataset, self.env_vars))
        if self.framework:
            self.model = f"{self.framework}/{self.model_name}"
            self.framework = None
        return self

    @property
    def kind(self) -> str:
        """'command' or 'model'."""
        return "command" if self.command is not None else "model"


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


def parse_spec(data: Any, site: dict | None = None) -> JobSpec:
    """Validate a mapping into a JobSpec, or raise SpecError with one line per problem. `site` is
    the site config (Home.config): its [envs] allow_requirement_urls lets requirements be URLs."""
    problems = mapping_problems(data)
    if problems:
        raise SpecError(problems)
    try:
        return JobSpec.model_validate(data, context=site or {})
    except ValidationError as err:
        raise SpecError(format_errors(err)) from None
