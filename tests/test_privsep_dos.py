"""What a hostile teammate found to stall the queue for everyone, each closed: a log line that
takes the parser quadratic time, a log file grown by hand without a newline, checkpoint globs over
tens of thousands of files, and helpers she stops to hold the daemon's threads. Two real users
(rn_alice, rn_bob) against a root daemon; the daemon answers throughout."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import LOOPBACK, wait_for
from test_users import ALICE, BOB, SYSTEM_PY, User, team, users, world  # noqa: F401


def _healthz_times(d, seconds: float) -> list[float]:
    """How long /healthz took, sampled for `seconds` (a request that fails counts as 99 s)."""
    out, end = [], time.time() + seconds
    while time.time() < end:
        t0 = time.time()
        try:
            with LOOPBACK.open(d.url + "/healthz", timeout=5) as r:
                ok = r.status == 200 and json.loads(r.read())["ok"]
        except OSError:
            ok = False
        out.append(time.time() - t0 if ok else 99.0)
        time.sleep(0.2)
    return out


def _py(user: User, code: str, *extra) -> str:
    return user.run("submit", *extra, "--", SYSTEM_PY, "-c", code).stdout.strip().splitlines()[-1]


def test_a_line_built_to_make_the_parser_crawl_costs_nothing(team):
    d, alice, bob, home = team
    jid = _py(bob, "import sys\nfor i in range(20): print('a/' * 24000 + '=', flush=True)\nprint('loss=0.5')",
              "--parser", "generic")
    times = _healthz_times(d, 6)
    assert bob.wait(jid)["state"] == "succeeded"
    assert max(times) < 2.0, times
    wait_for(lambda: bob.show(jid)["metrics"].get("loss") == 0.5, 10, what="the metric after the long lines")
    assert d.proc.poll() is None


def test_a_log_grown_by_hand_neither_fills_memory_nor_stalls_the_loop(team):
    d, alice, bob, home = team
    jid = bob.job("sleep", "60")
    full = bob.wait(jid, "running")["id"]
    log = home / "run" / full / "output.log"
    wait_for(lambda: log.exists() and b"sleeping" in log.read_bytes(), 30, what="the job's first line")  # (else it lands after the 300 MB)
    rss0 = psutil.Process(d.proc.pid).memory_info().rss
    # as him: his log is his file; a sparse 300 MB of zeros with no newline
    bob.python(f"import os\nos.truncate({str(log)!r}, 300 << 20)")
    assert log.stat().st_size == 300 << 20
    times = _healthz_times(d, 8)
    assert max(times) < 2.0, times
    assert psutil.Process(d.proc.pid).memory_info().rss - rss0 < 96 << 20
    mine = alice.job("exit", "0")
    assert alice.wait(mine)["state"] == "succeeded"  # the queue goes on
    bob.run("cancel", full)
    assert bob.wait(full)["state"] == "cancelled"
    assert d.proc.poll() is None


def test_checkpoint_globs_over_many_files_cost_a_bounded_look(team):
    d, alice, bob, home = team
    code = ("import os, time\nd = os.environ['RUNNER_JOB_DIR']\n"
            "for i in range(30000): open(os.path.join(d, f'f{i}.pt'), 'w').close()\n"
            "print('made', flush=True)\ntime.sleep(120)")
    spec = {"command": [SYSTEM_PY, "-c", code],
            "checkpoints": ["**", "*", "**/*", "./**", "./*", "./**/*", "**/**", "*/**", "**/./*", "./**/**", "*.pt", "f*"]}
    f = Path(bob.pw.pw_dir) / "globs.json"
    f.write_text(json.dumps(spec))
    os.chown(f, bob.uid, bob.pw.pw_gid)
    jid = bob.run("submit", f).stdout.strip().splitlines()[-1]
    full = bob.wait(jid, "running")["id"]
    wait_for(lambda: "made" in bob.logs(full), 120, what="the files")
    times = _healthz_times(d, 12)
    assert sorted(times)[len(times) // 2] < 1.0 and max(times) < 5.0, times
    t0 = time.time()
    bob.run("cancel", full)
    bob.wait(full, timeout=30)
    assert time.time() - t0 < 15
    assert len(bob.show(full)["artifacts"]) <= 1000
    assert d.proc.poll() is None


def test_helpers_she_stops_hold_none_of_the_daemons_threads(team):
    d, alice, bob, home = team
    bob_token, alice_token = bob.run("token").stdout.strip(), alice.run("token").stdout.strip()
    done = threading.Event()

    def stopper():  # what he may do to his own processes: stop every helper that runs as him
        while not done.is_set():
            for p in psutil.process_iter(["uids", "cmdline"]):
                try:
                    if p.info["uids"].real == bob.uid and "runner.privsep" in " ".join(p.info["cmdline"] or []):
                        os.kill(p.pid, signal.SIGSTOP)
                except (psutil.Error, ProcessLookupError, TypeError):
                    pass
            time.sleep(0.05)

    def post(token, out):
        req = urllib.request.Request(d.url + "/jobs", data=json.dumps({"command": ["true"]}).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with LOOPBACK.open(req, timeout=60) as r:
                out.append(r.status)
        except urllib.error.HTTPError as e:
            out.append(e.code)
        except OSError:
            out.append(None)

    threading.Thread(target=stopper, daemon=True).start()
    his: list = []
    threads = [threading.Thread(target=post, args=(bob_token, his)) for _ in range(30)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        t0, hers = time.time(), []
        post(alice_token, hers)
        assert hers == [201] and time.time() - t0 < 10, (hers, time.time() - t0)
        for t in threads:
            t.join(60)
    finally:
        done.set()
    assert 429 in his and None not in his, his  # refused at once, or ended by the daemon: never left hanging
    assert d.proc.poll() is None


def test_an_http_inference_never_waits_for_a_busy_users_slot(users):  # noqa: F811
    """The dashboard's infer asks run_as not to wait: with the user's helper slots taken, it is
    refused at once (429), so a flood of one user's requests never holds the server's threads."""
    import time

    from runner import privsep
    from runner.identity import person

    bob = person(users[BOB].pw_uid)
    with privsep._busy_lock:
        privsep._busy[bob.uid] = privsep.HELPERS_PER_USER
    try:
        t0 = time.monotonic()
        with pytest.raises(privsep.Busy, match="requests being checked already"):
            privsep.run_as(bob, "infer", {"home": "/nonexistent", "source": "x", "images": []}, 30.0, None, False)
        assert time.monotonic() - t0 < 0.5
    finally:
        with privsep._busy_lock:
            privsep._busy[bob.uid] = 0
    src = Path(privsep.__file__).parent / "web" / "jobpage.py"
    assert '"infer", payload, 300.0, None, False)' in src.read_text()  # the route asks for exactly that
