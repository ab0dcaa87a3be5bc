"""Scheduling and launching: the queued jobs that fit start, are prepared in worker threads
(env, checkout, translation, launch.json), handed to their user, and started under the shim."""

from __future__ import annotations

import json
import logging
import os

from .. import diskspace, fairshare
from .. import gpus as gpus_mod
from ..exceptions import EnvBuildError, InvalidTransition, JobNotFound, RepoError, RunnerError
from ..scheduler import plan
from ..states import JobState, Reason

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




REASONS_EVERY = 2.0
"""Seconds between the decisions that give every queued job its reason to wait. The decisions
between them start what can start and read the queue only as far as that needs (fair share's order
is made as it is read): with thousands queued, a decision reads the few jobs at its head."""


class Launch:
    """The daemon's scheduling and launching (a part of Daemon)."""

    def schedule(self, now: float):
        """Start what the backend lets start now."""
        self.backend.schedule(now)

    def schedule_here(self, now: float):
        """runner's own scheduler (the local backend's): start the queued jobs that fit now; record why the others wait."""
        active = self.store.count_by_state()
        if not active.get("queued") or active.get("running", 0) + active.get("preparing", 0) >= self.max_running:
            return
        # The head of the queue is enough to fill the free slots: a deep queue is not re-read
        # (and its JSON re-parsed) on every decision. Jobs further back get their wait reason
        # when they come within the window.
        window = max(32, 8 * self.max_running)
        queued = self.store.queued_heads(window) if self.fairshare["on"] else self.store.queued_jobs(limit=window)
        if not queued:
            return
        low = diskspace.low_space(self.home)  # below [jobs] min_free_mb where jobs write: none starts, each says why
        if low:
            for j in queued:
                if j["reason"] != low:
                    self.store.update_job(j["id"], reason=low)
            return
        deps = {d for j in queued for d in (j["after"] or [])}
        dep_states = {}
        for d in deps:
            try:
                dep_states[d] = self.store.get_job(d)["state"]
            except JobNotFound:
                dep_states[d] = "missing"
        for j in list(queued):
            bad = [d for d in (j["after"] or []) if dep_states.get(d) in ("failed", "cancelled", "missing")]
            if bad:
                self.store.transition(j["id"], JobState.FAILED, Reason.DEPENDENCY_FAILED.value, now=now, expect=JobState.QUEUED,
                                      note=f"dependency {bad[0]} is {dep_states[bad[0]]}")
                queued.remove(j)
        running = active.get("running", 0) + active.get("preparing", 0)
        wants_gpus = any((j["spec"].get("resources") or {}).get("gpus") for j in queued)
        free, count = [], 0
        allocations = {}
        held = {}
        if wants_gpus and self.inventory.available:
            all_gpus = self.inventory.gpus()
            count = len(all_gpus)
            allocations = self.store.gpu_allocations()
            free = gpus_mod.free_gpus(all_gpus, allocations, job_pids=set())
            for g in all_gpus:  # every GPU seen since the start: one that fell off the bus may come back
                self._gpus_seen[g.uuid] = g
            queued = self._fail_never_fitting(queued, list(self._gpus_seen.values()), now)
            queued, free, started = self.take_reserved(queued, free, count, running, now)
            running += started
            for jid in set(allocations.values()):
                try:
                    j = self.store.get_job(jid)
                    held[j["user"]] = held.get(j["user"], 0) + len(j["gpu_uuids"] or [])
                except JobNotFound:
                    pass
        ends = {}
        if allocations:
            for j in self.store.list_jobs(states=["preparing", "running"]):
                limit = (j["spec"].get("resources") or {}).get("time_limit")
                for u in j["gpu_uuids"] or []:
                    ends[u] = (j["started_at"] or now) + limit if limit else None
        fifo = queued
        fair = fairshare.Fair(queued, self.ledger.use(now), self.fairshare["shares"]) if self.fairshare["on"] else None
        reasons = self._reasons_at is None or not 0 <= now - self._reasons_at < REASONS_EVERY
        if reasons:  # this decision gives every job its reason: the whole order, read now
            self._reasons_at = now
            queued = list(fair.jobs()) if fair is not None else queued
        runs = {}
        if self.per_user_running is not None:
            for j in self.store.list_jobs(states=["preparing", "running"], columns=["user"]):
                runs[j["user"]] = runs.get(j["user"], 0) + 1
        decision = plan(fair.jobs() if fair is not None and not reasons else queued, running, self.max_running, free, count,
                        self.inventory.available and count > 0, held, self.user_gpu_limit, self.skipped, self.backfill_limit,
                        dep_states, now=now, ends=ends, running_by_user=runs, user_running_limit=self.per_user_running,
                        wants=fair.wants if fair is not None else None, lazy=not reasons)
        for job, chosen in decision.start:
            try:
                self.store.claim(job["id"], [(g.index, g.uuid) for g in chosen], now=now)
            except InvalidTransition as e:
                log.info("%s", e)
                continue
            self.pool.submit(self._prepare_and_launch, self.store.get_job(job["id"]))
        if reasons:
            behind = fairshare.passed_over(fifo, queued) if fair is not None else set()
            for j in queued:
                if j["id"] in decision.waiting:
                    reason = decision.waiting[j["id"]]
                    if reason is Reason.WAITING_FOR_GPUS and j["id"] in behind:
                        reason = Reason.FAIR_SHARE
                    value = reason.value if reason else None
                    if j["reason"] != value:
                        self.store.update_job(j["id"], reason=value)
        if self.preempt["after"] is not None and count:
            left = [g for g in free if all(g is not c for _, cs in decision.start for c in cs)]
            self.preempt_pass(fair if fair is not None and not reasons else queued, decision, left, all_gpus, now)

    def _fail_never_fitting(self, queued: list, all_gpus: list, now: float) -> list:
        """Fail the queued GPU jobs that no GPU of this machine can ever serve (more GPUs than it
        has, ids it lacks, more memory than its GPUs hold: `all_gpus`, every GPU seen since the
        daemon started), each with a note saying which: such a job would wait for good, and hold
        a backfill reservation (and preemptions) for nothing."""
        from ..scheduler import never_fits

        out = []
        for j in queued:
            why = never_fits(j, all_gpus)
            if why is None:
                out.append(j)
                continue
            try:
                self.store.transition(j["id"], JobState.FAILED, Reason.NEVER_FITS.value, now=now, expect=JobState.QUEUED, note=why)
                log.info("job %s: failed: %s", j["id"], why)
            except InvalidTransition:
                pass
        return out

    def _job_log(self, job: dict):
        """A writer of `runner: ...` lines into the job's log while it is prepared (the log is its user's to read)."""
        from ..identity import drops_privileges
        from ..prepare import log_mode

        run = self.home.run_dir(job["id"])
        run.mkdir(parents=True, exist_ok=True)
        os.chmod(run, 0o711)
        path = run / "output.log"
        mode = log_mode(self.home)

        def write(line: str):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
            try:
                if drops_privileges(job["uid"]):
                    os.fchown(fd, job["uid"], -1)
                os.write(fd, (line.rstrip("\n") + "\n").encode())
            finally:
                os.close(fd)
        return write

    def _prepare_and_launch(self, job: dict):
        from ..prepare import prepare

        jid = job["id"]
        run_dir = self.home.run_dir(jid)
        write = self._job_log(job)
        if job.get("restarts") and self.relaunch(job, write):  # preempted before: its first run's launch, resumed
            return
        try:
            prepared = prepare(job, self.home, self.registry, self.envs, write)
        except EnvBuildError as e:
            self._fail_preparing(jid, Reason.ENV_BUILD_FAILED, str(e), write)
            return
        except RepoError as e:
            from ..repos import PatchError

            self._fail_preparing(jid, Reason.PATCH_FAILED if isinstance(e, PatchError) else Reason.PREPARE_FAILED, str(e), write)
            return
        except (RunnerError, OSError, ValueError, KeyError) as e:
            self._fail_preparing(jid, Reason.PREPARE_FAILED, str(e), write)
            return
        except Exception as e:  # a bug in a translator must not kill the daemon
            log.exception("job %s: prepare crashed", jid)
            self._fail_preparing(jid, Reason.PREPARE_FAILED, f"{type(e).__name__}: {e}", write)
            return
        (run_dir / "watch.json").write_text(json.dumps({"parser": prepared.parser, "checkpoints": prepared.checkpoints,
                                                         "results_file": prepared.results_file}))
        if (job["spec"].get("model") or "").startswith("repo/"):  # what ran, for the exporters (a run's tags)
            repo = self.registry.get_repo(job["spec"]["model"][5:]) or {}
            (run_dir / "repo.json").write_text(json.dumps({"url": repo.get("url"), "commit": repo.get("commit")}))
        if self.store.get_job(jid)["cancel_requested"]:
            self.store.transition(jid, JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, expect=JobState.PREPARING)
            return
        offset = (run_dir / "output.log").stat().st_size if (run_dir / "output.log").exists() else 0
        self.backend.start(job, prepared, offset, write)

    def _fail_preparing(self, jid, reason: Reason, message: str, write):
        self._dirty = True
        for line in message.splitlines():
            write(f"runner: {line}")
        try:
            self.store.transition(jid, JobState.FAILED, reason.value, expect=JobState.PREPARING,
                                  note=public_note(message))
        except InvalidTransition as e:
            log.warning("%s", e)
        log.info("job %s: failed while preparing (%s): %s", jid, reason.value, message.splitlines()[0] if message else "")
