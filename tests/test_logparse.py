"""A job's log parsed by a helper process (runner.logparse), the daemon storing its batches
(runner.logbatches.HelperWatcher): exactly once across helpers killed or stopped, every batch checked
as its user's input. The helper runs as the test's own user here; tests/test_privsep_files.py runs
it as a second real user against a root daemon."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from runner import logbatches, logparse
from runner.store import Store
from runner.store import packed
from runner.logbatches import HelperWatcher


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "runner.db")
    s.insert_job({"id": "job1", "name": "x", "user": "u", "uid": os.geteuid(), "kind": "command", "spec": {}, "gpus": [], "after": []})
    yield s
    s.close()


@pytest.fixture
def job_dir(tmp_path):
    d = tmp_path / "jobs" / "job1"
    d.mkdir(parents=True)
    return d


def lines(a: int, b: int) -> bytes:
    return "".join(f"step={i} loss={1 / (i + 1):.6f} acc={i % 7}\n" for i in range(a, b)).encode()


def saved(store):
    j = store.get_job("job1")
    return j["log_offset"], j["parser_state"]


def poll_until(w, store, pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w.poll(store)
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def steps(store, name="loss"):
    return [p["step"] for p in store.metrics("job1", name)]


def test_a_helper_follows_the_log_and_each_batch_is_stored_with_its_offset(store, job_dir, monkeypatch):
    log = job_dir / "output.log"
    log.write_bytes(lines(0, 100) + b"step=100 loss=0.5")  # a line not yet ended
    calls = []
    real = store.record_progress
    monkeypatch.setattr(store, "record_progress", lambda jid, pts, off, st, **kw: (calls.append((len(pts), off, st)), real(jid, pts, off, st, **kw)))
    w = HelperWatcher("job1", job_dir, None)
    try:
        poll_until(w, store, lambda: len(steps(store)) == 100)
        assert saved(store) == (len(lines(0, 100)), {"epoch": None, "step": 99})  # up to the last whole line
        with open(log, "ab") as f:  # the line ends, more come
            f.write(b"0\n" + lines(101, 5000))
        poll_until(w, store, lambda: len(steps(store)) == 5000)
        assert steps(store) == list(range(5000)) and store.metrics("job1", "loss")[100]["value"] == 0.5
        assert all(st["step"] is not None for _, _, st in calls) and [c[1] for c in calls] == sorted(c[1] for c in calls)
        assert calls[-1][1] == log.stat().st_size
        w.poll(store, final=True, seconds=10)
        assert w.done and w.helper is None  # let go once its last batch is in
    finally:
        w.close()


def test_the_last_line_without_an_end_is_read_when_the_job_ends(store, job_dir):
    (job_dir / "output.log").write_bytes(lines(0, 3) + b"step=3 loss=0.25")
    w = HelperWatcher("job1", job_dir, None)
    w.poll(store, final=True, seconds=10)
    assert w.done and steps(store) == [0, 1, 2, 3] and saved(store)[0] == (job_dir / "output.log").stat().st_size


def test_a_missing_log_is_waited_for_and_an_ended_job_without_one_is_done(store, job_dir):
    w = HelperWatcher("job1", job_dir, None)
    w.poll(store)
    assert steps(store) == [] and not w.done
    (job_dir / "output.log").write_bytes(lines(0, 2))
    poll_until(w, store, lambda: steps(store) == [0, 1])
    w.close()
    other = HelperWatcher("job2", job_dir / "nothing", None)
    other.poll(store, final=True, seconds=10)
    assert other.done


def test_a_restart_reads_on_from_the_saved_offset_and_parser_state(store, job_dir):
    log = job_dir / "output.log"
    log.write_bytes(b"epoch 3\n" + lines(0, 10))
    w = HelperWatcher("job1", job_dir, None)
    poll_until(w, store, lambda: len(steps(store)) == 10)
    w.close()
    with open(log, "ab") as f:
        f.write(b"loss=0.125\n")  # no step of its own: the saved state's
    off, state = saved(store)
    again = HelperWatcher("job1", job_dir, None, off, state)
    again.poll(store, final=True, seconds=10)
    pts = store.metrics("job1", "loss")
    assert len(pts) == 11 and pts[-1]["step"] == 9 and pts[-1]["epoch"] == 3 and pts[-1]["value"] == 0.125


def test_killed_helpers_lose_and_repeat_nothing(store, job_dir, monkeypatch):
    monkeypatch.setattr(logbatches, "RETRY_SECONDS", 0.01)
    log = job_dir / "output.log"
    log.write_bytes(b"")
    w = HelperWatcher("job1", job_dir, None)
    w.poll(store)
    kills = 0
    with open(log, "ab") as f:
        for chunk in range(30):  # 30 x 2,000 lines, a helper killed after every few
            f.write(lines(chunk * 2000, (chunk + 1) * 2000))
            f.flush()
            w.poll(store)
            if chunk % 6 == 5:
                while w.helper is None:  # (the last one's successor, after its short wait)
                    time.sleep(0.01)
                    w.poll(store)
                os.kill(w.helper.proc.pid, signal.SIGKILL)
                kills += 1
    deadline = time.monotonic() + 30
    while not w.done and time.monotonic() < deadline:
        w.poll(store, final=True, seconds=1)
    assert kills == 5 and w.deaths >= 1 and not w.gave_up
    assert steps(store) == list(range(60_000))  # each point once, in order
    assert w.deaths <= logbatches.RESPAWNS


def test_a_broken_helper_is_started_again_after_a_wait_that_doubles(store, job_dir):
    """A helper that breaks again and again (its user kills it in a loop) costs the daemon a start
    every 0.2, 0.4, 0.8 ... s, not one a pass."""
    (job_dir / "output.log").write_bytes(lines(0, 5))
    w = HelperWatcher("job1", job_dir, None)
    starts = []
    for _ in range(3):
        deadline = time.monotonic() + 10
        while w.helper is None:
            w.poll(store)
            assert time.monotonic() < deadline
            time.sleep(0.005)
        starts.append(time.monotonic())
        w.helper.proc.kill()
        w.helper.proc.wait()
        w.poll(store)  # it sees the end: one more death
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert w.deaths == 3 and 0.18 <= gaps[0] < 0.35 <= gaps[1], gaps


@pytest.mark.parametrize("ended", [False, True])
def test_a_helper_held_stopped_is_replaced(store, job_dir, monkeypatch, ended):
    """Its user may stop her own helper (same uid): her metrics do not wait for the job's end, and
    an ended job is still reaped."""
    monkeypatch.setattr(logbatches, "STOPPED_SECONDS", 0.5)
    log = job_dir / "output.log"
    log.write_bytes(lines(0, 10))
    w = HelperWatcher("job1", job_dir, None)
    poll_until(w, store, lambda: len(steps(store)) == 10)
    os.kill(w.helper.proc.pid, signal.SIGSTOP)
    with open(log, "ab") as f:
        f.write(lines(10, 20))
    t0 = time.monotonic()
    while len(steps(store)) < 20 or ended and not w.done:
        w.poll(store, final=ended, seconds=0.3)
        assert time.monotonic() - t0 < 10
        time.sleep(0.02)
    assert w.deaths == 1 and steps(store) == list(range(20))
    w.close()


def test_a_log_whose_helpers_keep_dying_is_given_up_and_the_job_still_ends(store, job_dir):
    (job_dir / "output.log").write_bytes(lines(0, 5))
    w = HelperWatcher("job1", job_dir, None)
    for _ in range(logbatches.RESPAWNS + 1):
        w._helper()
        os.kill(w.helper.proc.pid, signal.SIGKILL)
        w.helper.proc.wait()
        w.poll(store, final=True, seconds=2)
    assert w.gave_up and "broke 6 times" in w.gave_up and w.done and w.helper is None
    assert len(steps(store)) in (0, 5)  # what a helper sent before it was killed is stored, nothing twice


def test_a_log_that_asks_for_no_metrics_starts_no_helper(store, job_dir):
    (job_dir / "output.log").write_bytes(lines(0, 5))
    w = HelperWatcher("job1", job_dir, "none")
    w.poll(store)
    w.poll(store, final=True)
    assert w.done and w.helper is None and steps(store) == []


GOOD = {"offset": 10, "state": {"step": 1}, "done": False, "keys": ["loss", "acc"], "k": [0, 1, 0],
        "v": [0.5, 1, None], "s": [1, 1, 2], "e": [None, None, 3]}


def test_a_good_batch_is_taken_as_columns():
    cols, off, state, done = logbatches.check_batch(GOOD, 5, 100)
    assert cols.names == ["loss", "acc", "loss"] and cols.vals == [0.5, 1.0, None] and len(cols) == 3
    assert type(cols.vals[1]) is float
    assert (off, state, done) == (10, {"step": 1}, False)


@pytest.mark.parametrize("change, why", [
    ({"offset": 4}, "offset"),  # backwards: points again
    ({"offset": 101}, "offset"),  # past what may be read
    ({"offset": 10.0}, "offset"),
    ({"offset": True}, "offset"),
    ({"state": "x"}, "state"),
    ({"done": 1}, "done"),
    ({"k": [0, 1]}, "one length"),
    ({"v": "abc"}, "one length"),
    ({"keys": ["loss", 3]}, "name"),
    ({"keys": ["loss", "x" * 257]}, "name"),
    ({"k": [0, 1, 2]}, "names no metric"),
    ({"k": [0, 1, "0"]}, "wrong type"),
    ({"v": [0.5, True, None]}, "wrong type"),  # a bool is not a number here
    ({"s": [1, "1", 2]}, "wrong type"),
    ({"e": [None, [3], 3]}, "wrong type"),
])
def test_a_batch_that_is_not_one_is_refused(change, why):
    with pytest.raises(ValueError, match=why):
        logbatches.check_batch({**GOOD, **change}, 5, 100)
    with pytest.raises(ValueError):
        logbatches.check_batch(["not", "an", "object"], 5, 100)


def test_a_helper_that_sends_what_a_helper_never_sends_is_replaced(store, job_dir, monkeypatch):
    """A batch that fails its checks costs the helper (started again from the stored offset),
    never a point stored wrongly."""
    (job_dir / "output.log").write_bytes(lines(0, 50))
    real = logbatches.check_batch
    bad = [2]

    def flaky(msg, *a):
        if bad[0]:
            bad[0] -= 1
            msg = {**msg, "offset": -1}
        return real(msg, *a)
    monkeypatch.setattr(logbatches, "check_batch", flaky)
    w = HelperWatcher("job1", job_dir, None)
    t0 = time.monotonic()
    while not w.done and time.monotonic() - t0 < 20:
        w.poll(store, final=True, seconds=1)
    assert w.deaths == 2 and steps(store) == list(range(50))


def batches(wire: bytes, raw: bool = False) -> list:
    """(msg, types) of each batch in what a helper wrote (`raw`: as the daemon decodes them)."""
    out = []
    while wire:
        nl = wire.index(b"\n")
        size = logbatches.payload_size(json.loads(wire[:nl]))[0]
        out.append(logbatches.decode(wire[:nl], wire[nl + 1:nl + 1 + size], raw=raw))
        wire = wire[nl + 1 + size:]
    return out


def test_the_helper_answers_in_batches_of_columns(tmp_path):
    """The wire, as the helper writes it (runner.logparse.follow in this process): a JSON header
    line, then the columns that fit a code as bytes (steps as 64-bit ints, values as doubles)."""
    import io

    log = tmp_path / "output.log"
    log.write_bytes(b"epoch 2\nstep=7 loss=nan acc=1\nloss=inf\n")
    r, wfd = os.pipe()
    os.write(wfd, b"final 1000\n")
    out = io.BytesIO()
    import threading

    threading.Timer(1.0, os.close, (wfd,)).start()
    logparse.follow({"path": str(log), "offset": 0, "parser": None, "state": None}, r, out)
    got = batches(out.getvalue())
    msgs = [m for m, _ in got]
    assert msgs[-1]["done"] and msgs[-1]["offset"] == log.stat().st_size
    first, types = got[0]
    assert first["keys"] == ["loss", "acc"] and first["k"] == [0, 1, 0] and first["s"] == [7, 7, 7] and first["e"] == [2, 2, 2]
    assert str(first["v"][0]) == "nan" and first["v"][2] == float("inf")
    assert types == {"k": {int}, "v": {float}, "s": {int}, "e": {int}}
    head = json.loads(out.getvalue().split(b"\n", 1)[0])
    assert (head["n"], head["k"], head["v"], head["s"], head["e"]) == (3, "I", "d", "q", "q")


def test_a_batch_the_store_could_not_take_is_read_again_not_lost(store, job_dir, monkeypatch):
    """The daemon's own trouble (a full disk, a locked store) while storing a batch: the batch is
    not stored, its helper is let go, and the next one reads it again from the stored offset."""
    import sqlite3

    (job_dir / "output.log").write_bytes(lines(0, 3000))
    real, fail = store.record_progress, [1]

    def flaky(*a, **kw):
        if fail[0]:
            fail[0] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return real(*a, **kw)
    monkeypatch.setattr(store, "record_progress", flaky)
    w = HelperWatcher("job1", job_dir, None)
    deadline = time.monotonic() + 20
    while not fail[0] == 0 or not steps(store):
        try:
            w.poll(store)
        except sqlite3.OperationalError:
            assert w.helper is None
        assert time.monotonic() < deadline
        time.sleep(0.02)
    while not w.done:
        w.poll(store, final=True, seconds=1)
    assert steps(store) == list(range(3000)) and w.deaths == 0


def test_a_log_of_ever_new_metric_names_keeps_the_first_thousand_and_says_so(store, job_dir, monkeypatch):
    """A hostile teammate's log printing a new name a point (m0=1 m1=1 ...) grew the store 20 bytes
    a byte of log and every listing of the job's metrics with it; now a job keeps its first
    MAX_METRIC_NAMES names, its log says once that the rest are not kept, its usual ones go on."""
    from runner import defaults

    monkeypatch.setattr(defaults, "MAX_METRIC_NAMES", 50)
    log = job_dir / "output.log"
    store.record_progress("job1", [("loss", 1.0, 0, None)], 0, {})  # one name stored before (a restart)
    flood = "".join(" ".join(f"m{i * 10 + j}=1" for j in range(10)) + f" loss=0.{i + 1}\n" for i in range(300))
    log.write_text(flood)
    w = HelperWatcher("job1", job_dir, None)
    while not w.done:
        w.poll(store, final=True, seconds=1)
    names = set(store.latest_metrics("job1"))
    assert len(names) == 50 and "loss" in names and {f"m{i}" for i in range(49)} <= names
    assert len(store.metrics("job1", "loss")) == 301  # the usual name kept every point
    said = [line for line in log.read_text().splitlines() if line.startswith("runner:")]
    assert said == ["runner: this job printed more than 50 metric names (or 64 KiB of them); the points of further names are not kept"]


def test_a_job_keeps_at_most_its_name_bytes(store, job_dir, monkeypatch):
    """1,000 names of 256 four-byte letters made each job 10 MB of store and 3 MB of every listing."""
    from runner import defaults

    monkeypatch.setattr(defaults, "MAX_METRIC_NAME_BYTES", 1000)
    long = ["a" + "\U0001D41A" * 39 + f"{i:02d}" for i in range(20)]  # 159 bytes each
    (job_dir / "output.log").write_text("".join(f"{n}=1.5\n" for n in long) + "loss=0.5\n", encoding="utf-8")
    w = HelperWatcher("job1", job_dir, None)
    while not w.done:
        w.poll(store, final=True, seconds=1)
    names = set(store.latest_metrics("job1"))
    assert sum(len(n.encode()) for n in names) <= 1000 and "loss" in names, names
    assert len(names) == 7  # six long names (954 bytes), then "loss"


def test_an_ended_jobs_log_is_read_on_for_a_while_then_the_rest_is_not_parsed(store, job_dir, monkeypatch):
    """A log too big to read soon after its job's end held the job (and its slot) for ~24 minutes."""
    from runner import defaults

    monkeypatch.setattr(defaults, "FINAL_READ_SECONDS", 0.1)
    log = job_dir / "output.log"
    log.write_bytes(lines(0, 600_000))  # ~15 MB: more than a 0.1 s read (at ~1.5 M lines/s)
    w = HelperWatcher("job1", job_dir, None)
    t0 = time.monotonic()
    while not w.done:
        w.poll(store, final=True, seconds=0.1)
        assert time.monotonic() - t0 < 10
    n = len(steps(store))
    assert 0 < n < 600_000 and w.helper is None and steps(store) == list(range(n))
    said = [line for line in log.read_text().splitlines() if line.startswith("runner:")]
    assert len(said) == 1 and said[0].startswith("runner: the rest of this log, from byte ") and "0.1s after the job ended" in said[0]


def test_a_position_or_value_no_column_can_hold_is_none_and_a_line_no_parser_takes_is_skipped(store, job_dir):
    """`step=<26 digits>` once failed the job (SQLite's INTEGER overflowed in the daemon); `Epoch
    <5,000 digits>` killed the helper (Python's limit on int()) until its job's log was given up."""
    big = "9" * 26
    (job_dir / "output.log").write_text(f"step={big} loss=1\nEpoch {'1' * 5000} acc=9\nstep=8 loss=2\nval=1e999\n")
    w = HelperWatcher("job1", job_dir, None)
    while not w.done:
        w.poll(store, final=True, seconds=1)
    assert w.deaths == 0
    assert [(p["step"], p["value"]) for p in store.metrics("job1", "loss")] == [(None, 1.0), (8, 2.0)]
    assert store.metrics("job1", "val")[0]["value"] == float("inf")
    cols, *_ = logbatches.check_batch({**GOOD, "v": [10 ** 400, 3, 0.5], "s": [2 ** 63, -2 ** 63, 1], "e": [None, None, 3]}, 5, 100)
    assert cols.vals == [None, 3.0, 0.5] and cols.steps == [None, -2 ** 63, 1]


def test_the_apis_answers_kept_are_bounded_and_never_stale(tmp_path):
    """GET /jobs answers were kept one per distinct query until 257 of them: four queries of a
    290 MB listing held the daemon at 2.1 GB. Now stale answers go, and at most MAX_BYTES stay."""
    from runner.home import Home
    from runner.http import _Fresh

    class Store:
        version = 1

        def data_version(self):
            return self.version

    home, store = Home(tmp_path / "home").ensure(), Store()
    fresh = _Fresh(home, store)
    big = fresh.MAX_BYTES // 5
    for i in range(12):
        assert fresh.get(("jobs", i), lambda: b"x" * big) == b"x" * big
        assert sum(len(v[1]) for v in fresh.entries.values()) <= fresh.MAX_BYTES
    made = []
    assert fresh.get(("jobs", 11), lambda: made.append(1) or b"y") == b"x" * big and not made  # a fresh one is kept
    store.version = 2  # the store changed: every answer kept is stale
    assert fresh.get(("jobs", 11), lambda: b"new") == b"new"
    assert list(fresh.entries) == [("jobs", 11)]
    assert fresh.get(("jobs", 99), lambda: b"z" * fresh.MAX_BYTES) and ("jobs", 99) not in fresh.entries  # too big to keep


def test_no_process_to_be_had_is_the_daemons_trouble_not_the_jobs(store, job_dir, monkeypatch):
    """A helper that cannot be started (EAGAIN: the host's process limit) is tried again a second
    later, counted as no helper's break; the job's points come once one starts."""
    import errno

    (job_dir / "output.log").write_bytes(lines(0, 30))
    real, fails = logbatches.ParseHelper, [2]

    def spawn(*a, **kw):
        if fails[0]:
            fails[0] -= 1
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(*a, **kw)
    monkeypatch.setattr(logbatches, "ParseHelper", spawn)
    w = HelperWatcher("job1", job_dir, None)
    t0 = time.monotonic()
    while not w.done:
        w.poll(store, final=True, seconds=0.2)
        assert time.monotonic() - t0 < 15
        time.sleep(0.05)
    assert fails == [0] and w.deaths == 0 and not w.gave_up and steps(store) == list(range(30))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_position = st.one_of(st.none(), st.integers(-2 ** 70, 2 ** 70), st.integers(0, 10 ** 6))
_value = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 6, 10 ** 6))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["loss", "acc", "lr"]), _value, _position, _position), max_size=40),
       st.booleans(), st.booleans())
def test_the_wire_carries_whatever_a_parser_gives(pts, steps_all_none, ints_only):
    """Whatever columns a parser gives (nulls among numbers, steps past 64 bits, ints as values,
    NaN), a batch through the wire (encode, then the daemon's decode and check_batch) is what
    check_batch makes of the same batch as JSON lists: the bytes are a faster form, not another
    meaning."""
    if steps_all_none:
        pts = [(n, v, None, e) for n, v, _, e in pts]
    if ints_only:
        pts = [(n, v, s if s is None else s % 1000, e if e is None else e % 7) for n, v, s, e in pts]
    names, vals, steps_, epochs = map(list, zip(*pts)) if pts else ([], [], [], [])
    keys: dict = {}
    k = [keys.setdefault(n, len(keys)) for n in names]
    head = {"offset": 7, "state": {}, "done": False, "keys": list(keys)}
    wire = logparse.encode(dict(head), k, vals, steps_, epochs)
    (msg, types), = batches(wire)
    got = logbatches.check_batch(msg, 0, None, types)[0]
    want = logbatches.check_batch({**head, "k": k, "v": vals, "s": steps_, "e": epochs}, 0, None)[0]
    assert [list(map(repr, c)) for c in got] == [list(map(repr, c)) for c in want]  # (repr: NaN == NaN)
    (msg, types), = batches(wire, raw=True)  # the daemon's way: every column fixed-width is kept in C (store.metrics.Packed)
    got = logbatches.check_batch(msg, 0, None, types)[0]
    sent = json.loads(wire.split(b"\n")[0])
    fixed = packed._packs_c is not None and all(type(sent[c]) is str for c in "kvse")
    assert isinstance(got, packed.Packed) == fixed  # every column fixed-width: in C, and only then
    if fixed:
        got = got.columns()
    assert [list(map(repr, c)) for c in got] == [list(map(repr, c)) for c in want]


@pytest.mark.parametrize("head, payload, why", [
    ({"n": -1, "k": "I"}, b"", "count"),
    ({"n": 1.0, "k": "I"}, b"", "count"),
    ({"n": True, "k": "I"}, b"", "count"),
    ({"n": 1, "k": "d"}, b"\0" * 8, "code"),  # an index as a double
    ({"n": 1, "v": "q"}, b"\0" * 8, "code"),
    ({"n": 1, "s": "Q"}, b"\0" * 8, "code"),
    ({"n": 2, "k": "I"}, b"\0" * 4, "expected"),  # fewer bytes than it says
    ({"n": 1, "k": "I"}, b"\0" * 5, "expected"),
])
def test_a_header_that_says_what_no_helper_sends_is_refused(head, payload, why):
    with pytest.raises(ValueError, match=why):
        logbatches.decode(json.dumps(head).encode(), payload)


def _reader(monkeypatch):
    """A ParseHelper reading a pipe the test writes (no process behind it)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    h = logbatches.ParseHelper.__new__(logbatches.ParseHelper)
    h.fd, h.buf, h._head, h.eof, h.last_heard = r, bytearray(), None, False, time.monotonic()
    return h, w


def test_a_batch_is_taken_once_its_bytes_have_all_come_and_one_too_long_breaks_its_helper(monkeypatch):
    h, w = _reader(monkeypatch)
    wire = logparse.encode({"offset": 3, "state": {}, "done": False, "keys": ["loss"]}, [0, 0], [0.5, 0.25], [1, 2], [None, None])
    os.write(w, wire[:-3])
    assert h.next() is None  # its header came, not yet all its bytes
    os.write(w, wire[-3:] + wire)
    for _ in range(2):
        msg, types = h.next()
        cols = logbatches.check_batch(msg, 0, None, types)[0]
        cols = cols.columns() if isinstance(cols, packed.Packed) else cols  # (in C where built: the same columns)
        assert (cols.names, cols.vals, cols.steps, cols.epochs) == (["loss", "loss"], [0.5, 0.25], [1, 2], [None, None])
    assert h.next() is None
    os.write(w, json.dumps({"offset": 3, "n": logbatches.MAX_MESSAGE // 8, "k": "I", "v": "d", "s": "q", "e": "q"}).encode() + b"\n")
    with pytest.raises(logbatches.HelperBroke, match="longer than"):
        h.next()  # 2.5x MAX_MESSAGE said: refused before the daemon waits for (or holds) any of it
    h, w = _reader(monkeypatch)
    os.write(w, b"[1, 2]\n")
    with pytest.raises(ValueError, match="not an object"):
        h.next()


def test_a_batch_in_c_is_checked_as_its_users_input(monkeypatch, store):
    """What a hostile helper (its user can ptrace it) could send the daemon's C path: an index past the
    batch's names is refused (the helper replaced, nothing stored); a name sent twice is one series,
    as the Python path makes it; more names than points go the lists' way; a metric name past
    MAX_NAME is refused."""
    h, w = _reader(monkeypatch)
    os.write(w, logparse.encode({"offset": 3, "state": {}, "done": False, "keys": ["loss", "acc"]}, [0, 5], [0.5, 0.25], [1, 2], [None, None]))
    with pytest.raises(ValueError, match="names no metric"):
        logbatches.check_batch(*_next(h))
    os.write(w, logparse.encode({"offset": 3, "state": {}, "done": False, "keys": ["loss", "loss"]}, [0, 1, 0], [0.5, 0.25, 0.125],
                                [1, 2, 3], [None, None, None]))
    cols = logbatches.check_batch(*_next(h))[0]
    assert not isinstance(cols, packed.Packed) and cols.names == ["loss"] * 3
    store.record_progress("job1", cols, 3)
    assert [(p["value"], p["step"]) for p in store.metrics("job1")] == [(0.5, 1), (0.25, 2), (0.125, 3)]
    many = [f"m{i}" for i in range(1000)]  # names without points (no helper sends them; a hostile one's millions cost C's path 4x)
    os.write(w, logparse.encode({"offset": 3, "state": {}, "done": False, "keys": many}, [7], [0.5], [1], [None]))
    cols = logbatches.check_batch(*_next(h))[0]
    assert not isinstance(cols, packed.Packed) and cols.names == ["m7"]
    os.write(w, logparse.encode({"offset": 3, "state": {}, "done": False, "keys": ["x" * (logparse.MAX_NAME + 1)]}, [0], [0.5], [1], [None]))
    with pytest.raises(ValueError, match="MAX_NAME"):
        logbatches.check_batch(*_next(h))


def _next(h) -> tuple:
    """The arguments of check_batch (msg, offset, max_offset, types) for the next batch, as the daemon reads it."""
    msg, types = h.next()
    return msg, 0, None, types
