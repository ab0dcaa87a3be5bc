"""`runner infer` for a repo job: the repo's own predict script, as its `[repos.X.infer]` table maps
it, in the job's env and checkout, read back into the task's InferenceResult."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

from ..exceptions import RunnerError


def class_names(spec: dict, repo: dict, job_dir: Path) -> dict:
    """{label id: name} of the job's dataset, as the repo's script numbers them."""
    ds = spec["dataset"]
    fmt = repo.get("dataset", {}).get("format", "imagefolder")
    if fmt == "coco":
        cats = json.loads(Path(ds["annotations"]).read_text()).get("categories", [])
        return {int(c["id"]): c["name"] for c in cats}
    if fmt == "yolo":
        from config_translators.ultralytics import _simple_yaml

        cfg = _simple_yaml((job_dir / "data.yaml").read_text())
        names = cfg.get("names") or []
        return dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    if fmt == "masks":  # classes.txt: line k names pixel value k
        return dict(enumerate(n.strip() for n in (Path(ds["path"]) / "classes.txt").read_text().splitlines() if n.strip()))
    if fmt == "captions":
        return {}
    from config_translators.datasets import imagefolder_layout

    layout, _ = imagefolder_layout(ds["path"], ds.get("split"))
    return dict(enumerate(layout.get("train") or []))


def checkpoint_of(store, job: dict, pattern: str | None = None) -> Path:
    """The job's best checkpoint, else its last, else its newest recorded one; with `pattern` (the
    infer table's `checkpoint`, a glob as `checkpoints` are written), the newest that matches it."""
    import fnmatch

    arts = [a["path"] for a in store.artifacts(job["id"]) if os.path.exists(a["path"])]
    if pattern:
        from config_translators.repo import job_path

        want = os.path.join(job["job_dir"], job_path(pattern, "infer.checkpoint"))
        arts = sorted((a for a in arts if fnmatch.fnmatch(a, want)), key=os.path.getmtime)
        if not arts:
            raise RunnerError(f"job {job['id']}: no recorded checkpoint matches infer.checkpoint {pattern!r}")
        return Path(arts[-1])
    pick = ([a for a in arts if "best" in Path(a).name] or [a for a in arts if "last" in Path(a).name or "latest" in Path(a).name]
            or sorted(arts, key=os.path.getmtime)[-1:])
    if not pick:
        raise RunnerError(f"job {job['id']}: has no checkpoint left to infer with")
    return Path(pick[0])


TABLES = ("job", "current")
"""Whose table makes the checkout an infer runs in: the job's own checkout (what it trained with), or
a fresh one made by the registry's current table (`runner infer --table current`)."""


def table_change(home, job: dict, repo: dict, name: str) -> list[str]:
    """The files a checkout made by the registry's current table has otherwise than the job's
    (recorded at its prepare); [] when none, or for a job prepared before runner recorded it."""
    from .. import repos

    try:
        old = json.loads((home.run_dir(job["id"]) / repos.CHECKOUT_RECORD).read_text())
    except (OSError, ValueError):
        return []
    return repos.changed_files(home, old, repos.made_from(repo, name))


def infer(home, store, registry, envmgr, job: dict, images: list[str], checkpoint: Path | None = None,
          timeout: float = 600.0, table_of: str = "job") -> list[dict]:
    """InferenceResult dicts, one per image, from the repo's own script on the CPU, in the job's
    checkout (or, with table_of="current", one made by the registry's table now). Where the two
    differ, each result's `note` names the files and the other choice."""
    from config_translators import repo as translator
    from config_translators.repo import infer as mapping

    from .. import repos

    spec = job["spec"]
    name = spec["model"].split("/", 1)[1]
    repo = registry.get_repo(name)
    table = repo.get("infer")
    if not table:
        raise RunnerError(f"repo/{name}: its table maps no inference (add [repos.{name}.infer]; see docs/adding-a-repo.md)")
    problems = mapping.check_table(table, f"repos.{name}.infer")
    if problems:
        raise RunnerError(problems[0])
    if not job.get("env_hash") or not envmgr.ready(job["env_hash"]):
        raise RunnerError(f"job {job['id']}: its env {job.get('env_hash')} is gone (`runner envs gc`?); run the job again to rebuild it")
    python = str(envmgr.python(job["env_hash"]))
    job_dir = Path(job["job_dir"])
    if not os.access(job_dir, os.R_OK | os.X_OK):
        from ..exceptions import PermissionDenied

        raise PermissionDenied(f"job {job['id']}: belongs to {job.get('user')}; its checkout and checkpoints are theirs")
    if table_of not in TABLES:
        raise RunnerError(f"--table: given {table_of!r}; expected one of {', '.join(TABLES)}")
    ckpt = Path(checkpoint) if checkpoint else checkpoint_of(store, job, table.get("checkpoint"))
    changed = table_change(home, job, repo, name)
    note = None
    if changed and table_of == "job":
        shown = ", ".join(changed[:12]) + (f" and {len(changed) - 12} more" if len(changed) > 12 else "")
        note = (f"job {job['id']} was prepared by an earlier table of repo/{name}: {shown} differ from what the registry's "
                "table makes now; this inference used the job's own checkout (`runner infer --table current` uses the registry's)")
    work = Path(tempfile.mkdtemp(prefix="runner-infer-"))
    try:
        src = job_dir / "src"
        if table_of == "current":  # made from the cache alone: her infer may not write the daemon's clone cache
            src = repos.export(home, repo, work / "src")
            repos.copy_files(src, repo, name)
            repos.apply_patches(src, repo.get("patches", []))
        elif not (src / ".git").exists():  # the checkout was removed: a fresh one at the same commit
            src = repos.checkout(home, repo, work / "src")
            repos.copy_files(src, repo, name)
            repos.apply_patches(src, repo.get("patches", []))
        fields, _ = translator._fields({**spec, "resources": {"gpus": 0}}, repo, str(job_dir), str(src), python)
        if table_of == "current":  # the dataset's parts where the table places them in the checkout, as for a job
            from ..launchspec import place_dataset_part

            for link in translator.placements(repo, fields):
                if link["path"].startswith("src/"):
                    place_dataset_part(work, link)
        out_dir = work / "out"
        out_dir.mkdir()
        fields.update(checkpoint=str(ckpt.resolve()), output_dir=str(out_dir), python=python)
        env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin", "VIRTUAL_ENV": str(Path(python).parent.parent), "HOME": str(Path.home()),
               "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "LANG": "C.UTF-8",
               **translator.table_env(repo, fields)}
        names = class_names(spec, repo, job_dir)
        images = [str(Path(i).resolve()) for i in images]
        out = table["output"]
        results = []
        for argv, covered in mapping.runs(table, fields, images):
            t0 = time.time()
            try:
                r = subprocess.run([python, *argv], cwd=src, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RunnerError(f"repo/{name} inference: no answer after {timeout:.0f}s") from None
            elapsed = (time.time() - t0) * 1000
            if r.returncode != 0:
                raise RunnerError(f"repo/{name} inference failed (exit {r.returncode}):\n" + (r.stderr or r.stdout)[-3000:])
            for image in covered:
                if out.get("stdout"):
                    rows = mapping.records(out, r.stdout)
                else:
                    path = Path(translator._fill(out["file"], mapping.image_fields(fields, image), f"repos.{name}.infer.output.file", mapping.HERE))
                    path = path if path.is_absolute() else out_dir / path
                    if out["format"] != "png":
                        rows = mapping.records(out, path.read_text() if path.exists() else "")  # no file: nothing found in that image
                    elif not path.exists():
                        raise RunnerError(f"repo/{name} inference wrote no mask at {path} for {image}")
                    else:  # a mask: a class id per pixel
                        try:
                            rows = mapping.mask_records(path.read_bytes())
                        except (ValueError, zlib.error) as e:
                            raise RunnerError(f"repo/{name} inference: {path}: {e}") from None
                if len(covered) > 1 or any("image" in row for row in rows):
                    rows = [row for row in rows if "image" not in row or os.path.basename(str(row["image"])) == os.path.basename(image)]
                res = mapping.result(spec.get("task") or repo.get("task_type"), rows, out, names, mapping.image_size(image))
                results.append({"image": image, **res, "inference_ms": round(elapsed / len(covered), 1), "checkpoint": str(ckpt),
                                **({"note": note} if note else {})})
        return results
    except RunnerError as e:
        if note:  # a failure in an old checkout may be what the newer table fixed
            raise RunnerError(f"{e}\n{note}") from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
