"""Datasets as teams have them: DOTA, HRSC2016 and Pascal VOC, read into one plain form and written
as YOLO (detection) or YOLO-OBB (oriented boxes) for any framework or repo that takes those.

Pure functions over files, standard library only (image sizes are read from the files' headers).
Tiling large images writes the tiles' labels and a plan of the crops (crops.json); the crops are
cut in the data plane (`python -m adapters.crop crops.json`, Pillow), by the job itself or by
`runner dataset convert`. Every problem is one line with the file and line it is on.

Geometry, stated once:
- DOTA `x1 y1 x2 y2 x3 y3 x4 y4 category difficult`: the four points are kept in the order given.
- HRSC2016 `mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang` (angle in radians, the rotation of the w
  side from the x axis, y pointing down): the corners are (-w/2,-h/2), (w/2,-h/2), (w/2,h/2),
  (-w/2,h/2) rotated by the angle about the centre, in that order (clockwise on the image).
- VOC `xmin ymin xmax ymax`: as given (pixels); as an oriented box, (xmin,ymin), (xmax,ymin),
  (xmax,ymax), (xmin,ymax).
- A polygon written as a detection box is its axis-aligned bounding box.
Coordinates are normalised by the image's width and height and clamped to [0, 1].
"""

from __future__ import annotations

from .model import (  # noqa: F401 (the package's names, here as before)
    FORMATS, IMAGE_EXTS, MAX_PROBLEMS, TAKES, TARGETS, VERSION, Dataset, DatasetError, Obj, Sample, image_size,
)
from .readers import READERS, check, hrsc_corners, parse_dota_labels, read, read_dota, read_hrsc, read_voc  # noqa: F401
from .yolo import clip_to_tile, dataset_key, label_line, summary_lines, tiles, write_yolo  # noqa: F401
