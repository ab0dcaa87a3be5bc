"""Job states, failure reasons and the one table of allowed transitions."""

from enum import Enum


class JobState(str, Enum):
    """Where a job is in its life. The str base lets values go straight into SQLite and JSON."""

    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Reason(str, Enum):
    """Why a job ended the way it did (or why it waits)."""

    EXIT_CODE = "exit_code"
    KILLED_BY_SIGNAL = "killed_by_signal"
    OOM = "oom"
    DISK_FULL = "disk_full"  # a disk the job (or its log) writes to was full when it ended; the note names the folder
    ENV_BUILD_FAILED = "env_build_failed"
    PREPARE_FAILED = "prepare_failed"
    PATCH_FAILED = "patch_failed"
    RESULTS_MISMATCH = "results_mismatch"  # the repo's results file disagrees with its log, and its table says fail
    SPAWN_FAILED = "spawn_failed"
    BAD_CONFIG = "bad_config"
    LOST = "lost"
    TIMEOUT = "timeout"
    DAEMON_ERROR = "daemon_error"  # the daemon could not follow or schedule it (a bad value in its row); the note says what
    DEPENDENCY_FAILED = "dependency_failed"
    CANCELLED_BY_USER = "cancelled_by_user"
    NO_GPUS_ON_THIS_HOST = "no_gpus_on_this_host"
    WAITING_FOR_GPUS = "waiting_for_gpus"
    WAITING_FOR_DEPENDENCY = "waiting_for_dependency"
    USER_GPU_LIMIT = "user_gpu_limit"
    USER_RUNNING_LIMIT = "user_running_limit"  # the user has [daemon] per_user_running jobs running already
    NEVER_FITS = "never_fits"  # asks for GPUs (a count, ids, memory) this machine does not have; the note says which
    PREEMPTED = "preempted"  # stopped for a user with less recent use; back in the queue, it resumes from its last checkpoint
    FAIR_SHARE = "fair_share"  # waits for GPUs behind jobs of users with less recent use ([scheduler] fairshare; `runner share`)
    WAITING_FOR_DISK_SPACE = "waiting_for_disk_space"  # below [jobs] min_free_mb: no job starts (the wait reason says where)


ENDED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# from-state -> the states it may move to. Anything else raises InvalidTransition.
TRANSITIONS = {
    JobState.QUEUED: {JobState.PREPARING, JobState.CANCELLED, JobState.FAILED,
                      JobState.RUNNING},  # Slurm started a job it held in its queue
    JobState.PREPARING: {JobState.RUNNING, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED},
    JobState.RUNNING: {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                       JobState.QUEUED},  # submitted to Slurm again after its node failed
    JobState.SUCCEEDED: set(),
    JobState.FAILED: set(),
    JobState.CANCELLED: set(),
}


def allowed(src, dst) -> bool:
    """Whether a job in state `src` may move to `dst`."""
    return JobState(dst) in TRANSITIONS[JobState(src)]
