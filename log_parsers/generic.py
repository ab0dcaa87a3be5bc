"""The generic parser: `key=value`, `key: value` and `Epoch N/M` styles."""

from __future__ import annotations

import re

_NUM = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|NaN|inf|Inf)"  # a diverged loss is a point too
# Bounded name and spaces: every start position tries a bounded number of steps, so a line of
# `a/a/a/...` costs linear time, never quadratic (each repetition would hold the daemon's GIL).
# (A name's characters include none of `\s`, `=`, `:`: a name ends where its run of them ends, so
# a greedy name matches what a lazy one would, without trying each shorter one first: ~15% faster.)
_KV = re.compile(r"(?<![\w.])([A-Za-z][\w./-]{0,63})\s{0,8}(?:=|:\s)\s{0,8}(" + _NUM + r")(?![\w.:/])")
# Possessive spaces (`\s*+`): only the longest run of them can be followed by the digits, so giving
# some back never makes a match, and trying to cost quadratic time: `epoch`, 16,000 spaces and no
# digit held a helper 1.8 s a line (found by a hostile pass; the C loop was linear already).
_EPOCH = re.compile(r"(?i)\bepoch\b\s*+[\[(:=]?\s*+(\d+)\s*(?:/\s*(\d+))?")
_STEP = re.compile(r"(?i)\b(?:step|iter|it)\b\s*+[\[(:=]?\s*+(\d+)")
# The same two patterns without IGNORECASE, searched in an ASCII line's lower() (same length, same
# positions, the same digits): case-blind matching of each character cost ~25% of the search.
_EPOCH_LOW = re.compile(_EPOCH.pattern[len("(?i)"):])
_STEP_LOW = re.compile(_STEP.pattern[len("(?i)"):])
_SKIP_KEYS = frozenset({"epoch", "epochs", "step", "iter", "it"})


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


class _Keys(dict):
    """Each name as printed -> its metric key, or None for a name that is a position (epoch, step):
    a log prints the same few names on every line, so each is normalised once, not once a line
    (a name seen before is a plain dict lookup)."""

    MAX = 4096  # a log that prints ever new names (a counter in the name) starts the table over

    def __missing__(self, name: str):
        if len(self) >= self.MAX:
            self.clear()
        key = _norm(name)
        key = self[name] = None if key in _SKIP_KEYS else key
        return key


_KEYS = _Keys()


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
        # Each position pattern runs only on a line that holds its word: most lines hold neither.
        # (The patterns ignore case, and Unicode folds a few other letters onto ASCII ones, the
        # long s onto s, the dotless i onto i: a line that is not ASCII is always searched.)
        low = line.lower() if line.isascii() else None
        if low is None:
            m = _EPOCH.search(line)
            if m:
                self.epoch = int(m.group(1))
            m = _STEP.search(line)
            if m:
                self.step = int(m.group(1))
        else:
            if "epoch" in low:
                m = _EPOCH_LOW.search(low)
                if m:
                    self.epoch = int(m.group(1))
            if "it" in low or "step" in low:  # step, iter, it
                m = _STEP_LOW.search(low)
                if m:
                    self.step = int(m.group(1))
        step, epoch = self.step, self.epoch
        keys = _KEYS
        return [(key, float(value), step, epoch) for name, value in _KV.findall(line) if (key := keys[name]) is not None]


try:  # the batch loop in C (log_parsers/_generic_c.c), built by setup.py where a compiler was found
    from . import _generic_c
except ImportError:
    _generic_c = None


def columns(parser, lines: list) -> tuple | None:
    """The points a GenericParser gives `lines`, as a parse helper sends them: (the batch's metric
    keys, how many points, then each point's key index, value, step and epoch as uint32, double,
    int64 and int64 bytes, -1 for a None position), its state moved on as feed_line would move it;
    None when the C loop is not built or the lines hold a position no int64 holds (the parser's
    state is then as it was: parse them in Python)."""
    if _generic_c is None or type(parser) is not GenericParser:
        return None
    before = parser.step, parser.epoch
    got = _generic_c.columns(parser, lines, _KEYS)
    if got is None:
        parser.step, parser.epoch = before
    return got
