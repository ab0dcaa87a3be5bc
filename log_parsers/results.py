"""A training script's own per-epoch results file (csv, JSON lines, whitespace table), read as a
second source of metrics that must agree with what was parsed from its log.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


def read_results(path: Path, spec: dict, text: str | None = None) -> dict[int, dict[str, float]]:
    """{epoch: {column: value}} from a results file per `spec` (format, columns, epoch_column, epoch_offset).

    `text`, when given, is the file's content already read (the daemon opens a job's file itself)."""
    fmt = spec.get("format", "csv")
    text = Path(path).read_text() if text is None else text
    rows: list[dict] = []
    if fmt == "csv":
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(text.splitlines())]
    elif fmt == "jsonl":
        rows = [json.loads(l) for l in text.splitlines() if l.strip().startswith("{")]
    elif fmt == "whitespace":
        cols = spec["columns"]
        rows = [dict(zip(cols, l.split())) for l in text.splitlines() if l.strip()]
    else:
        raise ValueError(f"results_file.format: given {fmt!r}; expected csv, jsonl or whitespace")
    ecol, offset = spec.get("epoch_column", "epoch"), spec.get("epoch_offset", 0)
    out = {}
    for i, r in enumerate(rows):
        raw = r.get(ecol, i)
        epoch = int(str(raw).split("/")[0]) + offset
        vals = {}
        for k, v in r.items():
            if k == ecol:
                continue
            try:
                vals[k] = float(v)
            except (TypeError, ValueError):
                continue
        out[epoch] = vals
    return out


def compare(results: dict[int, dict], parsed: dict[int, dict], mapping: dict, rel: float = 2e-3, abs_: float = 6e-4) -> tuple[int, list[str]]:
    """(values compared, disagreements) between the results file and the parsed metrics per epoch.
    A mapped column the file never has, or a mapped metric the log never produced, is a
    disagreement (a typo in the mapping must not read as "agrees")."""
    n, bad = 0, []
    columns = {c for vals in results.values() for c in vals}
    names = {k for vals in parsed.values() for k in vals}
    for col, name in mapping.items():
        if results and col not in columns:
            bad.append(f"{col}: not a column of the results file (columns: {', '.join(sorted(columns))})")
        elif results and name not in names:
            bad.append(f"{name}: mapped from the file's {col}, never parsed from the log")
    for epoch, vals in sorted(results.items()):
        got = parsed.get(epoch, {})
        if not got:
            bad.append(f"epoch {epoch}: in the results file, not in the log")
            continue
        for col, name in mapping.items():
            if col not in vals or name not in got:
                continue
            n += 1
            a, b = vals[col], got[name]
            if abs(a - b) > max(abs_, rel * abs(a)):
                bad.append(f"epoch {epoch}: {col}={a:g} in the results file, {name}={b:g} in the log")
    return n, bad
