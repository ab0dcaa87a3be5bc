"""The plain form every dataset format is read into (objects, samples, splits), the names of the
formats and targets, and an image's size from its file's header."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("dota", "hrsc2016", "voc")
"""The formats read here."""

TARGETS = ("yolo", "yolo-obb")
"""The formats written here."""

TAKES = {"obb_detection": "yolo-obb", "object_detection": "yolo"}
"""What a model of each task is given when its dataset comes in one of FORMATS."""

VERSION = 1
"""Bumped when the output of a conversion changes (part of the cache key)."""

MAX_PROBLEMS = 20
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DatasetError(Exception):
    """A dataset that cannot be read: `problems` holds one `file:line: what` line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Obj:
    """One labelled object: its class name, its polygon (4 points, pixels) and whether it is 'difficult'."""

    name: str
    points: list
    difficult: bool = False


@dataclass
class Sample:
    """One image with its size and objects."""

    image: Path
    width: int
    height: int
    objects: list = field(default_factory=list)


@dataclass
class Dataset:
    """A dataset read from its published layout: samples per split, class names, what was skipped."""

    splits: dict
    names: list
    problems: list = field(default_factory=list)
    skipped_difficult: int = 0

    def report(self) -> dict:
        """What runner sees: splits, images, objects per class, what it skipped and why."""
        per_class: dict = {}
        for samples in self.splits.values():
            for s in samples:
                for o in s.objects:
                    per_class[o.name] = per_class.get(o.name, 0) + 1
        difficult = sum(1 for ss in self.splits.values() for s in ss for o in s.objects if o.difficult)
        return {"splits": {k: len(v) for k, v in self.splits.items()}, "images": sum(len(v) for v in self.splits.values()),
                "objects": sum(per_class.values()), "difficult": difficult, "classes": dict(sorted(per_class.items())),
                "names": self.names, "skipped_difficult": self.skipped_difficult, "problems": self.problems}


# -- image sizes from headers ----------------------------------------------------------------------

def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, JPEG, BMP or TIFF file, read from its header."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"BM":
            w, h = struct.unpack("<ii", head[18:26])
            return w, abs(h)
        if head[:2] in (b"II", b"MM"):
            return _tiff_size(f, head[:2])
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    break
                if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                    continue
                (length,) = struct.unpack(">H", f.read(2))
                if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">xHH", f.read(5))
                    return w, h
                f.seek(length - 2, 1)
    raise ValueError("not a PNG, JPEG, BMP or TIFF image (or a broken one)")


def _tiff_size(f, order: bytes) -> tuple[int, int]:
    e = "<" if order == b"II" else ">"
    f.seek(4)
    (ifd,) = struct.unpack(e + "I", f.read(4))
    f.seek(ifd)
    (n,) = struct.unpack(e + "H", f.read(2))
    size = {}
    for _ in range(n):
        tag, typ, _count, value = struct.unpack(e + "HHI4s", f.read(12))
        if tag in (256, 257):
            size[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), value[:2] if typ == 3 else value)[0]
    return size[256], size[257]


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        p = folder / (stem + ext)
        if p.exists():
            return p
    return None


# -- DOTA ------------------------------------------------------------------------------------------
