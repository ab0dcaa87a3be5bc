"""The real NVML path. Runs where a GPU and its driver are present; skipped (with why) elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from runner.gpus import NvmlInventory

INV = NvmlInventory()
# The env the GPU job runs in: 'timm' builds one with uv; a machine with torch installed and no
# package index (a lent GPU box) says RUNNER_TEST_GPU_ENV=system and uses the interpreter's own.
GPU_ENV = os.environ.get("RUNNER_TEST_GPU_ENV", "timm")
pytestmark = [pytest.mark.nvml, pytest.mark.skipif(not INV.available, reason=f"no NVML here ({INV.reason})")]


def test_inventory_matches_nvidia_smi():
    smi = shutil.which("nvidia-smi")
    if not smi:
        pytest.skip("nvidia-smi not installed")
    out = subprocess.run([smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in l.split(",")] for l in out.strip().splitlines()]
    gpus = INV.gpus()
    assert [(g.index, g.uuid, g.name) for g in gpus] == [(int(r[0]), r[1], r[2]) for r in rows]
    for g, r in zip(gpus, rows):
        assert abs(g.memory_total_mb - float(r[3])) <= 1


@pytest.mark.slow
def test_job_sees_exactly_its_gpu_and_its_memory_shows_up(runner, daemon, tmp_path):
    code = ("import torch, time, os; n = torch.cuda.device_count(); p = torch.cuda.get_device_properties(0);"
            "print('COUNT', n); print('UUID', 'GPU-' + str(p.uuid)); x = torch.empty(1536 * 2**20, dtype=torch.uint8, device='cuda');"
            "time.sleep(8); print('done')")
    spec = tmp_path / "gpu.yaml"
    spec.write_text(json.dumps({"command": ["python", "-c", code], "env": GPU_ENV, "resources": {"gpus": 1}}))
    job = runner.wait_state(runner.submit(spec), timeout=900)
    log = runner.run("logs", job["id"]).stdout
    assert job["state"] == "succeeded", log
    assert "COUNT 1" in log
    assert f"UUID {job['gpu_uuids'][0]}" in log
    assert job["metrics"]["gpu0_memory_mb"] >= 1536 and job["peak_gpu_mem_mb"] >= 1536
