"""Header-driven tables, as Ultralytics and many trainers print them: a header line names the
columns, later rows give the values. Column groups such as `Box(P R mAP50 mAP50-95)` become
`box_p, box_r, box_map50, box_map50_95`.
"""

from __future__ import annotations

import re

_NUM = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def column_names(header: str) -> list[str]:
    """Normalised column names of a header line, groups expanded."""
    names, group = [], ""
    for tok in header.split():
        opened = "(" in tok
        if opened:
            group, tok = tok.split("(", 1)
            group = group.lower() + "_"
        closed = tok.endswith(")")
        tok = tok.rstrip(")")
        names.append(group + re.sub(r"[^0-9a-z]+", "_", tok.lower()).strip("_"))
        if closed:
            group = ""
    return names


class TableParser:
    """Spec: `tables = [{header, row, prefix?, skip?, epoch_column?, label_column?, final_marker?}]`.

    `row` is a regex a data row matches; its whitespace-separated tokens line up with the header's
    columns. `epoch_column` holds `E/N` (sets the epoch). Rows after `final_marker` (a final
    re-validation) are not an epoch: their label row (`all`) is stored as `final_<name>`, other
    labels as `<label>/<name>` (per-class results).
    """

    def __init__(self, spec: dict, state: dict | None = None):
        self.tables = []
        for t in spec.get("tables", []):
            self.tables.append({"header": re.compile(t["header"]), "row": re.compile(t["row"]), "prefix": t.get("prefix", ""),
                                "skip": set(t.get("skip", [])), "epoch": t.get("epoch_column"), "label": t.get("label_column"),
                                "all": t.get("all_label", "all"), "offset": t.get("epoch_offset", 0), "cols": None})
        self.final = re.compile(spec["final_marker"]) if spec.get("final_marker") else None
        state = state or {}
        self.epoch = state.get("epoch")
        self.step = state.get("step")
        self.in_final = state.get("final", False)
        for t, cols in zip(self.tables, state.get("columns", [])):
            t["cols"] = cols

    def state(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "final": self.in_final, "columns": [t["cols"] for t in self.tables]}

    def feed_line(self, line: str) -> list[tuple]:
        if self.final is not None and self.final.search(line):
            self.in_final = True
            return []
        for t in self.tables:
            if t["header"].search(line):
                t["cols"] = column_names(line)
                return []
        out = []
        for t in self.tables:
            if t["cols"] is None or not t["row"].search(line):
                continue
            toks = line.split()
            cols = t["cols"]
            # a row may run on past the table (a progress bar): zip stops at the header's width
            label = None
            values = {}
            for name, tok in zip(cols, toks):
                tok = tok.rstrip(":")
                if t["epoch"] and name == t["epoch"].lower():
                    e = tok.split("/")[0]
                    if e.isdigit():
                        self.epoch = int(e) + t["offset"]
                        self.in_final = False
                    continue
                if t["label"] and name == t["label"].lower():
                    label = tok
                    continue
                if name in t["skip"] or not _NUM.match(tok):
                    continue
                values[name] = float(tok)
            if t["label"] and label is None:
                continue
            for name, v in values.items():
                if t["label"] and self.in_final:
                    key = f"final_{t['prefix']}{name}" if label == t["all"] else f"{label}/{name}"
                    out.append((key, v, self.step, None))
                elif t["label"] and label != t["all"]:
                    continue
                else:
                    out.append((t["prefix"] + name, v, self.step, self.epoch))
            break
        return out
