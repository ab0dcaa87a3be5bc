"""Cut tiles out of large images, as planned by runner's dataset conversion (a JSON list of
{"src", "box": [x0, y0, x1, y1], "dest"}). Data plane: needs Pillow, which every framework env has.

    python -m adapters.crop PLAN.json

Tiles that exist already are left alone, so a job that restarts does not cut them again.
"""

from __future__ import annotations

import json
import os
import sys


def run(plan_path: str) -> int:
    """Cut every tile of the plan that is not there yet; returns how many were cut."""
    from PIL import Image

    with open(plan_path) as f:
        plan = json.load(f)
    done, opened = 0, {}
    try:
        for item in plan:
            if os.path.exists(item["dest"]):
                continue
            im = opened.get(item["src"])
            if im is None:
                for old in opened.values():
                    old.close()
                opened = {item["src"]: Image.open(item["src"])}
                im = opened[item["src"]]
            tmp = item["dest"] + ".tmp.png"
            im.crop(tuple(item["box"])).save(tmp)
            os.replace(tmp, item["dest"])
            done += 1
    finally:
        for im in opened.values():
            im.close()
    return done


if __name__ == "__main__":
    n = run(sys.argv[1])
    print(f"runner: cut {n} tiles", flush=True)
