"""The Slurm backend: queued jobs are prepared here and handed to Slurm with sbatch; Slurm's view
(one squeue call per poll for all of them) moves them to running and to their end.

A job submitted to Slurm is `queued` with Slurm's pending reason until Slurm runs it, then
`running` with its node; its `backend_ref` is Slurm's job id. Its end is read from Slurm's state
(TIMEOUT, OUT_OF_MEMORY, CANCELLED, NODE_FAIL, PREEMPTED) and, for a job that ran to its end, from
the shim's exit.json on the shared state folder, through the same decision as on one machine.
The Slurm commands themselves are in slurm_cli.py; the poll schedule and its backoff are here.
"""

from __future__ import annotations

import json
import logging
import os
import time

from .. import defaults
from ..exceptions import InvalidTransition, JobNotFound, RunnerError
from ..proctl import read_json
from ..states import JobState, Reason
from . import slurm_cli
from .base import Backend

log = logging.getLogger("runner.backends.slurm")


class Slurm(Backend):
    """Jobs run where Slurm puts them."""

    kind = "slurm"

    @classmethod
    def settings(cls, config: dict) -> dict | None:
        return slurm_cli.settings(config)

    def __init__(self, host, conf):
        super().__init__(host, conf)
        self.next_poll = 0.0  # when Slurm is asked next (sooner after a cancel)
        self.errors = 0  # failed polls in a row: the controller away, asked less often

    def describe(self) -> str:
        return f"jobs go to Slurm ({self.conf.get('partition') or 'its default partition'})"

    def _mine(self, job: dict) -> str | None:
        """The job's Slurm id, when Slurm holds it."""
        return job.get("backend_ref") if job.get("backend") == self.kind else None

    def owns_end(self, job: dict) -> bool:
        return bool(self._mine(job))

    def schedule(self, now: float):
        """Prepare and submit every queued job whose dependencies succeeded (Slurm decides when it runs)."""
        store = self.host.store
        preparing = store.count_by_state().get("preparing", 0)
        room = max(0, 2 * defaults.PREPARE_WORKERS - preparing)
        if not room:
            return
        for j in store.queued_jobs(limit=max(64, room * 4)):
            states = {}
            for d in j["after"] or []:
                try:
                    states[d] = store.get_job(d)["state"]
                except JobNotFound:
                    states[d] = "missing"
            bad = [d for d, st in states.items() if st in ("failed", "cancelled", "missing")]
            if bad:
                store.transition(j["id"], JobState.FAILED, Reason.DEPENDENCY_FAILED.value, now=now, expect=JobState.QUEUED,
                                 note=f"dependency {bad[0]} is {states[bad[0]]}")
                continue
            if any(st != "succeeded" for st in states.values()):
                if j["reason"] != Reason.WAITING_FOR_DEPENDENCY.value:
                    store.update_job(j["id"], reason=Reason.WAITING_FOR_DEPENDENCY.value)
                continue
            try:
                store.claim(j["id"], [], now=now)
            except InvalidTransition:
                continue
            self.host.prepare(store.get_job(j["id"]))
            room -= 1
            if not room:
                return

    def start(self, job: dict, prepared, offset: int, write):
        """sbatch a prepared job as its submitter; it waits in Slurm's queue as `queued`."""
        from ..identity import drops_privileges
        from ..launchspec import _write_json, job_person

        jid = job["id"]
        run_dir = self.host.home.run_dir(jid)
        who = job_person(job)
        # Under Slurm the shim runs as the job's user (Slurm starts it so): it reads launch.json and
        # writes the log and exit.json itself, and takes its GPUs and node from Slurm's environment.
        launch = json.loads((run_dir / "launch.json").read_text())
        launch.pop("user", None)
        launch["inherit"] = ["CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURMD_NODENAME"]
        _write_json(run_dir / "launch.json", launch, mode=0o600)
        if drops_privileges(who.uid):
            for p in (run_dir, run_dir / "launch.json", run_dir / "output.log"):
                if p.exists():
                    os.chown(p, who.uid, who.gid)
            os.chmod(run_dir, 0o700)
        try:
            sid = slurm_cli.submit(job, run_dir, self.conf, (who.uid, who.gid, who.groups))
        except RunnerError as e:
            self.host.fail_preparing(jid, Reason.SPAWN_FAILED, str(e), write)
            return
        write(f"runner: submitted to Slurm as job {sid}")
        store = self.host.store
        try:
            store.transition(jid, JobState.QUEUED, f"slurm: submitted as {sid}", expect=JobState.PREPARING,
                             backend=self.kind, backend_ref=sid, env_hash=prepared.env_hash, log_offset=offset)
        except InvalidTransition:
            slurm_cli.cancel(sid)
            return
        if store.get_job(jid)["cancel_requested"]:
            self.cancel(store.get_job(jid), time.time())

    def poll(self, now: float):
        """One look at Slurm for every job it holds (start, wait reason, end), when one is due."""
        if now < self.next_poll:
            return
        jobs = [j for j in self.host.store.list_jobs(states=["queued", "running"]) if self._mine(j)]
        if not jobs:
            self.next_poll = now + self.conf["poll_seconds"]
            return
        try:
            view = slurm_cli.poll([self._mine(j) for j in jobs])
        except RunnerError as e:  # the controller is away: look again later, less often
            self.errors += 1
            delay = min(60.0, self.conf["poll_seconds"] * 2 ** self.errors)
            self.next_poll = now + delay
            log.warning("slurm: %s (retrying in %.0fs)", e, delay)
            return
        self.errors = 0
        self.next_poll = now + self.conf["poll_seconds"]
        for j in jobs:
            try:
                self._follow_one(j, view.get(self._mine(j)), now)
            except (InvalidTransition, JobNotFound) as e:
                log.info("%s", e)

    def _follow_one(self, job: dict, s, now: float):
        host, store = self.host, self.host.store
        jid, state, sid = job["id"], JobState(job["state"]), self._mine(job)
        run_dir = host.home.run_dir(jid)
        if s is None:  # neither squeue nor scontrol knows it any more (ended long ago, while we were down)
            exit_info = read_json(run_dir / "exit.json")
            if state == JobState.RUNNING and exit_info is not None:
                host.follow_log(job, True)
                host.reap(job, exit_info, now)
            elif state == JobState.RUNNING:
                host.end(job, JobState.FAILED, Reason.LOST.value, now, note=f"Slurm job {sid} is gone without an exit status")
            else:
                store.transition(jid, JobState.FAILED, Reason.LOST.value, now=now, expect=JobState.QUEUED,
                                 note=f"Slurm job {sid} is gone")
            return
        if s.state in slurm_cli.ACTIVE:
            if state == JobState.QUEUED and s.state == "PENDING":
                reason = f"slurm: {s.reason or 'pending'}"
                if job["reason"] != reason:
                    store.update_job(jid, reason=reason)
            elif state == JobState.QUEUED:
                store.transition(jid, JobState.RUNNING, None, now=now, expect=JobState.QUEUED, node=s.node)
            return
        end = slurm_cli.ENDS.get(s.state)
        if state == JobState.QUEUED and s.state != "CANCELLED":
            store.update_job(jid, node=s.node or None)
            store.transition(jid, JobState.RUNNING, None, now=now, expect=JobState.QUEUED)  # it ran, briefly
            job = store.get_job(jid)
            state = JobState.RUNNING
        if end == "requeue":
            self._requeue(job, s, now)
            return
        if state == JobState.QUEUED:  # cancelled in Slurm before it ran
            store.transition(jid, JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, now=now, expect=JobState.QUEUED,
                             note=None if job["cancel_requested"] else "cancelled in Slurm")
            return
        slurm_cli.wait_for_exit_file(run_dir, 3.0 if end is None else 0.5)
        host.follow_log(job, True)
        exit_info = read_json(run_dir / "exit.json") or {"exit_code": s.exit_code, "signal": s.signal}
        if s.node and s.node != job.get("node"):
            store.update_job(jid, node=s.node)
        if s.state in ("TIMEOUT", "DEADLINE"):
            limit = (job["spec"].get("resources") or {}).get("time_limit")
            store.update_job(jid, timed_out=1, note=f"stopped by Slurm at its time limit of {limit:g}s" if limit else "stopped by Slurm at its time limit")
        elif s.state == "CANCELLED" and not job["cancel_requested"]:
            host.end(job, JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, now, note="cancelled in Slurm",
                     exit_code=exit_info.get("exit_code"), signal=exit_info.get("signal"))
            return
        elif end is not None and end[1] == Reason.OOM.value:
            host.end(job, JobState.FAILED, Reason.OOM.value, now, note="Slurm: OUT_OF_MEMORY",
                     exit_code=exit_info.get("exit_code"), signal=exit_info.get("signal"))
            return
        host.reap(store.get_job(jid), exit_info, now)

    def _requeue(self, job: dict, s, now: float):
        """A node failure or preemption: submit the job again, up to [backend] requeue times."""
        jid = job["id"]
        done = job.get("requeues") or 0
        what = f"Slurm job {self._mine(job)} ended {s.state} on {s.node or 'its node'}"
        self.host.close_log(jid)
        if done < self.conf["requeue"]:
            run_dir = self.host.home.run_dir(jid)  # the try that failed keeps its folder (its log, exit.json) beside
            if run_dir.exists():
                os.rename(run_dir, run_dir.with_name(f"{jid}.try{done + 1}"))
            self.host.store.transition(jid, JobState.QUEUED, "requeued", now=now, expect=JobState.RUNNING, backend_ref=None,
                                       requeues=done + 1, log_offset=0, parser_state=None,
                                       note=f"{what}; submitted again ({done + 1} of {self.conf['requeue']})")
            self.host.changed()
            log.info("job %s: %s; requeued", jid, what)
        else:
            self.host.end(job, JobState.FAILED, Reason.LOST.value, now, note=f"{what}; not requeued (requeue = {self.conf['requeue']})")

    def cancel(self, job: dict, now: float) -> bool:
        """scancel; a job still waiting in Slurm's queue is cancelled at once, a running one when Slurm says it ended."""
        sid = self._mine(job)
        if not sid or job["state"] not in ("queued", "running"):
            return False
        store = self.host.store
        store.update_job(job["id"], cancel_requested=1)
        try:
            slurm_cli.cancel(sid)
        except RunnerError as e:
            log.warning("job %s: %s", job["id"], e)
        if job["state"] == JobState.QUEUED.value:
            try:
                store.transition(job["id"], JobState.CANCELLED, Reason.CANCELLED_BY_USER.value, now=now, expect=JobState.QUEUED)
            except InvalidTransition:
                pass
        self.next_poll = 0.0  # look at Slurm on the next pass
        return True

    def reconcile(self, now: float):
        """Jobs left `preparing` by a daemon that died after sbatch and before recording it: found in
        Slurm by their comment (runner:ID), so nothing runs twice."""
        store = self.host.store
        preparing = store.list_jobs(states=["preparing"])
        if not preparing:
            return
        try:
            text = slurm_cli._run(["squeue", "-h", "-o", "%i|%k"])
        except RunnerError as e:
            log.warning("slurm: cannot look for jobs submitted before the restart: %s", e)
            return
        by_comment = {}
        for line in text.splitlines():
            sid, _, comment = line.partition("|")
            if comment.startswith("runner:"):
                by_comment[comment[len("runner:"):]] = sid
        for job in preparing:
            sid = by_comment.get(job["id"])
            if sid:
                store.transition(job["id"], JobState.QUEUED, f"slurm: submitted as {sid}", now=now,
                                 expect=JobState.PREPARING, backend=self.kind, backend_ref=sid)
                log.info("job %s: found in Slurm as %s after the restart", job["id"], sid)
