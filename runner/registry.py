"""The model registry: data (registry.toml) with a small query API, like timm's `_registry.py`.

The packaged registry.toml is read first; a site registry ($RUNNER_HOME/registry.toml, written
by `runner repo add`) and any RUNNER_REGISTRY files are merged over it, table by table.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
import warnings
from pathlib import Path

from .exceptions import RegistryError

PACKAGED = Path(__file__).resolve().parent.parent / "registry.toml"

MODEL_FIELDS = ("model_name", "display_name", "description", "params", "input_size", "pretrained_available",
                "recommended_batch_size", "recommended_lr", "tags", "task_type", "framework", "license")
TASK_TYPES = ("image_classification", "object_detection", "instance_segmentation", "pose_estimation",
              "obb_detection", "semantic_segmentation", "image_captioning")


def _merge(dst: dict, src: dict):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


class Registry:
    """Frameworks, models and repos, indexed for lookup."""

    def __init__(self, files: list[Path]):
        data: dict = {}
        home_of: dict = {}  # repo name -> the folder of the file that pins it (its `files` and lock live there)
        for f in files:
            if f.exists():
                with open(f, "rb") as fh:
                    try:
                        one = tomllib.load(fh)
                    except tomllib.TOMLDecodeError as e:
                        raise RegistryError(f"{f}: not valid TOML ({e})") from None
                _merge(data, one)
                for name, table in (one.get("repos") or {}).items():
                    if isinstance(table, dict) and ("commit" in table or name not in home_of):
                        home_of[name] = str(Path(f).resolve().parent)
        self.files = files
        self.frameworks: dict = data.get("frameworks", {})  # name -> framework table
        self.repos: dict = data.get("repos", {})  # name -> repo table
        for name, table in self.repos.items():
            table["_dir"] = home_of.get(name, str(PACKAGED.parent))
        self.models: dict = {}  # "framework/name" -> model table (ModelInfo fields)
        for fw, models in data.get("models", {}).items():
            for name, entry in models.items():
                ref = f"{fw}/{name}"
                if ref in self.models:
                    warnings.warn(f"registry: duplicate model {ref}; the later entry wins")
                self.models[ref] = {"model_name": name, "framework": fw, **entry}
        for name, repo in self.repos.items():
            self.models.setdefault(f"repo/{name}", {
                "model_name": name, "framework": "repo", "display_name": repo.get("display_name", name),
                "description": repo.get("description", ""), "task_type": repo.get("task_type"),
                "license": repo.get("license"), "tags": repo.get("tags", []), "params": repo.get("params"),
                "input_size": repo.get("input_size"), "pretrained_available": repo.get("pretrained_available", False),
                "recommended_batch_size": repo.get("recommended_batch_size"), "recommended_lr": repo.get("recommended_lr"),
            })

    def list_models(self, filter: str = "*", framework: str | None = None, task: str | None = None, tags=None) -> list[dict]:
        """Models whose name matches `filter` (fnmatch), of a framework, a task, having all `tags`."""
        tags = [t for t in (tags or []) if t]
        out = []
        for ref, m in sorted(self.models.items()):
            if not (fnmatch.fnmatch(m["model_name"], filter) or fnmatch.fnmatch(ref, filter)):
                continue
            if framework and m["framework"] != framework:
                continue
            if task and m.get("task_type") != task:
                continue
            if tags and not set(tags) <= set(m.get("tags", [])):
                continue
            out.append({"ref": ref, **m})
        return out

    def get_model(self, ref: str) -> dict | None:
        """A model by FRAMEWORK/NAME, or None."""
        m = self.models.get(ref)
        return {"ref": ref, **m} if m else None

    def get_framework(self, name: str) -> dict:
        """A framework table; RegistryError if unknown."""
        if name not in self.frameworks:
            known = ", ".join(sorted([*self.frameworks, "repo"]))
            raise RegistryError(f"model: framework {name!r} is unknown (known: {known})")
        return self.frameworks[name]

    def get_repo(self, name: str) -> dict:
        """A repo table; RegistryError if unknown."""
        if name not in self.repos:
            raise RegistryError(f"model: repo/{name} is not in the registry (add it with `runner repo add URL --commit SHA --name {name}`)")
        return self.repos[name]


def registry_files(home=None) -> list[Path]:
    """The packaged registry, then the site's, then RUNNER_REGISTRY (':'-separated)."""
    files = [PACKAGED]
    if home is not None:
        files.append(home.registry_file)
    for p in filter(None, os.environ.get("RUNNER_REGISTRY", "").split(":")):
        files.append(Path(p))
    return files


def load(home=None) -> Registry:
    """The merged registry for this home."""
    return Registry(registry_files(home))
