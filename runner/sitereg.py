"""The site registry file ($RUNNER_HOME/registry.toml): tables written and removed atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .atomic import write_bytes


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def table(header: str, data: dict, comments: dict[str, list[str]] | None = None) -> str:
    """One TOML table; its table values as sub-tables ([header.args], which a person can extend
    with keys of their own), deeper ones inline, arrays as arrays. `comments`: lines ("# ...") put
    at the end of a sub-table, by its key, for the person who edits it next."""
    lines = [f"[{header}]"] + [f"{_key(k)} = {_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{header}.{_key(k)}]"] + [f"{_key(kk)} = {_value(vv)}" for kk, vv in v.items() if vv is not None]
            lines += ["# " + c.removeprefix("#").strip().replace("\n", " ") for c in (comments or {}).get(k, [])]
    return "\n".join(lines) + "\n"


def _remove(text: str, header: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        m = re.match(r"^\s*\[\[?([^\]]+)\]\]?\s*$", line)
        if m:
            name = m.group(1).strip()
            skipping = name == header or name.startswith(header + ".")
        if not skipping:
            out.append(line)
    return "".join(out)


def _write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, text.encode())  # 0644: every user's CLI reads the site registry


def put(path: Path, header: str, data: dict, comments: dict[str, list[str]] | None = None):
    """Write (or replace) a table in the site registry (with `comments` in its sub-tables, see table)."""
    text = path.read_text() if path.exists() else "# Site registry: merged over the packaged registry.toml.\n"
    text = _remove(text, header).rstrip("\n") + "\n\n" + table(header, data, comments)
    import tomllib

    tomllib.loads(text)  # never write a file the daemon cannot read
    _write(path, text)


def remove(path: Path, header: str) -> bool:
    """Remove a table; False if it was not there."""
    if not path.exists():
        return False
    text = path.read_text()
    new = _remove(text, header)
    if new == text:
        return False
    _write(path, new)
    return True
