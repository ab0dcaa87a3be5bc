"""Masks and rotated boxes from the forms a repo's own inference prints them in (pure, stdlib):
COCO run-length encodings (a list of counts, or pycocotools' compressed string), polygons, and
the four corners of an oriented box. runner.repos.infer maps them onto the InferenceResult fields
the frameworks' plugins fill (`masks`, `rotated_boxes`)."""

from __future__ import annotations

import math


def rle_counts(rle) -> list[int]:
    """The run lengths of a COCO RLE ({"size": [h, w], "counts": [...] or "..."}): alternately
    0s and 1s, column-major, starting with 0s. A string is pycocotools' compressed form (its
    rleFrString: 5 bits a character, offset 48, each count after the third a difference)."""
    counts = rle.get("counts") if isinstance(rle, dict) else None
    if isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts):
        return counts
    if not isinstance(counts, str):
        raise ValueError("an RLE needs counts: a list of run lengths or a compressed string")
    out, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        out.append(x + (out[-2] if len(out) > 2 else 0))
    return out


def rle_pixels(rle) -> int:
    """How many pixels an RLE sets (its odd runs)."""
    return sum(rle_counts(rle)[1::2])


def rle_box(rle) -> list[float] | None:
    """[x1, y1, x2, y2] around the pixels an RLE sets (column-major runs over size [h, w]); None if none."""
    h = int(rle["size"][0])
    xs, ys, pos = [], [], 0
    for i, n in enumerate(rle_counts(rle)):
        if i % 2 and n:
            first, last = pos, pos + n - 1
            xs += [first // h, last // h]
            ys += [first % h, last % h] if first // h == last // h else [0, h - 1]
        pos += n
    return [min(xs), min(ys), max(xs) + 1, max(ys) + 1] if xs else None


def points(v) -> list[list[float]]:
    """[[x, y], ...] of a polygon given as pairs or as a flat x, y, x, y, ... list (COCO's first ring
    when given a list of rings); [] for anything else."""
    if isinstance(v, list) and v and all(isinstance(r, list) for r in v) and all(len(r) > 2 for r in v):
        v = v[0]  # COCO: a list of rings
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
        v = [v[i:i + 2] for i in range(0, len(v) - 1, 2)]
    if not isinstance(v, list) or len(v) < 3:
        return []
    return [[float(p[0]), float(p[1])] for p in v if isinstance(p, (list, tuple)) and len(p) >= 2]


def polygon_box(poly: list) -> list[float]:
    """[x1, y1, x2, y2] around a polygon's points."""
    return [min(p[0] for p in poly), min(p[1] for p in poly), max(p[0] for p in poly), max(p[1] for p in poly)]


def rotated(r: dict) -> dict | None:
    """{cx, cy, w, h, angle} (radians, as Ultralytics' xywhr) of a record's oriented box: its cx, cy,
    w, h and angle (or theta, r) fields, or its four `corners` (pairs or 8 numbers, in order
    around the box: w is the first side, the angle that side's direction); None if it has neither."""
    angle = next((r[k] for k in ("angle", "theta", "r") if isinstance(r.get(k), (int, float))), None)
    if angle is not None and all(isinstance(r.get(k), (int, float)) for k in ("cx", "cy", "w", "h")):
        return {k: float(r[k]) for k in ("cx", "cy", "w", "h")} | {"angle": float(angle)}
    c = points(r.get("corners"))
    if len(c) != 4:
        return None
    (x0, y0), (x1, y1), (x2, y2) = c[0], c[1], c[2]
    return {"cx": sum(p[0] for p in c) / 4, "cy": sum(p[1] for p in c) / 4, "w": math.hypot(x1 - x0, y1 - y0),
            "h": math.hypot(x2 - x1, y2 - y1), "angle": math.atan2(y1 - y0, x1 - x0)}
