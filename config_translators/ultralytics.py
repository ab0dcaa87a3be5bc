"""Ultralytics: a resolved job -> the adapter's settings, and dataset checks per task.

YOLO datasets are checked at submit, label file by label file: a box label given to a pose
model, or a class id beyond the names, fails with the file and line. COCO detection JSON is
converted to YOLO labels (boxes, or polygons for segmentation) when the job is prepared.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import dataset_formats as published
from .datasets import IMAGE_EXTS, imagefolder_layout

TASKS = {"object_detection": "detect", "instance_segmentation": "segment", "pose_estimation": "pose", "obb_detection": "obb",
         "image_classification": "classify"}
MAX_PROBLEMS = 10


def _simple_yaml(text: str) -> dict:
    """The few keys of a data.yaml that the check needs (stdlib only: no yaml in the control plane's translators)."""
    out, names, in_names = {}, {}, False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if in_names and raw.startswith((" ", "\t")):
            m = re.match(r"\s*(\d+)\s*:\s*(.+)", line) or re.match(r"\s*-\s*(.+)", line)
            if m and m.lastindex == 2:
                names[int(m.group(1))] = m.group(2).strip().strip("'\"")
            elif m:
                names[len(names)] = m.group(1).strip().strip("'\"")
            continue
        in_names = False
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "names":
            if value.startswith("["):
                names = {i: v.strip().strip("'\"") for i, v in enumerate(value.strip("[]").split(",")) if v.strip()}
            else:
                in_names = True
        elif key == "kpt_shape":
            out[key] = [int(v) for v in value.strip("[]").split(",")]
        else:
            out[key] = value.strip("'\"")
    out["names"] = names
    return out


def _expected(task: str, kpt_shape):
    if task == "detect":
        return (lambda n: n == 5), "5 values (class cx cy w h)"
    if task == "segment":
        return (lambda n: n >= 7 and n % 2 == 1), "a class and at least 3 x,y points"
    if task == "obb":
        return (lambda n: n == 9), "9 values (class x1 y1 x2 y2 x3 y3 x4 y4)"
    if task == "pose":
        k, d = kpt_shape or (None, None)
        if k is None:
            return (lambda n: False), "a kpt_shape in data.yaml"
        return (lambda n: n == 5 + k * d), f"{5 + k * d} values (class cx cy w h and {k} keypoints of {d})"
    raise ValueError(task)


def check_yolo(data_yaml: Path, task: str) -> list[str]:
    """Problems of a YOLO dataset for a task: data.yaml, folders, every label line."""
    if not data_yaml.is_file():
        return [f"dataset.path: {data_yaml} does not exist (give a data.yaml, or a folder with images/ and labels/)"]
    cfg = _simple_yaml(data_yaml.read_text())
    names = cfg.get("names") or {}
    problems = []
    if not names:
        problems.append(f"dataset.path: {data_yaml} has no names: (class names)")
    if task == "pose" and "kpt_shape" not in cfg:
        problems.append(f"dataset.path: {data_yaml} has no kpt_shape: a pose model needs keypoints")
    root = Path(cfg.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    ok, expect = _expected(task, cfg.get("kpt_shape"))
    for split in ("train", "val"):
        rel = cfg.get(split)
        if not rel:
            problems.append(f"dataset.path: {data_yaml} has no {split}:")
            continue
        images = root / rel
        if not images.is_dir():
            problems.append(f"dataset.path: {images} ({split}) does not exist")
            continue
        labels = Path(str(images).replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}", 1)) if f"{os.sep}images" in str(images) else images.parent / "labels"
        n_images = sum(1 for f in images.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if n_images == 0:
            problems.append(f"dataset.path: {images} has no images")
        for lf in sorted(labels.glob("*.txt")) if labels.is_dir() else []:
            for i, line in enumerate(lf.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if not ok(len(parts)):
                    problems.append(f"{lf}:{i}: {len(parts)} values; a {task} label needs {expect}")
                elif not parts[0].isdigit() or int(parts[0]) not in names:
                    problems.append(f"{lf}:{i}: class id {parts[0]} is not among the {len(names)} names of {data_yaml.name}")
                if len(problems) >= MAX_PROBLEMS:
                    return problems + ["(more problems not shown)"]
    return problems


def check_dataset(dataset: dict, model: dict | None = None) -> list[str]:
    """Problems with the dataset for this model's task, one line each."""
    task = TASKS.get((model or {}).get("task_type", "object_detection"), "detect")
    fmt = dataset.get("format")
    if task == "classify":
        if fmt != "imagefolder":
            return [f"dataset.format: given {fmt!r}; expected 'imagefolder' for a classification model"]
        return imagefolder_layout(dataset["path"], dataset.get("split"))[1]
    if fmt == "yolo":
        p = Path(dataset["path"])
        return check_yolo(p if p.suffix in (".yaml", ".yml") else p / "data.yaml", task)
    if fmt in published.FORMATS:
        if task not in ("detect", "obb"):
            return [f"dataset.format: {fmt!r} holds boxes; {(model or {}).get('ref') or 'this model'} "
                    f"({(model or {}).get('task_type')}) takes 'yolo' with {task} labels"]
        return published.check(dataset["path"], fmt, dataset.get("split") or 0.2)
    if fmt == "coco":
        if task not in ("detect", "segment"):
            return [f"dataset.format: 'coco' is converted for detection and segmentation, not {task}"]
        if not Path(dataset["path"]).is_dir():
            return [f"dataset.path: {dataset['path']} does not exist (give the COCO images folder)"]
        ann = dataset.get("annotations")
        if not ann or not Path(ann).is_file():
            return [f"dataset.annotations: {ann} does not exist (give the COCO JSON)"]
        return []
    return [f"dataset.format: given {fmt!r}; expected 'yolo' or 'coco' for {task}"
            + (", or dota, hrsc2016, voc" if task in ("detect", "obb") else "")]


def convert_published(ds: dict, task: str, cache: Path) -> tuple[Path, dict]:
    """A DOTA/HRSC2016/VOC dataset as YOLO(-OBB) in `cache`, converted once per version of its files
    (and per options); returns (data.yaml, report with `reused`)."""
    from runner.atomic import NotPlaced, make_dir  # the one atomic writer (stdlib only: tests/test_boundaries.py)

    target = "yolo-obb" if task == "obb" else "yolo"
    options = {"target": target, "keep_difficult": bool(ds.get("keep_difficult")), "tile": ds.get("tile"),
               "overlap": ds.get("overlap") or 0, "split": ds.get("split") or 0.2}
    key = published.dataset_key(ds["path"], ds["format"], options)
    dest = Path(cache) / key
    report_file = dest / "report.json"
    if report_file.exists():
        return dest / "data.yaml", {**json.loads(report_file.read_text()), "reused": True, "key": key}
    dataset = published.read(ds["path"], ds["format"], options["split"])
    made = {}

    def fill(tmp: Path):
        report = published.write_yolo(dataset, tmp, target, options["keep_difficult"], options["tile"], options["overlap"])
        (tmp / "data.yaml").write_text((tmp / "data.yaml").read_text().replace(f"path: {tmp}", f"path: {dest}"))
        if report.get("crops"):
            (tmp / "crops.json").write_text((tmp / "crops.json").read_text().replace(json.dumps(str(tmp))[1:-1], json.dumps(str(dest))[1:-1]))
            report["crops"] = str(dest / "crops.json")
        (tmp / "report.json").write_text(json.dumps(report))
        made["report"] = report

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        make_dir(dest, fill)
    except NotPlaced:  # another job converted the same version meanwhile: its folder stays
        pass
    report = made["report"]
    return dest / "data.yaml", {**report, "reused": False, "key": key}


def coco_to_yolo(images: Path, annotations: Path, out: Path, task: str = "detect", val_fraction: float = 0.25) -> Path:
    """Convert COCO detection JSON to a YOLO dataset under `out`; returns its data.yaml.

    Boxes become `cls cx cy w h`; for segmentation, the first polygon of each annotation becomes
    `cls x1 y1 ...`. Category ids are mapped to 0..N-1 in id order. Images are linked, not copied.
    """
    coco = json.loads(Path(annotations).read_text())
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    anns = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    imgs = sorted(coco["images"], key=lambda i: i["id"])
    n_val = max(1, int(round(len(imgs) * val_fraction)))
    for k, img in enumerate(imgs):
        split = "val" if k >= len(imgs) - n_val else "train"
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        src = Path(images) / img["file_name"]
        dst = out / "images" / split / Path(img["file_name"]).name
        if not dst.exists():
            os.symlink(src.resolve(), dst)
        w, h = img["width"], img["height"]
        lines = []
        for a in anns.get(img["id"], []):
            c = index[a["category_id"]]
            if task == "segment" and a.get("segmentation") and isinstance(a["segmentation"], list):
                poly = a["segmentation"][0]
                lines.append(f"{c} " + " ".join(f"{(poly[i] / (w if i % 2 == 0 else h)):.6f}" for i in range(len(poly))))
            else:
                x, y, bw, bh = a["bbox"]
                lines.append(f"{c} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
        (out / "labels" / split / (Path(img["file_name"]).stem + ".txt")).write_text("\n".join(lines) + ("\n" if lines else ""))
    yaml = [f"path: {out}", "train: images/train", "val: images/val", "names:"] + [f"  {i}: {c['name']}" for i, c in enumerate(cats)]
    (out / "data.yaml").write_text("\n".join(yaml) + "\n")
    return out / "data.yaml"


PLATFORM = ("epochs", "batch_size", "lr", "input_size", "pretrained", "optimizer", "auto_batch_size", "seed", "workers", "resume")


def translate(job: dict, job_dir: str) -> dict:
    """The adapter's settings: Ultralytics' own names (imgsz, batch, lr0, ...) plus its extras."""
    spec, model = job["spec"], job["model"]
    train = dict(spec.get("train", {}))
    fixed = {k: train.pop(k, None) for k in PLATFORM}
    task = TASKS.get(model.get("task_type"), "detect")
    ds = dict(spec["dataset"])
    report = None
    if ds.get("format") in published.FORMATS:
        # Tiles are cut by the job itself (data plane, as its user) into its own folder; a plain
        # conversion (labels and links) is kept once per version of the files.
        cache = Path(job_dir) / "dataset" if ds.get("tile") else Path(job.get("datasets_cache") or Path(job_dir) / "datasets")
        data, report = convert_published(ds, task, cache)
    elif ds.get("format") == "coco":
        data = coco_to_yolo(Path(ds["path"]), Path(ds["annotations"]), Path(job_dir) / "dataset", task, ds.get("split") or 0.25)
    elif ds.get("format") == "yolo":
        p = Path(ds["path"])
        data = p if p.suffix in (".yaml", ".yml") else p / "data.yaml"
    else:
        data = Path(ds["path"])
    gpus = spec.get("resources", {}).get("gpus") or 0
    args = {
        "data": str(data), "epochs": fixed["epochs"] or 1, "imgsz": fixed["input_size"] or model.get("input_size") or 640,
        "batch": fixed["batch_size"] or model.get("recommended_batch_size") or 16, "lr0": fixed["lr"] or model.get("recommended_lr") or 0.01,
        "device": ",".join(str(i) for i in range(gpus)) if gpus else "cpu", "workers": fixed["workers"] or 0,
        "project": str(Path(job_dir) / "runs"), "name": "train", "exist_ok": True, "plots": False, "amp": False,
        "optimizer": fixed["optimizer"] or "auto", "seed": fixed["seed"] or 0, "pretrained": bool(fixed["pretrained"]),
        "verbose": True,
    }
    args.update(train)  # Ultralytics-only settings, already checked against its schema
    return {
        "framework": "ultralytics", "task": model.get("task_type"), "yolo_task": task, "model_name": model["model_name"],
        "model_source": (model["model_name"] + ".pt") if fixed["pretrained"] else model.get("config", model["model_name"] + ".yaml"),
        "resume": fixed["resume"], "auto_batch_size": bool(fixed["auto_batch_size"]), "train_args": args,
        "output_dir": job_dir, "check": spec.get("check"), **({"dataset_report": report} if report else {}),
        **({"crops": report["crops"]} if report and report.get("crops") else {}),
    }
