"""Where a prepared job runs: one interface (base.Backend), one module per backend, this table.

The config's `[backend] kind` names the row; a backend's own `[backend]` keys are read and
checked by its `settings`. Adding a backend is one module here and one line below (see
base.py for what it implements and tests/test_backend_contract.py for what it must do).
"""

from __future__ import annotations

from ..exceptions import RunnerError
from .base import Backend, Host
from .local import Local
from .slurm import Slurm

BACKENDS: dict[str, type[Backend]] = {
    "local": Local,  # this machine: runner's own scheduler, a shim per job
    "slurm": Slurm,  # a Slurm cluster: sbatch, one squeue per poll, scancel
}


def chosen(config: dict) -> tuple[type[Backend], dict | None]:
    """The backend the config's `[backend] kind` names (local when unset) and its checked settings;
    an unknown kind or a bad key raises RunnerError in one line."""
    kind = (config.get("backend") or {}).get("kind", "local")
    cls = BACKENDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RunnerError(f"[backend] kind: given {kind!r}; expected {' or '.join(map(repr, BACKENDS))}")
    return cls, cls.settings(config)


def make(config: dict, host: Host) -> Backend:
    """The configured backend, made for this daemon."""
    cls, conf = chosen(config)
    return cls(host, conf)


__all__ = ["BACKENDS", "Backend", "Host", "chosen", "make"]
