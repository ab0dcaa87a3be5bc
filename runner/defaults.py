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

LOG_TAIL_MAX_BYTES = 16 * 1024 * 1024
"""Most bytes read from the end of a log to find its last lines."""

HEALTH_STALL_SECONDS = 10.0
"""/healthz reports the daemon unhealthy when its loop has not completed a pass for this long."""

HTTP_MAX_LIMIT = 1000
"""Largest page of jobs one HTTP request may ask for."""

HTTP_MAX_PAGE_BYTES = 8 * 1024 * 1024
"""Most bytes of JSON in one page of GET /jobs: a page stops short of its limit there (at least one
job), and its `next_offset` says where to read on. A job may hold 1,000 metric names of 64 KiB in
all, so 1,000 of them made a 66 MB answer, held whole in the daemon's memory by each connection
that asked for one and read it slowly."""

HTTP_MAX_METRICS = 10_000
"""Largest page of metric points one HTTP request may ask for (and the default page)."""

HTTP_MAX_LOG_BYTES = 16 * 1024 * 1024
"""Largest byte range of a log one HTTP request may ask for with offset/length."""

METRICS_BATCH_BYTES = 256 * 1024
"""Log bytes whose parsed points are written to SQLite in one transaction, with the offset past them."""

FOLLOW_PASS_SECONDS = 0.3
"""About how long one pass of the daemon's loop spends reading running jobs' logs, shared among
them (at least one batch each): the delay of a printed line to the store while others flood."""

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

BUILD_USER = "runner-build"
"""The user a root daemon builds envs from users' requirements as ([envs] build_user); `nobody` when it does not exist."""

BUILD_CACHE = Path("/var/cache/runner/build-uv")
"""The build user's uv caches, one per owner of requirements ([envs] build_cache); outside any RUNNER_HOME, so shared by all."""

TORCH_PAIR = ("2.14.1", "0.29.1")
"""torch / torchvision pins of the framework locks (Linux x86_64, Python 3.11)."""


SYSTEM_CONFIG = Path("/etc/runner/config.toml")
"""The server's config (every user's runner reads it): `home = "/var/lib/runner"` and site settings."""


def system_config_path() -> Path:
    """Where the system config is: $RUNNER_SYSTEM_CONFIG or /etc/runner/config.toml."""
    return Path(os.environ.get("RUNNER_SYSTEM_CONFIG") or SYSTEM_CONFIG)


def system_config() -> dict:
    """The system config, or {}; one that is not TOML raises RunnerError naming it."""
    from .config import read

    return read(system_config_path())


def runner_home() -> Path:
    """The state folder: $RUNNER_HOME, else the system config's `home`, else the XDG default."""
    chosen = os.environ.get("RUNNER_HOME") or system_config().get("home") or HOME
    return Path(chosen).expanduser().resolve()

MAX_SPEC_BYTES = 512 * 1024
"""Largest job spec (as JSON) and job file; data belongs in files the job reads."""

MAX_METRIC_NAMES = 1000
"""Most metric names one job keeps (per-class results of 80 classes are ~400): points of further
names are not stored, said once in its log, so a log printing ever new names cannot grow the store
(and every listing of its metrics) without end."""

MAX_METRIC_NAME_BYTES = 64 * 1024
"""Most bytes of metric names (UTF-8, all its names together) one job keeps: 1,000 names of 64
bytes; a name that would pass it is not kept, as past MAX_METRIC_NAMES. Every row of a series
carries its name: 1,000 names of 1 KB made a job 10 MB of store and 3 MB of every listing."""

FINAL_READ_SECONDS = 120.0
"""Longest the daemon reads an ended job's log on (its helper parsing what is left): past it the
rest is not made into metrics, its log says so, and the job is reaped (it holds its slot until then)."""

MAX_SPOOL_BYTES = 1024 * 1024
"""Largest spool file the daemon reads; bigger ones are set aside unread."""

MAX_SPEC_DEPTH = 32
"""Deepest nesting of a job file or spool record."""

MAX_SPEC_VALUES = 20_000
"""Most values a YAML job file may stand for once its aliases are expanded."""

MAX_ARG_BYTES = 128 * 1024
"""Longest single argument or environment value (the kernel's MAX_ARG_STRLEN)."""

MAX_ARGS = 4096
"""Most arguments in a command."""

MAX_ENV_VARS = 256
"""Most variables in a job's env_vars."""

MAX_MEMORY_GB = 1024.0 * 1024
"""Largest memory_gb (an address-space limit: 1 PiB)."""

MAX_OPEN_FILES = 1 << 20
"""Largest max_open_files (Linux's default fs.nr_open)."""

MAX_PROCESSES = 4_194_304
"""Largest max_processes (Linux's largest pid_max)."""

MAX_SECONDS = 366 * 86400
"""Largest time_limit and cpu_seconds: a year."""

LS_ROWS = 50
"""Rows `runner ls` prints when no --limit is given (running jobs first, then the newest queued);
a line on stderr says how many more there are. --limit 0 prints them all."""
