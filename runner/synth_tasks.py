"""Tiny synthetic datasets for detection, segmentation, pose and OBB (YOLO layouts) and a COCO
file, made with the standard library alone: shapes whose labels are known exactly.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

from .synth_draw import SHAPES, _inside, make_shapes, shape_image, tint, write_png

NAMES = list(SHAPES)


def _polygon(shape, box, n=12):
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        return [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)) for k in range(n)]
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return [(cx, y0), (x1, y1), (x0, y1)]


def _label(task, cls, shape, box, size):
    x0, y0, x1, y1 = (max(0.0, min(size - 1.0, v)) for v in box)
    n = lambda v: f"{v / size:.6f}"  # noqa: E731
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if task == "detect":
        return f"{cls} {n(cx)} {n(cy)} {n(w)} {n(h)}"
    if task == "segment":
        return f"{cls} " + " ".join(f"{n(px)} {n(py)}" for px, py in _polygon(shape, (x0, y0, x1, y1)))
    if task == "pose":  # 4 keypoints: the box corners, all visible
        kps = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        return f"{cls} {n(cx)} {n(cy)} {n(w)} {n(h)} " + " ".join(f"{n(px)} {n(py)} 2" for px, py in kps)
    if task == "obb":  # axis-aligned corners as a rotated box (angle 0): x1 y1 ... x4 y4
        return f"{cls} " + " ".join(f"{n(px)} {n(py)}" for px, py in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    raise ValueError(task)


def make_yolo(root: str | Path, task: str = "detect", train: int = 8, val: int = 4, size: int = 64, seed: int = 0,
              easy: bool = False) -> Path:
    """root/images/{train,val}, root/labels/{train,val}, root/data.yaml for a YOLO task. data.yaml's
    `path:` is the folder made, absolute: Ultralytics and runner read a relative one from another
    folder (the job's, data.yaml's), so `data/yolo` would have named data/yolo/data/yolo."""
    root = Path(os.path.abspath(root))
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cls = i % len(NAMES)
            rows, box = shape_image(NAMES[cls], size, rng, tint(cls, easy))
            write_png(root / "images" / split / f"{split}_{i:03d}.png", rows, size, size)
            (root / "labels" / split / f"{split}_{i:03d}.txt").write_text(_label(task, cls, NAMES[cls], box, size) + "\n")
    lines = [f"path: {root}", "train: images/train", "val: images/val", "names:"] + [f"  {i}: {c}" for i, c in enumerate(NAMES)]
    if task == "pose":
        lines += ["kpt_shape: [4, 3]", "flip_idx: [1, 0, 3, 2]"]
    (root / "data.yaml").write_text("\n".join(lines) + "\n")
    return root / "data.yaml"


def make_coco(root: str | Path, train: int = 8, val: int = 4, size: int = 64, seed: int = 0, easy: bool = False,
              overfit: bool = False) -> tuple[Path, Path]:
    """root/images/*.png and root/annotations.json (COCO detection, boxes and polygons); the last
    `val` images (by id) are the ones a job validates on. overfit: they are the first `val`
    training images again (the same pixels and boxes under new ids), for a check that fits a
    fixed small set because the model cannot learn the held-out task within its CPU minutes."""
    root = Path(root)
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(NAMES)]}
    drawn = []
    for i in range(train + val):
        cls = i % len(NAMES)
        if overfit and i >= train:
            j = (i - train) % train  # (the training image it repeats)
            cls, (rows, box) = j % len(NAMES), drawn[j]
        else:
            rows, box = shape_image(NAMES[cls], size, rng, tint(cls, easy))
            drawn.append((rows, box))
        name = f"img_{i:03d}.png"
        write_png(root / "images" / name, rows, size, size)
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        x0, y0, x1, y1 = box
        poly = [v for p in _polygon(NAMES[cls], box) for v in p]
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": cls + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                    "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "segmentation": [poly]})
    (root / "annotations.json").write_text(json.dumps(coco))
    return root / "images", root / "annotations.json"


# COCO's 17 person keypoints at fixed places in the shape's box (x, y as fractions): a stick figure
# that left/right flips map onto itself, so a top-down pose model has something exact to learn.
COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
_FIGURE = ((0.5, 0.08), (0.6, 0.05), (0.4, 0.05), (0.7, 0.1), (0.3, 0.1), (0.75, 0.3), (0.25, 0.3), (0.9, 0.45), (0.1, 0.45),
           (0.95, 0.6), (0.05, 0.6), (0.65, 0.6), (0.35, 0.6), (0.7, 0.78), (0.3, 0.78), (0.72, 0.95), (0.28, 0.95))
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
                 [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]


def make_keypoints(root: str | Path, train: int = 8, val: int = 4, size: int = 64, seed: int = 0, easy: bool = False) -> tuple[Path, Path]:
    """COCO person keypoints: root/images/*.png, root/annotations.json (train and val images in one
    file, as the check uses it) and root/val.json (the val images alone). One "person" a picture: the
    shape's box with COCO's 17 keypoints placed in it, all visible."""
    root = Path(root)
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    cat = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_KEYPOINTS), "skeleton": COCO_SKELETON}
    full = {"images": [], "annotations": [], "categories": [cat]}
    for i in range(train + val):
        cls = i % len(NAMES)
        rows, (x0, y0, x1, y1) = shape_image(NAMES[cls], size, rng, tint(cls, easy))
        name = f"img_{i:03d}.png"
        write_png(root / "images" / name, rows, size, size)
        w, h = x1 - x0, y1 - y0
        kps = [v for fx, fy in _FIGURE for v in (round(x0 + fx * w, 2), round(y0 + fy * h, 2), 2)]
        full["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        full["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x0, y0, w, h], "area": w * h,
                                    "iscrowd": 0, "num_keypoints": len(_FIGURE), "keypoints": kps})
    (root / "annotations.json").write_text(json.dumps(full))
    ids = {im["id"] for im in full["images"][train:]}
    val_part = {**full, "images": full["images"][train:], "annotations": [a for a in full["annotations"] if a["image_id"] in ids]}
    (root / "val.json").write_text(json.dumps(val_part))
    return root / "images", root / "annotations.json"


def make_masks(root: str | Path, train: int = 8, val: int = 4, size: int = 64, seed: int = 0, easy: bool = False) -> Path:
    """Semantic segmentation: root/{train,val}/images/*.png and .../masks/*.png (pixel = class id,
    0 background, 1+ the shape's class), and root/classes.txt."""

    root = Path(root)
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cls = i % len(NAMES)
            rows, (x0, y0, x1, y1) = shape_image(NAMES[cls], size, rng, tint(cls, easy))
            cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 2
            mask = [bytearray((cls + 1) if _inside(NAMES[cls], x, y, cx, cy, r) else 0 for x in range(size)) for y in range(size)]
            write_png(root / split / "images" / f"{i:03d}.png", rows, size, size)
            write_png(root / split / "masks" / f"{i:03d}.png", mask, size, size, gray=True)
    (root / "classes.txt").write_text("\n".join(["background", *NAMES]) + "\n")
    return root


COLOURS = ("red", "green", "blue", "bright")


def make_captions(root: str | Path, train: int = 8, val: int = 4, size: int = 64, seed: int = 0, easy: bool = False) -> Path:
    """Image captioning: root/{train,val}/*.png with root/{train,val}/captions.jsonl lines
    {"image": file, "caption": text}."""
    import json as _json

    root = Path(root)
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            cls = i % len(NAMES)
            rows, (x0, y0, x1, y1) = shape_image(NAMES[cls], size, rng, tint(cls, easy))
            where = ("top" if y0 + y1 < size else "bottom") + " " + ("left" if x0 + x1 < size else "right")
            write_png(d / f"{i:03d}.png", rows, size, size)
            lines.append(_json.dumps({"image": f"{i:03d}.png", "caption": f"a {NAMES[cls]} in the {where}"}))
        (d / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


TASK_OF = {"object_detection": "detect", "instance_segmentation": "segment", "pose_estimation": "pose", "obb_detection": "obb"}


def make(fmt: str, model: dict, sizes: dict, root: Path) -> tuple[Path, str]:
    """(dataset path, format) for `runner check` of a model whose framework wants `fmt`: an easy set
    (each class in its own colour), so that the check's learns step can ask for more than chance."""
    task = model.get("task_type")
    if task == "image_classification":
        per_class = int(sizes.get("images_per_class") or max(6, int(sizes.get("images", 18)) // 3))
        val_per_class = max(3, int(sizes.get("val_images", 9)) // 3)
        path = root / f"imagefolder-3x{per_class}-{val_per_class}"
        if not (path / "val").exists():
            make_shapes(path, per_class=per_class, val_per_class=val_per_class, easy=True)
        return path, "imagefolder"
    if fmt in ("yolo", "dota"):
        t = TASK_OF[task]
        path = root / f"yolo-{t}"
        if not (path / "data.yaml").exists():
            make_yolo(path, t, train=int(sizes.get("images", 8)), val=int(sizes.get("val_images", 4)), easy=True)
        return path / "data.yaml", "yolo"
    if fmt == "masks":
        path = root / "masks"
        if not (path / "classes.txt").exists():
            make_masks(path, train=int(sizes.get("images", 8)), val=int(sizes.get("val_images", 4)), easy=True)
        return path, "masks"
    if fmt == "captions":
        path = root / "captions"
        if not (path / "val" / "captions.jsonl").exists():
            make_captions(path, train=int(sizes.get("images", 8)), val=int(sizes.get("val_images", 4)), easy=True)
        return path, "captions"
    if fmt == "coco" and task == "pose_estimation":
        path = root / "coco-keypoints"
        if not (path / "annotations.json").exists():
            make_keypoints(path, train=int(sizes.get("images", 8)), val=int(sizes.get("val_images", 4)), easy=True)
        return path / "images", "coco"
    if fmt == "coco":
        train, val = int(sizes.get("images", 8)), int(sizes.get("val_images", 4))
        path = root / (f"coco-overfit-{train}x{val}" if sizes.get("overfit") else "coco")
        if not (path / "annotations.json").exists():
            make_coco(path, train=train, val=val, easy=True, overfit=bool(sizes.get("overfit")))
        return path / "images", "coco"
    raise ValueError(f"no synthetic dataset for format {fmt!r} and task {task!r}")


# -- published layouts: DOTA, HRSC2016, Pascal VOC ---------------------------------------------------

def write_bmp(path: Path, rows: list, width: int, height: int):
    """A 24-bit BMP (HRSC2016's images are BMP files), bottom-up rows, BGR."""
    import struct

    pad = (4 - (width * 3) % 4) % 4
    body = bytearray()
    for row in reversed(rows):
        for x in range(width):
            r, g, b = row[3 * x:3 * x + 3]
            body += bytes((b, g, r))
        body += b"\0" * pad
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(body), 2835, 2835, 0, 0)
    Path(path).write_bytes(header + info + body)


def rotated(cx: float, cy: float, w: float, h: float, angle: float) -> list:
    """Corners of a w x h box rotated by angle (radians) about (cx, cy): the HRSC2016 order."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]


def _published_images(n: int, size: int, rng):
    for i in range(n):
        shape = NAMES[i % len(NAMES)]
        rows, (x0, y0, x1, y1) = shape_image(shape, size, rng)
        yield i, shape, rows, ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)


ANGLES = (0.0, math.pi / 6, -math.pi / 4, math.pi / 3)
"""The angles the synthetic oriented boxes take, in turn (radians)."""


def make_dota(root, train: int = 8, val: int = 4, size: int = 64, seed: int = 0, difficult_every: int = 0) -> Path:
    """DOTA layout: root/{train,val}/images/*.png and labelTxt/*.txt with the imagesource/gsd header,
    one rotated box per image at ANGLES[i % 4] around its shape; every `difficult_every`-th object difficult."""
    root = Path(root)
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labelTxt").mkdir(parents=True, exist_ok=True)
        for i, shape, rows, (cx, cy, w, h) in _published_images(count, size, rng):
            name = f"P{split[0]}{i:04d}"
            write_png(root / split / "images" / f"{name}.png", rows, size, size)
            pts = rotated(cx, cy, w, h * 0.8, ANGLES[i % len(ANGLES)])
            diff = 1 if difficult_every and i % difficult_every == difficult_every - 1 else 0
            (root / split / "labelTxt" / f"{name}.txt").write_text(
                "imagesource:GoogleEarth\ngsd:0.146\n" + " ".join(f"{v:.1f}" for p in pts for v in p) + f" {shape} {diff}\n")
    return root


def make_hrsc(root, train: int = 8, val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """HRSC2016 layout: root/AllImages/*.bmp, root/Annotations/*.xml (mbox_cx/cy/w/h/ang), root/ImageSets/{train,val}.txt."""
    root = Path(root)
    rng = random.Random(seed)
    for d in ("AllImages", "Annotations", "ImageSets"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids = {"train": [], "val": []}
    k = 0
    for split, count in (("train", train), ("val", val)):
        for i, shape, rows, (cx, cy, w, h) in _published_images(count, size, rng):
            name = f"1000{k:05d}"
            k += 1
            write_bmp(root / "AllImages" / f"{name}.bmp", rows, size, size)
            ang = ANGLES[i % len(ANGLES)]
            (root / "Annotations" / f"{name}.xml").write_text(
                f"<HRSC_Image>\n  <Img_ID>{name}</Img_ID>\n  <Img_SizeWidth>{size}</Img_SizeWidth>\n"
                f"  <Img_SizeHeight>{size}</Img_SizeHeight>\n  <HRSC_Objects>\n    <HRSC_Object>\n"
                f"      <Class_ID>100000001</Class_ID>\n      <difficult>0</difficult>\n"
                f"      <mbox_cx>{cx:.4f}</mbox_cx>\n      <mbox_cy>{cy:.4f}</mbox_cy>\n      <mbox_w>{w:.4f}</mbox_w>\n"
                f"      <mbox_h>{h * 0.8:.4f}</mbox_h>\n      <mbox_ang>{ang:.6f}</mbox_ang>\n    </HRSC_Object>\n"
                f"  </HRSC_Objects>\n</HRSC_Image>\n")
            ids[split].append(name)
    for split, names in ids.items():
        (root / "ImageSets" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def make_voc(root, train: int = 8, val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Pascal VOC layout: root/JPEGImages (PNG files here), root/Annotations/*.xml, root/ImageSets/Main/{train,val}.txt."""
    root = Path(root)
    rng = random.Random(seed)
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids = {"train": [], "val": []}
    k = 0
    for split, count in (("train", train), ("val", val)):
        for i, shape, rows, (cx, cy, w, h) in _published_images(count, size, rng):
            name = f"2007_{k:06d}"
            k += 1
            write_png(root / "JPEGImages" / f"{name}.png", rows, size, size)
            x0, y0, x1, y1 = (round(v) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            (root / "Annotations" / f"{name}.xml").write_text(
                f"<annotation>\n  <folder>VOC2007</folder>\n  <filename>{name}.png</filename>\n"
                f"  <size><width>{size}</width><height>{size}</height><depth>3</depth></size>\n"
                f"  <object>\n    <name>{shape}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
                f"    <difficult>0</difficult>\n    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>\n"
                f"  </object>\n</annotation>\n")
            ids[split].append(name)
    for split, names in ids.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root
