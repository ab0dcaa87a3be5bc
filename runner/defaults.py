"""Named defaults, one place. Each can be overridden by a RUNNER_* variable or the config file."""

import os
from pathlib import Path

HOME = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "runner"
"""State folder when RUNNER_HOME is unset: spool, jobs, store, envs, caches."""

HTTP_BIND = "127.0.0.1:8765"
"""Where the daemon serves its read-only HTTP API; loopback unless told otherwise."""

MAX_RUNNING = 4
"""Jobs the daemon runs at once (GPU jobs are further limited by free GPUs)."""

PREPARE_WORKERS = 4
"""Threads that prepare jobs (env builds, clones, translation) beside the main loop."""

POLL_SECONDS = 0.25
"""Longest the daemon sleeps between looks at running jobs when no file event wakes it."""

CANCEL_GRACE_SECONDS = 5.0
"""Between SIGTERM and SIGKILL when a job is cancelled."""

LOG_TAIL_LINES = 20
"""Lines of a failed job's log kept on its row as the failure's context."""

METRICS_BATCH = 5000
"""Parsed metric points written to SQLite in one transaction at most."""

BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits on a lock before giving up."""

GPU_BUSY_MEMORY_MB = 1024
"""A GPU with more memory used than this, by anyone, is not handed out."""

BACKFILL_LIMIT = 8
"""How many times a small job may start ahead of a waiting larger one before the large one holds the GPUs."""

GPU_RELEASE_WAIT_SECONDS = 10.0
"""After a job ends, how long to wait for its processes to leave its GPUs before killing them."""

ENV_GC_DAYS = 14
"""`runner envs gc` removes envs unused for this many days."""

TORCH_PAIR = ("2.14.1", "0.29.1")
"""torch / torchvision pins of the framework locks (Linux x86_64, Python 3.11)."""


def runner_home() -> Path:
    """The state folder: $RUNNER_HOME, else the XDG default."""
    return Path(os.environ.get("RUNNER_HOME") or HOME).expanduser().resolve()
