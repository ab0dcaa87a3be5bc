"""The generic parser: `key=value`, `key: value` and `Epoch N/M` styles."""

from __future__ import annotations

import re

_NUM = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|NaN|inf|Inf)"  # a diverged loss is a point too
# Bounded name and spaces: every start position tries a bounded number of steps, so a line of
# `a/a/a/...` costs linear time, never quadratic (each repetition would hold the daemon's GIL).
_KV = re.compile(r"(?<![\w.])([A-Za-z][\w./-]{0,63}?)\s{0,8}(?:=|:\s)\s{0,8}(" + _NUM + r")(?![\w.:/])")
_EPOCH = re.compile(r"(?i)\bepoch\b\s*[\[(:=]?\s*(\d+)\s*(?:/\s*(\d+))?")
_STEP = re.compile(r"(?i)\b(?:step|iter|it)\b\s*[\[(:=]?\s*(\d+)")
_SKIP_KEYS = frozenset({"epoch", "epochs", "step", "iter", "it"})


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


class GenericParser:
    """Numbers after `name=` or `name: ` become metric points; `Epoch N` sets the epoch."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.epoch = state.get("epoch")
        self.step = state.get("step")

    def state(self) -> dict:
        """What must survive a daemon restart."""
        return {"epoch": self.epoch, "step": self.step}

    def feed_line(self, line: str) -> list[tuple]:
        """Metric points (name, value, step, epoch) in one line."""
        if "=" not in line and ":" not in line and "poch" not in line:
            return []
        m = _EPOCH.search(line)
        if m:
            self.epoch = int(m.group(1))
        m = _STEP.search(line)
        if m:
            self.step = int(m.group(1))
        points = []
        for name, value in _KV.findall(line):
            key = _norm(name)
            if key in _SKIP_KEYS:
                continue
            points.append((key, float(value), self.step, self.epoch))
        return points
