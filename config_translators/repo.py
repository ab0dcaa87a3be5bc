"""A plain training repo: a resolved job -> the repo's own argv and the files it expects.

Everything comes from the repo's `[repos.X]` table: `args.template` (argv after the interpreter,
with {field} placeholders), `args.optional` (flags added only when a field has a value),
`args.hyp` (a yaml of hyper-parameters written from the repo's own base file with keys set),
`defaults` for unset fields, and `dataset.format` (what the translator writes: a YOLO data.yaml,
or train/val folders of an ImageFolder).
"""

from __future__ import annotations

import re
from pathlib import Path

from .datasets import imagefolder_layout
from .ultralytics import _simple_yaml, check_yolo

_FIELD = re.compile(r"\{([a-z_]+)\}")


def check_dataset(dataset: dict, repo: dict) -> list[str]:
    """Problems with the dataset for this repo's expected format."""
    want = repo.get("dataset", {}).get("format", "imagefolder")
    from . import dataset_formats as published

    if want == "yolo" and dataset.get("format") in published.FORMATS:
        return published.check(dataset["path"], dataset["format"], dataset.get("split") or 0.2)  # converted at prepare
    if dataset.get("format") != want:
        return [f"dataset.format: given {dataset.get('format')!r}; this repo expects {want!r}"]
    if want == "imagefolder":
        layout, problems = imagefolder_layout(dataset["path"], dataset.get("split"))
        need = repo.get("dataset", {}).get("min_classes")
        if need and layout.get("train") and len(layout["train"]) < need:
            problems.append(f"dataset.path: {len(layout['train'])} classes; this repo needs at least {need}")
        return problems
    if want == "yolo":
        p = Path(dataset["path"])
        return check_yolo(p if p.suffix in (".yaml", ".yml") else p / "data.yaml", "detect")
    if want == "coco":
        problems = [] if Path(dataset["path"]).is_dir() else [f"dataset.path: {dataset['path']} does not exist (the COCO images folder)"]
        if not dataset.get("annotations") or not Path(dataset["annotations"]).is_file():
            problems.append(f"dataset.annotations: {dataset.get('annotations')} does not exist (the COCO JSON)")
        return problems
    return [f"repos: dataset format {want!r} is not supported by the translator"]


def _fields(spec: dict, repo: dict, job_dir: str, src: str, python: str, cache: str | None = None) -> tuple[dict, dict]:
    train = spec.get("train", {})
    gpus = spec.get("resources", {}).get("gpus") or 0
    d = repo.get("defaults", {})
    f = {
        "python": python, "src": src, "entry": repo.get("entry", "train.py"), "output_dir": str(Path(job_dir) / "out"),
        "epochs": train.get("epochs") or d.get("epochs"), "batch_size": train.get("batch_size") or d.get("batch_size"),
        "lr": train.get("lr") or d.get("lr"), "input_size": train.get("input_size") or d.get("input_size"),
        "workers": train.get("workers") or d.get("workers", 0), "device": ",".join(map(str, range(gpus))) if gpus else d.get("cpu_device", "cpu"),
        "variant": spec.get("variant") or d.get("variant"), "pretrained_weights": train.get("pretrained_weights") or d.get("pretrained_weights"),
        "seed": train.get("seed", 0),
    }
    files = {}
    ds = spec["dataset"]
    fmt = repo.get("dataset", {}).get("format", "imagefolder")
    if fmt == "yolo":
        from . import dataset_formats as published

        p = Path(ds["path"])
        data_yaml = p if p.suffix in (".yaml", ".yml") else p / "data.yaml"
        if ds.get("format") in published.FORMATS:  # DOTA/HRSC2016/VOC as YOLO boxes, converted once per version
            from .ultralytics import convert_published

            data_yaml, files["_dataset_report"] = convert_published(ds, "detect", Path(cache or Path(job_dir) / "datasets"))
        cfg = _simple_yaml(data_yaml.read_text())
        root = Path(cfg.get("path") or data_yaml.parent)
        root = root if root.is_absolute() else (data_yaml.parent / root).resolve()
        names = [cfg["names"][k] for k in sorted(cfg["names"])]
        files["data.yaml"] = (f"train: {root / cfg['train']}\nval: {root / cfg['val']}\nnc: {len(names)}\n"
                              f"names: [{', '.join(repr(n) for n in names)}]\n")  # no download: key, ever
        f["data"] = str(Path(job_dir) / "data.yaml")
        f["num_classes"] = len(names)
    elif fmt == "coco":
        import json

        f["image_dir"], f["anno_path"] = ds["path"], ds["annotations"]
        f["dataset_dir"] = str(Path(ds["path"]).parent)
        f["num_classes"] = len(json.loads(Path(ds["annotations"]).read_text())["categories"])
        f["data"] = ds["annotations"]
    else:
        root = Path(ds["path"])
        layout, _ = imagefolder_layout(str(root), ds.get("split"))
        f["train_dir"] = str(root / "train") if (root / "train").is_dir() else str(root)
        f["val_dir"] = str(root / "val") if (root / "val").is_dir() else f["train_dir"]
        f["data"] = str(root)
        f["num_classes"] = len(layout.get("train") or [])
    return f, files


def _fill(token: str, fields: dict, where: str) -> str:
    def sub(m):
        v = fields.get(m.group(1))
        if v is None:
            raise ValueError(f"{where}: {{{m.group(1)}}} has no value (set it in train:, variant:, or the repo's defaults)")
        return str(v)
    return _FIELD.sub(sub, token)


def translate(job: dict, job_dir: str, src: str, python: str) -> dict:
    """{'argv': [...], 'files': {relative path: text}} for the repo's entry script."""
    spec, repo = job["spec"], job["repo"]
    fields, files = _fields(spec, repo, job_dir, src, python, job.get("datasets_cache"))
    report = files.pop("_dataset_report", None)
    args = repo.get("args", {})
    argv = [python, fields["entry"]]
    argv += [_fill(t, fields, "args.template") for t in args.get("template", [])]
    for field, tokens in args.get("optional", {}).items():
        if fields.get(field) is not None:
            argv += [_fill(t, fields, f"args.optional.{field}") for t in tokens]
    hyp = args.get("hyp")
    if hyp:
        text = (Path(src) / hyp["base"]).read_text()
        for key, value in hyp.get("set", {}).items():
            if any(fields.get(f) is None for f in _FIELD.findall(value)):
                continue  # unset field: the repo's own value stays
            v = _fill(value, fields, f"args.hyp.set.{key}")
            text, n = re.subn(rf"(?m)^{re.escape(key)}:\s*[^#\n]*", f"{key}: {v}", text)
            if n == 0:
                text += f"{key}: {v}\n"
        files["hyp.yaml"] = text
        argv += [hyp.get("flag", "--hyp"), str(Path(job_dir) / "hyp.yaml")]
    argv += list(args.get("extra", []))
    return {"argv": argv, "files": files, **({"dataset_report": report} if report else {})}
