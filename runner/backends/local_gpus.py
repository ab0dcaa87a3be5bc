"""The GPUs of running jobs: their memory and use sampled into metrics, and an ended job's GPUs
freed of its processes (stragglers killed after a bounded wait) before its end is recorded. Made by every
backend (base.Backend.gpus), for the GPUs of this machine (none under Slurm, where it has nothing to do)."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("runner.daemon.follow")

SAMPLE_EVERY = 2.0
"""Seconds between two samples of the running jobs' GPUs."""


class GpuWatch:
    """What the daemon sees of its jobs' GPUs (NVML through the inventory)."""

    def __init__(self, store, inventory, release_wait: float):
        self.store = store
        self.inventory = inventory
        self.release_wait = release_wait  # [gpus] release_wait_seconds
        self.releasing: dict[str, float] = {}  # job_id -> deadline for its processes to leave its GPUs
        self._last_sample = 0.0

    def _stragglers(self, job) -> list:
        """Processes of this job still on its GPUs (found by the RUNNER_JOB_ID in their environment)."""
        import psutil

        out = []
        for g in self.inventory.gpus():
            if g.uuid not in (job["gpu_uuids"] or []):
                continue
            for p in g.processes:
                try:
                    if psutil.Process(p["pid"]).environ().get("RUNNER_JOB_ID") == job["id"]:
                        out.append(p["pid"])
                except (psutil.Error, KeyError):
                    continue
        return out

    def released(self, job, now) -> bool:
        """Whether the ended job's GPUs are free of its processes; kills stragglers after a bounded wait."""
        if not job.get("gpu_uuids") or not self.inventory.available:
            return True
        left = self._stragglers(job)
        if not left:
            self.releasing.pop(job["id"], None)
            return True
        deadline = self.releasing.setdefault(job["id"], now + self.release_wait)
        if now < deadline:
            return False
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        note = f"killed {len(left)} process(es) left on its GPUs after {self.release_wait:.0f}s: {', '.join(map(str, left))}"
        before = self.store.get_job(job["id"])["note"]
        self.store.update_job(job["id"], note=f"{before}; {note}" if before else note)
        log.warning("job %s: %s", job["id"], note)
        self.releasing.pop(job["id"], None)
        return True

    def sample(self, now: float):
        """Every SAMPLE_EVERY seconds: each running job's GPU memory and use as metrics, and its peak memory."""
        if now - self._last_sample < SAMPLE_EVERY:
            return
        self._last_sample = now
        running = [j for j in self.store.list_jobs(states=["running"]) if j.get("gpu_uuids")]
        if not running or not self.inventory.available:
            return
        sample = self.inventory.sample([u for j in running for u in j["gpu_uuids"]])
        for j in running:
            points, total = [], 0.0
            for i, u in enumerate(j["gpu_uuids"]):
                g = sample.get(u)
                if g is None:
                    continue
                points.append((f"gpu{i}_memory_mb", g.memory_used_mb, None, None))
                if g.utilization is not None:
                    points.append((f"gpu{i}_utilization", g.utilization, None, None))
                total += g.memory_used_mb
            if points:
                self.store.add_metrics(j["id"], points, now=now)
                if total > (j.get("peak_gpu_mem_mb") or 0):
                    self.store.update_job(j["id"], peak_gpu_mem_mb=total)
