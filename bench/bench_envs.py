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
import statistics

from common import commit, machine, table, tmp_home
from runner.envs import EnvManager, EnvRequest, disk_usage, named_request


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold-cache", action="store_true")
    a = ap.parse_args()
    print(f"# bench_envs on {machine()}; commit {commit()}")
    print("# the cold build once; the second env three times (three different locks); imports three times: median (min-max)")
    home = tmp_home()
    cache_note = "warm uv cache"
    if a.cold_cache:
        os.environ["UV_CACHE_DIR"] = tempfile.mkdtemp(prefix="uv-cache-")
        cache_note = "empty uv cache (wheels from the local index)"
    mgr = EnvManager(home / "envs")
    timm = named_request("timm")
    path, cold = timed(lambda: mgr.ensure(timm))
    # a second framework env: the same torch, one more package -> a different lock and key
    warms = []
    for v in ("1.16.0", "1.15.0", "1.14.0"):
        second = EnvRequest(name="timm+six", lock=timm.lock + f"six=={v}\n", python=timm.python, python_version=timm.python_version)
        path2, warm = timed(lambda: mgr.ensure(second))
        warms.append(warm)
    warm = statistics.median(warms)
    _, reuse = timed(lambda: [mgr.ensure(timm) for _ in range(100)])
    py = str(path2 / "bin" / "python")
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    imports = [timed(lambda: subprocess.run([py, "-c", "import torch, timm"], env=env, check=True))[1] for _ in range(4)]
    first, again = imports[0], statistics.median(imports[1:])
    seen = set()
    one = disk_usage(path, seen)
    both = one + disk_usage(path2, seen)
    rows = [
        (f"cold build of the timm env ({cache_note})", f"{cold:.1f} s", "<= 60 s", cold <= 60),
        ("second framework env sharing torch", f"{warm:.1f} s ({min(warms):.1f}-{max(warms):.1f})", "<= 5 s", warm <= 5),
        ("reuse of a built env by a job (lookup)", f"{1000 * reuse / 100:.2f} ms", "<= 50 ms", reuse / 100 <= 0.05),
        ("first `import torch, timm` in a fresh env", f"{first:.1f} s", "no slower than the second", first <= again * 1.25),
        ("later `import torch, timm`", f"{again:.1f} s ({min(imports[1:]):.1f}-{max(imports[1:]):.1f})", "", ""),
        ("disk of the timm env", f"{one / 2**30:.2f} GiB", "", ""),
        ("disk of both envs, hard links counted once", f"{both / 2**30:.2f} GiB", "", ""),
    ]
    table("envs", rows)
    shutil.rmtree(home.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
