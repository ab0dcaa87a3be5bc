"""Exporters: mirrors of the store to other systems, chosen by name from one table.

As Slurm's jobcomp plugins are chosen by one key and do nothing when it is unset, an exporter is
on when the site config has its table (`[mlflow]` turns on EXPORTERS["mlflow"]: docs/mlflow.md)
and is never loaded otherwise. Adding one is a module here implementing `base.Exporter` and one
line in EXPORTERS; the daemon, the store, the CLI and the views reach it through this package only:

    settings(table)            its config table checked (one-line errors), at the daemon's start
    target(name, spec, conf)   where a new job goes (None: this job asked not to be exported)
    enrol(job_ids, target)     the jobs it exports (at intake, in the job's own transaction; `runner export NAME`)
    run(stop) / pass_once()    the export loop (the daemon's thread) / one pass of it; set `stop` to end it
    view(store, row) / show_line(view)   how far a job's export is (runner show, the API)

Its position per job is a row of the store's outbox, keyed by exporter and job.
"""

from __future__ import annotations

import importlib
import threading

EXPORTERS = {  # config table name -> "module:class" (or the class itself) implementing base.Exporter
    "mlflow": "runner.exporters.mlflow:MlflowExporter",
}


def load(name: str):
    """The exporter class registered under `name` (imported on first use)."""
    entry = EXPORTERS[name]
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        return getattr(importlib.import_module(module), cls)
    return entry


def configured(config: dict) -> dict:
    """{name: its checked settings} for every exporter whose table the config has (a bad one raises)."""
    return {name: load(name).settings(config[name]) for name in EXPORTERS if config.get(name)}


class Exporters:
    """The exporters a config turns on, as the daemon drives them (none: every call does nothing)."""

    def __init__(self, home, store, config: dict):
        self.on = {name: load(name)(name, home, store, conf) for name, conf in configured(config).items()}
        self._threads: list[threading.Thread] = []

    def __bool__(self) -> bool:
        return bool(self.on)

    @property
    def names(self) -> list[str]:
        """The exporters that are on."""
        return list(self.on)

    def targets(self, spec: dict) -> dict:
        """{name: target} of a new job, for each exporter on that the job does not refuse."""
        out = {name: type(ex).target(name, spec, ex.conf) for name, ex in self.on.items()}
        return {name: t for name, t in out.items() if t}

    def enrol(self, job_id: str, targets: dict, now: float | None = None):
        """Enrol a new job in the exporters `targets` names (inside the caller's transaction)."""
        for name, target in targets.items():
            self.on[name].enrol([job_id], target, now=now)

    def get(self, name: str):
        """The exporter `name` if it is on, else None."""
        return self.on.get(name)

    def start(self, stop: threading.Event):
        """Each exporter's loop in a thread of its own, until `stop` is set."""
        for name, ex in self.on.items():
            t = threading.Thread(target=ex.run, args=(stop,), name=f"export-{name}", daemon=True)
            t.start()
            self._threads.append(t)
            ex.log.info("%s", ex.describe())


def unset_message(name: str) -> str:
    """What a config lacks for `name` to be on, as a user reads it."""
    return load(name).unset or f"[{name}]"


def view(store, name: str, job_id: str) -> dict | None:
    """How far a job's export to `name` is; None when it is not exported there."""
    import sqlite3

    try:
        row = store.export_row(name, job_id)
    except sqlite3.OperationalError:  # an older store without the outbox, until the daemon migrates it
        return None
    return None if row is None else load(name).view(store, row)


def views(store, job_id: str) -> dict:
    """{name: view or None} for every exporter of the table (a job's full view carries each)."""
    return {name: view(store, name, job_id) for name in EXPORTERS}


def show_lines(job_view: dict) -> list[tuple[str, str]]:
    """(name, line) for each export a job's view holds, for `runner show`."""
    return [(name, load(name).show_line(job_view[name])) for name in EXPORTERS if job_view.get(name)]


def serving(daemon) -> list[str]:
    """The exporters on in the daemon that serves /metrics (None: a CLI reading the store)."""
    ex = getattr(daemon, "exporters", None)
    if ex is not None:
        return ex.names
    # A stand-in daemon that says only `mirror_conf` (the daemon's attribute before exporters were
    # a table; tests/test_operate.py's) has the MLflow exporter on.
    return ["mlflow"] if getattr(daemon, "mirror_conf", None) else []
