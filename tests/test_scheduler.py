"""The scheduler's pure decisions: order, the running cap, dependencies, GPUs and their memory,
per-user limits, the backfill bound and EASY backfill behind a reservation. No daemon, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runner.scheduler import plan
from runner.states import Reason


@dataclass(frozen=True)
class G:
    index: int
    memory_free_mb: float = 80_000


def job(jid, gpus=0, user="u", after=(), mem=None, limit=None, ids=None):
    res = {"gpus": gpus}
    if mem is not None:
        res["gpu_memory_gb"] = mem
    if limit is not None:
        res["time_limit"] = limit
    if ids is not None:
        res["gpu_ids"] = ids
    return {"id": jid, "user": user, "after": list(after), "spec": {"resources": res}}


def started(d):
    return [(j["id"], [g.index for g in gs]) for j, gs in d.start]


def test_queue_order_is_kept_within_the_running_cap():
    d = plan([job("a"), job("b"), job("c")], running=1, max_running=3, free=[], gpu_count=0, gpus_available=False)
    assert started(d) == [("a", []), ("b", [])] and d.waiting == {"c": None}


def test_dependencies_wait_until_they_succeeded():
    q = [job("a", after=["x"]), job("b", after=["y"]), job("c")]
    d = plan(q, 0, 4, [], 0, False, dep_states={"x": "running", "y": "succeeded"})
    assert started(d) == [("b", []), ("c", [])] and d.waiting == {"a": Reason.WAITING_FOR_DEPENDENCY}


def test_gpus_no_gpus_here_memory_and_ids():
    d = plan([job("a", gpus=1)], 0, 4, [], 0, False)
    assert d.waiting == {"a": Reason.NO_GPUS_ON_THIS_HOST}
    free = [G(0, 10_000), G(1, 50_000), G(2, 50_000)]
    d = plan([job("big", gpus=1, mem=40), job("pinned", gpus=1, ids=[2]), job("two", gpus=2)], 0, 4, free, 3, True)
    assert started(d) == [("big", [1]), ("pinned", [2])] and d.waiting == {"two": Reason.WAITING_FOR_GPUS}


def test_per_user_gpu_limit():
    free = [G(0), G(1), G(2)]
    d = plan([job("a", 1, "ann"), job("b", 1, "ann"), job("c", 1, "bob")], 0, 4, free, 3, True,
             held_by_user={"ann": 1}, user_gpu_limit=2)
    assert started(d) == [("a", [0]), ("c", [1])] and d.waiting == {"b": Reason.USER_GPU_LIMIT}


def test_backfill_is_bounded_then_the_large_job_holds_a_reservation():
    skipped = {}
    q = [job("large", gpus=2), job("small", gpus=1)]
    for k in range(3):
        d = plan(q, 0, 4, [G(0)], 2, True, skipped=skipped, backfill_limit=3)
        assert started(d) == [("small", [0])]  # passed over, k+1 times
        assert skipped == {"large": k + 1}
    d = plan(q, 0, 4, [G(0)], 2, True, skipped=skipped, backfill_limit=3)
    assert started(d) == [] and d.waiting == {"large": Reason.WAITING_FOR_GPUS, "small": Reason.WAITING_FOR_GPUS}


def test_easy_backfill_behind_a_reservation():
    skipped = {"large": 8}
    # GPU 1 is held by a job that ends at t=100; the large job (2 GPUs) can start then.
    ends = {"held": 100.0}
    short = job("short", gpus=1, limit=50)  # ends at 0+50 <= 100: may use GPU 0 meanwhile
    long = job("long", gpus=1, limit=500)  # would delay the large job: waits
    d = plan([job("large", gpus=2), long, short], 0, 4, [G(0)], 2, True, skipped=skipped, now=0.0, ends=ends)
    assert started(d) == [("short", [0])]
    assert d.waiting["large"] == Reason.WAITING_FOR_GPUS and d.waiting["long"] == Reason.WAITING_FOR_GPUS
    # a job with no time limit of its own may run for ever: it never backfills behind a reservation
    d = plan([job("large", gpus=2), job("open-ended", gpus=1)], 0, 4, [G(0)], 2, True, skipped={"large": 8}, now=0.0, ends=ends)
    assert started(d) == []
    # a GPU the reserved job will not need when it starts may be used by anyone: it needs 3, two are
    # free and two more free up at t=100, so one is spare
    q = [job("large", gpus=3), job("open-ended", gpus=1), job("another", gpus=1)]
    d = plan(q, 0, 4, [G(0), G(2)], 4, True, skipped={"large": 8}, now=0.0, ends={"h1": 100.0, "h3": 100.0})
    assert started(d) == [("open-ended", [0])] and d.waiting["another"] == Reason.WAITING_FOR_GPUS


def test_a_job_that_starts_clears_its_skip_count():
    skipped = {"a": 5}
    d = plan([job("a", gpus=1)], 0, 4, [G(0)], 1, True, skipped=skipped)
    assert started(d) == [("a", [0])] and skipped == {}


# Fair share: the order among equal priority, by each user's decayed use.
from runner import fairshare, preempt  # noqa: E402


def fjob(jid, user, gpus=1, prio=0, limit=None):
    j = job(jid, gpus, user, limit=limit)
    j["priority"] = prio
    return j


def test_fair_share_puts_the_user_with_less_use_first_and_keeps_each_users_order():
    q = [fjob(f"a{i}", "ann") for i in range(6)] + [fjob("b0", "bob")]  # ann queued first
    fair = fairshare.order(q, {"ann": 7200.0, "bob": 0.0})
    assert [j["id"] for j in fair] == ["b0", "a0", "a1", "a2", "a3", "a4", "a5"]
    d = plan(fair, 0, 8, [G(0)], 1, True)
    assert started(d) == [("b0", [0])]
    assert fairshare.passed_over(q, fair) == {f"a{i}" for i in range(6)}
    # nobody has used anything yet: the two alternate (each turn charges its user what the job will use)
    fair = fairshare.order(q[:3] + [fjob("b0", "bob"), fjob("b1", "bob")], {})
    assert [j["id"] for j in fair] == ["a0", "b0", "a1", "b1", "a2"]


def test_priority_still_wins_and_shares_weigh_use():
    q = [fjob("a0", "ann", prio=5), fjob("b0", "bob"), fjob("a1", "ann")]
    assert [j["id"] for j in fairshare.order(q, {"ann": 1e6})] == ["a0", "b0", "a1"]
    q = [fjob("a0", "ann"), fjob("b0", "bob")]
    assert [j["id"] for j in fairshare.order(q, {"ann": 300.0, "bob": 200.0})] == ["b0", "a0"]
    assert [j["id"] for j in fairshare.order(q, {"ann": 300.0, "bob": 200.0}, {"ann": 2})] == ["a0", "b0"]  # twice her share


def _order_by_definition(queued, use, shares):
    """fairshare.order as its docstring defines it, slowly: within each run of one priority, each
    turn goes to the head job of the user with the least (use + her jobs given a turn) / share,
    ties to the older head."""
    tiers = []
    for j in queued:
        if tiers and (tiers[-1][0].get("priority") or 0) == (j.get("priority") or 0):
            tiers[-1].append(j)
        else:
            tiers.append([j])
    out = []
    for tier in tiers:
        share = {j["user"]: max(float(shares.get(j["user"], 1.0)), 1e-9) for j in tier}
        standing = {u: use.get(u, 0.0) / share[u] for u in share}
        left = list(tier)
        while left:
            heads = {}
            for j in left:
                heads.setdefault(j["user"], j)
            pick = min(heads.values(), key=lambda j: (standing[j["user"]], tier.index(j)))
            out.append(pick)
            left.remove(pick)
            res = pick["spec"].get("resources") or {}
            standing[pick["user"]] += max(1, res.get("gpus") or 0) * float(res.get("time_limit") or fairshare.CHARGE_SECONDS) / share[pick["user"]]
    return out


def _passed_over_by_definition(fifo, fair):
    """A job is passed over when a job of another user that came later in the plain order is ahead of it in the fair order."""
    rank = {j["id"]: i for i, j in enumerate(fifo)}
    return {w["id"] for k, w in enumerate(fair) if any(v["user"] != w["user"] and rank[v["id"]] > rank[w["id"]] for v in fair[:k])}


def test_the_fast_fair_order_is_the_defined_one_on_random_queues():
    import random

    rng = random.Random(7)
    for trial in range(400):
        users = [f"u{i}" for i in range(rng.randint(1, 4))]
        q = [fjob(f"j{i}", rng.choice(users), gpus=rng.choice([0, 1, 2, 4]), prio=rng.choice([0, 0, 5]),
                  limit=rng.choice([None, 60, 3600])) for i in range(rng.randint(0, 25))]
        q.sort(key=lambda j: -j["priority"])
        use = {u: rng.choice([0.0, 600.0, 7200.0]) for u in users if rng.random() < 0.8}
        shares = {u: rng.choice([0.5, 1, 2]) for u in users if rng.random() < 0.4}
        fair = fairshare.order(q, use, shares)
        assert [j["id"] for j in fair] == [j["id"] for j in _order_by_definition(q, use, shares)], trial
        assert fairshare.passed_over(q, fair) == _passed_over_by_definition(q, fair), trial
        shuffled = rng.sample(q, len(q))  # any order, not only fair share's
        assert fairshare.passed_over(q, shuffled) == _passed_over_by_definition(q, shuffled), trial


def test_use_is_gpu_seconds_halved_every_half_life():
    day = 86400.0
    now = 100 * day
    rows = [{"user": "ann", "gpus": [0, 1], "started_at": now - 8 * day - 100, "finished_at": now - 7 * day},  # 2 GPUs x 100 s, a week ago
            {"user": "bob", "gpus": [], "started_at": now - 50, "finished_at": None},  # a CPU job, running for 50 s
            {"user": "cy", "gpus": [0], "started_at": None, "finished_at": None}]  # never started
    use = fairshare.decayed_use(rows, now, 7 * day)
    assert use == {"ann": pytest.approx(2 * (day + 100) / 2), "bob": pytest.approx(50.0)}


def test_fair_share_settings_are_checked_in_one_line():
    assert fairshare.settings({}) == {"on": True, "half_life_s": 7 * 86400.0, "shares": {}}
    for bad, field in (({"fairshare": "yes"}, "fairshare"), ({"fairshare_half_life": 0}, "fairshare_half_life"),
                       ({"shares": {"ann": -1}}, "shares.ann"), ({"shares": 3}, "shares")):
        with pytest.raises(Exception, match=rf"\[scheduler\] {field}: given"):
            fairshare.settings({"scheduler": bad})


def test_a_user_runs_at_most_per_user_running_jobs_and_the_others_get_the_slots():
    q = [job("b1", user="bob"), job("b2", user="bob"), job("b3", user="bob"), job("a1", user="alice")]
    d = plan(q, running=1, max_running=4, free=[], gpu_count=0, gpus_available=False, running_by_user={"bob": 1}, user_running_limit=2)
    assert started(d) == [("b1", []), ("a1", [])]
    assert d.waiting == {"b2": Reason.USER_RUNNING_LIMIT, "b3": Reason.USER_RUNNING_LIMIT}
    d = plan(q, running=1, max_running=4, free=[], gpu_count=0, gpus_available=False, running_by_user={"bob": 1})
    assert [j for j, _ in started(d)] == ["b1", "b2", "b3"]  # no cap: the plain order


def test_the_lazy_fair_order_and_the_plan_that_stops_early_decide_as_the_long_way_on_random_queues():
    # fairshare.Fair gives order()'s order one job at a time (of some users only, too); a plan that
    # stops once nothing left can start, whether it walks the rest for reasons or leaves them to
    # Decision.why, starts the same jobs and gives every job the reason the long walk gives it
    import random

    rng = random.Random(11)
    stopped_early = chose = 0
    for trial in range(400):
        users = [f"u{i}" for i in range(rng.randint(1, 4))]
        q = []
        for i in range(rng.randint(0, 30)):
            j = fjob(f"j{i}", rng.choice(users), gpus=rng.choice([0, 1, 1, 2, 4, 8]), prio=rng.choice([0, 0, 5]),
                     limit=rng.choice([None, 60, 3600]))
            if rng.random() < 0.15 and q:
                j["after"] = [rng.choice(q)["id"]]
            if rng.random() < 0.1:
                j["spec"]["resources"]["gpu_ids"] = rng.sample(range(4), rng.randint(1, 3))
            if rng.random() < 0.1:
                j["spec"]["resources"]["gpu_memory_gb"] = rng.choice([10, 90])
            q.append(j)
        q.sort(key=lambda j: -j["priority"])
        use = {u: rng.choice([0.0, 600.0, 7200.0]) for u in users if rng.random() < 0.8}
        shares = {u: rng.choice([0.5, 1, 2]) for u in users if rng.random() < 0.4}
        fair = fairshare.Fair(q, use, shares)
        order = fairshare.order(q, use, shares)
        assert [j["id"] for j in fair.jobs()] == [j["id"] for j in order], trial
        some = set(rng.sample(users, rng.randint(0, len(users))))
        assert [j["id"] for j in fair.jobs(some)] == [j["id"] for j in order if j["user"] in some], trial
        assert fair.wants == {w: sum(1 for j in q if (j["spec"]["resources"]["gpus"] or 0) == w) for w in {j["spec"]["resources"]["gpus"] for j in q}}
        free = [G(i, memory_free_mb=rng.choice([20_000, 80_000])) for i in rng.sample(range(4), rng.randint(0, 4))]
        kw = dict(running=rng.randint(0, 3), max_running=rng.randint(1, 8), free=free, gpu_count=4, gpus_available=rng.random() < 0.9,
                  held_by_user={u: rng.randint(0, 3) for u in users}, user_gpu_limit=rng.choice([None, 2, 4]),
                  backfill_limit=rng.choice([0, 1, 8]), dep_states={j["id"]: rng.choice(["succeeded", "running"]) for j in q},
                  now=0.0, ends={g.index: rng.choice([None, 100.0]) for g in free},
                  running_by_user={u: rng.randint(0, 2) for u in users}, user_running_limit=rng.choice([None, 1, 2]))
        skips = {j["id"]: rng.randint(0, 9) for j in q if rng.random() < 0.3}
        ref_skips, early_skips, lazy_skips = dict(skips), dict(skips), dict(skips)
        ref = plan(order, skipped=ref_skips, stop_early=False, **kw)
        early = plan(order, skipped=early_skips, **kw)
        lazy = plan(fair.jobs(), skipped=lazy_skips, wants=fair.wants, lazy=True, **kw)
        for d, s in ((early, early_skips), (lazy, lazy_skips)):
            assert started(d) == started(ref) and s == ref_skips, trial
        assert early.waiting == ref.waiting, trial
        assert {j["id"]: lazy.why(j) for j in q if j["id"] not in lazy.started} == ref.waiting, trial
        stopped_early += len(lazy.waiting) < len(ref.waiting)
        # preemption after the decision: the jobs it names are the same, the waiting ones read lazily or not
        for j in q:
            j["queued_at"] = rng.choice([1.0, 900.0])
        run = [{"id": f"r{i}", "user": rng.choice(users + ["zed"] * 4), "started_at": rng.choice([0.0, 0.0, 800.0]),
                "spec": {"model": rng.choice(["timm/resnet18", "timm/resnet18", "command"])},
                "gpu_uuids": [f"g{i}a", f"g{i}b"][:rng.randint(1, 2)]} for i in range(rng.randint(0, 6))]
        conf = {"after": 600.0, "min_run": 100.0, "exempt": set(), "by": rng.choice([None, {users[0]}])}
        args = (run, rng.randint(0, 2), 8, {**use, "zed": rng.choice([0.0, 1e5, 1e5])}, shares, 1000.0, conf)
        wanting, who = preempt.wanting(order, ref)
        lazy_wanting, lazy_who = preempt.wanting(fair, lazy)
        want = [(a["id"], b["id"]) for a, b in preempt.choose(wanting, *args)]
        assert [(a["id"], b["id"]) for a, b in preempt.choose(lazy_wanting, *args, waiting_users=lazy_who)] == want, trial
        chose += bool(want)
    assert stopped_early > 100 and chose > 5, (stopped_early, chose)  # the early stop was met, often, and preemption chose
