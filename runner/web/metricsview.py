"""What the dashboard shows of a job's metrics: its main metric (latest and best), metrics grouped
for small multiples (train and val of one quantity on one chart), every chart's downsampled series
read in one pass, and the points recorded since a live page last asked.

Reads go straight to the store's `metrics` table (index job_id, name, id; their SQL in runner/store/pages.py
and charts.py): a page of 50 jobs costs one query for their latest values and one indexed range per job for
its main metric's best.
"""

from __future__ import annotations

import re

from ..store import charts as store_charts
from ..store import pages as store_pages
from . import series

MAIN_METRICS = ("val_accuracy", "val_accuracy_top1", "val_top1", "val_map50_mask", "val_map50_pose", "val_map50_box", "val_map50",
                "val_mean_iou_fg", "val_mean_iou", "val_miou", "val_bleu", "bleu")
"""A model job's main metric, the first of these it records: classification's val accuracy,
detection's mAP50 (the mask's for instance segmentation, the keypoints' for pose), segmentation's
mIoU, captioning's BLEU (the names our adapters print)."""

MAIN_PATTERNS = (r"map_?50(?!.?95)", r"m_?iou|mean_iou", r"acc", r"bleu")
"""Where none of MAIN_METRICS is recorded (a repo's own names, e.g. `mAP50(B)`): the first name
matching one of these, validation names first."""

LOWER_IS_BETTER = re.compile(r"loss|err|wer\b|cer\b|perplexity|ppl|mse|mae|rmse|_time|seconds", re.I)
"""Names whose best is their lowest value (every other metric's best is its highest)."""

NOT_A_RESULT = re.compile(r"^gpu\d+_|^lr$|learning_rate|^epoch$|^step$", re.I)
"""Samples and settings, never a job's main metric (GPU memory, the learning rate)."""

SPLIT = re.compile(r"^(train|training|val|valid|validation|eval|test)[_/.\-](.+)$", re.I)
"""A name's split prefix: train_loss and val_loss are one quantity, `loss`, drawn on one chart."""

CHART_POINTS = 1000

CHARTS_MAX_POINTS = 200_000
"""Most points of one answer of a job's charts, all its metrics together: a job of many metrics
gets fewer points a chart (CHARTS_MAX_POINTS // metrics, at least CHARTS_MIN_EACH). A hostile pass's
job of 1,000 metrics of 3,000 steps made 11 MB at 1,000 points a chart, 34 MB at 4,000."""

CHARTS_MIN_EACH = 50
"""Most points per series on a job page's small multiples (min and max per bucket)."""

LIVE_MAX_POINTS = 5000
"""Most new points one live refresh carries; past that the page reloads its charts whole."""


def lower_is_better(name: str) -> bool:
    """Whether a metric's best value is its lowest (a loss, an error rate)."""
    return bool(LOWER_IS_BETTER.search(name))


def group_key(name: str) -> str:
    """The quantity a metric measures, its split removed: `val_loss` -> `loss`."""
    m = SPLIT.match(name)
    return m.group(2) if m else name


def main_metric(kind: str | None, names_by_recency: list[str]) -> str | None:
    """A job's main metric among its names (ordered by when each was last recorded, oldest first).

    A command job's is the last metric it printed; a model job's is its task's (MAIN_METRICS, then
    MAIN_PATTERNS), else the last one printed. Samples and settings (GPU memory, lr) never are."""
    names = [n for n in names_by_recency if not NOT_A_RESULT.search(n)]
    if not names:
        return None
    if kind != "command":
        have = set(names)
        for n in MAIN_METRICS:
            if n in have:
                return n
        for pat in MAIN_PATTERNS:
            hits = [n for n in names if re.search(pat, n, re.I) and not lower_is_better(n)]
            if hits:
                return next((n for n in hits if SPLIT.match(n) and SPLIT.match(n).group(1).lower().startswith("val")), hits[0])
    return names[-1]


class Best:
    """Each (job, metric)'s best value so far, kept per server: a later look reads only the points
    recorded since (an index range), so a page of jobs with 100,000 points each costs their new
    points, not all of them, every 3 s. At most MAX entries (least recently used go first)."""

    MAX = 20_000

    def __init__(self):
        from collections import OrderedDict

        self.seen: OrderedDict = OrderedDict()  # (job_id, name) -> (last id looked at, best)

    def get(self, cur, job_id: str, name: str, lower: bool, last_id: int):
        key = (job_id, name)
        after, best = self.seen.pop(key, (0, None))
        if after < last_id:
            new = store_pages.best_between(cur, job_id, name, lower, after, last_id)
            if new is not None and (best is None or (new < best if lower else new > best)):
                best = new
            after = last_id
        self.seen[key] = (after, best)
        while len(self.seen) > self.MAX:
            self.seen.popitem(last=False)
        return best


def main_metrics(store, jobs: list[dict], best: Best | None = None) -> dict:
    """{job_id: {"name", "latest", "best", "lower"}} for a page of jobs (absent when a job has none)."""
    ids = [j["id"] for j in jobs]
    if not ids:
        return {}
    best = best or Best()
    cur = store.conn.cursor()
    cur.row_factory = None
    rows = store_pages.latest_points(cur, ids)
    latest: dict = {}
    for jid, name, value, mid in rows:
        latest.setdefault(jid, []).append((mid, name, value))
    out = {}
    for j in jobs:
        recs = sorted(latest.get(j["id"], ()))
        name = main_metric(j.get("kind"), [n for _, n, _ in recs])
        if name is None:
            continue
        mid, value = next((i, v) for i, n, v in recs if n == name)
        lower = lower_is_better(name)
        out[j["id"]] = {"name": name, "latest": value, "best": best.get(cur, j["id"], name, lower, mid), "lower": lower}
    return out


INF = float("inf")


def _finite(v):
    return v if v is not None and v == v and -INF < v < INF else None


def names_of(cur, job_id: str) -> list[str]:
    """The names of a job's metrics, sorted."""
    return store_charts.metric_names(cur, job_id)


def charts(store, job_id: str, points: int = CHART_POINTS, only: list[str] | None = None) -> dict:
    """Every metric of a job for its page (or `only` these): groups of names (one chart each), each
    series downsampled (series.reduced: a long one from its chunks), and `last_id`, the point a
    live refresh continues after."""
    # one read snapshot: the newest point of any job first, and the rows read below are those up to
    # it; a live refresh asks for what came after it (never a point twice, never one missed)
    with store.snapshot() as c:
        cur = c.cursor()
        cur.row_factory = None
        last_id = store_charts.last_metric_id(cur)
        names = names_of(cur, job_id)
        if only is not None:
            names = [n for n in names if n in set(only)]
        if len(names) * points > CHARTS_MAX_POINTS:  # many metrics: fewer points each, the answer bounded
            points = max(CHARTS_MIN_EACH, min(points, CHARTS_MAX_POINTS // len(names)))
        out: dict = {}
        for name in names:
            got = series.reduced(cur, job_id, name, points)
            if got is not None:
                out[name] = {**got, "lower": lower_is_better(name)}
    return {"job": job_id, "last_id": last_id, "points": points, "series": out, "groups": groups(list(out))}


def json_by_series(out: dict) -> bytes:
    """charts()'s answer as JSON, each series encoded by a json.dumps of its own (one call over
    every series holds the GIL for all of them: 0.14 s at 8 MB), as JSONResponse encodes it."""
    import json

    def enc(x) -> bytes:
        return json.dumps(x, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    rest = {k: v for k, v in out.items() if k != "series"}
    parts = [enc(name) + b":" + enc(one) for name, one in out["series"].items()]
    return enc(rest)[:-1] + (b"," if rest else b"") + b'"series":{' + b",".join(parts) + b"}}"


def groups(names: list[str]) -> list[dict]:
    """Names as small multiples: one chart per quantity, its splits overlaid, GPU samples last."""
    by: dict[str, list[str]] = {}
    for n in sorted(names):
        by.setdefault(group_key(n), []).append(n)
    order = sorted(by, key=lambda k: (k.startswith("gpu"), k))
    return [{"title": k, "names": by[k]} for k in order]


def since(store, job_id: str, after: int) -> dict:
    """The job's points recorded after point `after` (ids are global and increase), at most
    LIVE_MAX_POINTS; `reload` when there were more (the page then reads its charts whole)."""
    cur = store.conn.cursor()
    cur.row_factory = None
    last_id = store_charts.last_metric_id(cur)
    rows = store_charts.points_since(cur, job_id, after, last_id, LIVE_MAX_POINTS + 1)
    if len(rows) > LIVE_MAX_POINTS:
        return {"last_id": after, "reload": True, "points": {}}
    pts: dict = {}
    for name, step, epoch, value in rows:
        p = pts.setdefault(name, {"step": [], "epoch": [], "y": []})
        p["step"].append(step)
        p["epoch"].append(epoch)
        p["y"].append(_finite(value))
    return {"last_id": max(last_id, after), "reload": False, "points": pts}
