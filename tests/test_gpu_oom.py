"""The out-of-memory retry against a real CUDA out-of-memory error. Runs where a GPU, its driver
and torch are present (a lent GPU machine); skipped, with why, elsewhere.

Nothing is injected: a probe measures what one more image costs resnet50's training step at
512 px on this GPU, and the job asks for a batch that needs about 1.4 times the GPU's free memory,
so that its first step runs out of memory for real, and half of it (0.7 times) fits only if the
failed attempt gave its memory back before the retry (its activations held by the exception's
traceback, or the allocator's cache kept, would make the retry run out again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runner.gpus import NvmlInventory

INV = NvmlInventory()
# The env the GPU job runs in: 'timm' (built with uv), or 'system' on a machine with torch and timm
# installed and no package index (a lent GPU box): then this interpreter is the job's too.
GPU_ENV = os.environ.get("RUNNER_TEST_GPU_ENV", "timm")
pytestmark = [pytest.mark.nvml, pytest.mark.slow,
              pytest.mark.skipif(not INV.available, reason=f"no NVML here ({INV.reason})")]

SIZE = 512
PROBE = r"""
import json, sys, torch, timm
size = int(sys.argv[1])
m = timm.create_model("resnet50", pretrained=False, num_classes=2).cuda().train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
peaks = []
for b in (4, 12):
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    x = torch.randn(b, 3, size, size, device="cuda"); y = torch.zeros(b, dtype=torch.long, device="cuda")
    torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
    torch.cuda.synchronize(); peaks.append(torch.cuda.max_memory_allocated())
del x, y, m, opt
torch.cuda.empty_cache()
free, total = torch.cuda.mem_get_info()
print(json.dumps({"per_image": (peaks[1] - peaks[0]) / 8, "free": free, "total": total}))
"""


def _probe() -> dict:
    python = sys.executable if GPU_ENV == "system" else None
    if python is None:
        pytest.skip("the probe needs torch and timm in this interpreter: run with RUNNER_TEST_GPU_ENV=system")
    r = subprocess.run([python, "-c", PROBE, str(SIZE)], capture_output=True, text=True, timeout=300)
    if r.returncode:
        pytest.skip(f"no CUDA training here: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_real_cuda_oom_is_retried_with_half_the_batch_and_trains(runner, daemon, home, tmp_path):
    from runner.synth import make_shapes

    p = _probe()
    batch = int(1.4 * p["free"] / p["per_image"]) // 2 * 2
    assert 8 <= batch <= 4096, p
    # at least `batch` training images (small files: the adapter resizes them to SIZE)
    data = make_shapes(tmp_path / "big", per_class=batch // 2 + 1, val_per_class=2, size=32, classes=("circle", "square"))
    (home / "registry.toml").write_text(f'[frameworks.timm]\nenv = "{GPU_ENV}"\n')
    spec = {"name": "real-oom", "model": "timm/resnet50", "dataset": {"path": str(data), "format": "imagefolder"},
            "train": {"epochs": 1, "batch_size": batch, "input_size": SIZE, "lr": 0.001, "pretrained": False,
                      "auto_batch_size": True},
            "resources": {"gpus": 1}}
    f = tmp_path / "oom.yaml"
    f.write_text(json.dumps(spec))
    job = runner.wait_state(runner.submit(f), timeout=900)
    log = runner.run("logs", job["id"]).stdout
    print(json.dumps({"probe": p, "batch": batch, "state": job["state"], "peak_gpu_mem_mb": job.get("peak_gpu_mem_mb")}))
    # torch's own message, from the real allocator: nothing here injects it
    assert "runner: OutOfMemoryError: CUDA out of memory. Tried to allocate" in log, log[-3000:]
    assert f"out of memory at batch_size={batch}; retrying once with batch_size={batch // 2}" in log, log[-3000:]
    assert job["state"] == "succeeded", log[-3000:]
    assert "[metrics] epoch=1/1" in log
    # NVML saw the job's process hold most of the GPU (the failed attempt's peak, then the retry's)
    assert job["peak_gpu_mem_mb"] >= 0.3 * p["free"] / 2**20, job.get("peak_gpu_mem_mb")
