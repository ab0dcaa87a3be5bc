"""Datasets as teams have them: DOTA, HRSC2016 and Pascal VOC, read into one plain form and written
as YOLO (detection) or YOLO-OBB (oriented boxes) for any framework or repo that takes those.

Pure functions over files, standard library only (image sizes are read from the files' headers).
Tiling large images writes the tiles' labels and a plan of the crops (crops.json); the crops are
cut in the data plane (`python -m adapters.crop crops.json`, Pillow), by the job itself or by
`runner dataset convert`. Every problem is one line with the file and line it is on.

Geometry, stated once:
- DOTA `x1 y1 x2 y2 x3 y3 x4 y4 category difficult`: the four points are kept in the order given.
- HRSC2016 `mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang` (angle in radians, the rotation of the w
  side from the x axis, y pointing down): the corners are (-w/2,-h/2), (w/2,-h/2), (w/2,h/2),
  (-w/2,h/2) rotated by the angle about the centre, in that order (clockwise on the image).
- VOC `xmin ymin xmax ymax`: as given (pixels); as an oriented box, (xmin,ymin), (xmax,ymin),
  (xmax,ymax), (xmin,ymax).
- A polygon written as a detection box is its axis-aligned bounding box.
Coordinates are normalised by the image's width and height and clamped to [0, 1].
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("dota", "hrsc2016", "voc")
"""The formats read here."""

TARGETS = ("yolo", "yolo-obb")
"""The formats written here."""

TAKES = {"obb_detection": "yolo-obb", "object_detection": "yolo"}
"""What a model of each task is given when its dataset comes in one of FORMATS."""

VERSION = 1
"""Bumped when the output of a conversion changes (part of the cache key)."""

MAX_PROBLEMS = 20
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DatasetError(Exception):
    """A dataset that cannot be read: `problems` holds one `file:line: what` line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Obj:
    """One labelled object: its class name, its polygon (4 points, pixels) and whether it is 'difficult'."""

    name: str
    points: list
    difficult: bool = False


@dataclass
class Sample:
    """One image with its size and objects."""

    image: Path
    width: int
    height: int
    objects: list = field(default_factory=list)


@dataclass
class Dataset:
    """A dataset read from its published layout: samples per split, class names, what was skipped."""

    splits: dict
    names: list
    problems: list = field(default_factory=list)
    skipped_difficult: int = 0

    def report(self) -> dict:
        """What runner sees: splits, images, objects per class, what it skipped and why."""
        per_class: dict = {}
        for samples in self.splits.values():
            for s in samples:
                for o in s.objects:
                    per_class[o.name] = per_class.get(o.name, 0) + 1
        difficult = sum(1 for ss in self.splits.values() for s in ss for o in s.objects if o.difficult)
        return {"splits": {k: len(v) for k, v in self.splits.items()}, "images": sum(len(v) for v in self.splits.values()),
                "objects": sum(per_class.values()), "difficult": difficult, "classes": dict(sorted(per_class.items())),
                "names": self.names, "skipped_difficult": self.skipped_difficult, "problems": self.problems}


# -- image sizes from headers ----------------------------------------------------------------------

def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, JPEG, BMP or TIFF file, read from its header."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"BM":
            w, h = struct.unpack("<ii", head[18:26])
            return w, abs(h)
        if head[:2] in (b"II", b"MM"):
            return _tiff_size(f, head[:2])
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    break
                if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                    continue
                (length,) = struct.unpack(">H", f.read(2))
                if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">xHH", f.read(5))
                    return w, h
                f.seek(length - 2, 1)
    raise ValueError("not a PNG, JPEG, BMP or TIFF image (or a broken one)")


def _tiff_size(f, order: bytes) -> tuple[int, int]:
    e = "<" if order == b"II" else ">"
    f.seek(4)
    (ifd,) = struct.unpack(e + "I", f.read(4))
    f.seek(ifd)
    (n,) = struct.unpack(e + "H", f.read(2))
    size = {}
    for _ in range(n):
        tag, typ, _count, value = struct.unpack(e + "HHI4s", f.read(12))
        if tag in (256, 257):
            size[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), value[:2] if typ == 3 else value)[0]
    return size[256], size[257]


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        p = folder / (stem + ext)
        if p.exists():
            return p
    return None


# -- DOTA ------------------------------------------------------------------------------------------

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


def _norm(v: float, size: int) -> str:
    return f"{min(1.0, max(0.0, v / size)):.6f}"


def label_line(obj: Obj, index: int, width: int, height: int, target: str) -> str:
    """One YOLO (cls cx cy w h) or YOLO-OBB (cls x1 y1 ... x4 y4) line, normalised."""
    if target == "yolo-obb":
        return f"{index} " + " ".join(f"{_norm(x, width)} {_norm(y, height)}" for x, y in obj.points)
    xs = [min(max(x, 0.0), width) for x, _ in obj.points]
    ys = [min(max(y, 0.0), height) for _, y in obj.points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return f"{index} {_norm((x0 + x1) / 2, width)} {_norm((y0 + y1) / 2, height)} {_norm(x1 - x0, width)} {_norm(y1 - y0, height)}"


def tiles(width: int, height: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) of at most size x size covering the image, overlapping by `overlap`."""
    if size <= overlap:
        raise ValueError(f"tile ({size}) must be larger than overlap ({overlap})")

    def starts(n):
        if n <= size:
            return [0]
        out = list(range(0, n - size + 1, size - overlap))
        return out if out[-1] == n - size else out + [n - size]
    return [(x, y, min(x + size, width), min(y + size, height)) for y in starts(height) for x in starts(width)]


def clip_to_tile(obj: Obj, win: tuple, min_visible: float = 0.5) -> Obj | None:
    """The object in a tile's coordinates when at least `min_visible` of its box is inside, else None."""
    x0, y0, x1, y1 = win
    xs, ys = [p[0] for p in obj.points], [p[1] for p in obj.points]
    bx0, bx1, by0, by1 = min(xs), max(xs), min(ys), max(ys)
    area = max(bx1 - bx0, 1e-9) * max(by1 - by0, 1e-9)
    inter = max(0.0, min(bx1, x1) - max(bx0, x0)) * max(0.0, min(by1, y1) - max(by0, y0))
    if inter / area < min_visible:
        return None
    pts = [(min(max(x, x0), x1) - x0, min(max(y, y0), y1) - y0) for x, y in obj.points]
    return Obj(obj.name, pts, obj.difficult)


def dataset_key(root, fmt: str, options: dict) -> str:
    """A key of the dataset's version: its files' names, sizes and times, the format, the options."""
    h = hashlib.sha256(f"v{VERSION}\n{fmt}\n{sorted(options.items())}\n{os.path.realpath(root)}\n".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            h.update(f"{os.path.relpath(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _folder(root: Path, *parts: str) -> Path:
    """root/parts..., made a folder at a time; a name that is already there must be a real folder,
    never a symbolic link someone planted to send what is written elsewhere."""
    p = root
    for part in parts:
        p = p / part
        try:
            os.mkdir(p)
        except FileExistsError:
            if not os.path.isdir(p) or os.path.islink(p):
                raise DatasetError([f"{p}: is in the way (a link or a file where runner makes a folder); give a new --out"]) from None
    return p


def _write(path: Path, text: str):
    """Write a new file's text: never through a symbolic link (O_NOFOLLOW), never into a FIFO (O_NONBLOCK)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno in (40, 6):  # ELOOP: a symbolic link; ENXIO: a FIFO
            raise DatasetError([f"{path}: is in the way (a link or a FIFO where runner writes a file); give a new --out"]) from None
        raise
    with os.fdopen(fd, "w") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DatasetError([f"{path}: is in the way (not a regular file); give a new --out"])
        f.write(text)


def write_yolo(ds: Dataset, out: Path, target: str, keep_difficult: bool = False, tile: int | None = None,
               overlap: int = 0, final: Path | None = None) -> dict:
    """Write images (linked; cropped tiles with `tile`) and labels under `out`, and out/data.yaml; returns the report.

    `final` is where the folder will be once renamed into place (data.yaml and the crop plan name
    it); `out` by default. Nothing is written through a link found in `out` (see _folder, _write):
    callers write into a fresh folder of their own and rename it into place."""
    if target not in TARGETS:
        raise DatasetError([f"--to: given {target!r}; expected one of {', '.join(TARGETS)}"])
    out = Path(out)
    final = Path(final) if final is not None else out
    out.parent.mkdir(parents=True, exist_ok=True)
    _folder(out.parent, out.name)
    index = {n: i for i, n in enumerate(ds.names)}
    skipped = 0
    counts = {"images": 0, "objects": 0, "tiles": 0}
    crops: list = []
    for split, samples in ds.splits.items():
        _folder(out, "images", split)
        labels = _folder(out, "labels", split)
        for s in samples:
            objs = [o for o in s.objects if keep_difficult or not o.difficult]
            skipped += len(s.objects) - len(objs)
            counts["images"] += 1
            if tile and (s.width > tile or s.height > tile):
                counts["objects"] += _write_tiles(s, objs, out, split, index, target, tile, overlap, counts, crops, final)
                continue
            dst = out / "images" / split / s.image.name
            if not os.path.lexists(dst):
                os.symlink(os.path.realpath(s.image), dst)
            lines = [label_line(o, index[o.name], s.width, s.height, target) for o in objs]
            counts["objects"] += len(lines)
            _write(labels / (s.image.stem + ".txt"), "".join(line + "\n" for line in lines))
    yaml = [f"path: {final}", "train: images/train", "val: images/val", "names:"] + [f"  {i}: {n}" for i, n in enumerate(ds.names)]
    _write(out / "data.yaml", "\n".join(yaml) + "\n")
    if crops:
        import json

        _write(out / "crops.json", json.dumps(crops))
    ds.skipped_difficult = skipped
    report = ds.report()
    report.update({"written_objects": counts["objects"], "target": target, "tiles": counts["tiles"],
                   "crops": str(final / "crops.json") if crops else None})
    return report


def _write_tiles(s: Sample, objs: list, out: Path, split: str, index: dict, target: str, tile: int, overlap: int, counts,
                 crops: list, final: Path) -> int:
    written = 0
    for win in tiles(s.width, s.height, tile, overlap):
        name = f"{s.image.stem}__{win[0]}_{win[1]}"
        crops.append({"src": os.path.realpath(s.image), "box": list(win), "dest": str(final / "images" / split / f"{name}.png")})
        w, h = win[2] - win[0], win[3] - win[1]
        kept = [c for c in (clip_to_tile(o, win) for o in objs) if c is not None]
        _write(out / "labels" / split / f"{name}.txt", "".join(label_line(o, index[o.name], w, h, target) + "\n" for o in kept))
        written += len(kept)
        counts["tiles"] += 1
    return written


def summary_lines(report: dict, what: str) -> list[str]:
    """The report as the lines a job's log and `runner dataset check` print."""
    lines = [f"{what}: {report['images']} images ({', '.join(f'{k} {v}' for k, v in report['splits'].items())}), "
             f"{report['objects']} objects, {len(report['names'])} classes"
             + (f", {report.get('tiles')} tiles" if report.get("tiles") else "")]
    lines.append("objects per class: " + (", ".join(f"{k} {v}" for k, v in report["classes"].items()) or "none"))
    if report.get("skipped_difficult"):
        lines.append(f"skipped {report['skipped_difficult']} difficult objects (keep them with dataset.keep_difficult: true)")
    for p in report.get("problems", [])[:MAX_PROBLEMS]:
        lines.append(f"skipped: {p}")
    return lines
