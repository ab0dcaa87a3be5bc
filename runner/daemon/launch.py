"""Launching: a claimed job is prepared in a worker thread (env, checkout, translation,
launch.json), handed to its user, and given to the backend to start (a preempted job's first
launch is reused: daemon/preemption.relaunch). A job that cannot be prepared fails, its log says why."""

from __future__ import annotations

import json
import logging

from ..exceptions import EnvBuildError, InvalidTransition, RepoError, RunnerError
from ..states import JobState, Reason
from .logs import job_log
from .preemption import relaunch
from .schedule import REASONS_EVERY  # noqa: F401 (its name here before schedule.py; bench/bench_sched.py reads it)

log = logging.getLogger("runner.daemon.launch")


def public_note(message: str) -> str | None:
    """A prepare failure's note, which everyone sees: its first line, unless what failed was the
    user's side (her dataset, her files: a helper's error may quote them), whose details go to
    her log only."""
    if not message:
        return None
    first = message.splitlines()[0][:500]
    from ..prepare import USER_SIDE_PREFIX

    if first.startswith(USER_SIDE_PREFIX):
        return first.split(":", 1)[0] + ": failed; the reason is in the job's log (`runner logs ID`)"
    return first


class Launch:
    """Prepares claimed jobs in worker threads and hands them to the backend. Made before the
    backend (whose Host holds `submit` and `fail_preparing`), and given its start() by `use`."""

    def __init__(self, store, home, registry, envs, pool, mark):
        self.store = store
        self.home = home
        self.registry = registry  # () -> the merged registry, re-read when its files change
        self.envs = envs  # envs.EnvManager
        self.pool = pool  # the prepare workers (a ThreadPoolExecutor)
        self.mark = mark  # something may start now: schedule on the next pass
        self.start = None  # the backend's start(job, prepared, offset, write)

    def use(self, backend):
        """The backend, once made: it starts what is prepared."""
        self.start = backend.start

    def submit(self, job: dict):
        """A claimed job is prepared in a worker thread, then handed to the backend's start()."""
        self.pool.submit(self.prepare_and_launch, job)

    def prepare_and_launch(self, job: dict):
        """Prepare a claimed job (in a worker thread) and hand it to the backend's start()."""
        from ..prepare import prepare

        jid = job["id"]
        run_dir = self.home.run_dir(jid)
        write = job_log(self.home, job)
        if job.get("restarts") and relaunch(self.store, self.home, self.start, job, write):  # preempted before: resumed
            return
        try:
            prepared = prepare(job, self.home, self.registry(), self.envs, write)
        except EnvBuildError as e:
            self.fail_preparing(jid, Reason.ENV_BUILD_FAILED, str(e), write)
            return
        except RepoError as e:
            from ..repos import PatchError

            self.fail_preparing(jid, Reason.PATCH_FAILED if isinstance(e, PatchError) else Reason.PREPARE_FAILED, str(e), write)
            return
        except (RunnerError, OSError, ValueError, KeyError) as e:
            self.fail_preparing(jid, Reason.PREPARE_FAILED, str(e), write)
            return
        except Exception as e:  # a bug in a translator must not kill the daemon
            log.exception("job %s: prepare crashed", jid)
            self.fail_preparing(jid, Reason.PREPARE_FAILED, f"{type(e).__name__}: {e}", write)
            return
        (run_dir / "watch.json").write_text(json.dumps({"parser": prepared.parser, "checkpoints": prepared.checkpoints,
                                                         "results_file": prepared.results_file}))
        if (job["spec"].get("model") or "").startswith("repo/"):  # what ran, for the exporters (a run's tags)
            repo = self.registry().get_repo(job["spec"]["model"][5:]) or {}
            (run_dir / "repo.json").write_text(json.dumps({"url": repo.get("url"), "commit": repo.get("commit")}))
        if self.store.get_job(jid)["cancel_requested"]:
            self.store.transition(jid, JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, expect=JobState.PREPARING)
            return
        offset = (run_dir / "output.log").stat().st_size if (run_dir / "output.log").exists() else 0
        self.start(job, prepared, offset, write)

    def fail_preparing(self, jid, reason: Reason, message: str, write):
        """A job that could not start fails (from `preparing`), each line of why in its log, the first as its note."""
        self.mark()
        for line in message.splitlines():
            write(f"runner: {line}")
        try:
            self.store.transition(jid, JobState.FAILED, reason.value, expect=JobState.PREPARING,
                                  note=public_note(message))
        except InvalidTransition as e:
            log.warning("%s", e)
        log.info("job %s: failed while preparing (%s): %s", jid, reason.value, message.splitlines()[0] if message else "")
