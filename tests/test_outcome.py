"""The end-reason decision: a table of cases, and every combination of the facts checked against
the stated precedence (cancel > timeout > spawn error > exit 0 > adapter's reason > OOM in log >
signal > exit code)."""

from __future__ import annotations

import itertools

import pytest

from runner.outcome import decide, host_oom_note, oom_in
from runner.states import JobState

S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


@pytest.mark.parametrize("exit_info, failure, flags, expected", [
    ({"exit_code": 0}, None, {}, (S, None)),
    ({"exit_code": 3}, None, {}, (F, "exit_code")),
    ({"exit_code": None, "signal": 9}, None, {}, (F, "killed_by_signal")),
    ({"exit_code": None, "spawn_error": "No such file"}, None, {}, (F, "spawn_failed")),
    ({"exit_code": 1}, {"reason": "oom"}, {}, (F, "oom")),
    ({"exit_code": 1}, {"reason": "bad_config"}, {}, (F, "bad_config")),
    ({"exit_code": 1}, {"reason": "made-up"}, {}, (F, "exit_code")),  # only reasons runner knows
    ({"exit_code": 1}, None, {"oom_in_log": True}, (F, "oom")),
    ({"exit_code": None, "signal": 9}, None, {"oom_in_log": True}, (F, "oom")),
    ({"exit_code": None, "signal": 15}, None, {"cancel_requested": True}, (C, "cancelled_by_user")),
    ({"exit_code": 0}, None, {"cancel_requested": True}, (C, "cancelled_by_user")),
    ({"exit_code": None, "signal": 15}, None, {"timed_out": True}, (F, "timeout")),
    # SIGKILL after the grace period, or a job that exited 0 just as its time ran out: still a timeout
    # (a straggler killed on its GPUs once turned this into killed_by_signal; that path runs with a
    # real daemon in tests/test_gpus.py)
    ({"exit_code": None, "signal": 9}, None, {"timed_out": True}, (F, "timeout")),
    ({"exit_code": 0}, None, {"timed_out": True}, (F, "timeout")),
    ({"exit_code": None, "signal": 9}, None, {"timed_out": True, "cancel_requested": True}, (C, "cancelled_by_user")),
    ({"exit_code": 0, "signal": 9}, None, {}, (F, "killed_by_signal")),
    # SIGKILL while the kernel's out-of-memory killer killed processes on the host (the shim's two
    # looks at /proc/vmstat): the host ran out of memory. Another signal, an exit status, or a
    # count that is not a positive int (exit.json is written where the job's user could) is not it
    ({"exit_code": None, "signal": 9, "host_oom_kills": 2}, None, {}, (F, "oom")),
    ({"exit_code": None, "signal": 15, "host_oom_kills": 2}, None, {}, (F, "killed_by_signal")),
    ({"exit_code": 1, "host_oom_kills": 2}, None, {}, (F, "exit_code")),
    ({"exit_code": None, "signal": 9, "host_oom_kills": True}, None, {}, (F, "killed_by_signal")),
    ({"exit_code": None, "signal": 9, "host_oom_kills": "3"}, None, {}, (F, "killed_by_signal")),
    ({"exit_code": None, "signal": 9, "host_oom_kills": 0}, None, {}, (F, "killed_by_signal")),
    ({"exit_code": None, "signal": 9, "host_oom_kills": 2}, None, {"timed_out": True}, (F, "timeout")),
    ({"exit_code": None, "signal": 9, "host_oom_kills": 2}, None, {"cancel_requested": True}, (C, "cancelled_by_user")),
    # a full disk the shim saw: before the adapter's reason, never over a success or a cancel
    ({"exit_code": 1, "disk_full": {"folder": "/x"}}, {"reason": "bad_config"}, {}, (F, "disk_full")),
    ({"exit_code": None, "signal": 9, "disk_full": {"folder": "/x"}}, None, {"oom_in_log": True}, (F, "disk_full")),
    ({"exit_code": 0, "disk_full": {"folder": "/x"}}, None, {}, (S, None)),
    ({"exit_code": 1, "disk_full": {"folder": "/x"}}, None, {"cancel_requested": True}, (C, "cancelled_by_user")),
])
def test_table(exit_info, failure, flags, expected):
    assert tuple(decide(exit_info, failure, **flags)) == expected


def test_every_combination_follows_the_precedence():
    exits = [{"exit_code": 0}, {"exit_code": 2}, {"exit_code": None, "signal": 9},
             {"exit_code": None, "spawn_error": "x"}, {"exit_code": None, "signal": 9, "host_oom_kills": 1}]
    failures = [None, {"reason": "oom"}, {"reason": "bad_config"}]
    for ex, fa, cancel, timeout, oom in itertools.product(exits, failures, *[(False, True)] * 3):
        got = decide(ex, fa, cancel_requested=cancel, timed_out=timeout, oom_in_log=oom)
        if cancel:
            want = (C, "cancelled_by_user")
        elif timeout:
            want = (F, "timeout")
        elif ex.get("spawn_error"):
            want = (F, "spawn_failed")
        elif ex.get("exit_code") == 0:
            want = (S, None)
        elif fa:
            want = (F, fa["reason"])
        elif oom or ex.get("host_oom_kills"):
            want = (F, "oom")
        elif ex.get("signal"):
            want = (F, "killed_by_signal")
        else:
            want = (F, "exit_code")
        assert tuple(got) == want, (ex, fa, cancel, timeout, oom)


def test_oom_in_log():
    assert oom_in(["x", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"])
    assert oom_in(["MemoryError"]) and not oom_in(["loss=0.3", "memory_mb=100"])


def test_host_oom_note():
    assert "killed by the kernel's out-of-memory killer" in host_oom_note({"signal": 9, "host_oom_kills": 1})
    assert "killed 3 process(es) on the host while this job ran" in host_oom_note({"exit_code": 1, "host_oom_kills": 3})
    assert host_oom_note({"signal": 9}) is None and host_oom_note({"signal": 9, "host_oom_kills": -1}) is None
