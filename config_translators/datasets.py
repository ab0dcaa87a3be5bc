"""Dataset layout checks shared by the translators (stdlib only)."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def _images(folder: Path) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS)
    except OSError:
        return 0


def imagefolder_layout(path: str, split) -> tuple[dict, list[str]]:
    """({'train': [classes], 'val': [classes] or None}, problems) of an ImageFolder dataset.

    Either train/ and val/ folders of class folders, or class folders at the top with a split
    ratio (`dataset.split`, the val fraction).
    """
    root = Path(path)
    problems = []
    if not root.is_dir():
        return {}, [f"dataset.path: {path} does not exist (give a folder with train/ and val/ class folders)"]
    train, val = root / "train", root / "val"
    if train.is_dir():
        splits = {"train": train, "val": val if val.is_dir() else None}
        if not val.is_dir() and not split:
            problems.append(f"dataset.path: {path} has train/ but no val/ (add val/ class folders, or set dataset.split: 0.2)")
    else:
        splits = {"train": root, "val": None}
        if not split:
            problems.append(f"dataset.path: {path} has no train/ folder (give train/ and val/ class folders, or class folders with dataset.split: 0.2)")
    out = {}
    for name, folder in splits.items():
        if folder is None:
            out[name] = None
            continue
        classes = sorted(d.name for d in os.scandir(folder) if d.is_dir() and not d.name.startswith("."))
        if not classes:
            problems.append(f"dataset.path: {folder} has no class folders (one sub-folder of images per class)")
        for c in classes:
            if _images(folder / c) == 0:
                problems.append(f"dataset.path: class folder {folder / c} is empty (no .jpg/.png images)")
        out[name] = classes
    if out.get("val") is not None and out.get("train") and set(out["val"]) - set(out["train"]):
        extra = sorted(set(out["val"]) - set(out["train"]))
        problems.append(f"dataset.path: val/ has classes that train/ lacks: {', '.join(extra)}")
    if out.get("train") is not None and len(out["train"]) == 1:
        problems.append(f"dataset.path: {path} has a single class; classification needs at least 2")
    return out, problems
