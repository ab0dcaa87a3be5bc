"""Helpers shared by the verbs: the home, tables, JSON, times."""

from __future__ import annotations

import json
import sys
import time


def home(args):
    """The Home of --home / RUNNER_HOME."""
    from runner.home import Home

    return Home(args.home)


def store(h):
    """The store of a home (migrated only by the daemon, or on first use)."""
    return h.store(migrate=not h.db.exists())


def print_json(data):
    """JSON to stdout (strict: a NaN or an infinity, a diverged loss, as null, as the HTTP API gives it)."""
    from runner.printable import finite

    try:
        text = json.dumps(data, indent=2, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(finite(data), indent=2, default=str, allow_nan=False)
    sys.stdout.write(text + "\n")


def table(rows: list[list], headers: list[str]):
    """A plain aligned table."""
    from runner.printable import printable

    rows = [["" if c is None else printable(c) for c in r] for r in rows]  # a teammate's name cannot drive your terminal
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    print("\n".join(out))


def ago(t):
    """'5s', '3m', '2h', '4d' since t."""
    if not t:
        return ""
    return span(time.time() - t)


def span(s):
    """A duration in the largest sensible unit."""
    if s is None:
        return ""
    s = max(0, s)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit}" if unit != "m" else f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{s:.1f}s"


def fmt_size(n):
    """Bytes as a human size."""
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}PB"
