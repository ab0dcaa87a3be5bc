"""Check a spec against the world at submit: paths, registry, env names, framework settings.

Everything that can be known before the job reaches the queue is checked here, so that a typo
fails in a second at `runner submit`, not after minutes of env building.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .exceptions import SpecError

if TYPE_CHECKING:  # a spec of spec.JobSpec (pydantic) or of specfast (runner submit's quick check): read alike
    from .spec import EnvSpec as EnvSpecType, JobSpec

_ROOT = Path(__file__).resolve().parent.parent
_SCHEMAS = _ROOT / "adapters" / "schemas"
_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "choice": str}
_MAX_REQUIREMENTS_FILE = 256 * 1024  # bytes of env.requirements_file read at most


def framework_schema(name: str) -> dict | None:
    """A framework's ConfigSchema as data (the adapter reads the same file)."""
    p = _SCHEMAS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def check_settings(train: dict, schema: dict, prefix: str = "train") -> list[str]:
    """Problems of `train` settings against a ConfigSchema: unknown names, types, ranges, options."""
    fields = {f["name"]: f for f in schema["fields"]}
    problems = []
    for key, value in train.items():
        f = fields.get(key)
        if f is None:
            problems.append(f"{prefix}.{key}: unknown setting for {schema['framework']} (known: {', '.join(sorted(fields))})")
            continue
        if value is None:
            continue
        t = f["type"]
        if t in ("int", "float") and isinstance(value, bool) or not isinstance(value, _TYPES[t]):
            problems.append(f"{prefix}.{key}: given {value!r}; expected {t}")
            continue
        if t == "choice" and value not in f["options"]:
            problems.append(f"{prefix}.{key}: given {value!r}; expected one of {', '.join(map(str, f['options']))}")
        if f.get("min") is not None and t in ("int", "float") and value < f["min"]:
            problems.append(f"{prefix}.{key}: given {value}; expected >= {f['min']}")
        if f.get("max") is not None and t in ("int", "float") and value > f["max"]:
            problems.append(f"{prefix}.{key}: given {value}; expected <= {f['max']}")
    return problems


def _abs(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


def known_to_framework(framework: dict, name: str) -> bool:
    """Whether the framework knows a model name not in the registry (from its names file)."""
    f = framework.get("known_models_file")
    if not f:
        return False
    try:
        return name in set((_ROOT / f).read_text().split())
    except OSError:
        return False


def workdir_problems(workdir: str, state_root: Path | None) -> list[str]:
    """A resolved workdir: a folder, not a system folder, not runner's own state, writable by the caller."""
    from .specrules import workdir_problem

    real = os.path.realpath(workdir)
    if not os.path.isdir(real):
        return [f"workdir: {workdir} is not a folder"]
    problem = workdir_problem(real)
    if problem:
        return [f"workdir: {problem}"]
    if state_root is not None:
        root = os.path.realpath(state_root)
        if real == root or real.startswith(root + "/"):
            return [f"workdir: {workdir} is inside runner's state folder {root}; give a folder of your own"]
    if not os.access(real, os.W_OK | os.X_OK):
        return [f"workdir: {workdir} is not writable by you; give a folder you may write"]
    return []


def requirements_file(env: EnvSpecType, base: Path) -> tuple[dict | None, str | None]:
    """(the inline env that env.requirements_file stands for, None), its lines checked as the spec's
    own requirements are; or (None, the one-line problem). Read by whoever submits (the CLI, or the
    HTTP submit's helper that has dropped to her): a file she may not read is refused as such."""
    from .requirement import requirement_problem
    from .specrules import _ENV_NAME, describe_input as _describe_input

    p = Path(_abs(env.requirements_file, base))
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang the submit
    except (FileNotFoundError, NotADirectoryError):
        return None, f"env.requirements_file: {p} does not exist"
    except PermissionError:
        return None, f"env.requirements_file: {p} is not readable by you"
    except OSError as e:
        return None, f"env.requirements_file: {p} cannot be opened ({e.strerror}); expected a requirements file"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, f"env.requirements_file: {p} is not a regular file; expected a requirements file"
        raw = os.read(fd, _MAX_REQUIREMENTS_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_REQUIREMENTS_FILE:
        return None, f"env.requirements_file: {p} is larger than {_MAX_REQUIREMENTS_FILE // 1024} KiB; expected a requirements file"
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None, f"env.requirements_file: {p} is not UTF-8 text; expected a requirements file"
    lines = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        expected = requirement_problem(line, env.allows_urls)
        if expected:
            return None, f"env.requirements_file: line {n} of {p}: given {_describe_input(line)}; expected {expected}"
        lines.append(line)
    name = env.name or (p.stem if _ENV_NAME.match(p.stem) else None)
    out = {"requirements": lines, "python": env.python, "name": name}
    return {k: v for k, v in out.items() if v is not None}, None


ALWAYS_TRAIN = ("epochs", "pretrained")
"""train: keys a repo job may give whatever its table says (runner check counts epochs; pretrained
decides network access)."""


def repo_train_keys(repo: dict) -> set:
    """The train: keys a repo's table passes to its script ({key} in its args, env or variants, or a
    default), and those every job may give (ALWAYS_TRAIN)."""
    import json

    from config_translators.repo import _FIELD

    used = set(_FIELD.findall(json.dumps({k: repo.get(k) for k in ("args", "env", "variants")}, default=str)))
    return used | set(repo.get("defaults") or {}) | set(ALWAYS_TRAIN)


def unused_train_keys(spec, name: str, repo: dict) -> list[str]:
    """A repo job's train: keys that its table never passes to the script (no {key} in its args,
    env or hyp, no default): a typo (`epoch`) or a setting the script cannot get (`stride`) is
    refused, not run with the script's own default."""
    used = repo_train_keys(repo)
    given = set(spec.train.model_fields_set) | set(spec.train.model_extra or {})
    mapped = sorted(used & (given | set(repo.get("defaults") or {}) | {"batch_size", "lr", "input_size", "epochs", "seed"}))
    return [f"train.{k}: repo/{name}'s table passes no {{{k}}} to its script (it takes {', '.join(mapped)}); "
            f"map it in the table's args, or leave it out" for k in sorted(given - used)]


def parser_problem(parser: str, registry) -> str | None:
    """What a job's `parser:` should have been, or None: generic (key=value lines), none, or a
    framework whose log format the job prints (its parser from the registry)."""
    if parser in ("generic", "none"):
        return None
    allowed = ["generic", "none", *sorted(registry.frameworks if registry is not None else ())]
    if parser in allowed:
        return None
    return (f"parser: given {parser[:60]!r}; expected one of {', '.join(allowed)} (generic: key=value lines become metrics; "
            "none: no metrics; a framework: its log format)")


def resolve(spec: JobSpec, base: Path, registry, warnings: list, state_root: Path | None = None) -> dict:
    """The spec as it goes into the spool: paths absolute, defaults filled, checked.

    Raises SpecError with every problem found; appends non-fatal notes to `warnings`.
    """
    problems = []
    data = spec.model_dump(exclude_none=True)
    if spec.kind == "command" and "train" not in spec.model_fields_set:
        data.pop("train", None)  # a command job trains as its command says: no model settings shown for it
    if spec.workdir:
        data["workdir"] = _abs(spec.workdir, base)
        problems += workdir_problems(data["workdir"], state_root)
    elif spec.kind == "command":
        data["workdir"] = str(base)
        if workdir_problems(str(base), state_root):
            problems.append(f"workdir: not given, so it would be {base}: {workdir_problems(str(base), state_root)[0].split(': ', 1)[1]} "
                            "(submit from a folder of yours, or give --workdir DIR)")
    if getattr(spec.env, "requirements_file", None):  # an inline env (an env name is a str)
        env, problem = requirements_file(spec.env, base)
        if problem:
            problems.append(problem)
        else:
            data["env"] = env
    for i, dep in enumerate(spec.after):
        if not dep:
            problems.append(f"after.{i}: empty job id")
    if spec.parser is not None and parser_problem(spec.parser, registry):
        problems.append(parser_problem(spec.parser, registry))
    if spec.kind == "command":
        data.setdefault("env", "system")
        if spec.network is None:
            data["network"] = True
    else:
        problems += _resolve_model(spec, data, base, registry, warnings)
    if problems:
        raise SpecError(problems)
    return data



def usual_format(framework: str, table: dict, task: str | None) -> str:
    """The dataset format a job of `task` gets when its `dataset:` names none: the registry says it
    (a framework's `task_formats`, a repo's `dataset.format`), not code."""
    if framework == "repo":
        return (table.get("dataset") or {}).get("format", "imagefolder")
    formats = table.get("task_formats") or {}
    if task in formats:
        return formats[task]
    return (table.get("dataset_formats") or ["imagefolder"])[0]


def _resolve_model(spec: JobSpec, data: dict, base: Path, registry, warnings: list) -> list[str]:
    from config_translators import for_framework

    problems = []
    fw_name, _, name = spec.model.partition("/")
    try:
        fw = registry.get_framework(fw_name) if fw_name != "repo" else {"env": None, "adapter": "repo"}
    except Exception as e:
        return [str(e)]
    entry = registry.get_model(spec.model)
    if fw_name == "repo":
        if entry is None:
            return [f"model: repo/{name} is not in the registry (add it with `runner repo add URL --commit SHA --name {name}`)"]
    elif entry is None:
        if known_to_framework(fw, name):
            warnings.append(f"model {spec.model}: not in the registry; {fw_name} knows it, but its metadata (input size, batch size, lr) is unknown")
        else:
            known = ", ".join(m["model_name"] for m in registry.list_models(framework=fw_name))
            return [f"model: given {spec.model!r}; neither the registry nor {fw_name} knows it (registry: {known})"]
    if spec.dataset.format is None:
        data["dataset"]["format"] = usual_format(fw_name, fw if fw_name != "repo" else registry.get_repo(name),
                                                 (entry or {}).get("task_type") or spec.task)
    data["dataset"]["path"] = _abs(spec.dataset.path, base)
    if spec.dataset.annotations:
        data["dataset"]["annotations"] = _abs(spec.dataset.annotations, base)
    if spec.train.resume and not spec.train.resume.isalnum():
        data["train"]["resume"] = _abs(spec.train.resume, base)
    translator = for_framework("repo" if fw_name == "repo" else fw_name)
    problems += translator.check_dataset(data["dataset"], entry if fw_name != "repo" else registry.get_repo(name))
    schema = framework_schema(fw_name)
    if schema is not None:
        problems += check_settings(spec.train.model_dump(exclude_none=True), schema)
    if fw.get("env"):
        data.setdefault("env", fw["env"])  # a repo's env comes from its own table at prepare time
    if fw_name == "repo":
        repo = registry.get_repo(name)
        from config_translators.repo import check_table

        problems += check_table(name, repo)
        problems += unused_train_keys(spec, name, repo)
        if spec.network is None:  # the table decides: a repo that must stay offline does, pretrained or not
            data["network"] = bool(repo.get("network", False))
        if "epochs" not in spec.train.model_fields_set and (repo.get("defaults") or {}).get("epochs"):
            data["train"]["epochs"] = int(repo["defaults"]["epochs"])  # the table's default, not the spec's
    elif spec.network is None:
        data["network"] = bool(spec.train.pretrained)
    if fw_name != "repo" and entry is not None and spec.task and spec.task != entry.get("task_type"):
        problems.append(f"task: given {spec.task!r}; {spec.model} is {entry.get('task_type')}")
    return problems
