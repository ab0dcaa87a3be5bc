"""timm: a resolved job -> the timm adapter's job.json."""

from __future__ import annotations

from .datasets import imagefolder_layout


def check_dataset(dataset: dict, model: dict | None = None) -> list[str]:
    """Problems with an ImageFolder dataset, one line each (empty when it is fine)."""
    if dataset.get("format", "imagefolder") != "imagefolder":
        return [f"dataset.format: given {dataset.get('format')!r}; expected 'imagefolder' for timm"]
    return imagefolder_layout(dataset["path"], dataset.get("split"))[1]


def translate(job: dict, job_dir: str) -> dict:
    """The adapter's settings: platform fields resolved against the model's registry defaults."""
    spec, model = job["spec"], job["model"]
    train = dict(spec.get("train", {}))
    fixed = {k: train.pop(k, None) for k in ("epochs", "batch_size", "lr", "input_size", "pretrained", "optimizer",
                                             "auto_batch_size", "seed", "workers", "resume")}
    return {
        "framework": "timm",
        "task": "image_classification",
        "model_name": model["model_name"],
        "create_kwargs_from_input": model.get("create_kwargs_from_input", []),
        "dataset": spec["dataset"],
        "epochs": fixed["epochs"] or 1,
        "batch_size": fixed["batch_size"] or model.get("recommended_batch_size") or 32,
        "lr": fixed["lr"] or model.get("recommended_lr") or 1e-3,
        "input_size": fixed["input_size"] or model.get("input_size") or 224,
        "pretrained": bool(fixed["pretrained"]),
        "optimizer": fixed["optimizer"] or "adamw",
        "auto_batch_size": bool(fixed["auto_batch_size"]),
        "seed": fixed["seed"] or 0,
        "workers": fixed["workers"] or 0,
        "resume": fixed["resume"],
        "extra": train,
        "output_dir": job_dir,
        "device": "cuda" if (spec.get("resources", {}).get("gpus") or 0) > 0 else "cpu",
        "check": spec.get("check"),
    }
