"""Transformers: a resolved job -> the adapter's settings; dataset checks per task."""

from __future__ import annotations

import json
from pathlib import Path

from .datasets import imagefolder_layout

FORMATS = {"image_classification": "imagefolder", "object_detection": "coco", "semantic_segmentation": "masks",
           "image_captioning": "captions"}
PLATFORM = ("epochs", "batch_size", "lr", "input_size", "pretrained", "optimizer", "auto_batch_size", "seed", "workers", "resume")


def check_dataset(dataset: dict, model: dict | None = None) -> list[str]:
    """Problems with the dataset for this model's task, one line each."""
    task = (model or {}).get("task_type", "image_classification")
    want = FORMATS.get(task, "imagefolder")
    fmt = dataset.get("format")
    if fmt != want:
        return [f"dataset.format: given {fmt!r}; expected {want!r} for {task}"]
    root = Path(dataset["path"])
    if fmt == "imagefolder":
        return imagefolder_layout(str(root), dataset.get("split"))[1]
    if fmt == "coco":
        problems = [] if root.is_dir() else [f"dataset.path: {root} does not exist (the COCO images folder)"]
        ann = dataset.get("annotations")
        if not ann or not Path(ann).is_file():
            return problems + [f"dataset.annotations: {ann} does not exist (the COCO detection JSON)"]
        coco = json.loads(Path(ann).read_text())
        missing = [i["file_name"] for i in coco.get("images", []) if not (root / i["file_name"]).exists()]
        if missing:
            problems.append(f"dataset.annotations: {len(missing)} image(s) not under {root}, e.g. {missing[0]}")
        return problems
    if fmt == "masks":
        problems = []
        for split in ("train", "val"):
            imgs, masks = root / split / "images", root / split / "masks"
            if not imgs.is_dir() or not masks.is_dir():
                problems.append(f"dataset.path: {root / split} needs images/ and masks/ (one mask PNG per image, pixel = class id)")
                continue
            lacking = [p.name for p in imgs.iterdir() if not (masks / (p.stem + ".png")).exists()]
            if lacking:
                problems.append(f"dataset.path: {masks} lacks the mask of {lacking[0]} (and {len(lacking) - 1} more)")
        if not (root / "classes.txt").is_file():
            problems.append(f"dataset.path: {root / 'classes.txt'} missing (one class name per line, line 0 = pixel value 0)")
        return problems
    if fmt == "captions":
        problems = []
        for split in ("train", "val"):
            f = root / split / "captions.jsonl"
            if not f.is_file():
                problems.append(f"dataset.path: {f} missing (lines of {{\"image\": file, \"caption\": text}})")
                continue
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    assert isinstance(rec["caption"], str) and (root / split / rec["image"]).is_file()
                except (ValueError, KeyError, AssertionError, TypeError):
                    problems.append(f"{f}:{i}: expected {{\"image\": an existing file, \"caption\": text}}")
                    break
        return problems
    return [f"dataset.format: {fmt!r} is not supported"]


def translate(job: dict, job_dir: str) -> dict:
    """The adapter's settings: platform fields, model type and config overrides, TrainingArguments extras."""
    spec, model = job["spec"], job["model"]
    train = dict(spec.get("train", {}))
    fixed = {k: train.pop(k, None) for k in PLATFORM}
    gpus = spec.get("resources", {}).get("gpus") or 0
    return {
        "framework": "transformers", "task": model.get("task_type"), "model_name": model["model_name"],
        "model_type": model.get("model_type"), "config_overrides": model.get("config", {}),
        "dataset": spec["dataset"], "epochs": fixed["epochs"] or 1,
        "batch_size": fixed["batch_size"] or model.get("recommended_batch_size") or 8,
        "lr": fixed["lr"] or model.get("recommended_lr") or 5e-5, "input_size": fixed["input_size"] or model.get("input_size") or 224,
        "pretrained": bool(fixed["pretrained"]), "optimizer": fixed["optimizer"] or "adamw_torch",
        "auto_batch_size": bool(fixed["auto_batch_size"]), "seed": fixed["seed"] or 0, "workers": fixed["workers"] or 0,
        "resume": fixed["resume"], "extra": train, "output_dir": job_dir, "device": "cuda" if gpus else "cpu",
        "check": spec.get("check"),
    }
