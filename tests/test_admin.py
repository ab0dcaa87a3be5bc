"""Day one for the admin and the newcomer (issue #26): a daemon that fails loudly when it cannot
serve HTTP, a doctor that exits non-zero on every problem it prints and reads the running daemon's
own state, `runner synth` and `runner dataset check` for every user and every format, and a job
without `dataset.format` given its model task's usual one (from the registry)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import pytest

from conftest import LOOPBACK, ROOT, DaemonProc, Runner, free_port, wait_for
from test_users import ALICE, SYSTEM_PY, User, team, users, world  # noqa: F401

as_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root and useradd (real users)")


def _env(home: Path, **more) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_HTTP"}
    return {**env, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT), **more}


def _doctor(home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", "doctor", *args], env=_env(home), capture_output=True, text=True, timeout=120)


def _daemon(python: str, home: Path, env: dict):
    """`runner daemon` run by `python` (not this test's interpreter), serving HTTP on a free port."""
    port = free_port()
    log = open(home / "daemon-test.log", "ab")
    proc = subprocess.Popen([python, "-m", "runner", "daemon", "--http", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log)

    def up():
        try:
            return LOOPBACK.open(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
        except OSError:
            assert proc.poll() is None, (home / "daemon-test.log").read_text()[-2000:]
            return False
    wait_for(up, 60, 0.1, "HTTP up")
    return proc, port


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


# -- 1. a daemon that cannot have its HTTP port stops at once, naming it --------------------------------

def test_a_taken_port_stops_the_daemon_at_once_with_one_line_naming_it(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    home = tmp_path / "home"
    try:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "runner", "daemon", "--http", f"127.0.0.1:{port}"], env=_env(home),
                           capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert r.stderr == (f"runner: cannot serve HTTP on 127.0.0.1:{port}: address already in use "
                            "(another daemon? set --http or [daemon] http)\n"), r.stderr
        assert took < 20
        assert not (home / "daemon.json").exists()  # never advertised
        # the same from the config's [daemon] http, with no --http at all
        (home / "config.toml").write_text(f'[daemon]\nhttp = "127.0.0.1:{port}"\n')
        r = subprocess.run([sys.executable, "-m", "runner", "daemon"], env=_env(home), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and f"cannot serve HTTP on 127.0.0.1:{port}: address already in use" in r.stderr, r.stderr
        assert not (home / "daemon.json").exists()
    finally:
        holder.close()


def test_daemon_json_names_what_the_daemon_serves_and_web_login_no_dead_one(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    (home).mkdir()
    (home / "config.toml").write_text(f'[daemon]\nhttp = "127.0.0.1:{port}"\n')  # the config's bind, no --http
    proc = subprocess.Popen([sys.executable, "-m", "runner", "daemon"], env=_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (home / "daemon.json").exists(), 30, what="daemon.json")
        info = json.loads((home / "daemon.json").read_text())
        assert info["http"] == f"127.0.0.1:{port}" and info["pid"] == proc.pid and info["python"] == sys.executable
        wait_for(lambda: LOOPBACK.open(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200, 30, 0.1, "HTTP up")
        r = Runner(home)
        assert r.run("web-login").stdout.startswith(f"http://127.0.0.1:{port}/")
        # a site reached through an SSH tunnel or a proxy says so once, for every user's link
        (home / "config.toml").write_text(f'[daemon]\nhttp = "127.0.0.1:{port}"\n[server]\nurl = "https://gpu1.lab"\n')
        assert r.run("web-login").stdout.startswith("https://gpu1.lab/ui/login?")
        assert r.run("web-login", "--url", "http://localhost:9000").stdout.startswith("http://localhost:9000/")
        (home / "config.toml").write_text(f'[daemon]\nhttp = "127.0.0.1:{port}"\n[server]\nurl = "gpu1.lab"\n')
        bad = r.run("web-login", check=False)
        assert bad.returncode == 1 and bad.stderr.strip() == ("runner: [server] url: given 'gpu1.lab'; expected the dashboard's address, "
                                                            "as http://HOST:PORT or https://HOST")
    finally:
        _stop(proc)
    # the daemon is gone: its daemon.json names a port nobody (or anybody) may serve now
    r = Runner(home).run("web-login", check=False)
    assert r.returncode == 1 and "no daemon runs for" in r.stderr and "http://" not in r.stdout, (r.stdout, r.stderr)


# -- 2. doctor ------------------------------------------------------------------------------------------

def _closed_python(where: Path) -> str:
    """An interpreter other users cannot run: a venv (copied binary) inside a root-only folder
    (`where`, 0700, in an open one), as root's pyenv under /root (0700) is."""
    venv.EnvBuilder(symlinks=False, with_pip=False).create(where / "venv")
    return str(where / "venv" / "bin" / "python")


@as_root
def test_doctor_reads_the_daemons_own_interpreter_and_its_wall_is_a_problem_with_the_fix(world, users):
    site = os.pathsep.join([str(ROOT), *(p for p in sys.path if p.endswith("site-packages"))])
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    os.chmod(home, 0o755)
    closed = Path(tempfile.mkdtemp(prefix="closed-", dir="/tmp"))  # 0700
    try:
        _doctor_on_two_interpreters(world, home, closed, site)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(closed, ignore_errors=True)


def _doctor_on_two_interpreters(world: Path, home: Path, closed: Path, site: str):
    python = _closed_python(closed)
    proc, port = _daemon(python, home, _env(home, PYTHONPATH=site))
    try:
        r = _doctor(home)
        assert r.returncode == 1, r.stdout
        assert "permissions     ok" in r.stdout  # before: permissions alone decided the exit status
        wall = next(line for line in r.stdout.splitlines() if line.startswith("  - python: "))
        assert wall.startswith(f"  - python: {python} (really {python}) cannot be run by other users ({closed} is closed to them)")
        assert f"-m venv --clear {closed / 'venv'}" in wall and "restart the daemon" in wall
        assert f"http            served on 127.0.0.1:{port} by this daemon (pid {proc.pid})" in r.stdout
        doc = json.loads(_doctor(home, "--json").stdout)
        assert doc["daemon_python"] == python and any(p.startswith("python: ") for p in doc["problems"])
    finally:
        _stop(proc)
    # a daemon on a Python everyone can run (the system's, as docs/server.md installs it): no such
    # problem, although this doctor itself runs on an interpreter of its own
    proc, port = _daemon(SYSTEM_PY, home, _env(home, PYTHONPATH=f"{world}:{world / 'site'}", PYTHONDONTWRITEBYTECODE="1"))
    try:
        r = _doctor(home)
        assert "python: " not in r.stdout and "cannot be run by other users" not in r.stdout, r.stdout
        assert f"(the daemon's: {SYSTEM_PY})" in r.stdout
        assert r.returncode == 0, r.stdout
    finally:
        _stop(proc)


@as_root
def test_doctor_says_which_address_the_daemon_really_serves_and_fails_when_it_is_not_there(team, tmp_path):
    d, alice, bob, home = team
    r = _doctor(home)
    assert f"http            served on 127.0.0.1:{d.port} by this daemon (pid {d.proc.pid})" in r.stdout, r.stdout
    info_file = home / "daemon.json"
    info = json.loads(info_file.read_text())
    other = DaemonProc(tmp_path / "other", _env(tmp_path / "other")).start()  # another daemon, on another port
    try:
        info_file.write_text(json.dumps({**info, "http": f"127.0.0.1:{other.port}"}))  # as an older runner left it
        r = _doctor(home)
        assert r.returncode == 1
        assert (f"  - http: 127.0.0.1:{other.port} is answered by another daemon (pid {other.proc.pid}, home {tmp_path / 'other'}), "
                f"not by this one (pid {d.proc.pid})") in r.stdout, r.stdout
        dead = free_port()
        info_file.write_text(json.dumps({**info, "http": f"127.0.0.1:{dead}"}))
        r = _doctor(home)
        assert r.returncode == 1
        assert f"  - http: the daemon (pid {d.proc.pid}) says it serves 127.0.0.1:{dead}, but http://127.0.0.1:{dead}/status does not answer" in r.stdout
    finally:
        info_file.write_text(json.dumps(info))
        other.stop()


# -- 3, 4, 5. synth, dataset check and the usual format, as a user -----------------------------------------

@as_root
def test_a_user_makes_checks_and_trains_on_a_relative_yolo_set_without_naming_its_format(team):
    d, alice, bob, home = team
    mine = Path(alice.pw.pw_dir)
    shutil.rmtree(mine / "data", ignore_errors=True)
    out = alice.run("synth", "yolo", "data/yolo").stdout
    assert f"train with: dataset: {{path: {mine / 'data' / 'yolo' / 'data.yaml'}, format: yolo}}" in out, out
    yaml = (mine / "data" / "yolo" / "data.yaml").read_text()
    root = Path(next(l for l in yaml.splitlines() if l.startswith("path:")).split(":", 1)[1].strip())
    assert (root if root.is_absolute() else mine / "data" / "yolo" / root) == mine / "data" / "yolo"
    assert (mine / "data" / "yolo" / "data.yaml").stat().st_uid == alice.uid
    r = alice.run("dataset", "check", "--format", "yolo", "data/yolo")
    assert r.stdout.strip().endswith("data/yolo (yolo, for object_detection): no problems"), r.stdout
    # a model job without dataset.format: an Ultralytics detector gets yolo, not imagefolder
    (mine / "detect.yaml").write_text("model: ultralytics/yolov8n\ndataset: {path: data/yolo}\n")
    os.chown(mine / "detect.yaml", alice.uid, -1)
    first = alice.job("sleep", "60")  # it holds the model job in the queue: no env is built here
    jid = alice.run("submit", "detect.yaml", "--after", first).stdout.strip().splitlines()[-1]
    try:
        job = wait_for(lambda: (lambda j: j if j.get("spec") else None)(alice.show(jid)), 30, what="the job")
        assert job["state"] == "queued" and job["spec"]["dataset"]["format"] == "yolo", job
        assert job["spec"]["dataset"]["path"] == str(mine / "data" / "yolo")
    finally:
        alice.run("cancel", jid, check=False)
        alice.run("cancel", first, check=False)
    (mine / "bad.yaml").write_text("model: ultralytics/yolov8n\ndataset: {path: data/yolo, format: yaml}\n")
    os.chown(mine / "bad.yaml", alice.uid, -1)
    r = alice.run("submit", "bad.yaml", check=False)
    assert r.returncode == 2 and r.stderr.strip() == ("runner: dataset.format: given 'yaml'; expected 'imagefolder', 'yolo', "
                                                      "'coco', 'dota', 'hrsc2016', 'voc', 'masks' or 'captions'"), r.stderr


def _make(fmt: str, root: Path, task: str = "object_detection") -> dict:
    """A tiny dataset of `fmt` at root (absolute), made by the synth functions; the job's dataset: table."""
    from runner import synth, synth_tasks as t

    yolo_task = {"instance_segmentation": "segment", "pose_estimation": "pose", "obb_detection": "obb"}.get(task, "detect")
    if fmt in ("yolo", "yolo-obb"):
        return {"path": str(t.make_yolo(root, "obb" if fmt == "yolo-obb" else yolo_task))}
    if fmt == "coco":
        images, annotations = (t.make_keypoints if task == "pose_estimation" else t.make_coco)(root)
        return {"path": str(images), "annotations": str(annotations)}
    made = {"imagefolder": synth.make_shapes, "masks": t.make_masks, "captions": t.make_captions, "dota": t.make_dota,
            "hrsc2016": t.make_hrsc, "voc": t.make_voc}[fmt](root)
    return {"path": str(made)}


@pytest.mark.parametrize("fmt", ["yolo", "yolo-obb", "coco", "masks", "captions", "imagefolder", "dota", "hrsc2016", "voc"])
def test_dataset_check_takes_every_format_a_job_takes(fmt, tmp_path):
    r = Runner(tmp_path / "home")
    _make(fmt, tmp_path / "data")
    ok = r.run("dataset", "check", "--format", fmt, "data", cwd=tmp_path)  # a relative PATH, from the current folder
    assert ok.returncode == 0 and ("problems: none" in ok.stdout or "no problems" in ok.stdout), ok.stdout


def test_dataset_check_of_a_broken_yolo_set_says_where_and_fails(tmp_path):
    r = Runner(tmp_path / "home")
    _make("yolo", tmp_path / "data")
    (tmp_path / "data" / "labels" / "train" / "train_001.txt").write_text("0 0.5 0.5\n")
    bad = r.run("dataset", "check", "--format", "yolo", "data", cwd=tmp_path, check=False)
    assert bad.returncode == 1
    assert f"{tmp_path / 'data' / 'labels' / 'train' / 'train_001.txt'}:1: 3 values; a detect label needs 5 values (class cx cy w h)" in bad.stdout
    r2 = r.run("dataset", "check", "--format", "yolo-obb", "data", "--task", "object_detection", cwd=tmp_path, check=False)
    assert r2.returncode == 2 and r2.stderr.strip() == "runner: --task: given 'object_detection'; a yolo-obb dataset is for obb_detection"
    r3 = r.run("dataset", "check", "--format", "parquet", "data", cwd=tmp_path, check=False)
    assert r3.returncode == 2 and "expected one of yolo, yolo-obb, coco, masks, captions, imagefolder, dota, hrsc2016, voc" in r3.stderr


def test_python_m_runner_synth_still_works_from_a_relative_folder(tmp_path):
    out = subprocess.run([sys.executable, "-m", "runner.synth", "yolo", "y"], cwd=tmp_path, env=_env(tmp_path / "h"),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(tmp_path / "y" / "data.yaml")
    assert f"path: {tmp_path / 'y'}\n" in (tmp_path / "y" / "data.yaml").read_text()


# The usual format of each model task, as the registry must say it (the brief of #26).
USUAL = {("ultralytics", "object_detection"): "yolo", ("ultralytics", "instance_segmentation"): "yolo",
         ("ultralytics", "pose_estimation"): "yolo", ("ultralytics", "obb_detection"): "yolo",
         ("ultralytics", "image_classification"): "imagefolder", ("transformers", "object_detection"): "coco",
         ("transformers", "semantic_segmentation"): "masks", ("transformers", "image_captioning"): "captions",
         ("transformers", "image_classification"): "imagefolder", ("timm", "image_classification"): "imagefolder"}


def _models():
    from runner.registry import load

    return [m["ref"] for m in load().list_models()]


@pytest.mark.parametrize("ref", _models())
def test_a_job_without_a_format_gets_its_model_tasks_usual_one(ref, tmp_path, monkeypatch):
    from runner.registry import load
    from runner.resolve import resolve
    from runner.spec import parse_spec

    reg = load()
    model = reg.get_model(ref)
    want = (reg.get_repo(model["model_name"])["dataset"]["format"] if model["framework"] == "repo"
            else USUAL[(model["framework"], model["task_type"])])
    dataset = _make(want, tmp_path / "data", model["task_type"])
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({"model": ref, "dataset": dataset, "train": {"epochs": 1}})
    try:
        data = resolve(spec, tmp_path, reg, [])
    except Exception as e:  # a repo's own checks beyond the format (e.g. its class count) are not this test's business
        assert model["framework"] == "repo" and "dataset.format" not in str(getattr(e, "problems", e)), getattr(e, "problems", e)
        return
    assert data["dataset"]["format"] == want


def test_the_usual_formats_are_registry_data_a_site_may_change(tmp_path, monkeypatch):
    from runner.registry import load
    from runner.resolve import resolve
    from runner.spec import parse_spec

    site = tmp_path / "site.toml"
    site.write_text('[frameworks.ultralytics]\ntask_formats = { object_detection = "coco" }\n')
    monkeypatch.setenv("RUNNER_REGISTRY", str(site))
    spec = parse_spec({"model": "ultralytics/yolov8n", "dataset": _make("coco", tmp_path / "c")})
    assert resolve(spec, tmp_path, load(), [])["dataset"]["format"] == "coco"


# -- 6. the README's job files, as written -----------------------------------------------------------------

def test_the_readmes_job_files_are_accepted_as_written_with_their_usual_formats(tmp_path, monkeypatch):
    """One job file per kind (timm, Ultralytics, Transformers, a repo, a command), each accepted at
    submit as the README shows it, on the datasets the README's `runner synth` lines make."""
    import re

    from runner import synth, synth_tasks
    from runner.registry import load
    from runner.resolve import resolve
    from runner.spec import parse_spec
    from runner.specfile import parse_yaml

    readme = (ROOT / "README.md").read_text()
    part = readme[readme.index("Job files, one per kind"):readme.index("A command job runs in")]
    jobs = [parse_yaml(b, "README.md") for b in re.findall(r"```yaml\n(.*?)```", part, re.S)]
    assert [j.get("model", "command").split("/")[0] for j in jobs] == ["timm", "ultralytics", "transformers", "repo", "command"]
    synth.make_shapes(tmp_path / "data" / "shapes", easy=True)
    synth_tasks.make_yolo(tmp_path / "data" / "yolo", easy=True)
    synth_tasks.make_masks(tmp_path / "data" / "masks", easy=True)
    (tmp_path / "train.py").write_text("print('epoch=1 loss=0.5')\n")
    guide = (ROOT / "docs" / "adding-a-repo.md").read_text()
    table = re.search(r'```toml title="registry.toml"\n(.*?)\n```', guide, re.S).group(1)
    (tmp_path / "site.toml").write_text(table.replace("TINYCLS_COMMIT", "0" * 40))
    monkeypatch.setenv("RUNNER_REGISTRY", str(tmp_path / "site.toml"))
    monkeypatch.chdir(tmp_path)
    formats = [resolve(parse_spec(j), tmp_path, load(), []).get("dataset", {}).get("format") for j in jobs]
    assert formats == ["imagefolder", "yolo", "masks", "imagefolder", None]


def test_synth_never_writes_through_a_link_planted_in_its_folder(tmp_path):
    """A teammate's link in a shared folder where someone makes a dataset: synth writes only into
    a folder it makes (or an empty one of the caller's), so the link's target is never written."""
    target = tmp_path / "victim.txt"
    target.write_text("hers\n")
    planted = tmp_path / "shared" / "train" / "circle"
    planted.mkdir(parents=True)
    (planted / "circle_000.png").symlink_to(target)
    r = subprocess.run([sys.executable, "-m", "runner.synth", "shapes", str(tmp_path / "shared")], capture_output=True, text=True,
                       env=_env(tmp_path / "h"))
    assert r.returncode == 2 and "exists and is not empty" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert target.read_text() == "hers\n"
