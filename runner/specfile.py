"""Job files as text: YAML or JSON read into a mapping, safely and with one-line errors.

Bounded before and while parsing (size, nesting, YAML aliases), duplicate keys refused, NaN and
infinite numbers refused, binary and non-UTF-8 files named as such. The documented coercions live
here: items of `command` and values of `env_vars` are the text written (`command: [true]` runs
`true`). The shape of the spec is then checked by `spec.parse_spec`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import defaults
from .exceptions import SpecError


def _yaml_loader():
    """A safe YAML loader that refuses duplicate keys and keeps `command`/`env_vars` scalars as text."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                                                        key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def _expanded_size(node, memo: dict, where: str, depth: int = 0) -> int:
    """How many values a YAML node stands for once its aliases are expanded (shared nodes counted each time)."""
    import yaml

    if depth > defaults.MAX_SPEC_DEPTH:
        raise SpecError([f"{where}: nested deeper than {defaults.MAX_SPEC_DEPTH} levels"])
    key = id(node)
    if key in memo:
        return memo[key]
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(c, memo, where, depth + 1) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo, where, depth + 1) + _expanded_size(v, memo, where, depth + 1) for k, v in node.value)
    else:
        n = 1
    memo[key] = n
    return n


def _as_text(node):
    """Documented coercion: scalars under `command` and `env_vars` are the text written."""
    import yaml

    if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null":
        node.tag = "tag:yaml.org,2002:str"
    elif isinstance(node, yaml.SequenceNode):
        for c in node.value:
            if isinstance(c, yaml.ScalarNode):
                _as_text(c)
    elif isinstance(node, yaml.MappingNode):
        for _, v in node.value:
            if isinstance(v, yaml.ScalarNode):
                _as_text(v)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> data, with aliases bounded, duplicate keys refused and one-line errors."""
    import yaml

    loader = _yaml_loader()(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise SpecError([f"{where}: nested deeper than {defaults.MAX_SPEC_DEPTH} levels"]) from None
        if node is None:
            return None
        size = _expanded_size(node, {}, where)
        if size > defaults.MAX_SPEC_VALUES:
            raise SpecError([f"{where}: expands to {size} values through YAML aliases (&/*); at most {defaults.MAX_SPEC_VALUES}"])
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value in ("command", "env_vars"):
                    _as_text(v)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise SpecError([f"{where}: not valid YAML/JSON ({at}{problem})"]) from None
    finally:
        loader.dispose()


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _finite(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return v


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str, where: str) -> Any:
    """JSON text -> data: duplicate keys, NaN and infinite numbers refused, depth bounded, one-line errors."""
    depth = max_depth(text)
    if depth > defaults.MAX_SPEC_DEPTH:
        raise SpecError([f"{where}: nested deeper than {defaults.MAX_SPEC_DEPTH} levels"])
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError([f"{where}: not valid JSON ({first})"]) from None


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def max_depth(text: str) -> int:
    """The deepest nesting of brackets in JSON text, outside strings (checked before parsing)."""
    depth = top = 0
    for m in _BRACKETS.finditer(_STRINGS.sub("", text)):
        if m.group() in "[{":
            depth += 1
            if depth > top:
                top = depth
                if top > defaults.MAX_SPEC_DEPTH:
                    return top
        else:
            depth -= 1
    return top


def decode_text(raw: bytes, where: str) -> str:
    """Bytes of a job file as text, or one line saying why it is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([f"{where}: not a text file (byte 0x{raw[e.start]:02x} at offset {e.start} is not UTF-8); "
                         "expected a YAML or JSON job file"]) from None


def load_spec_file(path: str | Path) -> dict:
    """Read a job file (YAML or JSON) into a mapping, with a clear one-line error if it is not one."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(defaults.MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError([f"{path}: cannot read the job file ({e.strerror})"]) from None
    if len(raw) > defaults.MAX_SPEC_BYTES:
        raise SpecError([f"{path}: larger than {defaults.MAX_SPEC_BYTES} bytes; expected a small job file"])
    text = decode_text(raw, str(path))
    if "\x00" in text:
        raise SpecError([f"{path}: contains a NUL byte; expected a YAML or JSON job file"])
    return parse_json(text, str(path)) if p.suffix == ".json" else parse_yaml(text, str(path))
