"""The tiny datasets `runner check` generates, per framework (stdlib only): easy ones, each class in
its own colour, so that a model that learns at all beats chance within the check's few epochs."""

from __future__ import annotations

from pathlib import Path

from .synth import SHAPES, make_shapes


def make(framework: str, model: dict, fw: dict, root: Path) -> tuple[Path, str]:
    """(dataset path, format) for a model's check; made once per layout and shared."""
    sizes = {**fw.get("check", {}), **model.get("check", {})}
    fmt = fw.get("check_formats", {}).get(model.get("task_type")) or (fw.get("dataset_formats") or ["imagefolder"])[0]
    if fmt == "imagefolder":
        n = int(sizes.get("images_per_class", 6))
        classes = int(sizes.get("classes", 3))
        names = tuple(SHAPES[:classes]) + tuple(f"class{i}" for i in range(classes - len(SHAPES)))
        path = root / f"imagefolder-{classes}x{n}"
        if not (path / "val").exists():
            make_shapes(path, per_class=n, val_per_class=max(2, n // 2), size=64, classes=names, easy=True)
        return path, fmt
    from . import synth_tasks

    return synth_tasks.make(fmt, model, sizes, root)
