"""runner/atomic.py, the one atomic writer of files and folders (#32): what its callers (the spool, the
quarantine's reasons, the shim's exit.json, the MLflow artifact copy, the check's control sets, a converted
dataset, a repo's clone) rely on."""

from __future__ import annotations

import io
import os
import stat

import pytest

from runner import atomic


def test_a_file_is_put_in_place_whole_with_its_mode_and_nothing_is_left_beside_it(tmp_path):
    target = tmp_path / "a.json"
    atomic.write_json(target, {"x": 1}, 0o600)
    assert target.read_text() == '{"x": 1}' and stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic.write_bytes(target, io.BytesIO(b"y" * (3 << 20)), 0o644, fsync=False)  # a file object, in chunks
    assert target.read_bytes() == b"y" * (3 << 20) and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_rename_leaves_no_temporary_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    with pytest.raises(OSError):
        atomic.write_bytes(tmp_path / "d", b"data")  # a folder with something in it is never replaced
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_a_name_near_name_max_is_written(tmp_path):
    """The quarantine keeps names of up to 230 characters and adds '.N.reason'."""
    target = tmp_path / ("n" * 240 + ".reason")
    atomic.write_bytes(target, b"why\n", 0o600, fsync=False)
    assert target.read_bytes() == b"why\n"


def test_the_temporary_file_can_be_made_elsewhere_and_never_through_a_link(tmp_path):
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / ".tmp").mkdir()
    atomic.write_bytes(tmp_path / "spool" / "1.job.json", b"{}", 0o600, tmp_dir=tmp_path / "spool" / ".tmp")
    assert os.listdir(tmp_path / "spool" / ".tmp") == [] and (tmp_path / "spool" / "1.job.json").read_bytes() == b"{}"


def test_a_reserved_file_is_written_over_and_cut_to_its_data(tmp_path):
    target = tmp_path / "exit.json"
    reserved = atomic.reserve(target, 64 << 10)
    assert reserved and os.fstat(reserved[1]).st_size == 64 << 10
    atomic.write_json(target, {"exit_code": 0}, None, reserved=reserved)
    assert target.read_text() == '{"exit_code": 0}' and os.listdir(tmp_path) == ["exit.json"]


def test_a_folder_is_made_whole_or_not_at_all_and_the_first_maker_keeps_it(tmp_path):
    out = tmp_path / "set"

    def broken(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        atomic.make_dir(out, broken)
    assert os.listdir(tmp_path) == []  # neither the folder nor its temporary one

    seen = []
    atomic.make_dir(out, lambda tmp: (seen.append(stat.S_IMODE(tmp.stat().st_mode)), (tmp / "a").write_text("1")))
    assert seen == [0o700]  # nobody can plant a link in it while it is filled
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # then what a plain mkdir gives
    with pytest.raises(atomic.NotPlaced):
        atomic.make_dir(out, lambda tmp: (tmp / "b").write_text("2"))
    assert os.listdir(out) == ["a"] and os.listdir(tmp_path) == ["set"]


def test_a_file_filled_by_its_name_is_put_in_place_with_its_mode_or_not_at_all(tmp_path):
    """fill_file (runner backup's writer): the filler writes the temporary file by name, never `path` itself."""
    dest = tmp_path / "copy.db"
    dest.write_bytes(b"old")

    def fill(tmp):
        assert os.path.dirname(tmp) == str(tmp_path) and not os.path.samefile(tmp, dest)
        with open(tmp, "wb") as f:
            f.write(b"new")
        return 7

    assert atomic.fill_file(dest, fill, 0o600, fsync_dir=True) == 7
    assert dest.read_bytes() == b"new" and stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["copy.db"]

    def half(tmp):
        with open(tmp, "wb") as f:
            f.write(b"part")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.fill_file(dest, half, 0o600)
    assert dest.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["copy.db"]
