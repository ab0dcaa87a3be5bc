"""Following running jobs: their logs into metrics, time limits, GPU release and samples, and the
end of each job decided (runner.outcome) and recorded with its real times."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from .. import defaults
from ..diskspace import full_note
from ..exceptions import InvalidTransition
from ..outcome import decide, oom_in
from ..proctl import alive, kill_tree, read_json
from ..states import JobState, Reason
from ..watch import LogWatcher, tail_lines

log = logging.getLogger("runner.daemon.follow")


def _users_json(path: Path, uid: int) -> dict:
    """A small JSON file the job wrote (failure.json), read without following links; {} if unusable."""
    from ..identity import open_users_file

    try:
        with open_users_file(path, uid) as f:
            data = json.loads(f.read(1 << 20))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class Follow:
    """The daemon's following and reaping of running jobs (a part of Daemon)."""

    def follow(self, now: float):
        """Read new log output of running jobs; reap the ones that ended."""
        self.backend.poll(now)
        for job in self.store.list_jobs(states=["running"]):
            jid = job["id"]
            run_dir = self.home.run_dir(jid)
            w = self._watcher(job)
            if self.backend.owns_end(job):
                w.poll(self.store)  # its end comes from the backend's view (Slurm's)
                continue
            exit_info = read_json(run_dir / "exit.json")
            w.poll(self.store, final=exit_info is not None)
            if exit_info is not None:
                if not self._gpus_released(job, now):
                    continue
                self._reap(job, exit_info, now)
                continue
            limit = (job["spec"].get("resources") or {}).get("time_limit")
            if limit and job["started_at"] and now - job["started_at"] > limit and jid not in self.killing:
                self.store.update_job(jid, timed_out=1, note=f"stopped at its time limit of {limit:g}s")
                kill_tree(run_dir, signal.SIGTERM)
                self.killing[jid] = now + defaults.CANCEL_GRACE_SECONDS
            if jid in self.killing and now >= self.killing[jid]:
                kill_tree(run_dir, signal.SIGKILL)
                self.killing[jid] = now + 1.0
            if not self._running_somewhere(job, run_dir):
                exit_info = read_json(run_dir / "exit.json")  # the shim may have just finished
                if exit_info is None:
                    w.poll(self.store, final=True)
                    self._end(job, JobState.FAILED, Reason.LOST.value, now, note="the job's processes vanished without an exit status")
                else:
                    self._reap(job, exit_info, now)
        if now - self._last_gpu_sample >= 2.0:
            self._last_gpu_sample = now
            self._sample_gpus(now)

    def _watcher(self, job: dict) -> LogWatcher:
        """The job's log watcher, made on first use from its watch.json and stored offset."""
        w = self.watchers.get(job["id"])
        if w is None:
            run_dir = self.home.run_dir(job["id"])
            meta = read_json(run_dir / "watch.json") or {}
            w = self.watchers[job["id"]] = LogWatcher(job["id"], self.home.job_dir(job["id"]), meta.get("parser"),
                                                      job["log_offset"] or 0, job["parser_state"], meta.get("checkpoints"),
                                                      log_path=run_dir / "output.log", owner=job["uid"])
        return w

    def _stragglers(self, job) -> list:
        """Processes of this job still on its GPUs (found by the RUNNER_JOB_ID in their environment)."""
        import psutil

        out = []
        for g in self.inventory.gpus():
            if g.uuid not in (job["gpu_uuids"] or []):
                continue
            for p in g.processes:
                try:
                    if psutil.Process(p["pid"]).environ().get("RUNNER_JOB_ID") == job["id"]:
                        out.append(p["pid"])
                except (psutil.Error, KeyError):
                    continue
        return out

    def _gpus_released(self, job, now) -> bool:
        """Whether the ended job's GPUs are free of its processes; kills stragglers after a bounded wait."""
        if not job.get("gpu_uuids") or not self.inventory.available:
            return True
        left = self._stragglers(job)
        if not left:
            self.releasing.pop(job["id"], None)
            return True
        deadline = self.releasing.setdefault(job["id"], now + self.release_wait)
        if now < deadline:
            return False
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        note = f"killed {len(left)} process(es) left on its GPUs after {self.release_wait:.0f}s: {', '.join(map(str, left))}"
        before = self.store.get_job(job["id"])["note"]
        self.store.update_job(job["id"], note=f"{before}; {note}" if before else note)
        log.warning("job %s: %s", job["id"], note)
        self.releasing.pop(job["id"], None)
        return True

    def _running_somewhere(self, job, run_dir) -> bool:
        if alive(job["shim_pid"], job["shim_started"]):
            return True
        child = read_json(run_dir / "child.json")
        return bool(child) and alive(child["pid"])

    def _reap(self, job: dict, exit_info: dict, now: float):
        jid = job["id"]
        job_dir = self.home.job_dir(jid)
        failure = _users_json(job_dir / "failure.json", job["uid"])
        tail = tail_lines(self.home.run_dir(jid) / "output.log")
        code, sig = exit_info.get("exit_code"), exit_info.get("signal")
        fresh = self.store.get_job(jid)
        state, reason = decide(exit_info, failure, cancel_requested=bool(fresh["cancel_requested"]),
                               timed_out=bool(fresh["timed_out"]), oom_in_log=oom_in(tail))
        note, mismatch = self._check_results_file(job, job_dir)
        if reason == Reason.DISK_FULL.value:  # which folder was full
            note = "; ".join(filter(None, [full_note(exit_info), note]))
        if mismatch and state == JobState.SUCCEEDED:  # the table asked for a disagreement to fail the job
            state, reason = JobState.FAILED, Reason.RESULTS_MISMATCH.value
        # The end time is the shim's, not this pass's: a job that ended while the daemon was down
        # did not last until the restart. Bounded by what the store knows, as the job folder is the job's.
        ended = exit_info.get("finished_at")
        if isinstance(ended, (int, float)) and not isinstance(ended, bool) and (job["started_at"] or 0) - 5 <= ended <= now:
            now = max(float(ended), job["started_at"] or 0)
        usage = {k: exit_info[k] for k in ("max_rss_kb", "cpu_seconds") if isinstance(exit_info.get(k), (int, float))}
        self._end(job, state, reason, now, exit_code=code, signal=sig,
                  **usage, **({"note": note} if note else {}))

    def _check_results_file(self, job, job_dir) -> tuple[str | None, bool]:
        """A repo's own results file, stored as `file/` metrics and compared with the parsed log:
        (the job's note, whether it fails the job: `on_mismatch = "fail"` and a disagreement)."""
        spec = (read_json(self.home.run_dir(job["id"]) / "watch.json") or {}).get("results_file")
        if not spec:
            return None, False
        from log_parsers.results import compare, read_results

        from ..identity import open_users_file

        fail = spec.get("on_mismatch") == "fail"
        path = job_dir / (spec.get("job_path") or f"out/{spec['path']}")
        if not path.exists():
            return f"results file {spec['path']} was not written", fail
        try:
            with open_users_file(path, job["uid"]) as f:
                text = f.read(64 << 20).decode("utf-8", "replace")
            results = read_results(path, spec, text)
        except (ValueError, KeyError, OSError) as e:
            return f"results file {spec['path']}: {e}", fail
        self.store.add_metrics(job["id"], [(f"file/{k}", v, None, e) for e, vals in results.items() for k, v in vals.items()])
        parsed = {}
        for m in self.store.metrics(job["id"]):
            if m["epoch"] is not None and not m["name"].startswith("file/"):
                parsed.setdefault(m["epoch"], {})[m["name"]] = m["value"]
        n, bad = compare(results, parsed, spec.get("compare", {}))
        if bad:
            return f"results file disagrees with the log: {'; '.join(bad[:5])}", fail
        return f"results file agrees with the parsed log ({n} values over {len(results)} epochs)", False

    def _end(self, job, state, reason, now, **fields):
        jid = job["id"]
        self._dirty = True
        w = self.watchers.pop(jid, None)
        if w:
            if w.checkpoints:
                w.scan_artifacts(self.store)
            w.close()
        try:
            self.store.transition(jid, state, reason, now=now, expect=JobState.RUNNING, **fields)
        except InvalidTransition as e:
            log.warning("%s", e)
        self.killing.pop(jid, None)
        log.info("job %s: %s%s", jid, state.value, f" ({reason})" if reason else "")

    def _sample_gpus(self, now):
        running = [j for j in self.store.list_jobs(states=["running"]) if j.get("gpu_uuids")]
        if not running or not self.inventory.available:
            return
        sample = self.inventory.sample([u for j in running for u in j["gpu_uuids"]])
        for j in running:
            points, total = [], 0.0
            for i, u in enumerate(j["gpu_uuids"]):
                g = sample.get(u)
                if g is None:
                    continue
                points.append((f"gpu{i}_memory_mb", g.memory_used_mb, None, None))
                if g.utilization is not None:
                    points.append((f"gpu{i}_utilization", g.utilization, None, None))
                total += g.memory_used_mb
            if points:
                self.store.add_metrics(j["id"], points, now=now)
                if total > (j.get("peak_gpu_mem_mb") or 0):
                    self.store.update_job(j["id"], peak_gpu_mem_mb=total)
