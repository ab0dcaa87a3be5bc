"""Converting a 1,000-image DOTA set to YOLO-OBB: runner's converter against Ultralytics' own
`convert_dota_to_yolo_obb` (what a user would run by hand), on the same files in one run.

    python bench/bench_datasets.py [--images 1000] [--objects 20] [--repeat 3] [--no-ultralytics]

Images are 64 px PNGs (the conversion reads their headers; Ultralytics' converter decodes each
one); each has `--objects` rotated boxes. Ultralytics needs its own layout (images/{train,val},
labels/{train,val}_original), made here with links. Its env is built (or reused) with runner's
env builder; --no-ultralytics skips it.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import commit, machine, table, tmp_home
from config_translators import dataset_formats as df
from runner.synth import shape_image, write_png

CLASSES = ["plane", "ship", "storage-tank", "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter"]


def make_set(root: Path, n: int, objects: int) -> None:
    rng = random.Random(0)
    rows, _ = shape_image("square", 64, rng)
    template = root / "template.png"
    root.mkdir(parents=True, exist_ok=True)
    write_png(template, rows, 64, 64)
    data = template.read_bytes()
    for i in range(n):
        split = "val" if i % 5 == 4 else "train"
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labelTxt").mkdir(parents=True, exist_ok=True)
        (root / split / "images" / f"P{i:05d}.png").write_bytes(data)
        lines = ["imagesource:GoogleEarth", "gsd:0.146"]
        for _ in range(objects):
            cx, cy, w, h, a = rng.uniform(8, 56), rng.uniform(8, 56), rng.uniform(4, 16), rng.uniform(2, 8), rng.uniform(-math.pi, math.pi)
            c, s = math.cos(a), math.sin(a)
            pts = [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]
            lines.append(" ".join(f"{v:.1f}" for p in pts for v in p) + f" {rng.choice(CLASSES)} {int(rng.random() < 0.1)}")
        (root / split / "labelTxt" / f"P{i:05d}.txt").write_text("\n".join(lines) + "\n")
    template.unlink()


def ultralytics_layout(dota: Path, dest: Path) -> None:
    """images/{train,val} and labels/{train,val}_original, as its converter expects (links)."""
    for split in ("train", "val"):
        (dest / "images").mkdir(parents=True, exist_ok=True)
        (dest / "labels").mkdir(parents=True, exist_ok=True)
        os.symlink(dota / split / "images", dest / "images" / split)
        os.symlink(dota / split / "labelTxt", dest / "labels" / f"{split}_original")


def ultralytics_python() -> str | None:
    from runner.envs import EnvManager, named_request

    home = Path(os.environ.get("RUNNER_BENCH_ENVS", Path.home() / ".cache" / "runner-bench-envs"))
    mgr = EnvManager(home)
    return str(mgr.ensure(named_request("ultralytics")) / "bin" / "python")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ultralytics", action="store_true")
    a = ap.parse_args()
    print(f"# bench_datasets on {machine()}; commit {commit()}")
    base = tmp_home().parent
    dota = base / "dota"
    make_set(dota, a.images, a.objects)
    runs = {"runner: read + write YOLO-OBB": []}
    for k in range(a.repeat):
        out = base / f"out{k}"
        t0 = time.perf_counter()
        rep = df.write_yolo(df.read(dota, "dota"), out, "yolo-obb")
        runs["runner: read + write YOLO-OBB"].append(time.perf_counter() - t0)
        shutil.rmtree(out)
    py = None
    if not a.no_ultralytics:
        try:
            py = ultralytics_python()
        except Exception as e:  # the comparison is optional: say why it is missing
            print(f"# Ultralytics' converter not measured: {e}")
    if py:
        name = "ultralytics.data.converter.convert_dota_to_yolo_obb"
        runs[name] = []
        for k in range(a.repeat):
            dest = base / f"ul{k}"
            ultralytics_layout(dota, dest)
            code = ("import time, sys; from ultralytics.data.converter import convert_dota_to_yolo_obb as c; "
                    "t=time.perf_counter(); c(sys.argv[1]); print(time.perf_counter()-t)")
            r = subprocess.run([py, "-c", code, str(dest)], capture_output=True, text=True,
                               env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(base / "ycfg")})
            if r.returncode != 0:
                print(f"# Ultralytics' converter failed: {r.stderr.strip().splitlines()[-1:]}")
                runs.pop(name)
                break
            runs[name].append(float(r.stdout.strip().splitlines()[-1]))
            shutil.rmtree(dest)
    rows = []
    for what, ts in runs.items():
        rates = [a.images / t for t in ts]
        rows.append((what, f"{statistics.median(ts):.2f} s ({min(ts):.2f}-{max(ts):.2f})",
                     f"{statistics.median(rates):.0f} images/s ({min(rates):.0f}-{max(rates):.0f})"))
    table(f"DOTA -> YOLO-OBB, {a.images} images x {a.objects} objects ({rep['written_objects']} kept, {rep.get('skipped_difficult', 0)} "
          f"difficult skipped); median (min-max) of {a.repeat}", rows, ("converter", "time", "rate"))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
