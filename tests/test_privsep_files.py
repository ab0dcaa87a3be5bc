"""What a job wrote, read by the root daemon and its tools: checkpoints, the MLflow mirror's
uploads, the sandbox's /dev/shm, the log and the disk, dataset conversion and inference.

Each attack is made as two real Unix users (rn_alice, rn_bob) against a real root daemon; each
test shows it refused (with a one-line reason where a person sees one) and the daemon alive after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, DaemonProc, wait_for
from runner.store import Store
from test_mlflow import mlflow_server, server  # noqa: F401
from test_users import ALICE, BOB, SYSTEM_PY, User, team, team_home, users, world  # noqa: F401

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd: the tests make real Unix users"),
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)


def job_file(user: User, name: str, spec: dict) -> Path:
    """A job file in the user's home, hers (or his) to submit."""
    f = Path(user.pw.pw_dir) / f"{name}.json"
    f.write_text(json.dumps(spec))
    os.chown(f, user.uid, user.pw.pw_gid)
    return f


def submit(user: User, name: str, spec: dict) -> str:
    """The full id of a job the user submitted from a job file."""
    short = user.run("submit", job_file(user, name, spec)).stdout.strip().splitlines()[-1]
    return user.show(short)["id"]


def daemon_alive(d: DaemonProc) -> bool:
    status, body = d.get("/healthz")
    return d.proc.poll() is None and status == 200


@pytest.fixture
def mirrored(world, users, server):  # noqa: F811
    """A root daemon whose jobs are mirrored to the real MLflow server, with their checkpoints."""
    config = (f'[mlflow]\ntracking_uri = "{server.url}"\nexperiment = "privsep"\n'
              'interval_seconds = 0.2\nartifacts = ["best_checkpoint", "last_checkpoint"]\n')
    with team_home(world, users, config) as t:
        yield t


def sh(script: str, **extra) -> dict:
    """A shell job run in its own job folder, whose checkpoints are ckpt/*.pt there."""
    return {"command": ["/bin/sh", "-c", f'cd "$RUNNER_JOB_DIR" && {script}'], "checkpoints": ["ckpt/*.pt"], **extra}


def test_a_checkpoint_glob_that_leaves_the_job_folder_is_refused_at_submit(team):  # noqa: F811
    d, alice, bob, home = team
    r = bob.run("submit", job_file(bob, "escape", sh("true", checkpoints=["ckpt/*.pt", "../../secrets/ID.json"])), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == ("runner: checkpoints.1: '../../secrets/ID.json' leaves the job folder (..); "
                                "expected a glob inside it, e.g. checkpoints/*.pt"), r.stderr
    r = bob.run("submit", job_file(bob, "abs", sh("true", checkpoints=["/etc/*"])), check=False)
    assert r.returncode == 2 and r.stderr.strip().startswith("runner: checkpoints.0: '/etc/*' is not relative to the job folder")
    # a record written into the spool by hand meets the same rule at the daemon
    rec = {"id": "forged03", "spec": sh("true", checkpoints=["../../secrets/*.json"]), "submitted_at": time.time()}
    bob.python(f"import json\nopen({str(home / 'spool' / '0003-forged03.job.json')!r}, 'w').write({json.dumps(json.dumps(rec))})")
    reason = home / "spool" / "quarantine" / "0003-forged03.job.json.reason"
    wait_for(reason.exists, 10, what="the forged record to be set aside")
    assert "checkpoints.0: '../../secrets/*.json' leaves the job folder" in reason.read_text()
    assert daemon_alive(d)


def test_checkpoints_that_are_not_the_jobs_own_files_never_reach_mlflow(mirrored, server):  # noqa: F811
    d, alice, bob, home = mirrored
    secret = Path(alice.pw.pw_dir) / "secret.txt"
    hers = submit(alice, "with-key", {"command": ["true"], "env_vars": {"API_KEY": "hunter2-of-alice"}})
    alice.wait(hers)
    her_secrets = home / "secrets" / f"{hers}.json"
    assert her_secrets.stat().st_uid == 0 and "hunter2" in her_secrets.read_text()
    root_file = home.parent / f"root-only-{os.getpid()}"
    root_file.write_text("root's secret\n")
    os.chmod(root_file, 0o600)
    jobs = {
        # (a) links to her 0600 file and to her job's secrets (the daemon's own file)
        "links": submit(bob, "links", sh(f"mkdir ckpt && ln -s {secret} ckpt/best.pt && ln -s {her_secrets} ckpt/last.pt")),
        # (b) a real file, recorded (checkpoints are looked at every watch.SCAN_SECONDS), then swapped
        # for a link to her file before the job ends
        "swapped": submit(bob, "swapped", sh(f"mkdir ckpt && echo honest > ckpt/best.pt && sleep 8 && "
                                             f"ln -s {secret} ckpt/link && mv -T ckpt/link ckpt/best.pt")),
        # (c) a hard link to a root-owned file (made here as root: protected_hardlinks stops a user)
        "hardlink": submit(bob, "hardlink", sh("mkdir ckpt && while [ ! -e ckpt/go ]; do sleep 0.1; done")),
        # (d) a FIFO, which blocked the mirror for every job when it was opened
        "fifo": submit(bob, "fifo", sh("mkdir ckpt && mkfifo ckpt/best.pt")),
    }
    jd = home / "jobs" / jobs["hardlink"]
    wait_for(lambda: (jd / "ckpt").is_dir(), 30, what="the hardlink job's folder")
    os.link(root_file, jd / "ckpt" / "best.pt")
    (jd / "ckpt" / "go").touch()
    honest = submit(bob, "honest", sh("mkdir ckpt && echo weights > ckpt/best.pt"))
    store = Store(home / "runner.db", migrate=False)
    for jid in [*jobs.values(), honest]:
        assert bob.wait(jid)["state"] == "succeeded"
    wait_for(lambda: all((store.mlflow_row(j) or {}).get("done") for j in [*jobs.values(), honest]), 60,
             what="every export (the mirror goes on past the hostile ones)")

    def uploaded(jid):
        run_id = store.mlflow_row(jid)["run_id"]
        return [f["path"] for f in server.api("artifacts/list", {"run_id": run_id, "path": "checkpoints"}).get("files", [])]

    assert uploaded(honest) == ["checkpoints/best.pt"]
    for name, jid in jobs.items():
        assert uploaded(jid) == [], name
    assert not [a for a in store.artifacts(jobs["links"])], "a link is never recorded as a checkpoint"
    assert not [a for a in store.artifacts(jobs["hardlink"])], "a root-owned file is not the job's checkpoint"
    assert not [a for a in store.artifacts(jobs["fifo"])], "a FIFO is not a checkpoint"
    tags = server.run(store.mlflow_row(jobs["swapped"])["run_id"])["tags"]
    assert "checkpoints/best.pt (a symbolic link)" in tags["runner.artifacts_skipped"], tags
    held = b"".join(p.read_bytes() for p in (server.folder / "artifacts").rglob("*") if p.is_file())
    assert b"weights" in held
    for leak in (b"alice's secret", b"hunter2", b"root's secret"):
        assert leak not in held, leak
    assert daemon_alive(d)
    root_file.unlink()


def test_each_job_has_its_own_dev_shm(team):  # noqa: F811
    d, alice, bob, home = team
    name = f"runner-shm-{os.getpid()}-{time.time_ns()}"
    his = submit(bob, "shm-writer", {"command": ["/bin/sh", "-c", f"echo bob-was-here > /dev/shm/{name} && echo WROTE && sleep 30"]})
    bob.wait(his, "running")
    wait_for(lambda: "WROTE" in (home / "run" / his / "output.log").read_text(), 30, what="his job to write /dev/shm")
    hers = submit(alice, "shm-reader", {"command": ["/bin/sh", "-c", f"cat /dev/shm/{name} || echo MISSING; ls -a /dev/shm"]})
    assert alice.wait(hers)["state"] == "succeeded"
    out = alice.logs(hers)
    assert "MISSING" in out and "bob-was-here" not in out and name not in out.replace(f"/dev/shm/{name}", ""), out
    assert not (Path("/dev/shm") / name).exists(), "his job wrote into the host's /dev/shm"
    bob.run("cancel", his)
    bob.wait(his)
    assert not (Path("/dev/shm") / name).exists()
    assert daemon_alive(d)


def test_dataset_convert_never_writes_through_a_planted_link(team, tmp_path):  # noqa: F811
    from runner.synth_tasks import make_dota

    d, alice, bob, home = team
    apw = alice.pw
    mine = Path(apw.pw_dir) / f"convert-{os.getpid()}"
    mine.mkdir()
    data = make_dota(mine / "dota", train=2, val=1)
    work = mine / "work"
    work.mkdir()
    notes = mine / "notes.txt"
    notes.write_text("her notes\n")
    subprocess.run(["chown", "-R", f"{apw.pw_uid}:{apw.pw_gid}", str(mine)], check=True)
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=alice.world))
    os.chmod(shared, 0o1777)
    try:
        # his link where she will write: the whole output folder
        bob.python(f"import os\nos.symlink({str(work)!r}, {str(shared / 'out')!r})")
        r = alice.run("dataset", "convert", data, "--from", "dota", "--to", "yolo", "--out", shared / "out", check=False)
        assert r.returncode == 1 and r.stderr.strip() == (f"runner: --out: {shared / 'out'} is a symbolic link (to {work}); "
                                                          "give a new folder"), r.stderr
        assert list(work.iterdir()) == [], "nothing is written through his link"
        # a folder of his, open to all, with a link planted inside where a file will be written
        bob.python(f"import os\nos.mkdir({str(shared / 'his')!r})\nos.chmod({str(shared / 'his')!r}, 0o777)\n"
                   f"os.symlink({str(notes)!r}, {str(shared / 'his' / 'data.yaml')!r})")
        code = (f"import sys\nsys.path[:0] = [{str(alice.world)!r}, {str(alice.world / 'site')!r}]\n"
                "from config_translators import dataset_formats as df\n"
                f"try:\n    df.write_yolo(df.read({str(data)!r}, 'dota'), {str(shared / 'his')!r}, 'yolo')\n"
                "except df.DatasetError as e:\n    print('REFUSED', e.problems[0])\nelse:\n    print('WROTE')")
        out = alice.python(code)
        assert out.startswith("REFUSED") and "data.yaml: is in the way" in out, out
        assert notes.read_text() == "her notes\n"
        # and the ordinary case still works, into a new folder of hers
        written = mine / "yolo"
        r = alice.run("dataset", "convert", data, "--from", "dota", "--to", "yolo", "--out", written)
        assert written.stat().st_uid == alice.uid and (written / "data.yaml").read_text().startswith(f"path: {written}\n")
        assert len(list((written / "labels" / "train").glob("*.txt"))) == 2
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)


def test_a_module_planted_where_she_runs_runner_never_runs_and_her_job_folder_is_all_hers(team):  # noqa: F811
    """`python -m` imports from the folder it starts in first: runner's own helpers (the tile
    cutter, inference, root's env builds and the daemon's Python processes) never start in the
    caller's folder. And the HOME and TMPDIR in her job folder are made by her job, not by root."""
    from runner.synth_tasks import make_dota

    pytest.importorskip("PIL")
    d, alice, bob, home = team
    apw = alice.pw
    mine = Path(apw.pw_dir) / f"plant-{os.getpid()}"
    mine.mkdir()
    data = make_dota(mine / "dota", train=2, val=1)
    subprocess.run(["chown", "-R", f"{apw.pw_uid}:{apw.pw_gid}", str(mine)], check=True)
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=alice.world))
    os.chmod(shared, 0o1777)
    loot = shared / "loot.txt"
    try:
        plant = shared / "adapters"  # his package, where she will type runner
        plant.mkdir()
        (plant / "__init__.py").write_text("")
        (plant / "crop.py").write_text(f"import os\nopen({str(loot)!r}, 'a').write(str(os.getuid()))\n")
        loot.write_text("")
        os.chmod(loot, 0o666)
        bpw = bob.pw
        subprocess.run(["chown", "-R", f"{bpw.pw_uid}:{bpw.pw_gid}", str(plant), str(loot)], check=True)
        subprocess.run(["chmod", "-R", "a+rX", str(plant)], check=True)
        assert (shared / "adapters" / "crop.py").exists()
        r = alice.run("dataset", "convert", data, "--from", "dota", "--to", "yolo-obb", "--out", mine / "tiles", "--tile", "48",
                      "--overlap", "16", cwd=shared)
        assert loot.read_text() == "", "his module ran as her"
        assert "tiles" in r.stdout and len(list((mine / "tiles" / "images" / "train").glob("*__*.png"))) == 8
        jid = alice.job("exit", "0")
        assert alice.wait(jid)["state"] == "succeeded"
        jd = home / "jobs" / jid
        owners = {p.name: p.stat().st_uid for p in jd.iterdir() if p.name in ("home", "tmp")}
        assert owners == {"home": alice.uid, "tmp": alice.uid}, owners
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)


@pytest.fixture
def small_disk_team(world, users):
    """A root daemon whose jobs/ and run/ (job folders and logs) are on one 24 MB tmpfs, with
    [jobs] min_free_mb = 6 and log_max_mb = 1 (skipped where mounts are not allowed)."""
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chmod(home, 0o755)
    disk = Path(tempfile.mkdtemp(prefix="disk-", dir=world))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(disk)], capture_output=True).returncode:
        shutil.rmtree(home)
        pytest.skip("mount is not allowed here: no small disk to fill")
    mounts = []
    for sub in ("jobs", "run"):
        (disk / sub).mkdir()
        (home / sub).mkdir()
        subprocess.run(["mount", "--bind", str(disk / sub), str(home / sub)], check=True)
        mounts.append(home / sub)
    (home / "config.toml").write_text("[jobs]\nmin_free_mb = 6\nlog_max_mb = 1\n")
    d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    try:
        yield d, User(users[ALICE], world, home), User(users[BOB], world, home), home
    finally:
        d.kill(15)
        for m in [*mounts, disk]:
            subprocess.run(["umount", "-l", str(m)], check=False)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)


def test_a_full_disk_kills_no_job_but_the_one_that_needed_it_and_starts_none(small_disk_team):
    d, alice, bob, home = small_disk_team
    talk = ("import time\nfor i in range(80):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.1)\n"
            "print('talker done', flush=True)")
    hers = submit(alice, "talker", {"command": [SYSTEM_PY, "-c", talk]})
    alice.wait(hers, "running")
    wait_for(lambda: "tick 3" in (home / "run" / hers / "output.log").read_text(), 30, what="her job to talk")
    his = submit(bob, "filler", {"command": ["/bin/sh", "-c", 'cd "$RUNNER_JOB_DIR" && head -c 100000000 /dev/zero > fill; exit 1']})
    job = bob.wait(his)
    assert (job["state"], job["reason"]) == ("failed", "disk_full"), job
    assert job["note"].startswith(f"the disk was full: the folder {home / 'jobs' / his} (0 MB free"), job["note"]
    assert os.statvfs(home / "jobs").f_bavail * os.statvfs(home / "jobs").f_frsize < 1 << 20
    job = alice.wait(hers, timeout=60)
    assert (job["state"], job["reason"]) == ("succeeded", None), "her job lived through the full disk"
    # nothing starts below the floor; the wait reason and doctor say why
    waiting = submit(alice, "waits", {"command": ["/bin/sh", "-c", "echo started"]})
    reason = wait_for(lambda: (alice.show(waiting)["reason"] or "").startswith("waiting_for_disk_space"), 20,
                      what="the wait reason") and alice.show(waiting)["reason"]
    assert reason.startswith(f"waiting_for_disk_space: {home / 'jobs'} has 0 MB free, below [jobs] min_free_mb = 6; "), reason
    time.sleep(1)
    assert alice.show(waiting)["state"] == "queued"
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    doc = subprocess.run([sys.executable, "-m", "runner", "doctor"], env=env, capture_output=True, text=True)
    assert doc.returncode == 1 and f"disk            NO: jobs do not start: {reason}" in doc.stdout, doc.stdout
    (home / "jobs" / his / "fill").unlink()  # an admin frees space
    assert alice.wait(waiting)["state"] == "succeeded"
    assert daemon_alive(d)


def test_a_log_past_log_max_mb_is_cut_and_the_job_runs_on(small_disk_team):
    d, alice, bob, home = small_disk_team
    flood = "import sys\nfor i in range(100000): print(f'line {i} ' + 'y' * 60)\nprint('survived', flush=True)"
    his = submit(bob, "flood", {"command": [SYSTEM_PY, "-c", flood]})
    assert bob.wait(his)["state"] == "succeeded"
    log = home / "run" / his / "output.log"
    assert log.stat().st_size <= (1 << 20) + 4096, log.stat().st_size
    text = bob.logs(his)
    assert "runner: this log reached its cap ([jobs] log_max_mb = 1); the output is cut here" in text
    assert "bytes of output were cut here; its last" in text and text.rstrip().endswith("line 99999 " + "y" * 60 + "\nsurvived")
    assert daemon_alive(d)


def _uids_of(marker: str, proc: subprocess.Popen) -> set[int]:
    """The uids of `proc`'s descendants whose command line holds `marker`, seen while it runs (not
    the machine's: a root `runner check` job beside the test is an `adapters` process too)."""
    import psutil

    seen = set()
    while proc.poll() is None:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            break
        for p in kids:
            try:
                with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if marker.encode() in cmd:
                    seen.add(os.stat(f"/proc/{p.pid}").st_uid)
            except OSError:
                continue
        time.sleep(0.01)
    return seen


@pytest.mark.slow
def test_root_runs_inference_on_her_job_as_her_and_her_checkpoint_is_never_unpickled(team):  # noqa: F811
    from runner.synth import make_shapes

    d, alice, bob, home = team
    data = make_shapes(Path(alice.pw.pw_dir) / f"shapes-{os.getpid()}", per_class=4, val_per_class=2)
    subprocess.run(["chown", "-R", f"{alice.uid}:{alice.pw.pw_gid}", str(data)], check=True)
    spec = {"model": "timm/resnet18", "dataset": {"path": str(data), "format": "imagefolder"},
            "train": {"epochs": 1, "batch_size": 4, "input_size": 32, "pretrained": False}, "resources": {"gpus": 0}}
    jid = submit(alice, "timm-job", spec)
    job = alice.wait(jid, timeout=1800)
    assert job["state"] == "succeeded", alice.logs(jid)[-3000:]
    best = next(a["path"] for a in job["artifacts"] if a["path"].endswith("best.pth"))
    python = home / "envs" / job["env_hash"] / "bin" / "python"
    # the adapter saved plain data: it loads with weights_only=True
    r = subprocess.run([str(python), "-c", f"import torch; c = torch.load({best!r}, weights_only=True); "
                        "print(sorted(c), c['meta']['classes'], type(c['step']).__name__)"],
                       capture_output=True, text=True, user=alice.uid, group=alice.pw.pw_gid, extra_groups=[], cwd="/",
                       env={"PATH": "/usr/bin:/bin", "HOME": alice.pw.pw_dir})
    assert r.stdout.strip() == "['meta', 'model', 'optimizer', 'step'] ['circle', 'square', 'triangle'] int", r.stderr[-2000:]
    # root's `runner infer` on her job runs as her
    image = next((data / "val" / "circle").iterdir())
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "runner", "infer", jid, str(image)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    uids = _uids_of("adapters", proc)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["predicted_label"] in ("circle", "square", "triangle")
    assert uids == {alice.uid}, f"the inference ran as {uids}, not as {alice.uid}"
    # her checkpoint swapped for a pickle that runs code when loaded: refused, nothing of it runs
    marker = Path(tempfile.gettempdir()) / f"unpickled-{os.getpid()}"
    alice.python("import os, pickle\nclass Boom:\n    def __reduce__(self):\n"
                 f"        return (os.system, ('id -u > {marker}',))\n"
                 f"open({best!r}, 'wb').write(pickle.dumps(Boom(), protocol=2))")
    r = subprocess.run([sys.executable, "-m", "runner", "infer", jid, str(image)], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and not marker.exists(), (r.stderr, marker.exists() and marker.read_text())
    assert r.stderr.strip() == (f"runner: inference failed: {best}: not a plain checkpoint (tensors, numbers, strings, lists, "
                                "dicts): loading it would run code, so it is refused"), r.stderr
    # and a teammate may not run it at all
    r = bob.run("infer", jid, image, check=False)
    assert r.returncode == 1 and r.stderr.strip() == (f"runner: job {jid}: belongs to {ALICE}; only they (or root, as them) "
                                                      "may run inference with its checkpoints"), r.stderr
    assert daemon_alive(d)
    shutil.rmtree(data, ignore_errors=True)


def test_nobody_loads_a_checkpoint_file_a_teammate_planted(team):  # noqa: F811
    """`runner infer PATH`: loading a checkpoint may run code as whoever loads it. His file is
    refused to her in one line, a sidecar of his beside her file does not choose her loader, and
    root refuses a file of its own in a folder others may write (it could be swapped after the look)."""
    d, alice, bob, home = team
    shared = Path(tempfile.mkdtemp(prefix="lab-", dir="/var/tmp"))
    os.chmod(shared, 0o777)  # a lab folder without the sticky bit
    try:
        his = shared / "best.pt"
        his.write_bytes(b"not a checkpoint")
        os.chown(his, bob.uid, -1)
        img = shared / "x.png"
        img.write_bytes(b"")
        os.chmod(img, 0o644)
        r = alice.run("infer", his, img, check=False)
        assert r.returncode != 0 and f"belongs to {BOB}" in r.stderr and "Traceback" not in r.stderr, r.stderr
        mine = shared / "mine.pt"
        mine.write_bytes(b"x")
        from runner.cli.models_cmd import _sidecar

        (shared / "mine.json").write_text(json.dumps({"framework": "ultralytics"}))
        os.chown(shared / "mine.json", bob.uid, -1)
        os.chown(mine, alice.uid, -1)
        assert _sidecar(mine, ".json") == {}  # his file beside hers chooses nothing
        os.chown(shared / "mine.json", alice.uid, -1)
        assert _sidecar(mine, ".json") == {"framework": "ultralytics"}
        root_file = shared / "root.pt"
        root_file.write_bytes(b"x")
        from conftest import Runner

        r = Runner(home).run("infer", root_file, img, check=False)
        assert r.returncode != 0 and "others may write" in r.stderr, r.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert d.proc.poll() is None


def test_root_starting_the_daemon_or_doctor_in_a_teammates_folder_imports_and_reads_nothing_of_his(world, users, tmp_path, monkeypatch):
    """`python -m runner daemon` typed by root in a folder bob can write (his module there would be
    imported by a later import, as root); and doctor's uv probe, which read a uv.toml in any folder
    above its own (/tmp: his index)."""
    import runner.uvcheck as uvcheck

    bpw = users[BOB]
    his = Path(tempfile.mkdtemp(prefix="his-", dir=world))
    marker = his / "PWNED"
    (his / "watchfiles.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")  # the daemon imports it in a thread
    subprocess.run(["chown", "-R", f"{bpw.pw_uid}:{bpw.pw_gid}", str(his)], check=True)
    os.chmod(his, 0o755)
    home = tmp_path / "state"
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    try:
        p = subprocess.Popen([sys.executable, "-m", "runner", "daemon", "--http", "none"], cwd=his, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: (home / "daemon.json").exists(), 30, 0.1, "the daemon to start")
        time.sleep(1.0)
        p.terminate()
        p.wait(timeout=30)
        assert not marker.exists(), "his module ran as root"
    finally:
        shutil.rmtree(his, ignore_errors=True)
    seen = {}
    real = subprocess.run

    def spy(argv, *a, **kw):
        if argv and "compile" in argv:
            seen["cwd"] = kw.get("cwd")
        return real(argv, *a, **kw)

    monkeypatch.setattr(uvcheck.subprocess, "run", spy)
    from runner.envs import uv_binary

    uvcheck.resolve({"UV_INDEX_URL": "file:///nonexistent"}, uv_binary())
    assert seen.get("cwd") == "/", seen  # no folder a user may write, nor any above it


def _parse_helpers(uid: int, daemon: DaemonProc) -> list[int]:
    """The pids of the daemon's log-parsing helpers (runner.logparse) running as uid."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
            uids, ppid = status.split("Uid:")[1].split("\n")[0].split(), int(status.split("PPid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        if b"runner.logparse" in cmd and uids[0] == str(uid) and ppid == daemon.proc.pid:
            out.append(int(pid))
    return out


def test_her_log_is_parsed_by_a_helper_as_her_and_killing_or_stopping_it_costs_no_one_a_point(team):
    """The root daemon never parses a job's log: a helper dropped to its user does (runner.logparse).
    Bob's helper runs as bob, with no privileges, and is not his to read (not dumpable): the pipe
    to the daemon cannot be his. He may kill or stop his own helper: the daemon starts another from
    the stored offset, his metrics come on with each point once, his job ends, and Alice's job
    beside his loses nothing."""
    d, alice, bob, home = team
    n = 300
    script = f'for i in $(seq 1 {n}); do echo "step=$i loss=0.$i"; sleep 0.02; done'
    his = submit(bob, "printing", {**sh(script), "parser": "generic"})
    hers = submit(alice, "printing", {**sh(script), "parser": "generic"})
    pid = wait_for(lambda: _parse_helpers(bob.uid, d), 60, what="bob's parse helper")[0]
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{bob.uid}\t{bob.uid}\t{bob.uid}\t{bob.uid}" in status and "NoNewPrivs:\t1" in status
    assert "CapEff:\t0000000000000000" in status
    out = bob.python(f"import os\ntry:\n    os.listdir('/proc/{pid}/fd')\n    print('listed')\nexcept PermissionError:\n    print('refused')")
    assert out.strip() == "refused"
    for _ in range(3):  # he kills his helper: another one follows on
        bob.python(f"import os, signal\nos.kill({pid}, signal.SIGKILL)")
        old = pid
        pid = wait_for(lambda: [p for p in _parse_helpers(bob.uid, d) if p != old], 30, what="a new helper")[0]
    bob.python(f"import os, signal\nos.kill({pid}, signal.SIGSTOP)")  # and holds the last one stopped
    assert bob.wait(his, timeout=120)["state"] == "succeeded"
    assert alice.wait(hers, timeout=120)["state"] == "succeeded"
    for user, jid in ((bob, his), (alice, hers)):
        pts = json.loads(user.run("metrics", jid, "--name", "loss", "--json").stdout)["series"]["loss"]
        assert [p["step"] for p in pts] == list(range(1, n + 1)), (user.name, [p["step"] for p in pts][:20])
    wait_for(lambda: not _parse_helpers(bob.uid, d) and not _parse_helpers(alice.uid, d), 10, what="the helpers let go")
    assert daemon_alive(d)
