"""A repo's own inference, mapped by its `[repos.X.infer]` table onto the task's InferenceResult.

    [repos.X.infer]
    template = ["detect.py", "--weights", "{checkpoint}", "--source", "{image}", ...]   # argv after python
    output = { file = "pred/labels/{image_stem}.txt", format = "text", columns = [...], box = "cxcywhn" }

`checkpoint` (optional) is a glob, written as `checkpoints` are, that picks which recorded
checkpoint to use (the newest match); without it the best, else the last, else the newest.
`template` runs once per image when it names `{image}`, once for all when it names `{images}`
(then each record says which image it belongs to by an `image` field). Placeholders: those of
`args.template` (`{input_size}`, `{num_classes}`, `{variant}`, `{device}`, `{src}`, ...) plus
`{checkpoint}`, `{image}`, `{images}`, `{image_stem}`, `{image_name}`, and `{output_dir}` (a
fresh folder for this inference). `args.cpu` / `args.gpu` have their counterparts `cpu` / `gpu`.

`output` says where the records are and how to read them:
- `stdout = true` or `file = "path under {output_dir}"` (placeholders allowed);
- `format`: `png` (semantic segmentation: a mask PNG, 8-bit grey or palette, pixel = class id;
  each class's pixel count becomes a `masks` entry, as the Transformers plugin returns),
  `json` (a list of records, or one record; `records = "key"` picks a list inside),
  `jsonl` (a record a line; other lines are ignored), `csv` (a header row), `text` (whitespace
  columns named by `columns`, or a `regex` with named groups; other lines are ignored);
- `fields`: renames, ours = theirs (`{ confidence = "score", label_id = "category_id" }`);
- `box`: how a record's box is given: `xyxy` (x1 y1 x2 y2 fields, or a `box` list), `xywh`
  (COCO: left, top, width, height), `cxcywh`, `cxcywhn` (YOLO: centre and size, divided by the
  image's size);
- `label_offset`: added to `label_id` (0 when ids already index the dataset's class list;
  COCO category ids are looked up as they are).

A record may carry `label_id`, `label`, `confidence`, a box, `keypoints` (a list of [x, y] or
[x, y, score], or a flat list of triples) and `scores` (one per class: classification's top-5).
Classification takes the record with the highest confidence; detection makes a box of each;
pose makes a person of each record with keypoints; semantic segmentation a mask entry of each
class's `pixels` or `rle`; instance segmentation a box and a mask of each `polygon`,
`segmentation` or `rle`; OBB a rotated box of each `cx cy w h angle` or `corners`; captioning
the (most confident) `caption` or `text` (regions.py reads the shapes).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from .. import regions
from ..dataset_formats import image_size  # noqa: F401 (the size of a box format's image: runner.repos.infer)
from . import _fill

BOX_FORMATS = ("xyxy", "xywh", "cxcywh", "cxcywhn")
FORMATS = ("json", "jsonl", "csv", "text", "png")


def check_table(infer: dict, where: str) -> list[str]:
    """Problems with an infer table, one line each."""
    problems = []
    t = infer.get("template")
    if not isinstance(t, list) or not t or not all(isinstance(x, str) for x in t):
        problems.append(f"{where}.template: expected a list of strings (argv after python)")
    elif not any("{image}" in x or "{images}" in x for x in t):
        problems.append(f"{where}.template: names neither {{image}} nor {{images}}")
    if infer.get("checkpoint") is not None and not isinstance(infer.get("checkpoint"), str):
        problems.append(f"{where}.checkpoint: expected a glob (a string)")
    out = infer.get("output")
    if not isinstance(out, dict):
        return problems + [f"{where}.output: expected a table (stdout = true or file = ..., and format)"]
    if bool(out.get("stdout")) == bool(out.get("file")):
        problems.append(f"{where}.output: give one of stdout = true or file = \"...\"")
    if out.get("format") not in FORMATS:
        problems.append(f"{where}.output.format: given {out.get('format')!r}; expected one of {', '.join(FORMATS)}")
    if out.get("format") == "png" and not out.get("file"):
        problems.append(f"{where}.output: format png (a mask of class ids) is read from a file = \"...\", not stdout")
    if out.get("format") == "text" and not (out.get("columns") or out.get("regex")):
        problems.append(f"{where}.output: format text needs columns = [...] or regex = '...'")
    if out.get("box") is not None and out.get("box") not in BOX_FORMATS:
        problems.append(f"{where}.output.box: given {out.get('box')!r}; expected one of {', '.join(BOX_FORMATS)}")
    return problems


HERE = " here"  # how a missing placeholder is reported in an infer table


def image_fields(fields: dict, image: str) -> dict:
    """The fields of one image's run: {image}, {image_stem}, {image_name}."""
    return {**fields, "image": image, "image_stem": Path(image).stem, "image_name": Path(image).name}


def runs(infer: dict, fields: dict, images: list[str]) -> list[tuple[list[str], list[str]]]:
    """[(argv after python, the images that run covers)]: one per image, or one for all."""
    template = infer["template"]
    where = "gpu" if fields.get("gpus") else "cpu"
    if any("{images}" in t for t in template):
        argv = []
        for t in template:
            argv += list(images) if t == "{images}" else [_fill(t, {**fields, "images": " ".join(images)}, "infer.template", HERE)]
        argv += [_fill(t, fields, f"infer.{where}", HERE) for t in infer.get(where, [])]
        return [(argv, list(images))]
    out = []
    for image in images:
        f = image_fields(fields, image)
        argv = [_fill(t, f, "infer.template", HERE) for t in template] + [_fill(t, f, f"infer.{where}", HERE) for t in infer.get(where, [])]
        out.append((argv, [image]))
    return out


def _number(v):
    if isinstance(v, str):
        try:
            return float(v) if any(c in v for c in ".eE") or v.lower() in ("nan", "inf") else int(v)
        except ValueError:
            return v
    return v


def mask_records(data: bytes) -> list[dict]:
    """A mask PNG (8-bit grey or palette index per pixel) -> [{"label_id": k, "pixels": n}] per class present."""
    import struct
    import zlib

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("the mask is not a PNG")
    pos, idat, width = 8, b"", None
    while pos + 8 <= len(data):
        (length,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (0, 3) or interlace:
                raise ValueError(f"the mask PNG is {depth}-bit, colour type {colour}{', interlaced' if interlace else ''}; "
                                 f"expected 8-bit grey or palette, one class id per pixel")
        elif tag == b"IDAT":
            idat += body
        elif tag == b"IEND":
            break
        pos += 12 + length
    if width is None:
        raise ValueError("the mask PNG has no header")
    raw, counts, prev = zlib.decompress(idat), {}, bytearray(width)
    for y in range(height):
        kind, line = raw[y * (width + 1)], bytearray(raw[y * (width + 1) + 1:(y + 1) * (width + 1)])
        for x in range(width):
            a = line[x - 1] if x else 0
            b, c = prev[x], (prev[x - 1] if x else 0)
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for v in line:
            counts[v] = counts.get(v, 0) + 1
        prev = line
    return [{"label_id": k, "pixels": n} for k, n in sorted(counts.items())]


def records(out: dict, text: str) -> list[dict]:
    """The records of an output text, keys renamed by `fields` (ours = theirs)."""
    fmt = out["format"]
    if fmt == "json":
        data = json.loads(text) if text.strip() else []
        if out.get("records"):
            data = data[out["records"]]
        rows = data if isinstance(data, list) else [data]
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.lstrip().startswith("{")]
    elif fmt == "csv":
        rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(text))]
    else:
        rows = []
        pattern = re.compile(out["regex"]) if out.get("regex") else None
        for line in text.splitlines():
            if pattern:
                m = pattern.search(line)
                if m:
                    rows.append({k: _number(v) for k, v in m.groupdict().items() if v is not None})
                continue
            parts = line.split()
            if len(parts) == len(out["columns"]) and all(_number(p) != p for p in parts if p not in ("nan",)):
                rows.append({c: _number(p) for c, p in zip(out["columns"], parts)})
    renames = out.get("fields") or {}
    return [{**{k: v for k, v in r.items()}, **{ours: r[theirs] for ours, theirs in renames.items() if theirs in r}}
            for r in rows if isinstance(r, dict)]


def _box(r: dict, how: str, size: tuple[int, int]) -> list[float] | None:
    if isinstance(r.get("box"), (list, tuple)) and len(r["box"]) == 4:
        a, b, c, d = (float(x) for x in r["box"])
    elif all(k in r for k in ("x1", "y1", "x2", "y2")):
        a, b, c, d = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        how = "xyxy"
    elif all(k in r for k in ("cx", "cy", "w", "h")):
        a, b, c, d = (float(r[k]) for k in ("cx", "cy", "w", "h"))
    elif all(k in r for k in ("x", "y", "w", "h")):
        a, b, c, d = (float(r[k]) for k in ("x", "y", "w", "h"))
    else:
        return None
    w, h = size
    if how == "xywh":
        return [a, b, a + c, b + d]
    if how in ("cxcywh", "cxcywhn"):
        if how == "cxcywhn":
            a, b, c, d = a * w, b * h, c * w, d * h
        return [a - c / 2, b - d / 2, a + c / 2, b + d / 2]
    return [a, b, c, d]


def _keypoints(v) -> list[dict]:
    if not isinstance(v, list):
        return []
    if v and all(isinstance(x, (int, float)) for x in v):  # flat x, y, score triples
        v = [v[i:i + 3] for i in range(0, len(v) - 2, 3)]
    out = []
    for p in v:
        if isinstance(p, (list, tuple)) and len(p) >= 2:
            out.append({"x": float(p[0]), "y": float(p[1]), **({"confidence": float(p[2])} if len(p) > 2 else {})})
    return out


def result(task: str, rows: list[dict], out: dict, names: dict, size: tuple[int, int]) -> dict:
    """One image's records -> an InferenceResult as a dict (fields that do not apply left out)."""
    offset = int(out.get("label_offset", 0))

    def label(r):
        if r.get("label_id") is None:
            return {"label": r["label"]} if r.get("label") is not None else {}
        k = int(r["label_id"]) + offset
        return {"label_id": k, **({"label": names[k]} if k in names else ({"label": r["label"]} if r.get("label") else {}))}

    conf = lambda r: float(r.get("confidence", r.get("score", 0.0)) or 0.0)  # noqa: E731
    res = {"task": task}
    if task == "image_classification":
        if not rows:
            return res
        best = max(rows, key=conf)
        lab = label(best)
        res.update({"predicted_label_id": lab.get("label_id"), "predicted_label": lab.get("label"), "confidence": conf(best)})
        scores = best.get("scores")
        if isinstance(scores, list) and scores:
            order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[:5]
            res["top5_predictions"] = [{"label_id": i + offset, "label": names.get(i + offset), "confidence": float(scores[i])} for i in order]
        return {k: v for k, v in res.items() if v is not None}
    if task == "image_captioning":
        said = [r for r in rows if isinstance(r.get("caption", r.get("text")), str)]
        if said:
            best = max(said, key=conf) if any("confidence" in r or "score" in r for r in said) else said[0]
            res["caption"] = best.get("caption", best.get("text"))
        elif rows:
            res["warnings"] = [f"{len(rows)} record(s) gave no caption (a record needs caption or text)"]
        return res
    if task == "semantic_segmentation":
        rows = [{**r, "pixels": regions.rle_pixels(r["rle"])} if r.get("pixels") is None and r.get("rle") is not None else r
                for r in rows]  # a class's mask as an RLE: its pixels counted
        total = sum(int(r.get("pixels", 0) or 0) for r in rows)
        res["masks"] = [{**label(r), "pixels": int(r["pixels"]), "fraction": int(r["pixels"]) / total}
                        for r in rows if r.get("pixels") and r.get("label_id") is not None]
        if rows and not res["masks"]:
            res["warnings"] = [f"{len(rows)} record(s) gave no mask (a mask record needs label_id and pixels or rle, or output format png)"]
        return res
    if task == "obb_detection":
        res["rotated_boxes"] = [{**rb, "confidence": conf(r), **label(r)} for r in rows if (rb := regions.rotated(r)) is not None]
        lost = len(rows) - len(res["rotated_boxes"])
        if lost:
            res["warnings"] = [f"{lost} of {len(rows)} record(s) mapped to no rotated box (a record needs cx, cy, w, h and angle, or corners)"]
        return res
    how = out.get("box", "xyxy")
    boxes, people, masks = [], [], []
    for r in rows:
        if task == "pose_estimation" and r.get("keypoints") is not None:
            people.append(_keypoints(r["keypoints"]))
        b = _box(r, how, size)
        if task == "instance_segmentation":  # its mask as a polygon (as Ultralytics gives it) or an RLE; the box around it if none is given
            poly = regions.points(r.get("polygon", r.get("segmentation")))
            rle = r.get("rle") or (r["segmentation"] if isinstance(r.get("segmentation"), dict) else None)
            if poly:
                masks.append({"polygon": poly, **label(r)})
                b = b or regions.polygon_box(poly)
            elif rle is not None:
                masks.append({"pixels": regions.rle_pixels(rle), **label(r)})
                b = b or regions.rle_box(rle)
        if b is not None:
            boxes.append({"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "confidence": conf(r), **label(r)})
    res["boxes"] = boxes
    if task == "pose_estimation":
        res["keypoints"] = people
    if task == "instance_segmentation":
        res["masks"] = masks
    lost = len(rows) - max(len(boxes), len(people))
    if lost > 0:
        res["warnings"] = [f"{lost} of {len(rows)} record(s) mapped to no box{' or person' if task == 'pose_estimation' else ''} "
                           f"(see the table's output.box and fields)"]
    elif task == "instance_segmentation" and len(masks) < len(rows):
        res["warnings"] = [f"{len(rows) - len(masks)} of {len(rows)} record(s) gave no mask (a record needs polygon, segmentation or rle)"]
    return res
