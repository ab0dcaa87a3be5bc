"""The local backend's launcher: each job's shim (runner/_shim_c.c, or runner/shim.py where that is
not built) forked from a warm launcher (`shim_serve.py`), or started on its own when that cannot be
had. Made and closed by the local backend (runner/backends/local.py); a shim outlives the daemon
that started it."""

from __future__ import annotations

import sys
from pathlib import Path

SHIM = Path(__file__).resolve().parent.parent / "shim.py"
SERVE = SHIM.with_name("shim_serve.py")


class ShimLauncher:
    """Starts shims through the warm launcher (`shim_serve.py`), started on first use and again
    whenever it is gone; falls back to one interpreter per shim if it cannot be had."""

    def __init__(self):
        import threading

        self.proc = None
        self.lock = threading.RLock()

    def spawn(self, run_dir: Path) -> int:
        """The pid of a new shim running the job of run_dir."""
        import subprocess

        with self.lock:
            for _ in range(2):
                if self.proc is None or self.proc.poll() is not None:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-I", "-S", str(SERVE)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        start_new_session=True, close_fds=True)
                try:
                    self.proc.stdin.write(f"{run_dir}\n".encode())
                    self.proc.stdin.flush()
                    line = self.proc.stdout.readline()
                    if line.strip().isdigit():
                        return int(line)
                except OSError:
                    pass
                self._close()
        return spawn_shim(run_dir).pid

    def close(self):
        """Let the launcher go (its running shims go on). Never waits long: a spawn stuck on the
        lock (a launcher that does not answer) does not keep the daemon from stopping."""
        if self.lock.acquire(timeout=2):
            try:
                self._close()
            finally:
                self.lock.release()
        elif self.proc is not None:
            self.proc.kill()

    def _close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
            self.proc = None


def spawn_shim(job_dir: Path):
    """Start the shim for a prepared job in a session of its own; returns the Popen."""
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(SHIM), str(job_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
