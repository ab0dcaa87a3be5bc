"""Queued jobs the scheduler cannot serve, failed one by one with a note saying why, so that no
bad row holds up the queue: one that no GPU of this machine can ever serve, and one that makes the
scheduler itself raise."""

from __future__ import annotations

import logging

from ..exceptions import InvalidTransition
from ..states import JobState, Reason

log = logging.getLogger("runner.daemon.launch")
daemon_log = logging.getLogger("runner.daemon")


def fail_never_fitting(store, queued: list, all_gpus: list, now: float) -> list:
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
            store.transition(j["id"], JobState.FAILED, Reason.NEVER_FITS.value, now=now, expect=JobState.QUEUED, note=why)
            log.info("job %s: failed: %s", j["id"], why)
        except InvalidTransition:
            pass
    return out


def fail_unschedulable(store, limits: dict, mark, now: float):
    """Scheduling raised: fail each queued job that makes the scheduler raise on its own, so
    that one bad row (written by hand, or by an older runner) never holds up the queue.
    `limits`: max_running, user_gpu_limit, backfill_limit; `mark`: something may start now."""
    from ..scheduler import plan

    for job in store.queued_jobs(limit=max(32, 8 * limits["max_running"])):
        try:
            after = job["after"] or []
            if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
                raise ValueError(f"after: given {str(after)[:80]}; expected a list of job ids")
            for gpus_available in (True, False):
                plan([job], 0, 1, [], 0, gpus_available, {}, limits["user_gpu_limit"], {}, limits["backfill_limit"],
                     {a: "succeeded" for a in after}, now=now, ends={})
        except Exception as e:
            note = f"the daemon could not schedule this job: {type(e).__name__}: {e}"[:500]
            daemon_log.warning("job %s: %s", job["id"], note)
            try:
                store.transition(job["id"], JobState.FAILED, Reason.DAEMON_ERROR.value, now=now,
                                 expect=JobState.QUEUED, note=note)
            except InvalidTransition:
                continue  # it left the queue meanwhile (cancelled)
            mark()
