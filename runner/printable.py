"""Text from users shown on someone else's terminal: control characters made visible.

A job's name, command or notes are a teammate's words; printed raw, an escape sequence in them
would move another user's cursor, erase her queue's rows, set her terminal's title or clipboard,
or turn text right to left. Every C0 and C1 control, DEL and the bidirectional overrides are
shown as escapes (\\x1b, \\u202e) instead: the text stays readable, the terminal stays hers.
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on rather than shows (tab and newline included: callers that keep
lines split them first)."""


def printable(text) -> str:
    """`text` with every control character written as its escape."""
    s = "" if text is None else str(text)
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", s)


def plain_name(text: str) -> str:
    """A name made from a command: its control characters replaced by `?` (a name is one line)."""
    return CONTROL.sub("?", text)


def finite(data):
    """NaN and infinities (a diverged loss) as null, all through lists and dicts: JSON has no such
    numbers (Python's `NaN`, `Infinity` are not JSON: jq and browsers refuse them). The HTTP API's
    answers and the CLI's --json both go through it."""
    import math

    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [finite(v) for v in data]
    return data
