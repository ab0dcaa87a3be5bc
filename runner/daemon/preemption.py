"""Preemption on the local backend: the daemon stops the jobs runner/preempt.py names (SIGTERM,
then SIGKILL after the grace), queues each again when its shim has recorded its end, and starts
it again from its last checkpoint (its env, folder and sandbox as before; its new GPUs, the count
of restarts and the checkpoint in its environment)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .. import fairshare, preempt
from ..proctl import read_json
from ..states import JobState, Reason
from .logs import job_log

log = logging.getLogger("runner.daemon.preemption")


class Preemption:
    """Stops jobs for those that wait (preempt.choose decides which), keeps the GPUs they free for the
    job they were stopped for, and queues each stopped job again when its run has ended."""

    def __init__(self, store, home, registry, ledger, fairshare_conf: dict, conf: dict, max_running: int, logs, mark,
                 prepare):
        self.store = store
        self.home = home
        self.registry = registry  # () -> the merged registry (a repo job is stopped only if it can resume)
        self.ledger = ledger  # fairshare.Ledger: each user's decayed use
        self.fairshare = fairshare_conf  # fairshare.settings: the users' shares
        self.conf = conf  # preempt.settings: after, grace, ...
        self.max_running = max_running
        self.kills = None  # the backend's Kills (runner/backends/local_kills.py), given by use(backend)
        self.logs = logs  # daemon.logs.Logs: a stopped run's watcher is finished
        self.mark = mark  # something may start now: schedule on the next pass
        self.prepare = prepare  # (job): a claimed job, prepared in a worker, then started
        self.reserved = None  # {"job", "gpus", "until"}: GPUs a preemption frees, kept for the job it was made for

    def use(self, backend):
        """The backend, once made: its kill bookkeeping stops the jobs chosen."""
        self.kills = backend.kills

    @property
    def on(self) -> bool:
        """Whether the config turns preemption on ([scheduler] preempt_after)."""
        return self.conf["after"] is not None

    def preempt_pass(self, queued, decision, free: list, all_gpus: list, now: float):
        """After a scheduling decision: stop what preempt.choose names for the jobs that wait for
        GPUs (`free`: the GPUs the decision left free), and keep the GPUs they free for that job.
        `queued`: the queue in the decision's order, a list, or fairshare.Fair (read lazily)."""
        running = self.store.list_jobs(states=["running"])
        if self.reserved or any(r.get("preempt_requested") for r in running):
            return  # one stop at a time: the GPUs it frees go to the job it was stopped for
        from dataclasses import replace

        from ..scheduler import _fits

        def fits(job, uuids):  # on the free GPUs and those it would free, emptied
            freed = [replace(g, memory_used_mb=0.0) for g in all_gpus if g.uuid in set(uuids)]
            return _fits(job, free + freed, len(all_gpus)) is not None

        wanting, users = preempt.wanting(queued, decision)
        repos = self.registry().repos

        def can_stop(job):  # a repo job resumes when its table maps a resume argument (args.resume)
            return preempt.preemptible(job, lambda name: bool(((repos.get(name) or {}).get("args") or {}).get("resume")))

        stops = preempt.choose(wanting, running, len(free), len(all_gpus), self.ledger.use(now), self.fairshare["shares"], now,
                               self.conf, can_stop=can_stop, fits=fits, waiting_users=users)
        for victim, for_job in stops:
            self._stop_for(victim, for_job, now)
        if stops:
            self.reserved = {"job": stops[0][1]["id"], "gpus": {u for v, _ in stops for u in (v.get("gpu_uuids") or [])},
                         "until": time.monotonic() + self.conf["grace"] + 120.0}

    def take_reserved(self, queued: list, free: list, count: int, running: int, now: float):
        """The GPUs freed by a preemption are its waiting job's: it starts on them as soon as they
        are all free (before the plan, which might give them to another job, the stopped one
        included), and until then no other job takes them. Returns (queued, free, jobs started)."""
        from ..exceptions import InvalidTransition as Taken
        from ..scheduler import _fits

        held = self.reserved
        if not held:
            return queued, free, 0
        job = next((j for j in queued if j["id"] == held["job"]), None)
        if job is None or time.monotonic() > held["until"]:
            self.reserved = None  # it left the queue (cancelled, failed), or the stop took too long
            return queued, free, 0
        mine = [g for g in free if g.uuid in held["gpus"]]
        rest = [g for g in free if g.uuid not in held["gpus"]]
        if len(mine) < len(held["gpus"]) or running >= self.max_running:
            return queued, rest, 0
        chosen = _fits(job, mine + rest, count)
        if not chosen:
            self.reserved = None
            return queued, free, 0
        self.reserved = None
        try:
            self.store.claim(job["id"], [(g.index, g.uuid) for g in chosen], now=now)
        except Taken as e:
            log.info("%s", e)
            return queued, free, 0
        self.prepare(self.store.get_job(job["id"]))
        log.info("job %s: starts on the GPUs its preemption freed", job["id"])
        return [j for j in queued if j is not job], [g for g in free if g not in chosen], 1

    def _stop_for(self, job: dict, for_job: dict, now: float):
        jid = job["id"]
        grace = self.conf["grace"]
        self.store.update_job(jid, preempt_requested=now)
        job_log(self.home, job)(f"runner: preempted for job {for_job['id']} of {for_job['user']}, who has used less recently "
                           f"(fair share): SIGTERM now, SIGKILL in {grace:g}s unless it exits; it goes back to the queue "
                           "and resumes from its last checkpoint")
        self.kills.term(self.home.run_dir(jid), jid, grace, gentle=True)  # the job's handler, not bubblewrap, gets it
        log.info("job %s: preempted for job %s of %s", jid, for_job["id"], for_job["user"])

    def requeue_preempted(self, job: dict, exit_info: dict, now: float):
        """A preempted job has ended its run: back to the queue, with what the run used kept for fair share."""
        jid = job["id"]
        run = self.home.run_dir(jid)
        self.logs.finish(jid)
        k = (job.get("restarts") or 0) + 1
        for name in ("exit", "child"):  # the next run's shim writes its own; these would read as its end
            try:
                os.replace(run / f"{name}.json", run / f"{name}.run{k}.json")
            except FileNotFoundError:
                pass
        ended = exit_info.get("finished_at")
        if not isinstance(ended, (int, float)) or isinstance(ended, bool) or not (job["started_at"] or 0) <= ended <= now:
            ended = now
        used = run_use(job, ended)
        self.store.transition(jid, JobState.QUEUED, Reason.PREEMPTED.value, now=now, expect=JobState.RUNNING, restarts=k,
                              preempt_requested=None, prior_use=(job.get("prior_use") or 0.0) + used, prior_ended_at=ended,
                              queued_at=now, started_at=None, shim_pid=None, shim_started=None,
                              note=f"preempted {k} time{'s' if k > 1 else ''}; resumes from its last checkpoint when it starts again")
        self.kills.forget(jid)
        self.mark()
        job_log(self.home, job)(f"runner: run {k} ended for the preemption; the job is queued again")
        log.info("job %s: preempted, queued again (restart %d)", jid, k)


def run_use(job: dict, ended: float) -> float:
    """GPU-seconds of fair-share use of a run that ended at ended: none if it never started (None; 0.0 is a time)."""
    started = ended if job["started_at"] is None else job["started_at"]
    return fairshare.units(job.get("gpus")) * max(0.0, ended - started)


def resume_point(store, job: dict) -> str | None:
    """The checkpoint a resumed run starts from: the newest recorded `last*` file, else the newest recorded."""
    rows = [a for a in store.artifacts(job["id"]) if a["kind"] == "checkpoint"]
    if not rows:
        return None
    lasts = [a for a in rows if Path(a["path"]).name.startswith("last")]
    return max(lasts or rows, key=lambda a: a["at"] or 0)["path"]


def relaunch(store, home, start, job: dict, write) -> bool:
    """Start a preempted job again with its first run's launch (env, folder, sandbox), its new
    GPUs and RUNNER_RESTARTS / RUNNER_RESUME_FROM in its environment, by `start` (the backend's).
    False: it has none to reuse."""
    from ..launchspec import save_launch
    from ..prepare import Prepared

    run = home.run_dir(job["id"])
    launch, meta = read_json(run / "launch.json"), read_json(run / "watch.json")
    if not isinstance(launch, dict) or not isinstance(meta, dict) or not isinstance(launch.get("env"), dict):
        return False
    uuids = job.get("gpu_uuids") or []
    ckpt = resume_point(store, job)
    env = launch["env"]
    env.update({"CUDA_VISIBLE_DEVICES": ",".join(uuids), "RUNNER_NUM_GPUS": str(len(uuids)),
                "RUNNER_RESTARTS": str(job.get("restarts") or 0)})
    env.pop("RUNNER_RESUME_FROM", None)
    if ckpt:
        env["RUNNER_RESUME_FROM"] = ckpt
    if launch.get("resume_args"):  # a repo's args.resume: after its first run's argv, each time anew
        first = launch.setdefault("first_argv", launch["argv"])
        launch["argv"] = first + ([str(a).replace("{checkpoint}", ckpt) for a in launch["resume_args"]] if ckpt else [])
    save_launch(run, launch)
    write(f"runner: run {(job.get('restarts') or 0) + 1} starts after a preemption, "
          f"{'from ' + ckpt if ckpt else 'from the start (no checkpoint was recorded)'}")
    prepared = Prepared(launch, meta.get("parser"), meta.get("checkpoints") or [], job.get("env_hash"), meta.get("results_file"))
    if store.get_job(job["id"])["cancel_requested"]:
        store.transition(job["id"], JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, expect=JobState.PREPARING)
        return True
    log_path = run / "output.log"
    start(job, prepared, log_path.stat().st_size if log_path.exists() else 0, write)
    return True
