"""The end of a job: its exit record and its own files decided into a state and a reason
(runner.outcome), and that end recorded with its real times; a preempted job's run is handed back
to preemption instead (it is queued again, not ended)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..diskspace import full_note
from ..exceptions import InvalidTransition
from ..outcome import decide, host_oom_note, oom_in
from ..proctl import read_json
from ..states import JobState, Reason
from ..watch import tail_lines

log = logging.getLogger("runner.daemon.follow")


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


class Reaper:
    """Records the ends of running jobs (the backend's Host holds `reap` and `end`)."""

    def __init__(self, store, home, logs, mark, requeue):
        self.store = store
        self.home = home
        self.logs = logs  # daemon.logs.Logs: a job's watcher is finished with its end
        self.kills = None  # the backend's Kills (runner/backends/local_kills.py): nothing more to kill once it ended
        self.mark = mark  # something may start now: schedule on the next pass
        self.requeue = requeue  # (job, exit record, now): a preempted job's run ended; back to the queue

    def use(self, backend):
        """The backend, once made (its Host holds reap and end): its kill bookkeeping."""
        self.kills = backend.kills

    def reap(self, job: dict, exit_info: dict, now: float):
        """End a running job by its exit record (the shim's exit.json), as runner.outcome decides."""
        jid = job["id"]
        job_dir = self.home.job_dir(jid)
        failure = _users_json(job_dir, "failure.json", job["uid"])
        tail = tail_lines(self.home.run_dir(jid) / "output.log")
        code, sig = exit_info.get("exit_code"), exit_info.get("signal")
        fresh = self.store.get_job(jid)
        if fresh.get("preempt_requested") and not fresh["cancel_requested"] and not fresh["timed_out"] and code != 0:
            self.requeue(fresh, exit_info, now)  # back to the queue, to resume from its last checkpoint
            return
        state, reason = decide(exit_info, failure, cancel_requested=bool(fresh["cancel_requested"]),
                               timed_out=bool(fresh["timed_out"]), oom_in_log=oom_in(tail))
        note, mismatch = self._check_results_file(job, job_dir)
        if reason == Reason.DISK_FULL.value:  # which folder was full
            note = "; ".join(filter(None, [full_note(exit_info), note]))
        elif state == JobState.FAILED and reason not in (Reason.TIMEOUT.value, Reason.SPAWN_FAILED.value):
            note = "; ".join(filter(None, [host_oom_note(exit_info), note]))  # the OOM killer was at work meanwhile
        if mismatch and state == JobState.SUCCEEDED:  # the table asked for a disagreement to fail the job
            state, reason = JobState.FAILED, Reason.RESULTS_MISMATCH.value
        # The end time is the shim's, not this pass's: a job that ended while the daemon was down
        # did not last until the restart. Bounded by what the store knows, as the job folder is the job's.
        ended = exit_info.get("finished_at")
        if isinstance(ended, (int, float)) and not isinstance(ended, bool) and (job["started_at"] or 0) - 5 <= ended <= now:
            now = max(float(ended), job["started_at"] or 0)
        usage = {k: exit_info[k] for k in ("max_rss_kb", "cpu_seconds") if isinstance(exit_info.get(k), (int, float))}
        self.end(job, state, reason, now, exit_code=code, signal=sig,
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

    def end(self, job, state, reason, now, **fields):
        """Record a running job's end (state, reason, fields) once its watcher has read what it left."""
        jid = job["id"]
        self.mark()
        self.logs.finish(jid)
        if state == JobState.SUCCEEDED and (job.get("model") or "").startswith("repo/"):
            missing = self._nothing_recorded(job)
            if missing:  # a succeeded run whose table caught nothing says so, not only `runner check`
                fields["note"] = "; ".join(filter(None, [fields.get("note"), missing]))
        try:
            self.store.transition(jid, state, reason, now=now, expect=JobState.RUNNING, **fields)
        except InvalidTransition as e:
            log.warning("%s", e)
        self.kills.forget(jid)
        log.info("job %s: %s%s", jid, state.value, f" ({reason})" if reason else "")

    def _nothing_recorded(self, job) -> str | None:
        """What a repo job's table caught none of (metrics, checkpoints), in one line, or None."""
        out = []
        if not self.store.has_metrics(job["id"]):
            out.append("no metric was parsed from its log (its table's parser matches none of its lines)")
        if not self.store.artifacts(job["id"]):
            out.append("no checkpoint matched its table's checkpoints globs")
        return ("; ".join(out) + ": see docs/adding-a-repo.md, or `runner check` for more") if out else None
