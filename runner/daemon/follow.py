"""Following running jobs: their logs into metrics, time limits, GPU release and samples, and the
end of each job decided (runner.outcome) and recorded with its real times."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

from .. import defaults
from ..diskspace import full_note
from ..exceptions import InvalidTransition
from ..outcome import decide, oom_in
from ..proctl import alive, kill_tree, read_json
from ..states import JobState, Reason
from ..watch import LogWatcher, tail_lines
from .faults import own_trouble, rollback

log = logging.getLogger("runner.daemon.follow")

LOST_AFTER_SECONDS = 15.0
"""How long a running job's processes must look gone, with no exit.json, before it is `lost` (the
shim writes exit.json after the job's last process: orphans get up to 10 s, the log pipe 5 s)."""


def _users_json(job_dir: Path, rel: str, uid: int) -> dict:
    """A small JSON file the job wrote (failure.json), opened the safe way (watch.open_job_file:
    no link anywhere below the job folder, the job user's own regular file); {} if unusable."""
    from ..watch import Refused, open_job_file

    try:
        f, _ = open_job_file(job_dir, rel, uid, 1 << 20)
        with f:
            data = json.loads(f.read(1 << 20))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, Refused):
        return {}


def time_limit_reached(limit, started_boot: float | None, now_boot: float, started_wall: float | None, now_wall: float) -> bool:
    """Whether a job has run longer than its time limit (seconds).

    Measured on the boot clock (CLOCK_BOOTTIME: seconds since boot, which nobody sets and which
    a daemon restart does not reset) from its shim's start, so a wall clock set ahead or back
    neither ends a job early nor keeps it past its limit. Only when the shim's start is not known
    does the wall clock decide, from the job's recorded start.
    """
    if not limit:
        return False
    if started_boot is not None:
        return now_boot - started_boot > limit
    return started_wall is not None and now_wall - started_wall > limit


def _started_on_boot_clock(job: dict, run_dir: Path) -> float | None:
    """When the job's shim (or else its child) started, in seconds on the boot clock; None if unknown.

    A pid that was reused since belongs to a later process: it can only make the job seem younger."""
    child = read_json(run_dir / "child.json") or {}
    for pid in (job.get("shim_pid"), child.get("pid") if isinstance(child, dict) else None):
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime: clock ticks after boot
        except (OSError, IndexError, ValueError):
            continue
    return None


class Follow:
    """The daemon's following and reaping of running jobs (a part of Daemon)."""

    def follow(self, now: float):
        """Read new log output of running jobs; reap the ones that ended."""
        self.backend.poll(now)
        for job in self.store.list_jobs(states=["running"]):
            try:
                self._follow_one(job, now)
            except Exception as e:  # one job's bad value costs that job, never the loop
                self._cannot_follow(job, e, now)
        if now - self._last_gpu_sample >= 2.0:
            self._last_gpu_sample = now
            self._sample_gpus(now)

    def _follow_one(self, job: dict, now: float):
        jid = job["id"]
        run_dir = self.home.run_dir(jid)
        w = self._watcher(job)
        if self.backend.owns_end(job):
            w.poll(self.store)  # its end comes from the backend's own view (its poll)
            return
        exit_info = read_json(run_dir / "exit.json")
        w.poll(self.store, final=exit_info is not None)
        if exit_info is not None:
            if self._vanished.pop(jid, None) is not None:
                log.warning("job %s: its exit.json came after its processes looked gone", jid)
            if not self._gpus_released(job, now):
                return
            self._reap(job, exit_info, now)
            return
        limit = (job["spec"].get("resources") or {}).get("time_limit")
        mono = time.monotonic()  # kill deadlines too are on a clock nobody sets
        if limit and jid not in self.killing and time_limit_reached(
                limit, _started_on_boot_clock(job, run_dir), time.clock_gettime(time.CLOCK_BOOTTIME), job["started_at"], now):
            self.store.update_job(jid, timed_out=1, note=f"stopped at its time limit of {limit:g}s")
            kill_tree(run_dir, signal.SIGTERM)
            self.killing[jid] = mono + defaults.CANCEL_GRACE_SECONDS
        if jid in self.killing and mono >= self.killing[jid]:
            kill_tree(run_dir, signal.SIGKILL)
            self.killing[jid] = mono + 1.0
        if not self._running_somewhere(job, run_dir):
            exit_info = read_json(run_dir / "exit.json")  # the shim may have just finished
            if exit_info is not None:
                self._vanished.pop(jid, None)
                self._reap(job, exit_info, now)
                return
            # Lost only when exit.json stays missing a while: under load, four `runner check` jobs
            # in a row ended "lost" milliseconds before their shim's exit.json (exit code 0) appeared.
            first = self._vanished.setdefault(jid, mono)
            if mono - first < LOST_AFTER_SECONDS:
                return
            self._vanished.pop(jid, None)
            w.poll(self.store, final=True)
            self._end(job, JobState.FAILED, Reason.LOST.value, now, note="the job's processes vanished without an exit status")
        elif jid in self._vanished:
            log.warning("job %s: its processes looked gone for %.1fs, then were seen again", jid, mono - self._vanished.pop(jid))

    def _cannot_follow(self, job: dict, e: Exception, now: float):
        """Following a job raised. The daemon's own trouble (its disk, its store): the job runs on and
        is followed again on the next pass. Anything else is the job's (a bad value in its files or
        row): it is ended and fails with the error as its note, alone."""
        rollback(self.store)
        jid = job["id"]
        why = own_trouble(e)
        if why:
            if self._trouble.get(f"job {jid}") != why:
                self._trouble[f"job {jid}"] = why
                log.error("job %s: cannot follow it now (%s); it runs on", jid, why)
            return
        note = f"the daemon could not follow this job: {type(e).__name__}: {e}"[:500]
        log.exception("job %s: %s", jid, note)
        w = self.watchers.pop(jid, None)  # not scanned again on its way out: it is what raised
        if w:
            w.close()
        kill_tree(self.home.run_dir(jid), signal.SIGKILL)
        self._end(job, JobState.FAILED, Reason.DAEMON_ERROR.value, now, note=note)

    def _watcher(self, job: dict) -> LogWatcher:
        """The job's log watcher, made on first use from its watch.json and stored offset."""
        w = self.watchers.get(job["id"])
        if w is None:
            run_dir = self.home.run_dir(job["id"])
            meta = read_json(run_dir / "watch.json") or {}
            w = self.watchers[job["id"]] = LogWatcher(job["id"], self.home.job_dir(job["id"]), meta.get("parser"),
                                                      job["log_offset"] or 0, job["parser_state"], meta.get("checkpoints"),
                                                      log_path=run_dir / "output.log", owner=job["uid"],
                                                      max_offset=self._log_read_limit(),
                                                      redo_before=job["started_at"] if job.get("restarts") else None)
        return w

    def _follow_log(self, job: dict, final: bool = False):
        """Read the job's new log lines into metrics (final: all of them, its end is known)."""
        self._watcher(job).poll(self.store, final=final)

    def _close_log(self, jid: str):
        """Stop following a job's log without ending it (its last lines read first): it runs again elsewhere."""
        w = self.watchers.pop(jid, None)
        if w:
            w.poll(self.store, final=True)
            w.close()

    def _log_read_limit(self) -> int | None:
        """The most bytes of a log worth reading: the shim writes at most the cap, its cut notes and a tail."""
        from ..diskspace import settings
        from ..shim import TAIL_MAX

        cap = settings(self.home.config)["log_max_bytes"]
        return cap + TAIL_MAX + (1 << 20) if cap else None

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
        failure = _users_json(job_dir, "failure.json", job["uid"])
        tail = tail_lines(self.home.run_dir(jid) / "output.log")
        code, sig = exit_info.get("exit_code"), exit_info.get("signal")
        fresh = self.store.get_job(jid)
        if fresh.get("preempt_requested") and not fresh["cancel_requested"] and not fresh["timed_out"] and code != 0:
            self.requeue_preempted(fresh, exit_info, now)  # back to the queue, to resume from its last checkpoint
            return
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

        from ..watch import Refused, open_job_file

        fail = spec.get("on_mismatch") == "fail"
        rel = spec.get("job_path") or f"out/{spec['path']}"
        path = job_dir / rel
        try:
            f, _ = open_job_file(job_dir, rel, job["uid"], 16 << 20)
        except FileNotFoundError:
            return f"results file {spec['path']} was not written", fail
        except (OSError, Refused) as e:
            return f"results file {spec['path']}: not read ({e})", fail
        try:
            with f:
                text = f.read(16 << 20).decode("utf-8", "replace")
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
        if state == JobState.SUCCEEDED and (job.get("model") or "").startswith("repo/"):
            missing = self._nothing_recorded(job)
            if missing:  # a succeeded run whose table caught nothing says so, not only `runner check`
                fields["note"] = "; ".join(filter(None, [fields.get("note"), missing]))
        try:
            self.store.transition(jid, state, reason, now=now, expect=JobState.RUNNING, **fields)
        except InvalidTransition as e:
            log.warning("%s", e)
        self.killing.pop(jid, None)
        log.info("job %s: %s%s", jid, state.value, f" ({reason})" if reason else "")

    def _nothing_recorded(self, job) -> str | None:
        """What a repo job's table caught none of (metrics, checkpoints), in one line, or None."""
        out = []
        if not self.store.has_metrics(job["id"]):
            out.append("no metric was parsed from its log (its table's parser matches none of its lines)")
        if not self.store.artifacts(job["id"]):
            out.append("no checkpoint matched its table's checkpoints globs")
        return ("; ".join(out) + ": see docs/adding-a-repo.md, or `runner check` for more") if out else None

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
