"""DOTA, HRSC2016 and Pascal VOC read into the plain form (geometry: the package's docstring); every
problem one line with its file and line."""

from __future__ import annotations

import math
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

from .model import FORMATS, MAX_PROBLEMS, Dataset, DatasetError, Obj, Sample, _find_image, image_size

_NUM = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def parse_dota_labels(path: Path, problems: list) -> list[Obj]:
    """Objects of one DOTA labelTxt file; header lines (imagesource:, gsd:) are skipped."""
    objs = []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        problems.append(f"{path}:1: cannot read it ({e.strerror})")
        return objs
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or re.match(r"^(imagesource|gsd)\s*:", line, re.I):
            continue
        parts = line.split()
        if len(parts) not in (9, 10) or not all(_NUM.match(p) for p in parts[:8]):
            problems.append(f"{path}:{n}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 category difficult', got {line[:60]!r}")
            continue
        if len(parts) == 10 and parts[9] not in ("0", "1"):
            problems.append(f"{path}:{n}: difficult must be 0 or 1, got {parts[9]!r}")
            continue
        xy = [float(v) for v in parts[:8]]
        objs.append(Obj(parts[8], [(xy[i], xy[i + 1]) for i in range(0, 8, 2)], len(parts) == 10 and parts[9] == "1"))
    return objs


def read_dota(root: Path, val_fraction: float = 0.2) -> Dataset:
    """DOTA v1.0/v1.5/v2.0: root/{train,val}/images and root/{train,val}/labelTxt (no val/: a split of train)."""
    root = Path(root)
    problems: list = []
    splits = {}
    for split in ("train", "val"):
        img_dir, lbl_dir = root / split / "images", root / split / "labelTxt"
        if not img_dir.is_dir():
            continue
        if not lbl_dir.is_dir():
            problems.append(f"{lbl_dir}: missing (DOTA labels are in labelTxt/ beside images/)")
            continue
        samples = []
        for lbl in sorted(lbl_dir.glob("*.txt")):
            img = _find_image(img_dir, lbl.stem)
            if img is None:
                problems.append(f"{lbl}:1: no image {lbl.stem}.png/.jpg/... in {img_dir}")
                continue
            try:
                w, h = image_size(img)
            except (OSError, ValueError, struct.error) as e:
                problems.append(f"{img}:1: {e}")
                continue
            samples.append(Sample(img, w, h, parse_dota_labels(lbl, problems)))
        splits[split] = samples
    if not splits:
        raise DatasetError([f"{root}: no train/images (DOTA layout: train/images, train/labelTxt, val/... the same)"])
    return _finish(splits, problems, val_fraction)


# -- HRSC2016 --------------------------------------------------------------------------------------

def _lines_of(text: str, tag: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in re.finditer(rf"<{tag}[\s>]", text)]


def _xml(path: Path, problems: list):
    text = Path(path).read_text(errors="replace")
    try:
        return ET.fromstring(text), text
    except ET.ParseError as e:
        problems.append(f"{path}:{e.position[0]}: not valid XML ({str(e).split(':')[0]})")
        return None, text


def _annotations(ann_dir: Path, img_dir: Path, tag: str, problems: list):
    """(annotation file, parsed XML, line of each `tag` element, image) for each readable XML file
    whose image is there; what cannot be read goes into `problems` with its file and line."""
    for ann in sorted(ann_dir.glob("*.xml")):
        doc, text = _xml(ann, problems)
        if doc is None:
            continue
        fname = (doc.findtext("filename") or "").strip()
        img = (img_dir / fname) if fname and (img_dir / fname).exists() else _find_image(img_dir, ann.stem)
        if img is None:
            problems.append(f"{ann}:1: no image {fname or ann.stem + '.*'} in {img_dir}")
            continue
        yield ann, doc, _lines_of(text, tag), img


def _size(el, width_tag: str, height_tag: str, img: Path, problems: list) -> tuple[int, int] | None:
    """The size an annotation states, else the image header's; None (with a problem) if neither."""
    try:
        w, h = int(_num(el, width_tag)), int(_num(el, height_tag))
        if w > 0 and h > 0:
            return w, h
    except (ValueError, AttributeError, TypeError):
        pass
    try:
        return image_size(img)
    except (OSError, ValueError, struct.error) as e:
        problems.append(f"{img}:1: {e}")
        return None


def _num(el, tag: str):
    node = el.find(tag)
    if node is None or node.text is None:
        raise ValueError(f"missing <{tag}>")
    try:
        return float(node.text.strip())
    except ValueError:
        raise ValueError(f"<{tag}> is {node.text.strip()[:20]!r}, not a number") from None


def hrsc_corners(cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """The four corners of an HRSC2016 rotated box, in the order stated in this module's docstring."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]


def read_hrsc(root: Path, val_fraction: float = 0.2) -> Dataset:
    """HRSC2016: root/AllImages (or Images), root/Annotations/*.xml, root/ImageSets/{train,val,trainval,test}.txt.

    Every ship is one class, `ship` (the level-1 task that OBB benchmarks use); Class_ID is kept
    in the report's per-file detail only."""
    root = Path(root)
    img_dir = next((root / d for d in ("AllImages", "Images", "images") if (root / d).is_dir()), None)
    ann_dir = root / "Annotations"
    if img_dir is None or not ann_dir.is_dir():
        raise DatasetError([f"{root}: expected AllImages/ (or Images/) and Annotations/ (HRSC2016 layout)"])
    problems: list = []
    samples = {}
    for ann, doc, lines, img in _annotations(ann_dir, img_dir, "HRSC_Object", problems):
        size = _size(doc, "Img_SizeWidth", "Img_SizeHeight", img, problems)
        if size is None:
            continue
        w, h = size
        objs = []
        for k, o in enumerate(doc.iter("HRSC_Object")):
            try:
                pts = hrsc_corners(_num(o, "mbox_cx"), _num(o, "mbox_cy"), _num(o, "mbox_w"), _num(o, "mbox_h"), _num(o, "mbox_ang"))
            except ValueError as e:
                problems.append(f"{ann}:{lines[k] if k < len(lines) else 1}: HRSC_Object {k + 1}: {e}")
                continue
            d = o.find("difficult")
            objs.append(Obj("ship", pts, d is not None and (d.text or "0").strip() == "1"))
        samples[ann.stem] = Sample(img, w, h, objs)
    sets = root / "ImageSets"
    wanted = {}
    for split, names in (("train", ("train.txt",)), ("val", ("val.txt", "test.txt"))):
        f = next((sets / n for n in names if (sets / n).is_file()), None)
        if f is not None:
            wanted[split] = [line.strip() for line in f.read_text().splitlines() if line.strip()]
    if not wanted.get("train") and (sets / "trainval.txt").is_file():
        wanted["train"] = [line.strip() for line in (sets / "trainval.txt").read_text().splitlines() if line.strip()]
    splits = _by_lists(samples, wanted, sets, problems)
    return _finish(splits, problems, val_fraction)


def _by_lists(samples: dict, wanted: dict, sets: Path, problems: list) -> dict:
    if not wanted:
        return {"train": [samples[k] for k in sorted(samples)]}
    splits = {}
    for split, ids in wanted.items():
        got = []
        for i, sid in enumerate(ids, 1):
            if sid in samples:
                got.append(samples[sid])
            else:
                problems.append(f"{sets}/{split}.txt:{i}: {sid!r} has no annotation (or its annotation could not be read)")
        splits[split] = got
    return splits


# -- Pascal VOC ------------------------------------------------------------------------------------

def read_voc(root: Path, val_fraction: float = 0.2) -> Dataset:
    """Pascal VOC: root/JPEGImages, root/Annotations/*.xml, root/ImageSets/Main/{train,val,trainval}.txt."""
    root = Path(root)
    img_dir, ann_dir = root / "JPEGImages", root / "Annotations"
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise DatasetError([f"{root}: expected JPEGImages/ and Annotations/ (Pascal VOC layout)"])
    problems: list = []
    samples = {}
    for ann, doc, lines, img in _annotations(ann_dir, img_dir, "object", problems):
        size = _size(doc.find("size"), "width", "height", img, problems)
        if size is None:
            continue
        w, h = size
        objs = []
        for k, o in enumerate(doc.iter("object")):
            at = f"{ann}:{lines[k] if k < len(lines) else 1}"
            name = (o.findtext("name") or "").strip()
            box = o.find("bndbox")
            try:
                if not name:
                    raise ValueError("missing <name>")
                if box is None:
                    raise ValueError("missing <bndbox>")
                x0, y0, x1, y1 = (_num(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
                if x1 <= x0 or y1 <= y0:
                    raise ValueError(f"an empty box ({x0:g},{y0:g})-({x1:g},{y1:g})")
            except ValueError as e:
                problems.append(f"{at}: object {k + 1}: {e}")
                continue
            objs.append(Obj(name, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], (o.findtext("difficult") or "0").strip() == "1"))
        samples[ann.stem] = Sample(img, w, h, objs)
    sets = root / "ImageSets" / "Main"
    wanted = {}
    for split in ("train", "val"):
        f = sets / f"{split}.txt"
        if f.is_file():
            wanted[split] = [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
    if not wanted.get("train") and (sets / "trainval.txt").is_file():
        wanted["train"] = [line.split()[0] for line in (sets / "trainval.txt").read_text().splitlines() if line.strip()]
    return _finish(_by_lists(samples, wanted, sets, problems), problems, val_fraction)


# -- common ----------------------------------------------------------------------------------------

def _finish(splits: dict, problems: list, val_fraction: float) -> Dataset:
    """Split off val when there is none (deterministically: every k-th image), name the classes."""
    if not splits.get("val"):
        train = splits.get("train", [])
        k = max(2, round(1 / val_fraction)) if val_fraction else 5
        splits = {"train": [s for i, s in enumerate(train) if i % k != k - 1] or train,
                  "val": [s for i, s in enumerate(train) if i % k == k - 1] or train[-1:]}
    names = sorted({o.name for ss in splits.values() for s in ss for o in s.objects})
    return Dataset(splits, names, problems)


READERS = {"dota": read_dota, "hrsc2016": read_hrsc, "voc": read_voc}


def read(root, fmt: str, val_fraction: float = 0.2) -> Dataset:
    """A dataset in one of FORMATS; raises DatasetError (one line per problem) if it cannot be read."""
    if fmt not in READERS:
        raise DatasetError([f"dataset.format: given {fmt!r}; expected one of {', '.join(FORMATS)}"])
    if not Path(root).is_dir():
        raise DatasetError([f"dataset.path: {root} does not exist"])
    return READERS[fmt](Path(root), val_fraction)


def check(root, fmt: str, val_fraction: float = 0.2) -> list[str]:
    """Problems of a dataset, one `file:line: what` each (at most MAX_PROBLEMS, then a count)."""
    try:
        ds = read(root, fmt, val_fraction)
    except DatasetError as e:
        return e.problems
    problems = list(ds.problems)
    if not any(ds.splits.values()):
        problems.append(f"{root}: no labelled images found")
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
    return problems
