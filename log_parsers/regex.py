"""A parser made from data: named-group regexes per framework or repo (from the registry)."""

from __future__ import annotations

import re

from .generic import _KEYS, _KV, GenericParser


class RegexParser:
    """Named groups of each matching pattern become points.

    Spec keys: `patterns` (list of regexes; groups named `epoch`/`step` set the position, every
    other named group that matches a number is a metric, `__` in a name becomes `/`), `ignore`
    (regexes of lines to skip, e.g. a final re-validation), `epoch_offset` (add to a 0-based
    epoch), `prefix` (a metric-name prefix per pattern: `{regex=..., prefix="val_"}`), `kv_lines`
    (a regex: in lines it matches, every `name=number` is a metric as well).
    """

    def __init__(self, spec: dict, state: dict | None = None):
        self.patterns = []
        for p in spec.get("patterns", []):
            if isinstance(p, str):
                p = {"regex": p}
            self.patterns.append((re.compile(p["regex"]), p.get("prefix", ""), p.get("epoch_offset", spec.get("epoch_offset", 0))))
        self.ignore = [re.compile(r) for r in spec.get("ignore", [])]
        self.kv_lines = re.compile(spec["kv_lines"]) if spec.get("kv_lines") else None
        state = state or {}
        self.epoch = state.get("epoch")
        self.step = state.get("step")

    def state(self) -> dict:
        """What must survive a daemon restart."""
        return {"epoch": self.epoch, "step": self.step}

    def feed_line(self, line: str) -> list[tuple]:
        """Metric points (name, value, step, epoch) in one line."""
        for ig in self.ignore:
            if ig.search(line):
                return []
        points = []
        for rx, prefix, offset in self.patterns:
            m = rx.search(line)
            if not m:
                continue
            groups = m.groupdict()
            if groups.get("epoch") is not None:
                self.epoch = int(groups["epoch"]) + offset
            if groups.get("step") is not None:
                self.step = int(groups["step"])
            for name, value in groups.items():
                if name in ("epoch", "step") or value is None:
                    continue
                try:
                    v = float(value)
                except ValueError:
                    continue
                points.append((prefix + name.replace("__", "/"), v, self.step, self.epoch))
        if self.kv_lines is not None and self.kv_lines.search(line):
            for name, value in _KV.findall(line):
                key = _KEYS[name]
                if key is not None:
                    points.append((key, float(value), self.step, self.epoch))
        return points


def feed_lines(parser, lines) -> tuple[list, list, list, list]:
    """The points of lines as columns (names, values, steps, epochs), a line the parser raises on
    (a position of 5,000 digits: Python's int() refuses it) passed over."""
    pts: list = []
    for line in lines:
        try:
            pts += parser.feed_line(line)
        except (ValueError, OverflowError, RecursionError):
            pass
    return tuple(map(list, zip(*pts))) if pts else ([], [], [], [])


def build_parser(spec, state: dict | None = None):
    """A parser from a registry parser spec: None/'generic' or a {patterns: ...} table."""
    if spec is None or spec == "generic":
        return GenericParser(state)
    if spec == "none":  # a private log that asked for no metrics
        return NoParser()
    if isinstance(spec, dict):
        parts = []
        if spec.get("tables"):
            from .table import TableParser

            parts.append(TableParser(spec, state))
        if spec.get("patterns") or spec.get("kv_lines") or not parts:
            parts.append(RegexParser(spec, state))
        if spec.get("generic"):
            parts.append(GenericParser(state))
        return parts[0] if len(parts) == 1 else ChainParser(parts)
    raise ValueError(f"parser: given {spec!r}; expected 'generic' or a table with patterns")


class NoParser:
    """No metrics from any line."""

    def state(self):
        return {}

    def feed_line(self, line: str) -> list:
        return []


class ChainParser:
    """Several parsers over the same lines; the first sets the epoch for all."""

    def __init__(self, parsers):
        self.parsers = parsers

    def state(self):
        return self.parsers[0].state()

    def feed_line(self, line):
        out = []
        for p in self.parsers:
            out += p.feed_line(line)
        return out
