"""The plain form written as YOLO or YOLO-OBB: labels, tiles of large images and their crop plan,
the version key of a conversion and its summary."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .model import MAX_PROBLEMS, TARGETS, VERSION, Dataset, DatasetError, Obj, Sample

def _norm(v: float, size: int) -> str:
    return f"{min(1.0, max(0.0, v / size)):.6f}"


def label_line(obj: Obj, index: int, width: int, height: int, target: str) -> str:
    """One YOLO (cls cx cy w h) or YOLO-OBB (cls x1 y1 ... x4 y4) line, normalised."""
    if target == "yolo-obb":
        return f"{index} " + " ".join(f"{_norm(x, width)} {_norm(y, height)}" for x, y in obj.points)
    xs = [min(max(x, 0.0), width) for x, _ in obj.points]
    ys = [min(max(y, 0.0), height) for _, y in obj.points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return f"{index} {_norm((x0 + x1) / 2, width)} {_norm((y0 + y1) / 2, height)} {_norm(x1 - x0, width)} {_norm(y1 - y0, height)}"


def tiles(width: int, height: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) of at most size x size covering the image, overlapping by `overlap`."""
    if size <= overlap:
        raise ValueError(f"tile ({size}) must be larger than overlap ({overlap})")

    def starts(n):
        if n <= size:
            return [0]
        out = list(range(0, n - size + 1, size - overlap))
        return out if out[-1] == n - size else out + [n - size]
    return [(x, y, min(x + size, width), min(y + size, height)) for y in starts(height) for x in starts(width)]


def clip_to_tile(obj: Obj, win: tuple, min_visible: float = 0.5) -> Obj | None:
    """The object in a tile's coordinates when at least `min_visible` of its box is inside, else None."""
    x0, y0, x1, y1 = win
    xs, ys = [p[0] for p in obj.points], [p[1] for p in obj.points]
    bx0, bx1, by0, by1 = min(xs), max(xs), min(ys), max(ys)
    area = max(bx1 - bx0, 1e-9) * max(by1 - by0, 1e-9)
    inter = max(0.0, min(bx1, x1) - max(bx0, x0)) * max(0.0, min(by1, y1) - max(by0, y0))
    if inter / area < min_visible:
        return None
    pts = [(min(max(x, x0), x1) - x0, min(max(y, y0), y1) - y0) for x, y in obj.points]
    return Obj(obj.name, pts, obj.difficult)


def dataset_key(root, fmt: str, options: dict) -> str:
    """A key of the dataset's version: its files' names, sizes and times, the format, the options."""
    h = hashlib.sha256(f"v{VERSION}\n{fmt}\n{sorted(options.items())}\n{os.path.realpath(root)}\n".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            h.update(f"{os.path.relpath(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _folder(root: Path, *parts: str) -> Path:
    """root/parts..., made a folder at a time; a name that is already there must be a real folder,
    never a symbolic link someone planted to send what is written elsewhere."""
    p = root
    for part in parts:
        p = p / part
        try:
            os.mkdir(p)
        except FileExistsError:
            if not os.path.isdir(p) or os.path.islink(p):
                raise DatasetError([f"{p}: is in the way (a link or a file where runner makes a folder); give a new --out"]) from None
    return p


def _write(path: Path, text: str):
    """Write a new file's text: never through a symbolic link (O_NOFOLLOW), never into a FIFO (O_NONBLOCK)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno in (40, 6):  # ELOOP: a symbolic link; ENXIO: a FIFO
            raise DatasetError([f"{path}: is in the way (a link or a FIFO where runner writes a file); give a new --out"]) from None
        raise
    with os.fdopen(fd, "w") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DatasetError([f"{path}: is in the way (not a regular file); give a new --out"])
        f.write(text)


def write_yolo(ds: Dataset, out: Path, target: str, keep_difficult: bool = False, tile: int | None = None,
               overlap: int = 0, final: Path | None = None) -> dict:
    """Write images (linked; cropped tiles with `tile`) and labels under `out`, and out/data.yaml; returns the report.

    `final` is where the folder will be once renamed into place (data.yaml and the crop plan name
    it); `out` by default. Nothing is written through a link found in `out` (see _folder, _write):
    callers write into a fresh folder of their own and rename it into place."""
    if target not in TARGETS:
        raise DatasetError([f"--to: given {target!r}; expected one of {', '.join(TARGETS)}"])
    out = Path(out)
    final = Path(final) if final is not None else out
    out.parent.mkdir(parents=True, exist_ok=True)
    _folder(out.parent, out.name)
    index = {n: i for i, n in enumerate(ds.names)}
    skipped = 0
    counts = {"images": 0, "objects": 0, "tiles": 0}
    crops: list = []
    for split, samples in ds.splits.items():
        _folder(out, "images", split)
        labels = _folder(out, "labels", split)
        for s in samples:
            objs = [o for o in s.objects if keep_difficult or not o.difficult]
            skipped += len(s.objects) - len(objs)
            counts["images"] += 1
            if tile and (s.width > tile or s.height > tile):
                counts["objects"] += _write_tiles(s, objs, out, split, index, target, tile, overlap, counts, crops, final)
                continue
            dst = out / "images" / split / s.image.name
            if not os.path.lexists(dst):
                os.symlink(os.path.realpath(s.image), dst)
            lines = [label_line(o, index[o.name], s.width, s.height, target) for o in objs]
            counts["objects"] += len(lines)
            _write(labels / (s.image.stem + ".txt"), "".join(line + "\n" for line in lines))
    yaml = [f"path: {final}", "train: images/train", "val: images/val", "names:"] + [f"  {i}: {n}" for i, n in enumerate(ds.names)]
    _write(out / "data.yaml", "\n".join(yaml) + "\n")
    if crops:
        import json

        _write(out / "crops.json", json.dumps(crops))
    ds.skipped_difficult = skipped
    report = ds.report()
    report.update({"written_objects": counts["objects"], "target": target, "tiles": counts["tiles"],
                   "crops": str(final / "crops.json") if crops else None})
    return report


def _write_tiles(s: Sample, objs: list, out: Path, split: str, index: dict, target: str, tile: int, overlap: int, counts,
                 crops: list, final: Path) -> int:
    written = 0
    for win in tiles(s.width, s.height, tile, overlap):
        name = f"{s.image.stem}__{win[0]}_{win[1]}"
        crops.append({"src": os.path.realpath(s.image), "box": list(win), "dest": str(final / "images" / split / f"{name}.png")})
        w, h = win[2] - win[0], win[3] - win[1]
        kept = [c for c in (clip_to_tile(o, win) for o in objs) if c is not None]
        _write(out / "labels" / split / f"{name}.txt", "".join(label_line(o, index[o.name], w, h, target) + "\n" for o in kept))
        written += len(kept)
        counts["tiles"] += 1
    return written


def summary_lines(report: dict, what: str) -> list[str]:
    """The report as the lines a job's log and `runner dataset check` print."""
    lines = [f"{what}: {report['images']} images ({', '.join(f'{k} {v}' for k, v in report['splits'].items())}), "
             f"{report['objects']} objects, {len(report['names'])} classes"
             + (f", {report.get('tiles')} tiles" if report.get("tiles") else "")]
    lines.append("objects per class: " + (", ".join(f"{k} {v}" for k, v in report["classes"].items()) or "none"))
    if report.get("skipped_difficult"):
        lines.append(f"skipped {report['skipped_difficult']} difficult objects (keep them with dataset.keep_difficult: true)")
    for p in report.get("problems", [])[:MAX_PROBLEMS]:
        lines.append(f"skipped: {p}")
    return lines
