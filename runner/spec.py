"""The job spec: a pydantic model loaded from YAML or JSON.

A bad spec is refused at submit with one line per problem (field path, what was given, what is
expected) and nothing is queued. Only the shape is checked here; `resolve.py` checks the spec
against the world (files, registry, framework schemas).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .exceptions import SpecError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvSpec(_Strict):
    """An env given inline: a requirements list or file, and optionally a Python version."""

    requirements: Optional[list[str]] = None
    requirements_file: Optional[str] = None
    python: Optional[str] = None
    name: Optional[str] = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.name is None and (self.requirements is None) == (self.requirements_file is None):
            raise ValueError("give exactly one of requirements (a list) or requirements_file (a path), or name")
        return self


class Dataset(_Strict):
    """Where the data is and in what layout."""

    path: str
    format: Literal["imagefolder", "yolo", "coco", "dota", "masks", "captions"] = "imagefolder"
    split: Optional[float] = Field(None, gt=0, lt=1, description="val fraction when there is no val/ folder")
    annotations: Optional[str] = None


class Train(BaseModel):
    """Training settings. Fields beyond these are framework settings, checked against its schema."""

    model_config = ConfigDict(extra="allow")

    epochs: int = Field(1, ge=1, le=100_000)
    batch_size: Optional[int] = Field(None, ge=1, le=65_536)
    lr: Optional[float] = Field(None, gt=0, le=10)
    input_size: Optional[int] = Field(None, ge=8, le=8192)
    pretrained: bool = False
    optimizer: Optional[str] = None
    auto_batch_size: bool = False
    seed: int = 0
    workers: int = Field(0, ge=0, le=64)
    resume: Optional[str] = None


class Resources(_Strict):
    """What a job needs from the machine."""

    gpus: int = Field(0, ge=0, le=64)
    gpu_memory_gb: Optional[float] = Field(None, gt=0)
    gpu_ids: Optional[list[int]] = None
    memory_gb: Optional[float] = Field(None, gt=0, description="address-space limit")
    max_open_files: Optional[int] = Field(None, ge=16)
    max_processes: Optional[int] = Field(None, ge=1)
    cpu_seconds: Optional[int] = Field(None, ge=1)
    time_limit: Optional[float] = Field(None, gt=0, description="wall-clock seconds")

    @model_validator(mode="after")
    def _ids_match(self):
        if self.gpu_ids is not None:
            if len(set(self.gpu_ids)) != len(self.gpu_ids):
                raise ValueError("gpu_ids must not repeat a GPU")
            if self.gpus not in (0, len(self.gpu_ids)):
                raise ValueError(f"gpus is {self.gpus} but gpu_ids names {len(self.gpu_ids)}")
            self.gpus = len(self.gpu_ids)
        return self


class JobSpec(_Strict):
    """One job: a command, or a model to train, with its data, env and resources."""

    name: Optional[str] = None
    command: Optional[Union[list[str], str]] = None
    model: Optional[str] = None
    framework: Optional[str] = None
    model_name: Optional[str] = None
    variant: Optional[str] = None
    task: Optional[str] = None
    dataset: Optional[Dataset] = None
    train: Train = Field(default_factory=Train)
    env: Optional[Union[str, EnvSpec]] = None
    resources: Resources = Field(default_factory=Resources)
    network: Optional[bool] = None
    priority: int = Field(0, ge=-1000, le=1000)
    after: list[str] = Field(default_factory=list)
    workdir: Optional[str] = None
    env_vars: dict[str, str] = Field(default_factory=dict)
    parser: Optional[str] = None
    checkpoints: list[str] = Field(default_factory=list)
    check: Optional[dict[str, Any]] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and not _NAME.match(v):
            raise ValueError("letters, digits, '_', '.', '-' (at most 100, starting with a letter or digit)")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v):
        if v is not None and (v == [] or v == "" or (isinstance(v, list) and not all(v))):
            raise ValueError("a non-empty command (a string for the shell, or a list of arguments)")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v):
        if isinstance(v, str) and not _ENV_NAME.match(v):
            raise ValueError("an env name from envs/ (e.g. 'base', 'timm') or 'system'")
        return v

    @field_validator("env_vars")
    @classmethod
    def _env_vars(cls, v):
        for key in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
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
        return self

    @property
    def kind(self) -> str:
        """'command' or 'model'."""
        return "command" if self.command is not None else "model"


def _describe_input(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_errors(err: ValidationError) -> list[str]:
    """One line per problem: `field.path: given X; expected Y`."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(job)"
        msg = e["msg"].removeprefix("Value error, ").replace("Input should be ", "")
        if e["type"] == "missing":
            lines.append(f"{loc}: missing; this field is required")
        elif e["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field (given {_describe_input(e.get('input'))}); check the spelling")
        else:
            lines.append(f"{loc}: given {_describe_input(e.get('input'))}; expected {msg}")
    return lines


def parse_spec(data: Any) -> JobSpec:
    """Validate a mapping into a JobSpec, or raise SpecError with one line per problem."""
    if not isinstance(data, dict):
        raise SpecError([f"(job): given {_describe_input(data)}; expected a mapping of fields (name:, command: or model:, ...)"])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_errors(err)) from None


def load_spec_file(path: str | Path) -> dict:
    """Read a job file (YAML or JSON) into a mapping, with a clear error if it is not one."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError([f"{path}: cannot read the job file ({e.strerror})"]) from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError([f"{path}: not valid YAML/JSON ({first})"]) from None
    return data
