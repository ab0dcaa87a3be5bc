"""Env figures beside their targets: cold build of the timm env, a second framework env sharing
torch, reuse by a job, first vs second `import torch` in a fresh env, disk per env.

    python bench/bench_envs.py [--cold-cache]   (--cold-cache: an empty uv cache, so every wheel is fetched)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import machine, table, tmp_home
from runner.envs import EnvManager, EnvRequest, disk_usage, inline_request, named_request


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold-cache", action="store_true")
    a = ap.parse_args()
    print(f"# bench_envs on {machine()}")
    home = tmp_home()
    cache_note = "warm uv cache"
    if a.cold_cache:
        os.environ["UV_CACHE_DIR"] = tempfile.mkdtemp(prefix="uv-cache-")
        cache_note = "empty uv cache (wheels from the local index)"
    mgr = EnvManager(home / "envs")
    timm = named_request("timm")
    path, cold = timed(lambda: mgr.ensure(timm))
    # a second framework env: the same torch, one more package -> a different lock and key
    second = EnvRequest(name="timm+six", lock=timm.lock + "six==1.16.0\n", python=timm.python, python_version=timm.python_version)
    path2, warm = timed(lambda: mgr.ensure(second))
    _, reuse = timed(lambda: [mgr.ensure(timm) for _ in range(100)])
    py = str(path2 / "bin" / "python")
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    _, first = timed(lambda: subprocess.run([py, "-c", "import torch, timm"], env=env, check=True))
    _, again = timed(lambda: subprocess.run([py, "-c", "import torch, timm"], env=env, check=True))
    seen = set()
    one = disk_usage(path, seen)
    both = one + disk_usage(path2, seen)
    rows = [
        (f"cold build of the timm env ({cache_note})", f"{cold:.1f} s", "<= 60 s", cold <= 60),
        ("second framework env sharing torch", f"{warm:.1f} s", "<= 5 s", warm <= 5),
        ("reuse of a built env by a job (lookup)", f"{1000 * reuse / 100:.2f} ms", "<= 50 ms", reuse / 100 <= 0.05),
        ("first `import torch, timm` in a fresh env", f"{first:.1f} s", "no slower than the second", first <= again * 1.25),
        ("second `import torch, timm`", f"{again:.1f} s", "", ""),
        ("disk of the timm env", f"{one / 2**30:.2f} GiB", "", ""),
        ("disk of both envs, hard links counted once", f"{both / 2**30:.2f} GiB", "", ""),
    ]
    table("envs", rows)
    shutil.rmtree(home.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
