"""Assemble arbitrary chunks of a process's output into the lines a person would have seen."""

from __future__ import annotations

import re

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>@-Z\\-_]")
_ANSI_TEXT = re.compile(_ANSI.pattern.decode())


def strip_ansi(data):
    """Terminal escape sequences (colours, cursor moves, titles, character sets) taken out of a log's
    bytes or text: the one pattern the parser, `runner logs` and the dashboard share."""
    return _ANSI.sub(b"", data) if isinstance(data, bytes) else _ANSI_TEXT.sub("", data)
_EPOCH = re.compile(rb"(?i)epoch\W{0,3}(\d+)")

MAX_LINE = 16 << 10
"""Longest line handed on, in bytes: a line with no end (a job that prints megabytes without a
newline, or a log written by hand) is cut there, so neither memory nor a parser's time grows with it."""


def _epoch_key(seg: bytes):
    m = _EPOCH.search(seg)
    return m.group(1) if m else None


class LineAssembler:
    """Feed bytes in any chunking; get back complete, ANSI-free lines.

    A `\\r` redraw (a progress bar) replaces the line so far: only the last redraw of a line
    counts, except that a redraw whose epoch differs from the one that overwrote it is kept, so
    the last progress line of an epoch is not lost when the next epoch's bar overwrites it
    without a newline. `consumed` is the absolute offset up to which everything is accounted
    for: an assembler restarted there neither repeats nor skips a line.
    """

    def __init__(self, offset: int = 0):
        self._fed = offset  # absolute offset of the end of what was fed
        self._buf = b""  # bytes after the last separator
        self._current = None  # last complete redraw of the unfinished line
        self._current_pos = 0  # its absolute offset

    @property
    def consumed(self) -> int:
        """Offset from which a fresh assembler would continue exactly where this one stands."""
        if self._current is not None:
            return self._current_pos
        return self._fed - len(self._buf)

    def _segments(self, raw: bytes, pos: int, out: list, final: bool):
        cur = self._current
        for seg in raw.split(b"\r"):
            if seg:
                if cur is not None and _epoch_key(cur) != _epoch_key(seg):
                    out.append(cur)
                cur = seg
                self._current_pos = pos
            pos += len(seg) + 1
        if final:
            if cur is not None:
                out.append(cur)
            self._current = None
        else:
            self._current = cur

    def feed(self, data: bytes) -> list[str]:
        """Add a chunk; return the lines it completed."""
        buf = self._buf + data if self._buf else data
        pos = self._fed - len(self._buf)
        self._fed += len(data)
        if self._plain(buf):  # the usual chunk: what _clean gives each line, decoded at once
            body, nl, self._buf = buf.rpartition(b"\n")  # (a newline is never a part of a UTF-8 sequence)
            return [line.rstrip() for line in body.decode("utf-8", "replace").split("\n") if line] if nl else []
        out: list[bytes] = []
        lines = buf.split(b"\n")
        tail = lines.pop()
        for raw in lines:
            if self._current is not None or b"\r" in raw:
                self._segments(raw, pos, out, final=True)
            elif raw:
                out.append(raw)
            pos += len(raw) + 1
        if b"\r" in tail:
            head, _, tail = tail.rpartition(b"\r")
            self._segments(head, pos, out, final=False)
        if len(tail) > MAX_LINE and self._current is None:  # no end in sight: what came so far is a line
            out.append(tail)
            tail = b""
        self._buf = tail
        return [self._clean(b) for b in out]

    def _plain(self, buf: bytes) -> bool:
        """Whether buf (what is not yet a line, then a new chunk) is plain lines: no redraw
        pending or in it, no escape, no line past MAX_LINE (its end too). ~4x faster to take."""
        if self._current is not None or b"\r" in buf or b"\x1b" in buf:
            return False
        return len(buf) <= MAX_LINE or max(map(len, buf.split(b"\n"))) <= MAX_LINE

    def finish(self) -> list[str]:
        """End of stream: whatever is left is a line."""
        out: list[bytes] = []
        if self._buf or self._current is not None:
            self._segments(self._buf, self._fed - len(self._buf), out, final=True)
        self._buf = b""
        return [self._clean(b) for b in out]

    @staticmethod
    def _clean(raw: bytes) -> str:
        raw = raw[:MAX_LINE * 4]  # before the escape pattern runs over it
        if b"\x1b" in raw:
            raw = _ANSI.sub(b"", raw)
        return raw[:MAX_LINE].decode("utf-8", "replace").rstrip()
