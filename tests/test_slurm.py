"""The same jobs on a real Slurm cluster: Debian's slurm-wlm and munge, started here as root by
scripts/slurm-cluster.sh (one slurmctld, two slurmd named n1 and n2 on loopback ports, two fake
GPUs each: character devices made with mknod, declared in gres.conf). One cluster per session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, DaemonProc, Runner, wait_for
from runner.store import Store
from test_users import ALICE, User, users, world  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("slurmctld") or not shutil.which("munged"),
                                reason="needs root and Debian's slurm-wlm and munge (.ci/run installs them)"),
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"
PY = sys.executable


@pytest.fixture(scope="session")
def cluster():
    d = Path(tempfile.mkdtemp(prefix="runner-slurm-", dir="/tmp"))  # slurm.conf must be readable by every submitter
    os.chmod(d, 0o755)
    out = subprocess.run(["bash", str(SCRIPT), "start", str(d)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"the Slurm cluster did not start:\n{out.stdout}\n{out.stderr}"
    env = {"SLURM_CONF": str(d / "slurm.conf")}
    yield d, env
    subprocess.run(["bash", str(SCRIPT), "stop", str(d)], capture_output=True, timeout=60)
    shutil.rmtree(d, ignore_errors=True)


def slurm_home(tmp_path, cluster, extra=""):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'[backend]\nkind = "slurm"\npoll_seconds = 0.3\nrequeue = 1\n{extra}')
    r = Runner(home)
    r.env.update(cluster[1])
    return home, r


def squeue(cluster, *args):
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, env={**os.environ, **cluster[1]}).stdout


def test_a_command_job_with_metrics_runs_through_slurm(tmp_path, cluster):
    home, r = slurm_home(tmp_path, cluster)
    d = DaemonProc(home, r.env, http=False).start()
    try:
        jid = r.submit("--name", "on-slurm", "--gpus", "1", "--parser", "generic", "--", "sh", "-c",
                       "echo gpus=$CUDA_VISIBLE_DEVICES; for e in 0 1 2; do echo \"epoch $e loss=0.$((9 - e))\"; done")
        job = r.wait_state(jid, timeout=60)
        spec = tmp_path / "pinned.json"  # the job file's own Slurm settings
        spec.write_text(json.dumps({"command": ["sh", "-c", "echo on $SLURMD_NODENAME"], "slurm": {"sbatch_args": ["--nodelist=n2"]}}))
        pinned = r.wait_state(r.submit(str(spec)), timeout=60)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"command": "true", "slurm": {"sbatch_args": ["-w n2"]}}))
        refused = r.run("submit", str(bad), check=False)
    finally:
        d.stop()
    assert pinned["state"] == "succeeded" and pinned["node"] == "n2" and "on n2" in r.run("logs", pinned["id"]).stdout
    assert refused.returncode != 0 and "slurm.sbatch_args" in refused.stderr and "starting with --" in refused.stderr
    assert job["state"] == "succeeded", r.run("logs", jid).stdout
    assert job["slurm_job_id"].isdigit() and job["node"] in ("n1", "n2")
    assert [m["value"] for m in Store(home / "runner.db").metrics(jid, "loss")] == [0.9, 0.8, 0.7]
    log = r.run("logs", jid).stdout
    assert f"runner: submitted to Slurm as job {job['slurm_job_id']}" in log and "gpus=0" in log.replace("gpus=1", "gpus=0")
    assert any(t["to_state"] == "queued" and (t["reason"] or "").startswith("slurm: submitted") for t in job["transitions"])


def test_poll_asks_once_and_a_job_slurm_forgot_is_left_out(cluster, monkeypatch):
    from runner.backends import slurm_cli as slurm

    monkeypatch.setenv("SLURM_CONF", cluster[1]["SLURM_CONF"])
    held = subprocess.run(["sbatch", "--parsable", "--hold", "--wrap", "true"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        assert slurm.poll(["999999"]) == {}  # squeue knows none of them: no error, nothing to say
        view = slurm.poll([held, "999999"])
        assert set(view) == {held} and view[held].state == "PENDING" and view[held].reason == "JobHeldUser"
    finally:
        subprocess.run(["scancel", held], check=False)


def test_five_one_gpu_jobs_on_two_nodes_of_two_gpus_never_run_more_than_four_at_once(tmp_path, cluster):
    home, r = slurm_home(tmp_path, cluster)
    marks = tmp_path / "marks"
    marks.mkdir()
    os.chmod(marks, 0o777)
    d = DaemonProc(home, r.env, http=False).start()
    try:
        ids = [r.submit("--gpus", "1", "--workdir", str(marks), "--", "sh", "-c",
                        f"echo $(date +%s.%N) $CUDA_VISIBLE_DEVICES $SLURMD_NODENAME > {marks}/{i}.start; sleep 4; "
                        f"date +%s.%N > {marks}/{i}.end") for i in range(5)]
        # Slurm's own reason (a job it has only just taken says none for a moment: "slurm: pending")
        wait_for(lambda: [j for j in json.loads(r.run("ls", "--json").stdout)
                          if j["state"] == "queued" and j["reason"] in ("slurm: Resources", "slurm: Priority")],
                 30, 0.1, "a job waiting in Slurm's queue with Slurm's reason")
        jobs = [r.wait_state(j, timeout=90) for j in ids]
    finally:
        d.stop()
    assert all(j["state"] == "succeeded" for j in jobs)
    spans = []
    for i in range(5):
        start, gpu, node = (marks / f"{i}.start").read_text().split()
        spans.append((float(start), float((marks / f"{i}.end").read_text()), node, gpu))
    most = max(sum(1 for s in spans if s[0] <= t < s[1]) for t in (s[0] for s in spans))
    assert most == 4, spans  # four GPUs: four at once, the fifth after one ended
    assert {s[2] for s in spans} == {"n1", "n2"} and {s[3] for s in spans} <= {"0", "1"}


def test_cancel_a_running_and_a_waiting_job(tmp_path, cluster):
    home, r = slurm_home(tmp_path, cluster)
    d = DaemonProc(home, r.env, http=False).start()
    try:
        running = r.submit("--", "sh", "-c", "echo started; sleep 300")
        r.wait_state(running, "running", timeout=30)
        held = r.submit("--", "sh", "-c", "sleep 300")
        sid = wait_for(lambda: r.show(held)["slurm_job_id"], 30, what="the second job in Slurm")
        subprocess.run(["scontrol", "hold", sid], env={**os.environ, **cluster[1]}, check=True)
        r.run("cancel", running)
        r.run("cancel", held)
        a, b = r.wait_state(running, timeout=30), r.wait_state(held, timeout=30)
    finally:
        d.stop()
    assert (a["state"], a["reason"]) == ("cancelled", "cancelled_by_user")
    assert (b["state"], b["reason"]) == ("cancelled", "cancelled_by_user")
    left = squeue(cluster, "-t", "pending,running", "-o", "%i")
    assert a["slurm_job_id"] not in left.split() and b["slurm_job_id"] not in left.split()


def test_a_job_past_its_time_limit_ends_as_timeout(tmp_path, cluster):
    home, r = slurm_home(tmp_path, cluster)
    spec = tmp_path / "slow.json"
    spec.write_text(json.dumps({"command": ["sh", "-c", "echo 'epoch 0 loss=1'; sleep 600"], "resources": {"time_limit": 30}}))
    d = DaemonProc(home, r.env, http=False).start()
    try:
        jid = r.submit(str(spec))
        job = r.wait_state(jid, timeout=240)  # Slurm's limits are minutes, checked every 30 s or so
    finally:
        d.stop()
    assert (job["state"], job["reason"]) == ("failed", "timeout"), job
    assert "time limit" in job["note"]


def test_daemon_sigkill_mid_job_nothing_runs_twice(tmp_path, cluster):
    home, r = slurm_home(tmp_path, cluster)
    d = DaemonProc(home, r.env, http=False).start()
    jid = r.submit("--parser", "generic", "--", "sh", "-c", "for e in 0 1 2 3 4 5; do echo \"epoch $e loss=$e\"; sleep 1; done")
    short = r.submit("--parser", "generic", "--", "sh", "-c", "sleep 1; echo 'epoch 0 acc=0.5'; exit 3")
    r.wait_state(jid, "running", timeout=30)
    r.wait_state(short, "running", timeout=30)
    d.kill(signal.SIGKILL)
    wait_for(lambda: (home / "run" / short / "exit.json").exists(), 30, what="the short job to end while the daemon is down")
    time.sleep(1)
    d = DaemonProc(home, r.env, http=False).start()
    try:
        job = r.wait_state(jid, timeout=60)
        ended = r.wait_state(short, timeout=30)
    finally:
        d.stop()
    assert (ended["state"], ended["reason"], ended["exit_code"]) == ("failed", "exit_code", 3)
    assert [m["value"] for m in Store(home / "runner.db").metrics(short, "acc")] == [0.5]
    assert job["state"] == "succeeded"
    assert [m["value"] for m in Store(home / "runner.db").metrics(jid, "loss")] == [0, 1, 2, 3, 4, 5]
    assert r.run("logs", jid).stdout.count("runner: submitted to Slurm") == 1


def test_a_job_whose_node_goes_down_is_submitted_again(tmp_path, cluster):
    home, r = slurm_home(tmp_path, cluster)
    d = DaemonProc(home, r.env, http=False).start()
    try:
        jid = r.submit("--", "sh", "-c", "echo on $SLURMD_NODENAME; sleep 20; echo 'epoch 0 loss=1'")
        job = r.wait_state(jid, "running", timeout=30)
        first = job["node"]
        subprocess.run(["bash", str(SCRIPT), "node-down", str(cluster[0]), first], check=True, env={**os.environ, **cluster[1]})
        try:
            job = wait_for(lambda: (lambda j: j if (j.get("requeues") or 0) == 1 or j["state"] in ("failed", "succeeded") else None)(
                r.show(jid)), 90, 0.5, "the job to be submitted again")
            job = r.wait_state(jid, timeout=120)
        finally:
            subprocess.run(["bash", str(SCRIPT), "node-up", str(cluster[0]), first], check=True, env={**os.environ, **cluster[1]})
    finally:
        d.stop()
    assert job["state"] == "succeeded", job
    assert job["node"] != first and "NODE_FAIL" in (job["note"] or "") and "submitted again (1 of 1)" in job["note"]
    assert (home / "run" / f"{jid}.try1" / "output.log").exists()


@pytest.mark.slow
def test_a_timm_job_trains_on_slurm_in_the_shared_env(tmp_path, cluster, shapes):
    home, r = slurm_home(tmp_path, cluster)
    spec = tmp_path / "timm.json"
    spec.write_text(json.dumps({"name": "slurm-resnet18", "model": "timm/resnet18", "dataset": {"path": str(shapes)},
                                "train": {"epochs": 1, "batch_size": 8, "input_size": 64}}))
    d = DaemonProc(home, r.env, http=False).start()
    try:
        job = r.wait_state(r.submit(str(spec)), timeout=900)
    finally:
        d.stop()
    assert job["state"] == "succeeded", job.get("log_tail")
    assert job["slurm_job_id"] and job["node"] in ("n1", "n2") and job["env_hash"]
    assert {"train_loss", "val_top1"} <= set(job["metrics"]) and any(a["path"].endswith("last.pth") for a in job["artifacts"])


@pytest.mark.skipif(not shutil.which("useradd") or not os.path.exists("/usr/bin/python3"), reason="needs useradd and /usr/bin/python3")
def test_a_teammates_job_is_her_slurm_job(tmp_path, cluster, users, world):
    """Submitted by rn_alice, the job is hers in Slurm (its user, accounting and files)."""
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chmod(home, 0o755)
    (home / "config.toml").write_text('[backend]\nkind = "slurm"\npoll_seconds = 0.3\nshim_python = "/usr/bin/python3"\n')
    d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT), **cluster[1]}, http=False).start()
    try:
        alice = User(users[ALICE], world, home)
        jid = alice.run("submit", "--", "sh", "-c", "id -un; echo 'epoch 0 loss=0.5'").stdout.strip().splitlines()[-1]
        job = alice.wait(jid, timeout=60)
        assert job["slurm_job_id"], (job, alice.logs(jid))
        info = subprocess.run(["scontrol", "show", "job", job["slurm_job_id"]], capture_output=True, text=True,
                              env={**os.environ, **cluster[1]}).stdout
    finally:
        d.stop()  # what she reads below, she reads with the daemon down too
    assert job["state"] == "succeeded" and job["user"] == ALICE, alice.logs(jid)
    assert f"UserId={ALICE}(" in info
    assert ALICE in alice.logs(jid).splitlines()
    assert (home / "run" / jid / "exit.json").stat().st_uid == users[ALICE].pw_uid
