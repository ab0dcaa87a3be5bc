"""GPU inventory: NVML where it is present, a static inventory from the config elsewhere.

A GPU counts as busy when a runner job holds it (a row in the store), when NVML shows a compute
process the runner did not start, or when its used memory is above a threshold. The static
inventory stands in for NVML on CPU-only hosts and in tests; it can play a GPU that someone else
is using and one that disappears (it re-reads its file on every look).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from . import defaults


@dataclass
class GPU:
    """One GPU as the inventory sees it now."""

    index: int
    uuid: str
    name: str
    memory_total_mb: float
    memory_used_mb: float = 0.0
    utilization: Optional[float] = None
    temperature: Optional[float] = None
    processes: list = field(default_factory=list)  # [{pid, used_mb, user}]

    @property
    def memory_free_mb(self) -> float:
        return self.memory_total_mb - self.memory_used_mb

    def as_dict(self) -> dict:
        d = asdict(self)
        d["memory_free_mb"] = self.memory_free_mb
        return d


class Inventory:
    """The interface both implementations give."""

    source = "none"
    available = False
    reason = "no GPU inventory"

    def gpus(self) -> list[GPU]:
        """Every GPU now, in PCI bus order."""
        return []

    def sample(self, uuids: list[str]) -> dict:
        """{uuid: GPU} for the given GPUs (for per-job metrics)."""
        return {g.uuid: g for g in self.gpus() if g.uuid in uuids}


class StaticInventory(Inventory):
    """GPUs listed in the config (`[gpus] static = [...]`) or in a JSON file re-read each look.

    Each entry: {name, memory_mb, uuid?, used_mb?, processes?: [{pid, used_mb, user}], present?}.
    """

    source = "static"

    def __init__(self, entries: list | None = None, file: str | None = None):
        self.entries = entries or []
        self.file = file
        self.available = True
        self.reason = "static inventory from the config (no NVML)"

    def _entries(self):
        if self.file:
            try:
                return json.loads(Path(self.file).read_text())
            except (OSError, ValueError):
                return []
        return self.entries

    def gpus(self) -> list[GPU]:
        out = []
        for i, e in enumerate(self._entries()):
            if e.get("present", True) is False:
                continue
            out.append(GPU(index=e.get("index", i), uuid=e.get("uuid", f"GPU-static-{i}"), name=e.get("name", "Static GPU"),
                           memory_total_mb=float(e.get("memory_mb", 16384)), memory_used_mb=float(e.get("used_mb", 0)),
                           utilization=e.get("utilization"), processes=list(e.get("processes", []))))
        return out


class NvmlInventory(Inventory):
    """The real GPUs, through nvidia-ml-py."""

    source = "nvml"

    def __init__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.available = True
            self.reason = f"NVML {pynvml.nvmlSystemGetDriverVersion()}"
        except Exception as e:  # NVMLError, ImportError, OSError: no driver here
            self.nvml = None
            self.available = False
            self.reason = f"NVML unavailable: {e}"

    def gpus(self) -> list[GPU]:
        if not self.nvml:
            return []
        import psutil

        n = self.nvml
        out = []
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            mem = n.nvmlDeviceGetMemoryInfo(h)
            try:
                util = float(n.nvmlDeviceGetUtilizationRates(h).gpu)
            except n.NVMLError:
                util = None
            try:
                temp = float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
            except n.NVMLError:
                temp = None
            procs = []
            try:
                for p in n.nvmlDeviceGetComputeRunningProcesses(h):
                    try:
                        user = psutil.Process(p.pid).username()
                    except (psutil.Error, KeyError):
                        user = None
                    procs.append({"pid": p.pid, "used_mb": (p.usedGpuMemory or 0) / 2**20, "user": user})
            except n.NVMLError:
                pass
            name = n.nvmlDeviceGetName(h)
            uuid = n.nvmlDeviceGetUUID(h)
            out.append(GPU(index=i, uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                           name=name.decode() if isinstance(name, bytes) else name,
                           memory_total_mb=mem.total / 2**20, memory_used_mb=mem.used / 2**20,
                           utilization=util, temperature=temp, processes=procs))
        return out


def inventory(config: dict) -> Inventory:
    """The inventory the config asks for: [gpus] source = auto | nvml | static."""
    cfg = config.get("gpus", {})
    source = cfg.get("source", "auto")
    if source == "static" or (source == "auto" and (cfg.get("static") or cfg.get("static_file"))):
        return StaticInventory(cfg.get("static"), cfg.get("static_file"))
    return NvmlInventory()


def free_gpus(gpus: list[GPU], allocations: dict, job_pids: set, busy_mb: float = defaults.GPU_BUSY_MEMORY_MB) -> list[GPU]:
    """GPUs nobody uses: not held by a job, no foreign process, used memory under the threshold."""
    out = []
    for g in gpus:
        if g.uuid in allocations:
            continue
        if any(p.get("pid") not in job_pids for p in g.processes):
            continue
        if g.memory_used_mb > busy_mb:
            continue
        out.append(g)
    return out
