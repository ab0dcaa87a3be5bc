"""Tiny synthetic datasets, made with the standard library alone (no PIL, no network).

`python -m runner.synth shapes DIR` writes a 64-px ImageFolder of circles, squares and triangles
(train/ and val/), enough for a real training run to learn something in seconds on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The drawing primitives live in runner/synth_draw.py (synth_tasks imports them from there, not from here);
# named here too, as tests and runner/checkdata.py import them from runner.synth.
from .synth_draw import PALETTE, SHAPES, _inside, make_shapes, shape_image, tint, write_png  # noqa: F401


def class_names(n: int) -> tuple:
    """n class names: the three shapes, then class3, class4, ... (drawn as shapes again, each its own colour)."""
    return tuple(SHAPES[:n]) + tuple(f"class{i}" for i in range(len(SHAPES), n))


KINDS = ("shapes", "yolo", "coco", "keypoints", "masks", "captions")


def add_arguments(p):
    """The arguments of `runner synth` and `python -m runner.synth` (one parser for both)."""
    p.add_argument("kind", choices=KINDS, help="shapes: ImageFolder (classification); yolo: a YOLO set (--task); coco: COCO boxes "
                                               "and polygons; keypoints: COCO person keypoints (17); masks: semantic masks; captions")
    p.add_argument("dir", help="the folder to write (relative to the current folder, or absolute)")
    p.add_argument("--classes", type=int, default=3, help="shapes: number of classes (default 3)")
    p.add_argument("--per-class", type=int, default=8, help="shapes: training images per class")
    p.add_argument("--val-per-class", type=int, default=4, help="shapes: validation images per class")
    p.add_argument("--train", type=int, default=8, help="other kinds: training images")
    p.add_argument("--val", type=int, default=4, help="other kinds: validation images")
    p.add_argument("--task", default="detect", choices=["detect", "segment", "pose", "obb"], help="yolo: the label layout")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--easy", action="store_true", help="each class in its own colour (a model learns it in a few epochs)")


FORMAT_OF = {"shapes": "imagefolder", "yolo": "yolo", "coco": "coco", "keypoints": "coco", "masks": "masks", "captions": "captions"}
"""The `dataset.format` a job gives for each kind."""


def _fresh_folder(root: Path):
    """Make the dataset's folder new (or take an empty one of the caller's): every file is then
    written inside a folder only the caller may write, so no link planted by someone else (in a
    shared /tmp, say) is written through."""
    import os
    import stat

    try:
        st = os.lstat(root)
    except FileNotFoundError:
        os.makedirs(root.parent, exist_ok=True)
        os.mkdir(root, 0o755)
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{root}: exists and is not a folder; give a new folder")
    if st.st_uid != os.geteuid() or os.listdir(root):
        raise ValueError(f"{root}: exists{' and is not empty' if os.listdir(root) else ' and is not yours'}; "
                         "give a new folder (synth writes only into a folder it makes)")
    os.chmod(root, 0o755)


def make(a) -> list[Path]:
    """Write the dataset `a` (parsed by add_arguments's parser) asks for; the paths a job names
    (dataset.path, and dataset.annotations for coco and keypoints), absolute."""
    if a.classes < 1 or a.size < 16 or min(a.per_class, a.val_per_class, a.train, a.val) < 1:
        raise ValueError("--classes, --per-class, --val-per-class, --train and --val must be at least 1, --size at least 16")
    root = Path(a.dir).absolute()
    _fresh_folder(root)
    if a.kind == "shapes":
        return [make_shapes(root, a.per_class, a.val_per_class, a.size, classes=class_names(a.classes), seed=a.seed, easy=a.easy)]
    from . import synth_tasks as t

    if a.kind == "yolo":
        return [t.make_yolo(root, a.task, a.train, a.val, a.size, a.seed, a.easy)]
    if a.kind in ("coco", "keypoints"):
        return list((t.make_coco if a.kind == "coco" else t.make_keypoints)(root, a.train, a.val, a.size, a.seed, a.easy))
    if a.kind == "masks":
        return [t.make_masks(root, a.train, a.val, a.size, a.seed, a.easy)]
    return [t.make_captions(root, a.train, a.val, a.size, a.seed, a.easy)]


def main(argv=None):
    """`python -m runner.synth KIND DIR`: the same as `runner synth KIND DIR`."""
    p = argparse.ArgumentParser(prog="python -m runner.synth", description="Make a tiny synthetic dataset whose labels are known exactly.")
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        paths = make(a)
    except ValueError as e:
        p.error(str(e))
    print("\n".join(map(str, paths)))


if __name__ == "__main__":
    main()
