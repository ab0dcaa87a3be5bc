"""What a job names is read as its submitter, never as the root daemon: the HTTP and dashboard
submits are validated by a helper that has dropped to her, and a job's dataset is read,
converted and placed by such a helper at prepare. Two real users (useradd) and a root daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_users import ALICE, BOB, SYSTEM_PY, User, team, users, world  # noqa: F401

pytestmark = pytest.mark.shared_envs  # its homes reuse the session's framework envs (tests/envcache.py)

SECRET = "alice's secret"


def _secret(alice: User) -> Path:
    return Path(alice.pw.pw_dir) / "secret.txt"


def _his(bob: User, rel: str) -> Path:
    """A new path in his home (a fresh folder each time: a link planted by an earlier run is never written through)."""
    import tempfile

    base = Path(tempfile.mkdtemp(dir=bob.pw.pw_dir))
    os.chown(base, bob.uid, bob.pw.pw_gid)
    return base / rel


def _give(path: Path, user: User):
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), user.uid, user.pw.pw_gid)
    os.lchown(path, user.uid, user.pw.pw_gid)


def test_a_posted_job_reads_its_files_as_its_submitter(team):
    """POST /jobs with a requirements file or a dataset of someone else's: read as the poster, refused."""
    d, alice, bob, home = team
    token = bob.run("token").stdout.strip()
    secret = _secret(alice)
    for spec, field in (({"command": ["true"], "env": {"requirements_file": str(secret)}}, "env.requirements_file"),
                        ({"command": ["true"], "env": {"requirements_file": "/etc/shadow"}}, "env.requirements_file"),
                        ({"model": "timm/resnet18", "dataset": {"path": str(secret.parent)}}, "dataset.path")):
        status, body = d.post("/jobs", token, spec)
        assert status in (409, 422), (status, body)
        text = str(body)
        assert SECRET not in text and "root:" not in text, text
        assert field in body["error"] or "not readable" in body["error"] or "Permission denied" in body["error"], body
    assert not any(j["user"] == BOB for j in d.get("/jobs")[1]["jobs"])  # nothing was queued
    # his own files are his to use: a posted job is spooled as him and runs as him
    status, body = d.post("/jobs", token, {"command": [SYSTEM_PY, str(bob.world / "jobs.py"), "whoami"]})
    assert status == 201 and body["user"] == BOB, body
    job = bob.wait(body["id"])
    assert job["state"] == "succeeded" and job["user"] == BOB
    assert f"uid={bob.uid} " in bob.logs(body["id"])
    assert d.proc.poll() is None


def test_a_dataset_is_converted_as_its_submitter(team):
    """A DOTA label swapped for a link to her 0600 file after submit: the conversion runs as him and
    cannot read it; neither the job's log, its note nor any view shows a line of hers."""
    d, alice, bob, home = team
    from runner.synth_tasks import make_dota

    ds = make_dota(_his(bob, "dota"), train=4, val=2)
    _give(ds, bob)
    blocker = bob.job("sleep", "6")
    bob.wait(blocker, "running")
    f = _his(bob, "obb.yaml")
    f.write_text(f"model: ultralytics/yolov8n-obb\ndataset: {{path: {ds}, format: dota}}\nafter: [{blocker}]\nenv: system\n"
                 "train: {epochs: 1, input_size: 64, pretrained: false}\n")
    _give(f, bob)
    jid = bob.run("submit", f).stdout.strip().splitlines()[-1]
    label = next((ds / "train" / "labelTxt").glob("*.txt"))
    label.unlink()
    os.symlink(_secret(alice), label)
    os.lchown(label, bob.uid, bob.pw.pw_gid)
    job = bob.wait(jid, timeout=120)
    assert job["state"] == "failed", job  # env: system has no ultralytics: it ends at its first import
    assert "cannot read it (Permission denied)" in bob.logs(jid)  # the converter, as him, could not read her file
    views = [bob.logs(jid), str(bob.show(jid)), str(alice.show(jid)), str(d.get(f"/jobs/{jid}")[1])]
    assert not any(SECRET in v for v in views), views
    # the converted dataset, had it been made, is his alone
    cache = home / "datasets" / str(bob.uid)
    assert not cache.exists() or (cache.stat().st_uid == bob.uid and cache.stat().st_mode & 0o077 == 0)
    assert d.proc.poll() is None


def test_a_dataset_conversion_is_written_as_its_submitter(team):
    """The conversion of a good DOTA set: made by the helper as him, in his own 0700 cache."""
    d, alice, bob, home = team
    from runner.synth_tasks import make_dota

    ds = make_dota(_his(bob, "dota-ok"), train=4, val=2)
    _give(ds, bob)
    f = _his(bob, "obb-ok.yaml")
    # env: system (no env build): the job ends at its first import, after its dataset was converted
    f.write_text(f"model: ultralytics/yolov8n-obb\ndataset: {{path: {ds}, format: dota}}\nenv: system\n"
                 "train: {epochs: 1, input_size: 64, pretrained: false}\n")
    _give(f, bob)
    jid = bob.run("submit", f).stdout.strip().splitlines()[-1]
    bob.wait(jid, timeout=120)
    assert "dataset dota -> " in bob.logs(jid)
    cache = home / "datasets" / str(bob.uid)
    made = [Path(r) / n for r, _, fs in os.walk(cache) for n in fs]
    assert made and all(p.stat().st_uid == bob.uid for p in made)
    assert cache.stat().st_uid == bob.uid and cache.stat().st_mode & 0o077 == 0
    jd = home / "jobs" / bob.show(jid)["id"]
    assert (jd / "job.json").stat().st_uid == bob.uid


def test_a_data_failure_tells_others_only_where_to_look(team):
    """A dataset that breaks at prepare: the details (which may quote her files) go to her log; the
    note that everyone sees names only the step."""
    d, alice, bob, home = team
    from runner.synth_tasks import make_dota

    ds = make_dota(_his(bob, "dota-gone"), train=4, val=2)
    _give(ds, bob)
    blocker = bob.job("sleep", "5")
    bob.wait(blocker, "running")
    f = _his(bob, "gone.yaml")
    f.write_text(f"model: ultralytics/yolov8n-obb\ndataset: {{path: {ds}, format: dota}}\nafter: [{blocker}]\nenv: system\n")
    _give(f, bob)
    jid = bob.run("submit", f).stdout.strip().splitlines()[-1]
    import shutil

    shutil.rmtree(ds / "train")
    shutil.rmtree(ds / "val")
    job = bob.wait(jid, timeout=60)
    assert (job["state"], job["reason"]) == ("failed", "prepare_failed"), job
    assert "no train/images" in bob.logs(jid)
    assert str(ds) not in job["note"] and "runner logs" in job["note"], job["note"]
    assert alice.show(jid)["note"] == job["note"]
