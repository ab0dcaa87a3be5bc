"""The config files: reading one (a syntax error is one line naming the file) and the tables and
keys runner reads, so that a misspelled key is said instead of silently ignored."""

from __future__ import annotations

import difflib
from pathlib import Path

from .exceptions import RunnerError

TOP_KEYS = ("home",)  # the system config's only key outside a table: where the state folder is

KEYS = {  # table -> the keys runner reads of it (docs/server.md documents each)
    "daemon": ("http", "max_running", "prepare_workers", "per_user_running"),
    "server": ("share_logs", "hostnames", "url", "max_body_bytes", "max_connections", "header_seconds", "body_seconds",
               "write_seconds", "stalled_mb"),
    "envs": ("index_url", "extra_index_urls", "find_links", "index_strategy", "torch_backend", "ca_bundle",
             "build_user", "build_cache", "python", "allow_requirement_urls", "gc_days"),
    "gpus": ("source", "static", "static_file", "per_user_limit", "backfill_limit", "release_wait_seconds"),
    "jobs": ("log_max_mb", "min_free_mb"),
    "scheduler": ("fairshare", "fairshare_half_life", "shares", "preempt_after_seconds", "preempt_grace_seconds",
                  "preempt_exempt", "preempt_by", "preempt_min_run_seconds", "max_priority"),
    "backend": ("kind", "shim_python", "partition", "account", "qos", "preemptible_qos", "sbatch_args", "poll_seconds",
                "requeue", "signal_seconds", "cpus_per_task"),
    "mlflow": ("tracking_uri", "experiment", "artifacts", "artifact_max_mb", "interval_seconds", "timeout_seconds"),
    "retention": ("checkpoint_days", "job_days", "metrics_days", "metrics_bucket"),
    "web": ("license_warn",),
}


def read(path: str | Path) -> dict:
    """One config file's tables, or {} when it is absent or not ours to read; a file that is not
    TOML raises RunnerError naming it and saying where tomllib stopped."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return {}
    except tomllib.TOMLDecodeError as e:
        raise RunnerError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise RunnerError(f"{path}: not valid TOML: not UTF-8 ({e.reason} at byte {e.start})") from None


def _hint(word: str, known, shown: str = "{}") -> str:
    near = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"did you mean {shown.format(near[0])}? " if near else ""


def known_tables() -> dict:
    """KEYS, and the table of each exporter it does not list (runner/exporters/: the class says its keys)."""
    from .exporters import EXPORTERS, load

    return {**KEYS, **{name: tuple(load(name).keys) for name in EXPORTERS if name not in KEYS}}


def problems(path: str | Path, data: dict, top_keys=TOP_KEYS) -> list[str]:
    """One line per table or key of one config file that runner does not read, with the nearest
    known name; [] when every one is known. Values are checked where they are read."""
    known = known_tables()
    out = []
    for name, value in data.items():
        if name in known:
            if not isinstance(value, dict):
                out.append(f"{path}: {name}: expected a table, [{name}], with keys such as {', '.join(known[name][:3])}")
                continue
            for key in value:
                if key not in known[name]:
                    out.append(f"{path}: [{name}] {key}: not a key of [{name}]; {_hint(key, known[name])}"
                               f"(known: {', '.join(known[name])})")
        elif name in top_keys and not isinstance(value, dict):
            continue
        elif isinstance(value, dict):
            out.append(f"{path}: [{name}]: not a table runner reads; {_hint(name, known, '[{}]')}(known: {', '.join(f'[{t}]' for t in known)})")
        else:
            where = next((t for t, keys in known.items() if name in keys), None)
            if where:
                said = f"it belongs inside [{where}] (a key above the first [table] is top-level)"
            elif name in TOP_KEYS:
                said = "only the system config's is read (/etc/runner/config.toml): this one cannot move the state folder"
            else:
                said = (_hint(name, top_keys) + "(a key above the first [table] is top-level; runner reads "
                        + (f"only {', '.join(top_keys)} there)" if top_keys else "none there)"))
            out.append(f"{path}: {name}: not a top-level key; {said}")
    return out
