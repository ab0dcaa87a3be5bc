"""Fair share on a root daemon with two real users and two static GPUs: the user who queued first
does not hold the GPUs; the other user's job starts at the first GPU that frees."""

from __future__ import annotations

import json

from conftest import wait_for
from test_users import ALICE, BOB, team_home, users, world  # noqa: F401 (fixtures)

CONFIG = """[gpus]
source = "static"
static = [{uuid = "GPU-0", name = "Static A100", memory_mb = 16384}, {uuid = "GPU-1", name = "Static A100", memory_mb = 16384}]
"""


def _running(user, ids):
    rows = {r["id"]: r for r in json.loads(user.run("ls", "--json").stdout)}
    return [j for j in ids if rows.get(j, {}).get("state") == "running"]


def test_the_second_user_starts_at_the_first_free_gpu_while_the_first_users_older_jobs_wait(world, users):
    with team_home(world, users, CONFIG) as (d, alice, bob, home):
        hers = [alice.job("sleep", "120", extra=("--gpus", "1")) for _ in range(6)]
        wait_for(lambda: len(_running(alice, hers)) == 2, 60, 0.2, "two of her jobs to run")
        first = _running(alice, hers)[0]
        his = bob.job("sleep", "1", extra=("--gpus", "1"))
        # while his job waits, hers say why they wait behind it, and `runner share` ranks him first
        wait_for(lambda: alice.show(hers[2])["reason"] == "fair_share", 30, 0.2, "her waiting jobs to say fair_share")
        assert bob.show(his)["reason"] == "waiting_for_gpus"
        share = json.loads(bob.run("share", "--json").stdout)
        assert share["fairshare"] and [r["user"] for r in share["users"]][:2] == [BOB, ALICE]
        assert {r["user"]: (r["running"], r["queued"]) for r in share["users"]} == {ALICE: (2, 4), BOB: (0, 1)}
        assert share["users"][1]["use_gpu_hours"] > 0 and share["users"][0]["use_gpu_hours"] == 0
        assert "ORDER" in bob.run("share").stdout
        alice.run("cancel", first)  # the first GPU that frees is his
        done = bob.wait(his, timeout=60)
        assert done["state"] == "succeeded" and done["gpus"] == alice.show(first)["gpus"]
        assert all(alice.show(j)["started_at"] is None or alice.show(j)["started_at"] > done["started_at"] for j in hers[2:])
        for j in hers:
            alice.run("cancel", j, check=False)


def test_fair_share_off_keeps_the_plain_order(world, users):
    with team_home(world, users, CONFIG + "\n[scheduler]\nfairshare = false\n") as (d, alice, bob, home):
        hers = [alice.job("sleep", "120", extra=("--gpus", "1")) for _ in range(3)]
        wait_for(lambda: len(_running(alice, hers)) == 2, 60, 0.2, "two of her jobs to run")
        his = bob.job("sleep", "1", extra=("--gpus", "1"))
        wait_for(lambda: bob.show(his)["reason"] == "waiting_for_gpus", 30, 0.2, "his job to wait")
        alice.run("cancel", _running(alice, hers)[0])
        alice.wait(hers[2], "running", timeout=60)  # first come, first served
        assert bob.show(his)["state"] == "queued"
        assert "fair share is off" in bob.run("share").stdout
        for j in hers:
            alice.run("cancel", j, check=False)


def test_a_bad_scheduler_setting_stops_the_daemon_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "config.toml").write_text("[scheduler]\nfairshare_half_life = -2\n")
    r = subprocess.run([sys.executable, "-m", "runner", "daemon", "--http", "none"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RUNNER_HOME": str(tmp_path)})
    assert r.returncode != 0 and "[scheduler] fairshare_half_life: given -2; expected a number of days above 0" in r.stderr


def test_per_user_running_keeps_run_slots_for_the_others(world, users):
    """[daemon] per_user_running: one user's CPU jobs cannot hold every run slot (found by a hostile teammate:
    four `sleep` jobs of his held all of max_running while her job waited with the GPUs idle)."""
    with team_home(world, users, CONFIG + "\n[daemon]\nmax_running = 4\nper_user_running = 2\n") as (d, alice, bob, home):
        his = [bob.job("sleep", "120") for _ in range(4)]
        wait_for(lambda: len(_running(bob, his)) == 2, 60, 0.2, "two of his jobs to run")
        wait_for(lambda: bob.show(his[3])["reason"] == "user_running_limit", 30, 0.2, "his others to say why they wait")
        hers = alice.job("sleep", "1", extra=("--gpus", "1"))
        assert alice.wait(hers, timeout=60)["state"] == "succeeded"
        assert len(_running(bob, his)) == 2
        for j in his:
            bob.run("cancel", j, check=False)


def test_a_bad_per_user_running_stops_the_daemon_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "config.toml").write_text("[daemon]\nper_user_running = 0\n")
    r = subprocess.run([sys.executable, "-m", "runner", "daemon", "--http", "none"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RUNNER_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == (
        "runner: [daemon] per_user_running: given 0; expected a whole number of jobs, 1 or more"), r.stderr


def test_max_priority_keeps_users_from_queueing_past_fair_share_and_root_is_not_capped(world, users):
    # priority wins over fair share: with [scheduler] max_priority a teammate cannot take the head
    # of the queue by asking 1000, neither through `runner submit` nor by writing the spool by hand
    import time
    from pathlib import Path

    with team_home(world, users, CONFIG + "[scheduler]\nmax_priority = 0\n") as (d, alice, bob, home):
        r = bob.run("submit", "--priority", "1000", "--", "true", check=False)
        assert r.returncode == 2 and r.stderr.strip() == (
            "runner: priority: given 1000; expected at most 0 on this server ([scheduler] max_priority; only root queues above it)")
        rec = {"id": "prio0001", "spec": {"command": ["true"], "priority": 1000}, "submitted_at": time.time()}
        bob.python(f"import json\nopen({str(Path(home) / 'spool' / '0001-prio0001.job.json')!r}, 'w').write({json.dumps(json.dumps(rec))})")
        reason = Path(home) / "spool" / "quarantine" / "0001-prio0001.job.json.reason"
        wait_for(reason.exists, 10, what="his hand-written record to be set aside")
        assert "priority: given 1000; expected at most 0" in reason.read_text()
        assert "prio0001" not in bob.run("ls", "--all").stdout
        low = bob.run("submit", "--priority", "-5", "--", "true").stdout.strip().splitlines()[-1]  # lower is anyone's
        assert bob.wait(low)["state"] == "succeeded"
        import os
        import subprocess
        import sys

        root = subprocess.run([sys.executable, "-m", "runner", "submit", "--priority", "1000", "--", "true"], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "RUNNER_HOME": str(home)})
        assert root.returncode == 0, root.stderr  # root's jobs are not capped
        mine = root.stdout.strip().splitlines()[-1]
        assert bob.wait(mine)["state"] == "succeeded" and bob.show(mine)["priority"] == 1000


def test_a_bad_max_priority_stops_the_daemon_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "config.toml").write_text("[scheduler]\nmax_priority = 5000\n")
    r = subprocess.run([sys.executable, "-m", "runner", "daemon", "--http", "none"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RUNNER_HOME": str(tmp_path)})
    assert r.returncode != 0 and "[scheduler] max_priority: given 5000; expected a whole number from -1000 to 1000" in r.stderr
