"""The tiny datasets `runner check` generates, per framework (stdlib only): easy ones, each class in
its own colour, so that a model that learns at all beats chance within the check's few epochs; and
the shuffled-label control of each set: the same images, the training labels shuffled so that they
say nothing of the image, the validation set as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

from .atomic import make_dir
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
    classes = sorted(d.name for d in (path / "train").iterdir() if d.is_dir())

    def fill(tmp: Path):
        for c in classes:
            (tmp / "train" / c).mkdir(parents=True)
        for k, c in enumerate(classes):
            for i, img in enumerate(sorted((path / "train" / c).iterdir())):
                shutil.copyfile(img, tmp / "train" / classes[(k + i) % len(classes)] / f"{c}-{img.name}")
        shutil.copytree(path / "val", tmp / "val")

    make_dir(out, fill)  # whole or not at all: a second check of the same layout reuses it
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
    images = sorted((root / "images" / "train").iterdir())
    perm = _derangement(len(images))

    def shuffle(tmp: Path):
        for i, img in enumerate(images):
            src = root / "labels" / "train" / (images[perm[i]].stem + ".txt")
            (tmp / "labels" / "train" / (img.stem + ".txt")).write_bytes(src.read_bytes() if src.exists() else b"")
        lines = (root / "data.yaml").read_text().splitlines()
        (tmp / "data.yaml").write_text("\n".join(f"path: {out}" if ln.startswith("path:") else ln for ln in lines) + "\n")

    _copy_made_once(root, out, shuffle, ignore=shutil.ignore_patterns("*.cache"))
    return out / "data.yaml"


def _derangement(n: int, seed: int = 0) -> list:
    """A seeded shuffle of range(n) that leaves none in place and is not a rotation (Sattolo's: one
    cycle): item i is given item perm[i]'s labels."""
    import random

    perm, rng = list(range(n)), random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _copy_made_once(root: Path, out: Path, shuffle, ignore=None) -> Path:
    """Copy `root` to `out` through a temporary folder that `shuffle(tmp)` rewrites, then rename it
    into place: whole or not at all, and a second check of the same set reuses it."""
    def fill(tmp: Path):
        shutil.copytree(root, tmp, ignore=ignore, dirs_exist_ok=True)  # root's mode too, as copytree gives
        shuffle(tmp)

    return make_dir(out, fill, mode=None)


def shuffled_coco(annotations: Path, split: float = 0.25) -> Path:
    """The control of a COCO detection set (one annotations file; a Transformers job takes its last
    round(n * split) images, by id, as the validation set): beside the set's folder and made once,
    the same images with each training image given another training image's annotations (a seeded
    shuffle that leaves none in place); the validation images keep theirs. Returns the control's
    annotations file (its images are in `images/` beside it, as in the real set)."""
    import json

    annotations = Path(annotations)
    root = annotations.parent
    out = root.parent / f"{root.name}-shuffled"
    if (out / annotations.name).exists():
        return out / annotations.name

    def shuffle(tmp: Path):
        coco = json.loads(annotations.read_text())
        images = sorted(coco["images"], key=lambda im: im["id"])
        n_val = max(1, int(round(len(images) * float(split))))
        train = [im["id"] for im in images[:-n_val]]
        by_image = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        perm = _derangement(len(train))
        anns = [a for a in coco["annotations"] if a["image_id"] not in set(train)]
        for i, image_id in enumerate(train):
            anns += [{**a, "image_id": image_id} for a in by_image.get(train[perm[i]], [])]
        anns = [{**a, "id": k + 1} for k, a in enumerate(sorted(anns, key=lambda a: (a["image_id"], a["id"])))]
        (tmp / annotations.name).write_text(json.dumps({**coco, "annotations": anns}))

    return _copy_made_once(root, out, shuffle) / annotations.name


def shuffled_masks(root: Path) -> Path:
    """The control of a semantic segmentation set (`train/` and `val/`, each `images/` and `masks/`):
    beside it and made once, each training image given another training image's mask (a seeded
    shuffle that leaves none in place); the validation masks as they were."""
    root = Path(root)
    out = root.parent / f"{root.name}-shuffled"
    if (out / "classes.txt").exists():
        return out

    def shuffle(tmp: Path):
        masks = sorted((root / "train" / "masks").iterdir())
        perm = _derangement(len(masks))
        for i, m in enumerate(masks):
            (tmp / "train" / "masks" / m.name).write_bytes(masks[perm[i]].read_bytes())

    return _copy_made_once(root, out, shuffle)


def shuffled_captions(root: Path) -> Path:
    """The control of a captioning set (`train/` and `val/`, each with its captions.jsonl): beside it
    and made once, each training image given another training image's caption (a seeded shuffle
    that leaves none in place); the validation captions as they were."""
    import json

    root = Path(root)
    out = root.parent / f"{root.name}-shuffled"
    if (out / "val" / "captions.jsonl").exists():
        return out

    def shuffle(tmp: Path):
        rows = [json.loads(ln) for ln in (root / "train" / "captions.jsonl").read_text().splitlines() if ln.strip()]
        perm = _derangement(len(rows))
        lines = [json.dumps({**r, "caption": rows[perm[i]]["caption"]}) for i, r in enumerate(rows)]
        (tmp / "train" / "captions.jsonl").write_text("\n".join(lines) + "\n")

    return _copy_made_once(root, out, shuffle)


def control_dataset(dataset: dict, fmt: str, repo: bool = False) -> dict | None:
    """The `dataset` table of a check job's shuffled-label control, or None where its set has none:
    a repo's COCO set (it validates on its training images, so a control that memorised its
    shuffled labels would score as well as a run that learned)."""
    path = Path(dataset["path"])
    if fmt == "imagefolder":
        return {**dataset, "path": str(shuffled_labels(path))}
    if fmt == "yolo":
        return {**dataset, "path": str(shuffled_boxes(path))}
    if fmt == "masks":
        return {**dataset, "path": str(shuffled_masks(path))}
    if fmt == "captions":
        return {**dataset, "path": str(shuffled_captions(path))}
    if fmt == "coco" and not repo and dataset.get("annotations"):
        ann = shuffled_coco(Path(dataset["annotations"]), float(dataset.get("split") or 0.25))
        return {**dataset, "path": str(ann.parent / path.name), "annotations": str(ann)}
    return None

