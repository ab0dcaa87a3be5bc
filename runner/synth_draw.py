"""The drawing primitives of the synthetic datasets (runner/synth.py, runner/synth_tasks.py): shapes on a
noisy background, their colours, a PNG writer, and the ImageFolder set of shapes that both use. Standard
library only; the dataset makers import these instead of each other."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path


def write_png(path: Path, pixels: list[bytearray], width: int, height: int, gray: bool = False):
    """Write RGB rows (bytearrays of width*3), or 8-bit gray rows with gray=True, as a PNG."""
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0 if gray else 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def _inside(shape, x, y, cx, cy, r):
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return abs(x - cx) <= r and abs(y - cy) <= r
    # triangle, apex up
    if y < cy - r or y > cy + r:
        return False
    half = (y - (cy - r)) / 2
    return abs(x - cx) <= half


PALETTE = ((230, 60, 60), (60, 230, 60), (70, 70, 235), (230, 230, 60), (230, 60, 230), (60, 230, 230), (240, 150, 40), (150, 150, 150))
"""The colour of class i in an `easy` set (PALETTE[i % 8]): the class shows in colour as well as in outline."""


def tint(cls: int, easy: bool):
    """Class cls's colour in an easy set, or None (a random bright colour)."""
    return PALETTE[cls % len(PALETTE)] if easy else None


def shape_image(shape: str, size: int, rng: random.Random, colour=None):
    """Pixels of one shape on a noisy background; returns (rows, bbox (x0,y0,x1,y1)).
    colour: the shape's RGB (jittered by +-20), for an easy set where a model trained from scratch
    for a few epochs can beat chance (what `runner check`'s learns step asks); default random."""
    bg = [rng.randint(0, 80) for _ in range(3)]
    fg = [rng.randint(150, 255) for _ in range(3)]
    if colour is not None:
        fg = [max(0, min(255, v + rng.randint(-20, 20))) for v in colour]
    r = rng.randint(size // 6, size // 3)
    cx, cy = rng.randint(r, size - r - 1), rng.randint(r, size - r - 1)
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            c = fg if _inside(shape, x, y, cx, cy, r) else bg
            n = rng.randint(-12, 12)
            row += bytes(max(0, min(255, v + n)) for v in c)
        rows.append(row)
    return rows, (cx - r, cy - r, cx + r, cy + r)


SHAPES = ("circle", "square", "triangle")


def make_shapes(root: str | Path, per_class: int = 8, val_per_class: int = 4, size: int = 64, classes=SHAPES, seed: int = 0,
                easy: bool = False) -> Path:
    """An ImageFolder dataset: root/{train,val}/{class}/*.png (easy: class k drawn in PALETTE[k])."""
    root = Path(root)
    rng = random.Random(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rows, _ = shape_image(c if c in SHAPES else SHAPES[k % 3], size, rng, tint(k, easy))
                write_png(d / f"{c}_{i:03d}.png", rows, size, size)
    return root
