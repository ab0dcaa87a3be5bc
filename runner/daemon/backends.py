"""Where jobs run: the two backends behind one interface, so the daemon's loop does not know
which one it drives.

- `Local`: runner's own scheduler (slots, GPUs, backfill) starts each job here under a shim
  forked by the warm launcher; a job's end is its shim's exit.json; cancel kills its process tree.
- `Slurm`: every queued job whose dependencies succeeded is prepared and handed to Slurm with
  sbatch; one squeue per poll moves jobs to running and to their end; cancel is scancel.

Each is a thin view over the daemon's parts (launch.Launch for the local one, slurm_backend for
Slurm's), chosen once from the config's `[backend] kind`.
"""

from __future__ import annotations


class Local:
    """Jobs run on this machine."""

    kind = "local"

    def __init__(self, daemon):
        self.d = daemon

    def schedule(self, now: float):
        """Start the queued jobs that fit now."""
        self.d.schedule_here(now)

    def start(self, job: dict, prepared, offset: int, write):
        """Run a prepared job."""
        self.d.start_here(job, prepared, offset, write)

    def poll(self, now: float):
        """Nothing to ask anyone: follow() reads each shim's exit.json."""

    def owns_end(self, job: dict) -> bool:
        """Whether this backend, not the shim's files read here, decides when the job has ended."""
        return False

    def cancel(self, job: dict, now: float) -> bool:
        """Cancel here when the backend must; False leaves it to the daemon's own kill path."""
        return False

    def reconcile(self, now: float):
        """After a restart: nothing beyond what the daemon checks on disk."""


class Slurm(Local):
    """Jobs run where Slurm puts them."""

    kind = "slurm"

    def schedule(self, now: float):
        self.d.schedule_slurm(now)

    def start(self, job: dict, prepared, offset: int, write):
        self.d.submit_slurm(job, prepared, offset, write)

    def poll(self, now: float):
        if now >= self.d._slurm_next:
            self.d.follow_slurm(now)

    def owns_end(self, job: dict) -> bool:
        return bool(job.get("slurm_job_id"))

    def cancel(self, job: dict, now: float) -> bool:
        if job.get("slurm_job_id") and job["state"] in ("queued", "running"):
            self.d.cancel_slurm(job, now)
            return True
        return False

    def reconcile(self, now: float):
        self.d.adopt_submitted(now)
