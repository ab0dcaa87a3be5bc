"""Old history does not slow the present: an ended job's metric points, downsampled once it is old.

    [retention]
    metrics_days = 180     # an ended job's points this many days after it ended are compacted (off unless set)
    metrics_bucket = 100   # steps: each metric keeps its first, last, lowest and highest point per 100 steps

A bucket is a range of **steps** (within an epoch): the x-axis the charts draw when a metric's points
carry one, so a kept point stays where it was drawn, a bucket is a fixed width of the chart, and a
metric printed rarely (a validation every 500 steps: one point a bucket) keeps every point while
one printed every step keeps at most 4 of each 100. Not seconds: a point's time is when the daemon
stored its batch, not when the job printed it (a backlog read after a restart shares one time), and
per-second rates differ by thousands between jobs. A metric whose points do not all carry a step
(a per-epoch metric, GPU samples, a command's key=value lines) is bucketed by epoch and, within
it, by its points' order (runs of `metrics_bucket` points): a metric printed once an epoch keeps
every point.

Per bucket the first and last points, the lowest and highest value and the first NaN (stored as
NULL: a diverged loss stays visible) are kept, each once; min and max decimation as the charts'
own (runner/web/series.py), so a compacted chart keeps its spikes, dips, start and end. A job is
compacted as if in one transaction (a crash leaves it whole or compacted, see below) and marked so (when, the
bucket, its count before): a later pass skips it, `runner show`, `runner metrics`, the API and the
job page say so. (A metric bucketed by steps loses its ranges a chunk of DELETE_CHUNK ranges a
transaction, the packs they touch written again (store/metrics.py), so that the daemon's writes never wait seconds; a crash between chunks leaves a job
unmarked whose next pass finds the same ranges in what is left.) Packs written smaller free pages that SQLite reuses for new points; the file
itself shrinks only with VACUUM.
"""

from __future__ import annotations

from itertools import groupby

DEFAULT_BUCKET = 100
"""Steps per bucket when [retention] metrics_days is set without metrics_bucket."""

DELETE_CHUNK = 500
"""Ranges deleted a transaction (each at most a bucket's points: ~50,000 points, a fraction of a
second of the store's write lock)."""


def check_bucket(value, field: str) -> int:
    """A bucket size as given in the config or on the command line; RunnerError in one line."""
    from .exceptions import RunnerError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or not 2 <= value <= 10**9:
        raise RunnerError(f"{field}: given {value!r}; expected a whole number of steps, 2 or more (e.g. 100)")
    return int(value)


def gaps(rows, bucket: int) -> tuple[int, list[tuple[str, int, int]]]:
    """What compacting leaves out of one job's points, as id ranges.

    `rows`: (id, name, value, step, epoch) ordered by name then id. Returns (points kept,
    [(name, after_id, before_id), ...]): the points of that name with ids strictly between the two
    go. The first and last point of each metric are always kept."""
    kept_total, out = 0, []
    for name, grp in groupby(rows, key=lambda r: r[1]):
        pts = list(grp)
        by_step = all(r[3] is not None for r in pts)
        keep: set = set()
        start, key, n = 0, None, 0
        for i, r in enumerate(pts):
            if by_step:
                k = (r[4], r[3] // bucket)
            else:  # by epoch, then runs of `bucket` points in order
                n = n + 1 if key is not None and r[4] == key[0] else 0
                k = (r[4], n // bucket)
            if i and k != key:
                keep |= _extremes(pts, start, i)
                start = i
            key = k
        keep |= _extremes(pts, start, len(pts))
        kept = sorted(keep)
        kept_total += len(kept)
        out += [(name, pts[a][0], pts[b][0]) for a, b in zip(kept, kept[1:]) if b > a + 1]
    return kept_total, out


def _extremes(pts: list, lo: int, hi: int) -> set:
    """Indexes kept of one bucket pts[lo:hi]: its first and last, its lowest and highest value (the
    first of equals) and its first NaN (NULL)."""
    keep = {lo, hi - 1}
    i_min = i_max = i_nan = None
    for i in range(lo, hi):
        v = pts[i][2]
        if v is None:
            if i_nan is None:
                i_nan = i
        else:
            if i_min is None or v < pts[i_min][2]:
                i_min = i
            if i_max is None or v > pts[i_max][2]:
                i_max = i
    keep.update(i for i in (i_min, i_max, i_nan) if i is not None)
    return keep
