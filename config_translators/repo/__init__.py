"""A plain training repo: a resolved job -> the repo's own argv and the files it expects.

Everything comes from the repo's `[repos.X]` table: `args.template` (argv after the interpreter,
with {field} placeholders), `args.optional` (flags added only when a field has a value),
`args.hyp` (a yaml of hyper-parameters written from the repo's own base file with keys set),
`args.cpu` / `args.gpu` (flags added only on a CPU or only on a GPU run), `defaults` for unset
fields, `env` (variables, placeholders filled), and `dataset.format` (what the translator writes: a
YOLO data.yaml, or train/val folders of an ImageFolder).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..datasets import imagefolder_layout
from ..ultralytics import _simple_yaml, check_yolo

# A table's {field} tokens and how they are filled, in train: (here) and infer: (infer.py) alike.
_FIELD = re.compile(r"\{([a-z_]+)\}")


def _fill(token: str, fields: dict, where: str, hint: str = " (set it in train:, variant:, or the repo's defaults)") -> str:
    def sub(m):
        v = fields.get(m.group(1))
        if v is None:
            raise ValueError(f"{where}: {{{m.group(1)}}} has no value{hint}")
        return str(v)
    return _FIELD.sub(sub, token)


_ROOTS = (("{src}", "src"), ("{job_dir}", ""), ("{output_dir}", "out"))


def job_path(pattern: str, where: str = "checkpoints") -> str:
    """A table's path (a checkpoint glob, the results file) relative to the job folder: one that
    starts with {src}/, {job_dir}/ or {output_dir}/ is under that folder; a plain one is under the
    output dir, as before."""
    for ph, rel in _ROOTS:
        if pattern == ph or pattern.startswith(ph + "/"):
            rest = pattern[len(ph):].lstrip("/")
            out = f"{rel}/{rest}" if rel and rest else (rel or rest)
            break
    else:
        if "{" in pattern and _FIELD.search(pattern):
            raise ValueError(f"{where}: {pattern!r}: only {{src}}, {{job_dir}} or {{output_dir}} may start a path")
        out = f"out/{pattern}"
    if pattern.startswith("/") or out.startswith("/") or ".." in Path(out).parts:
        raise ValueError(f"{where}: {pattern!r} leaves the job folder")
    return out


def check_dataset(dataset: dict, repo: dict) -> list[str]:
    """Problems with the dataset for this repo's expected format."""
    want = repo.get("dataset", {}).get("format", "imagefolder")
    from .. import dataset_formats as published

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
        # each label line is checked for the repo's task (a pose line has its keypoints, an OBB line its corners)
        layout = YOLO_LAYOUT.get(repo.get("task_type") or "", "detect")
        return check_yolo(p if p.suffix in (".yaml", ".yml") else p / "data.yaml", layout)
    if want == "coco":
        problems = [] if Path(dataset["path"]).is_dir() else [f"dataset.path: {dataset['path']} does not exist (the COCO images folder)"]
        if not dataset.get("annotations") or not Path(dataset["annotations"]).is_file():
            problems.append(f"dataset.annotations: {dataset.get('annotations')} does not exist (the COCO JSON)")
        return problems
    if want in ("masks", "captions"):
        from ..transformers import check_dataset as check_task_set

        return check_task_set(dataset, {"task_type": {"masks": "semantic_segmentation", "captions": "image_captioning"}[want]})
    return [f"dataset.format: {want!r} is not a format a repo table may declare; expected one of {', '.join(REPO_FORMATS)}"]


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
        "seed": train.get("seed", 0), "gpus": gpus, "job_dir": str(job_dir),
    }
    # fields of the table's own (its defaults beyond these), which a job may set in train:
    for k, v in {**d, **train}.items():
        if k not in f and re.fullmatch(r"[a-z_]+", k) and isinstance(v, (str, int, float)) and not isinstance(v, bool):
            f[k] = train.get(k, v)
    files = {}
    ds = spec["dataset"]
    fmt = repo.get("dataset", {}).get("format", "imagefolder")
    if fmt == "yolo":
        from .. import dataset_formats as published

        p = Path(ds["path"])
        data_yaml = p if p.suffix in (".yaml", ".yml") else p / "data.yaml"
        if ds.get("format") in published.FORMATS:  # DOTA/HRSC2016/VOC as YOLO(-OBB) labels, converted once per version
            from ..ultralytics import convert_published

            layout = "obb" if repo.get("task_type") == "obb_detection" else "detect"  # an OBB repo keeps the angles
            data_yaml, files["_dataset_report"] = convert_published(ds, layout, Path(cache or Path(job_dir) / "datasets"))
        cfg = _simple_yaml(data_yaml.read_text())
        root = Path(cfg.get("path") or data_yaml.parent)
        root = root if root.is_absolute() else (data_yaml.parent / root).resolve()
        names = [cfg["names"][k] for k in sorted(cfg["names"])]
        # a pose set's keypoint layout goes with it (a pose script reads kpt_shape; flip_idx for its flips)
        pose = "".join(f"{k}: {cfg[k] if isinstance(cfg[k], str) else list(cfg[k])}\n" for k in ("kpt_shape", "flip_idx") if k in cfg)
        files["data.yaml"] = (f"train: {root / cfg['train']}\nval: {root / cfg['val']}\nnc: {len(names)}\n"
                              f"names: [{', '.join(repr(n) for n in names)}]\n{pose}")  # no download: key, ever
        f["data"] = str(Path(job_dir) / "data.yaml")
        f["num_classes"] = len(names)
    elif fmt == "coco":
        import json

        f["image_dir"], f["anno_path"] = ds["path"], ds["annotations"]
        f["dataset_dir"] = str(Path(ds["path"]).parent)
        f["num_classes"] = len(json.loads(Path(ds["annotations"]).read_text())["categories"])
        f["data"] = ds["annotations"]
    elif fmt in ("masks", "captions"):
        root = Path(ds["path"])
        f["data"] = f["dataset_dir"] = str(root)
        for split in ("train", "val"):
            f[f"{split}_dir"] = str(root / split)
            if fmt == "masks":
                f[f"{split}_images"], f[f"{split}_masks"] = str(root / split / "images"), str(root / split / "masks")
            else:
                f[f"{split}_captions"] = str(root / split / "captions.jsonl")
        if fmt == "masks":
            f["classes_file"] = str(root / "classes.txt")
            f["num_classes"] = len([n for n in (root / "classes.txt").read_text().splitlines() if n.strip()])
    else:
        root = Path(ds["path"])
        layout, _ = imagefolder_layout(str(root), ds.get("split"))
        f["train_dir"] = str(root / "train") if (root / "train").is_dir() else str(root)
        f["val_dir"] = str(root / "val") if (root / "val").is_dir() else f["train_dir"]
        f["data"] = str(root)
        f["num_classes"] = len(layout.get("train") or [])
    return f, files


def table_env(repo: dict, fields: dict) -> dict:
    """The table's `env`, placeholders filled."""
    return {k: _fill(str(v), fields, f"env.{k}") for k, v in repo.get("env", {}).items()}


def translate(job: dict, job_dir: str, src: str, python: str) -> dict:
    """{'argv': [...], 'files': {relative path: text}} for the repo's entry script."""
    spec, repo = job["spec"], job["repo"]
    fields, files = _fields(spec, repo, job_dir, src, python, job.get("datasets_cache"))
    report = files.pop("_dataset_report", None)
    args = repo.get("args", {})
    argv = [python, fields["entry"]]
    argv += [_fill(t, fields, "args.template") for t in args.get("template", [])]
    where = "gpu" if fields["gpus"] else "cpu"  # flags for one kind of run only (e.g. --no-accel on CPU)
    argv += [_fill(t, fields, f"args.{where}") for t in args.get(where, [])]
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
            # the value only: the whitespace before a comment stays (YAML reads "0# x" as one string)
            text, n = re.subn(rf"(?m)^{re.escape(key)}:[ \t]*[^#\n]*?(?=[ \t]+#|[ \t]*$)", f"{key}: {v}", text)
            if n == 0:
                text += f"{key}: {v}\n"
        files["hyp.yaml"] = text
        argv += [hyp.get("flag", "--hyp"), str(Path(job_dir) / "hyp.yaml")]
    argv += list(args.get("extra", []))
    links = placements(repo, fields)
    out = {"argv": argv, "files": files, "links": links, "env": table_env(repo, fields), "fields": fields, **({"dataset_report": report} if report else {})}
    if args.get("resume"):  # added after a preemption, {checkpoint} filled then with the run's last checkpoint
        out["resume"] = [_fill(t, {**fields, "checkpoint": "{checkpoint}"}, "args.resume") for t in args["resume"]]
    return out


REPO_FORMATS = ("imagefolder", "yolo", "coco", "masks", "captions")
"""What a repo table's dataset.format may be: the translator checks a job's dataset in that format and
fills its placeholders (docs/adding-a-repo.md lists them per format); DOTA, HRSC2016 and VOC sets
are converted to YOLO for a `yolo` repo."""
YOLO_LAYOUT = {"instance_segmentation": "segment", "pose_estimation": "pose", "obb_detection": "obb"}
"""The YOLO label layout of a repo's task_type (any other task: detect, class cx cy w h)."""

PART_FIELDS = {"imagefolder": ("train_dir", "val_dir", "data"), "yolo": ("data",), "coco": ("image_dir", "anno_path", "dataset_dir", "data"),
               "masks": ("train_images", "train_masks", "val_images", "val_masks", "classes_file", "train_dir", "val_dir", "data"),
               "captions": ("train_captions", "val_captions", "train_dir", "val_dir", "data")}
"""The dataset's parts a `dataset.place` entry may put somewhere, per format."""


def _place_target(dest: str, where: str) -> str:
    """A placement's destination relative to the job folder: {src}/... (the checkout, where the
    script runs; a plain path means that too) or {job_dir}/..."""
    if not (dest.startswith("{src}/") or dest.startswith("{job_dir}/")):
        if "{" in dest:
            raise ValueError(f"{where}: {dest!r}: only {{src}}/ or {{job_dir}}/ may start a placement (a plain path is inside the checkout)")
        dest = "{src}/" + dest
    rel = job_path(dest, where)
    if rel in ("", "src"):
        raise ValueError(f"{where}: {dest!r} names the folder itself; give a path inside it")
    return rel


def _place_entries(table: dict, where: str) -> list[tuple[str, str, bool]]:
    """[(destination relative to the job folder, {part} placeholder, copy)] of dataset.place, checked."""
    place = (table.get("dataset") or {}).get("place") or {}
    fmt = (table.get("dataset") or {}).get("format", "imagefolder")
    out = []
    for dest, v in place.items():
        w = f"{where}.dataset.place.{dest}"
        part, copy = (v.get("from"), bool(v.get("copy", False))) if isinstance(v, dict) else (v, False)
        if isinstance(v, dict) and set(v) - {"from", "copy"}:
            raise ValueError(f"{w}: unknown key {sorted(set(v) - {'from', 'copy'})[0]!r}; expected from and copy")
        m = re.fullmatch(r"\{([a-z_]+)\}", part) if isinstance(part, str) else None
        if not m or m.group(1) not in PART_FIELDS.get(fmt, ()):
            raise ValueError(f"{w}: given {part!r}; expected one of {', '.join('{' + x + '}' for x in PART_FIELDS.get(fmt, ()))} "
                             f"(the parts of a {fmt} dataset)")
        out.append((_place_target(dest, w), m.group(1), copy))
    return out


def placements(repo: dict, fields: dict) -> list[dict]:
    """[{"path": relative to the job folder, "source": absolute path, "copy": bool}] of the table's dataset.place."""
    return [{"path": rel, "source": str(fields[part]), "copy": copy} for rel, part, copy in _place_entries(repo, "dataset.place")]


# Every key a [repos.X] table may have (docs/adding-a-repo.md is their reference; a test holds the two together).
KEYS = {
    "": {"url", "commit", "tag", "license", "python", "entry", "display_name", "description", "task_type", "params", "input_size",
         "pretrained_available", "recommended_batch_size", "recommended_lr", "tags", "requirements", "overrides", "build",
         "import_check", "env", "network", "exclude", "files", "patches", "checkpoints", "dataset", "defaults", "check",
         "args", "parser", "infer"},
    "args": {"template", "optional", "hyp", "cpu", "gpu", "extra", "resume"},
    "args.hyp": {"base", "flag", "set"},
    "dataset": {"format", "writable", "min_classes", "place"},
    "build": {"constraints", "env", "no_isolation"},
    "parser": {"patterns", "ignore", "tables", "generic", "kv_lines", "epoch_offset", "final_marker", "results_file"},
    "parser.results_file": {"path", "format", "columns", "epoch_column", "epoch_offset", "compare", "on_mismatch"},
    "infer": {"checkpoint", "template", "output", "cpu", "gpu"},
    "infer.output": {"stdout", "file", "format", "records", "columns", "regex", "fields", "box", "label_offset"},
    "check": {"input_size", "batch_size", "epochs", "images", "val_images", "classes", "images_per_class", "val_images_per_class", "learns", "lr", "train", "validation_metrics"},
}
_LISTS = ("overrides", "import_check", "exclude", "checkpoints", "tags", "args.template", "args.cpu", "args.gpu", "args.extra", "args.resume",
          "infer.template", "infer.cpu", "infer.gpu")


def check_table(name: str, table: dict) -> list[str]:
    """Problems with a repo table, one line each naming the key: unknown keys (a typo is not
    silently ignored), wrong shapes, values that cannot work."""
    problems = []
    where = f"repos.{name}"

    def walk(section: str, value: dict):
        for k, v in value.items():
            if k.startswith("_"):
                continue
            path = f"{section}.{k}" if section else k
            if k not in KEYS[section]:
                problems.append(f"{where}.{path}: unknown key; expected one of {', '.join(sorted(KEYS[section]))}")
            elif path in KEYS and not isinstance(v, dict):
                problems.append(f"{where}.{path}: expected a table")
            elif path in KEYS:
                walk(path, v)
            elif path in _LISTS and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                problems.append(f"{where}.{path}: expected a list of strings")

    walk("", table)
    for k in ("url", "commit"):
        if not isinstance(table.get(k), str) or not table.get(k):
            problems.append(f"{where}.{k}: missing (a repo is pinned by url and commit)")
    for k in ("env", "files"):
        if k in table and not isinstance(table[k], dict):
            problems.append(f"{where}.{k}: expected a table")
    if "network" in table and not isinstance(table["network"], bool):
        problems.append(f"{where}.network: expected true or false")
    rf = (table.get("parser") or {}).get("results_file") or {}
    if rf.get("on_mismatch", "note") not in ("note", "fail"):
        problems.append(f"{where}.parser.results_file.on_mismatch: given {rf['on_mismatch']!r}; expected 'note' or 'fail'")
    ds = table.get("dataset") if isinstance(table.get("dataset"), dict) else {}
    if ds.get("format", "imagefolder") not in REPO_FORMATS:
        problems.append(f"{where}.dataset.format: given {ds['format']!r}; expected one of {', '.join(REPO_FORMATS)}")
    elif "place" in ds and not isinstance(ds["place"], dict):
        problems.append(f"{where}.dataset.place: expected a table of path = \"{{part}}\" (or {{ from = \"{{part}}\", copy = true }})")
    else:
        try:
            _place_entries(table, where)
        except ValueError as e:
            problems.append(str(e))
    for i, c in enumerate(table.get("checkpoints") or []):
        try:
            job_path(c, f"{where}.checkpoints.{i}")
        except ValueError as e:
            problems.append(str(e))
    if isinstance(table.get("infer"), dict):
        from .infer import check_table as check_infer

        problems += check_infer(table["infer"], f"{where}.infer")
    return problems
