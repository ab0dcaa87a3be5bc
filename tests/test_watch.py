"""The log watcher on its own: reads in chunks and batches, restarts from its saved offset and
parser state, waits for whole lines, caps what one look reads, and records checkpoints."""

from __future__ import annotations

import json
import os

import pytest

from runner import defaults, watch
from runner.store import Store
from runner.watch import LogWatcher, tail_lines


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db")
    s.insert_job({"id": "job1", "name": "x", "user": "u", "uid": 0, "kind": "command", "spec": {}, "gpus": [], "after": []})
    return s


@pytest.fixture
def job_dir(tmp_path):
    d = tmp_path / "job1"
    d.mkdir()
    return d


def append(path, text: str | bytes):
    with open(path, "ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def losses(store):
    return [(m["step"], m["value"]) for m in store.metrics("job1", "loss")]


def test_a_line_split_across_writes_is_read_once_whole(store, job_dir):
    log = job_dir / "output.log"
    w = LogWatcher("job1", job_dir, None)
    append(log, "step=1 loss=0.5\nstep=2 lo")
    assert w.poll(store) == 1
    assert store.get_job("job1")["log_offset"] == len("step=1 loss=0.5\n")  # not past the half line
    append(log, "ss=0.25\n")
    assert w.poll(store) == 1
    assert losses(store) == [(1, 0.5), (2, 0.25)]


def test_an_unterminated_last_line_is_read_at_the_end(store, job_dir):
    log = job_dir / "output.log"
    append(log, "step=1 loss=1\nstep=2 loss=2")
    w = LogWatcher("job1", job_dir, None)
    assert w.poll(store) == 1
    assert w.poll(store, final=True) == 1
    assert losses(store) == [(1, 1.0), (2, 2.0)]
    assert store.get_job("job1")["log_offset"] == log.stat().st_size


def test_one_transaction_per_batch_with_its_offset(store, job_dir, monkeypatch):
    monkeypatch.setattr(defaults, "METRICS_BATCH_BYTES", 4096)
    text = "".join(f"step={i} loss={i}\n" for i in range(2000))
    append(job_dir / "output.log", text)
    calls = []
    real = store.record_progress
    monkeypatch.setattr(store, "record_progress", lambda jid, pts, off, st=None, **kw: (calls.append((len(pts), off)), real(jid, pts, off, st, **kw)))
    LogWatcher("job1", job_dir, None).poll(store, final=True)
    assert len(calls) >= len(text) // 4096  # one per 4 KiB batch, not one for the whole read
    offsets = [off for _, off in calls]
    assert offsets == sorted(offsets) and offsets[-1] == len(text)
    # each batch's offset is just past the lines whose points it holds
    assert sum(n for n, _ in calls) == 2000
    assert [s for s, _ in losses(store)] == list(range(2000))


def test_restart_from_saved_offset_and_parser_state_reads_on_without_repeats(store, job_dir):
    log = job_dir / "output.log"
    # the generic parser keeps the epoch it last saw: that state must survive a restart
    append(log, "epoch 3\nstep=1 loss=1\n")
    LogWatcher("job1", job_dir, None).poll(store)
    saved = store.get_job("job1")
    append(log, "step=2 loss=2\n")
    w2 = LogWatcher("job1", job_dir, None, saved["log_offset"], saved["parser_state"])
    w2.poll(store, final=True)
    pts = store.metrics("job1", "loss")
    assert [(p["step"], p["value"]) for p in pts] == [(1, 1.0), (2, 2.0)]
    assert [p["epoch"] for p in pts] == [3, 3]  # the epoch seen before the restart still applies after it


def test_lines_without_metrics_still_move_the_saved_offset(store, job_dir):
    # a daemon restarted after a long stretch of chatter reads on from its end, not from the last metric
    log = job_dir / "output.log"
    append(log, "step=1 loss=1\n")
    w = LogWatcher("job1", job_dir, None)
    assert w.poll(store) == 1
    append(log, "downloading weights\nepoch 2\n")
    assert w.poll(store) == 0
    saved = store.get_job("job1")
    assert saved["log_offset"] == log.stat().st_size and saved["parser_state"]["epoch"] == 2


def test_progress_redraws_are_collapsed_and_a_line_is_read_once(store, job_dir):
    # tqdm-style redraws: many \r segments, one newline; the parser sees the line as a person would
    append(job_dir / "output.log", "".join(f"\rstep={i} loss={i / 10}" for i in range(1, 50)) + "\n")
    LogWatcher("job1", job_dir, None).poll(store, final=True)
    assert losses(store) == [(49, 4.9)]  # the last redraw, as the screen showed it: not 49 points, nor none
    assert store.get_job("job1")["log_offset"] == (job_dir / "output.log").stat().st_size


def test_one_look_reads_at_most_poll_bytes(store, job_dir, monkeypatch):
    monkeypatch.setattr(watch, "POLL_BYTES", 64 << 10)
    monkeypatch.setattr(watch, "READ_CHUNK", 16 << 10)
    text = "".join(f"step={i} loss={i}\n" for i in range(40000))  # ~760 KB
    append(job_dir / "output.log", text)
    w = LogWatcher("job1", job_dir, None)
    w.poll(store)
    first = store.get_job("job1")["log_offset"]
    assert 0 < first <= (64 << 10)
    looks = 1
    while store.get_job("job1")["log_offset"] < len(text):
        w.poll(store)
        looks += 1
        assert looks < 100
    assert looks >= len(text) // (64 << 10)
    assert [s for s, _ in losses(store)] == list(range(40000))


def test_missing_log_is_not_an_error_until_it_appears(store, job_dir):
    w = LogWatcher("job1", job_dir, None)
    assert w.poll(store) == 0
    append(job_dir / "output.log", "step=1 loss=1\n")
    assert w.poll(store) == 1


def test_checkpoints_new_changed_and_in_progress(store, job_dir):
    ck = job_dir / "checkpoints"
    ck.mkdir()
    w = LogWatcher("job1", job_dir, None, checkpoints=["checkpoints/*.pth", "checkpoints/**/*.bin"])
    (ck / "last.pth").write_bytes(b"x" * 10)
    (ck / "best.pth.tmp").write_bytes(b"x")  # not matched: still being written
    (ck / "sub.tmp.1").mkdir()
    (ck / "sub.tmp.1" / "w.bin").write_bytes(b"x")  # inside a folder being written
    w.poll(store)
    assert [(os.path.basename(a["path"]), a["size"]) for a in store.artifacts("job1")] == [("last.pth", 10)]
    w.poll(store)
    assert len(store.artifacts("job1")) == 1  # unchanged: not recorded again
    (ck / "last.pth").write_bytes(b"x" * 20)
    os.utime(ck / "last.pth", ns=(1, 1))
    w.poll(store)
    assert [a["size"] for a in store.artifacts("job1")] == [20]  # one row per file, its size refreshed


def test_a_checkpoint_that_is_someone_elses_file_is_not_recorded(store, job_dir, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file another owner")
    (job_dir / "checkpoints").mkdir()
    other = tmp_path / "secret.pth"
    other.write_bytes(b"s")
    os.chown(other, 12345, 12345)
    (job_dir / "checkpoints" / "link.pth").symlink_to(other)
    w = LogWatcher("job1", job_dir, None, checkpoints=["checkpoints/*.pth"], owner=4242)
    w.poll(store)
    assert store.artifacts("job1") == []


def test_tail_lines_reads_only_the_end_and_resolves_redraws(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"x" * (5 << 20) + b"\n" + b"".join(b"line %d\n" % i for i in range(100)) + b"a\rb\rfinal")
    assert tail_lines(log, 3) == ["line 98", "line 99", "final"]
    assert tail_lines(log, 3, max_bytes=8) == ["final"]  # the last 8 bytes (\rb\rfinal), resolved
    cut = tmp_path / "cut"
    cut.write_bytes(b"a long first line\nline 1\nline 2\n")
    # a cap that ends inside a line: that partial line is not shown as if it were whole
    assert tail_lines(cut, 5, max_bytes=len(b"line 1\nline 2\n") + 4) == ["line 1", "line 2"]
    assert tail_lines(tmp_path / "none", 5) == []
    assert tail_lines(log, 0) == []


def test_only_the_jobs_own_regular_files_are_checkpoints(store, job_dir, tmp_path):
    """Never through a link (the file or a folder on its way), never a FIFO (opening one would
    block the daemon), never a file of someone else (the daemon's own included) or one with
    another name elsewhere; each recorded checkpoint's identity is kept in the run folder."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give files other owners")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ck = job_dir / "ckpt"
    ck.mkdir()
    os.chown(job_dir, 4242, 4242)
    os.chown(ck, 4242, 4242)
    mine = ck / "mine.pt"
    mine.write_bytes(b"w" * 5)
    os.chown(mine, 4242, 4242)
    rootfile = tmp_path / "root-secret"
    rootfile.write_bytes(b"root")
    (ck / "daemons.pt").write_bytes(b"made by root")  # the daemon's (root's) own file is not the job's
    os.link(rootfile, ck / "hardlink.pt")
    (ck / "link.pt").symlink_to(mine)
    os.mkfifo(ck / "fifo.pt")
    os.chown(ck / "fifo.pt", 4242, 4242)
    (job_dir / "up").symlink_to(ck)  # a folder reached through a link
    (ck / "loop").symlink_to(".")  # and a link that loops
    w = LogWatcher("job1", job_dir, None, checkpoints=["ckpt/*.pt", "up/*.pt", "**/*.pt", "../*.pt"], owner=4242,
                   log_path=run_dir / "output.log")
    w.poll(store)  # returns: the FIFO is not opened
    assert [a["path"] for a in store.artifacts("job1")] == [str(mine)]
    ident = json.loads((run_dir / watch.IDENTITIES).read_text())
    st = mine.stat()
    assert ident == {str(mine): [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]}
    with pytest.raises(watch.Refused, match="symbolic link"):
        watch.open_job_file(job_dir, "up/mine.pt", 4242)
    with pytest.raises(watch.Refused, match="not a regular file"):
        watch.open_job_file(job_dir, "ckpt/fifo.pt", 4242)
    with pytest.raises(watch.Refused, match="not by the job's user"):
        watch.open_job_file(job_dir, "ckpt/hardlink.pt", 4242)
    os.chown(ck / "hardlink.pt", 4242, 4242)
    with pytest.raises(watch.Refused, match="2 hard links"):
        watch.open_job_file(job_dir, "ckpt/hardlink.pt", 4242)
    # a watcher made again (the daemon restarted) knows what it recorded
    again = LogWatcher("job1", job_dir, None, checkpoints=["ckpt/*.pt"], owner=4242, log_path=run_dir / "output.log")
    assert again._known == {str(mine): watch.Identity(*ident[str(mine)])}


def test_a_time_budget_stops_after_one_batch_and_the_next_look_reads_on(store, job_dir, monkeypatch):
    # the daemon's pass shares its time among the running jobs: a look with `seconds` spent stops
    # after the batch that spent them and says it is behind; every point is stored once in the end
    monkeypatch.setattr(defaults, "METRICS_BATCH_BYTES", 4096)
    text = "".join(f"step={i} loss={i}\n" for i in range(20000))  # ~370 KB
    append(job_dir / "output.log", text)
    w = LogWatcher("job1", job_dir, None)
    w.poll(store, seconds=0)
    assert w.behind and 0 < store.get_job("job1")["log_offset"] <= 4096
    looks = 1
    while w.behind:
        w.poll(store, seconds=0)
        looks += 1
    assert looks >= len(text) // 4096
    assert w.poll(store) == 0 and not w.behind and not w.done  # (running: not done until a final look)
    assert [s for s, _ in losses(store)] == list(range(20000))


def test_the_last_look_at_an_ended_job_can_take_several_passes(store, job_dir, monkeypatch):
    # a final look with a time budget reads on over several calls, `done` only once it reached the
    # end, where a last line without its newline counts too
    monkeypatch.setattr(defaults, "METRICS_BATCH_BYTES", 4096)
    append(job_dir / "output.log", "".join(f"step={i} loss={i}\n" for i in range(5000)) + "step=5000 loss=5000")
    w = LogWatcher("job1", job_dir, None)
    w.poll(store, final=True, seconds=0)
    assert not w.done and w.behind
    while not w.done:
        w.poll(store, final=True, seconds=0)
    assert [s for s, _ in losses(store)] == list(range(5001))


def test_what_is_read_after_the_end_is_capped_over_all_the_final_looks(store, job_dir, monkeypatch):
    monkeypatch.setattr(defaults, "METRICS_BATCH_BYTES", 4096)
    monkeypatch.setattr(watch, "FINAL_BYTES", 20000)
    append(job_dir / "output.log", "".join(f"step={i} loss={i}\n" for i in range(20000)))
    w = LogWatcher("job1", job_dir, None)
    looks = 0
    while not w.done:
        w.poll(store, final=True, seconds=0)
        looks += 1
        assert looks < 100
    assert 20000 - 4096 < store.get_job("job1")["log_offset"] <= 20000 + 64  # (+ the cut line, kept whole)
