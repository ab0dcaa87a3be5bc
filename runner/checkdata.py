"""The tiny datasets `runner check` generates, per framework (stdlib only): easy ones, each class in
its own colour, so that a model that learns at all beats chance within the check's few epochs; and
the shuffled-label control of a classification set: the same images, the training labels shuffled."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .synth import SHAPES, make_shapes


def repo_framework(table: dict) -> dict:
    """What `make` and check_spec read of a framework, for a repo: its table's check sizes and its
    dataset format (imagefolder where the table names none, as a job of it takes)."""
    return {"check": table.get("check") or {}, "dataset_formats": [(table.get("dataset") or {}).get("format", "imagefolder")]}


def make(framework: str, model: dict, fw: dict, root: Path) -> tuple[Path, str]:
    """(dataset path, format) for a model's check; made once per layout and shared."""
    sizes = {**fw.get("check", {}), **model.get("check", {})}
    fmt = fw.get("check_formats", {}).get(model.get("task_type")) or (fw.get("dataset_formats") or ["imagefolder"])[0]
    if fmt == "imagefolder":
        n = int(sizes.get("images_per_class", 6))
        # validation images per class: enough that a run at chance (the shuffled-label control) does not
        # reach chance + 0.25 by luck (12 a class of 3, 36 images: a run at chance reaches 0.58 with p = 0.002); only inferred, so cheap
        val = int(sizes.get("val_images_per_class", max(2, n // 2)))
        classes = int(sizes.get("classes", 3))
        names = tuple(SHAPES[:classes]) + tuple(f"class{i}" for i in range(classes - len(SHAPES)))
        path = root / f"imagefolder-{classes}x{n}" if val == max(2, n // 2) else root / f"imagefolder-{classes}x{n}-{val}"
        if not (path / "val").exists():
            make_shapes(path, per_class=n, val_per_class=val, size=64, classes=names, easy=True)
        return path, fmt
    from . import synth_tasks

    return synth_tasks.make(fmt, model, sizes, root)


def shuffled_labels(path: Path) -> Path:
    """The control of an ImageFolder set (beside it, made once): the same training images with their
    labels shuffled so that a label says nothing of the image (image i of true class k goes to
    class (k + i) mod classes: every class gets as many images of each colour as the others), and
    the same, truly labelled validation images. A run on it must stay near chance on validation:
    what the real run gains over it is learning, not memorising."""
    path = Path(path)
    out = path.parent / f"{path.name}-shuffled"
    if (out / "val").exists():
        return out
    tmp = path.parent / f".{out.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    classes = sorted(d.name for d in (path / "train").iterdir() if d.is_dir())
    for c in classes:
        (tmp / "train" / c).mkdir(parents=True)
    for k, c in enumerate(classes):
        for i, img in enumerate(sorted((path / "train" / c).iterdir())):
            shutil.copyfile(img, tmp / "train" / classes[(k + i) % len(classes)] / f"{c}-{img.name}")
    shutil.copytree(path / "val", tmp / "val")
    os.rename(tmp, out)  # whole or not at all: a second check of the same layout reuses it
    return out


def shuffled_boxes(data: Path) -> Path:
    """The control of a YOLO set (any task: boxes, masks, keypoints, rotated boxes), beside it and
    made once: the same training images, each given the label file of another (a seeded shuffle
    that leaves none in place, and not a rotation: the easy set's classes follow the images'
    order, so a rotation would relabel each colour consistently): its classes, places and shapes
    say nothing of the image it is given to; and the same, truly
    labelled validation images. A run on it must stay below the task's floor on validation.
    `data`: the set's data.yaml (or its folder); returns the control's data.yaml."""
    data = Path(data)
    root = data.parent if data.suffix in (".yaml", ".yml") else data
    out = root.parent / f"{root.name}-shuffled"
    if (out / "data.yaml").exists():
        return out / "data.yaml"
    tmp = root.parent / f".{out.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(root, tmp, ignore=shutil.ignore_patterns("*.cache"))
    import random

    images = sorted((root / "images" / "train").iterdir())
    perm, rng = list(range(len(images))), random.Random(0)
    for i in range(len(perm) - 1, 0, -1):  # Sattolo's shuffle: one cycle, so no image keeps its own labels
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    for i, img in enumerate(images):
        src = root / "labels" / "train" / (images[perm[i]].stem + ".txt")
        dst = tmp / "labels" / "train" / (img.stem + ".txt")
        dst.write_bytes(src.read_bytes() if src.exists() else b"")
    lines = (root / "data.yaml").read_text().splitlines()
    (tmp / "data.yaml").write_text("\n".join(f"path: {out}" if ln.startswith("path:") else ln for ln in lines) + "\n")
    os.rename(tmp, out)  # whole or not at all
    return out / "data.yaml"

