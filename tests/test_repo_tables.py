"""A repo table's keys, one by one: what each does to the job (argv, env, paths, network,
epochs), how inference output is read back, the recorded lock, the starter table, the table check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_repos import add_table, git, job, repo_table, trainrepo  # noqa: F401 (trainrepo: the fixture)


def translate(table, tmp_path, shapes, gpus=0, **train):
    from config_translators import repo as translator

    spec = {"model": "repo/t", "dataset": {"path": str(shapes), "format": "imagefolder"}, "train": train,
            "resources": {"gpus": gpus}}
    return translator.translate({"spec": spec, "repo": table, "id": "x"}, str(tmp_path / "job"), str(tmp_path / "job" / "src"), "/py")


def test_cpu_and_gpu_flags_env_placeholders_and_own_fields(tmp_path, shapes):
    table = repo_table("file:///x", "0" * 40, args={"template": ["--epochs", "{epochs}", "--width", "{input_width}"],
                                                     "cpu": ["--no-accel"], "gpu": ["--amp", "--devices", "{device}"]},
                       env={"SAVE_TO": "{output_dir}/saved", "CFG": "{src}/cfg.yaml", "PLAIN": "1"},
                       defaults={"epochs": 2, "input_width": 48})
    cpu = translate(table, tmp_path, shapes)
    assert cpu["argv"][2:] == ["--epochs", "2", "--width", "48", "--no-accel"]
    gpu = translate(table, tmp_path, shapes, gpus=2, epochs=5, input_width=96)
    assert gpu["argv"][2:] == ["--epochs", "5", "--width", "96", "--amp", "--devices", "0,1"]  # a job's train: sets the table's own field
    job_dir = tmp_path / "job"
    assert cpu["env"] == {"SAVE_TO": f"{job_dir}/out/saved", "CFG": f"{job_dir}/src/cfg.yaml", "PLAIN": "1"}
    table["env"]["BAD"] = "{nope}"
    with pytest.raises(ValueError, match=r"env.BAD: \{nope\} has no value"):
        translate(table, tmp_path, shapes)


def test_checkpoint_and_results_paths_are_relative_to_the_job_folder():
    from config_translators.repo import job_path

    assert job_path("exp/*.pt") == "out/exp/*.pt"  # plain: under the output dir, as before
    assert job_path("{src}/runs/*/weights/*.pt") == "src/runs/*/weights/*.pt"  # a script that saves in its working dir
    assert job_path("{job_dir}/extra/*.bin") == "extra/*.bin"
    assert job_path("{output_dir}/a.pt") == "out/a.pt"
    for bad in ("{src}/../../etc/*", "/etc/passwd", "{data}/x.pt"):
        with pytest.raises(ValueError):
            job_path(bad)


def test_compare_names_a_mapped_metric_the_log_never_produced():
    from log_parsers.results import compare

    results = {1: {"acc": 0.5, "loss": 1.0}, 2: {"acc": 0.6, "loss": 0.8}}
    parsed = {1: {"acc": 0.5, "loss": 1.0}, 2: {"acc": 0.6, "loss": 0.8}}
    assert compare(results, parsed, {"acc": "acc", "loss": "loss"}) == (4, [])
    n, bad = compare(results, parsed, {"acc": "acc", "loss": "val_loss"})  # a typo in the mapping
    assert n == 2 and bad == ["val_loss: mapped from the file's loss, never parsed from the log"]
    n, bad = compare(results, parsed, {"accuracy": "acc"})
    assert bad == ["accuracy: not a column of the results file (columns: acc, loss)"]


def test_table_check_names_the_key(tmp_path):
    from config_translators.repo import check_table
    from runner.registry import load

    for name, table in load().repos.items():  # every shipped table passes
        assert check_table(name, table) == [], name
    t = repo_table("file:///x", "0" * 40, chekpoints=["*.pt"])
    t["parser"]["results_file"]["on_mismatch"] = "explode"
    t["infer"] = {"template": ["p.py"], "output": {"format": "xml", "stdout": True}}
    assert check_table("t", t) == [
        "repos.t.chekpoints: unknown key; expected one of " + ", ".join(sorted(__import__("config_translators.repo", fromlist=["KEYS"]).KEYS[""])),
        "repos.t.parser.results_file.on_mismatch: given 'explode'; expected 'note' or 'fail'",
        "repos.t.infer.template: names neither {image} nor {images}",
        "repos.t.infer.output.format: given 'xml'; expected one of json, jsonl, csv, text, png",
    ]


def test_network_and_epochs_come_from_the_table(runner, home, trainrepo, shapes, tmp_path):
    src, first = trainrepo
    add_table(home, "online", repo_table(f"file://{src}", first, network=True, defaults={"epochs": 7, "batch_size": 4, "input_size": 32}))
    add_table(home, "offline", repo_table(f"file://{src}", first, network=False))

    def spooled(name, **train):
        p = tmp_path / f"{name}-{len(list(tmp_path.glob('*.json')))}.json"
        p.write_text(json.dumps({"model": f"repo/{name}", "dataset": {"path": str(shapes), "format": "imagefolder"}, "train": train}))
        return runner.json("show", runner.submit(p))["spec"]

    s = spooled("online")
    assert s["network"] is True and s["train"]["epochs"] == 7  # neither dropped for the spec's own defaults
    assert spooled("online", epochs=3)["train"]["epochs"] == 3  # a job that says so wins
    assert spooled("offline", pretrained=True)["network"] is False  # pretrained does not open an offline repo
    add_table(home, "typo", repo_table(f"file://{src}", first, netwrok=True))
    r = runner.run("submit", job(tmp_path, shapes, name="typo"), check=False)
    assert r.returncode == 2 and "repos.typo.netwrok: unknown key" in r.stderr


def test_infer_output_mapping():
    from config_translators.repo.infer import records, result, runs

    names = {0: "circle", 1: "square", 2: "triangle"}
    # YOLO text labels: class cx cy w h conf, normalised
    out = {"file": "x", "format": "text", "columns": ["label_id", "cx", "cy", "w", "h", "confidence"], "box": "cxcywhn"}
    rows = records(out, "image 1/1 something\n1 0.5 0.25 0.5 0.5 0.9\n0 0.25 0.25 0.1 0.1 0.2\n")
    res = result("object_detection", rows, out, names, (64, 32))
    assert res["boxes"][0] == {"x1": 16.0, "y1": 0.0, "x2": 48.0, "y2": 16.0, "confidence": 0.9, "label_id": 1, "label": "square"}
    assert len(res["boxes"]) == 2
    # COCO results JSON, renamed fields, x y w h, category ids as the COCO file has them
    out = {"file": "bbox.json", "format": "json", "fields": {"label_id": "category_id", "confidence": "score", "box": "bbox"}, "box": "xywh"}
    rows = records(out, json.dumps([{"image_id": 0, "category_id": 3, "bbox": [1, 2, 10, 20], "score": 0.5}]))
    assert result("object_detection", rows, out, {1: "circle", 2: "square", 3: "triangle"}, (64, 64))["boxes"] == [
        {"x1": 1.0, "y1": 2.0, "x2": 11.0, "y2": 22.0, "confidence": 0.5, "label_id": 3, "label": "triangle"}]
    # classification: JSON lines among other output, top-5 from the scores
    out = {"stdout": True, "format": "jsonl"}
    rows = records(out, 'loading...\n{"image": "a.png", "label_id": 2, "confidence": 0.7, "scores": [0.1, 0.2, 0.7]}\n')
    res = result("image_classification", rows, out, names, (64, 64))
    assert (res["predicted_label_id"], res["predicted_label"], res["confidence"]) == (2, "triangle", 0.7)
    assert [p["label"] for p in res["top5_predictions"]] == ["triangle", "square", "circle"]
    # pose: keypoints as [x, y, score] triples or flat; a regex over text lines; CSV
    rows = records(out, json.dumps({"keypoints": [[1, 2, 0.5], [3, 4, 0.25]], "box": [0, 0, 8, 8]}))
    res = result("pose_estimation", rows, out, {}, (8, 8))
    assert res["keypoints"] == [[{"x": 1.0, "y": 2.0, "confidence": 0.5}, {"x": 3.0, "y": 4.0, "confidence": 0.25}]]
    assert res["boxes"][0]["x2"] == 8.0
    out = {"stdout": True, "format": "text", "regex": r"^pred (?P<label>\w+) p=(?P<confidence>[\d.]+)"}
    assert result("image_classification", records(out, "pred cat p=0.8\npred dog p=0.1\n"), out, {}, (1, 1))["predicted_label"] == "cat"
    out = {"stdout": True, "format": "csv", "fields": {"label_id": "cls"}}
    assert result("image_classification", records(out, "cls,confidence\n1,0.3\n2,0.6\n"), out, names, (1, 1))["predicted_label"] == "triangle"
    # one run per image with {image}, one for all with {images}; cpu flags follow
    t = {"template": ["p.py", "--ckpt", "{checkpoint}", "{image}"], "cpu": ["--cpu"]}
    assert runs(t, {"checkpoint": "c.pt", "gpus": 0}, ["a.png", "b.png"]) == [
        (["p.py", "--ckpt", "c.pt", "a.png", "--cpu"], ["a.png"]), (["p.py", "--ckpt", "c.pt", "b.png", "--cpu"], ["b.png"])]
    t = {"template": ["p.py", "{images}"]}
    assert runs(t, {"gpus": 0}, ["a.png", "b.png"]) == [(["p.py", "a.png", "b.png"], ["a.png", "b.png"])]


def test_image_size_reads_png_jpeg_and_bmp_headers(tmp_path, shapes):
    from config_translators.repo.infer import image_size
    from runner.synth_tasks import write_bmp

    png = next(Path(shapes).rglob("*.png"))
    assert image_size(str(png)) == (64, 64)
    write_bmp(tmp_path / "a.bmp", [bytearray(15) for _ in range(3)], 5, 3)
    assert image_size(str(tmp_path / "a.bmp")) == (5, 3)
    # a baseline JPEG: SOI, an APP0 segment, then SOF0 with height 7 and width 9
    jpeg = b"\xff\xd8" + b"\xff\xe0\x00\x04ab" + b"\xff\xc0\x00\x0b\x08\x00\x07\x00\x09\x01\x01\x11\x00"
    (tmp_path / "a.jpg").write_bytes(jpeg)
    assert image_size(str(tmp_path / "a.jpg")) == (9, 7)


def test_find_python_names_how_to_install_it():
    from runner.envs import EnvBuildError, find_python

    with pytest.raises(EnvBuildError, match=r"repos.x.python: Python 3.99 is not on this machine .*uv python install 3.99.*pyenv install 3.99"):
        find_python("3.99", "repos.x.python")
    with pytest.raises(EnvBuildError, match=r"repos.x.python: given 'three'; expected a Python version"):
        find_python("three", "repos.x.python")
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.8*/bin/python3.8"))
    if not pyenv:
        pytest.skip("no pyenv Python 3.8 on this machine")
    path, version = find_python("3.8")  # pyenv's shims are not interpreters: its versions are found directly
    assert version.startswith("3.8.") and Path(path).exists()


def test_build_settings_reach_uv(tmp_path):
    from runner.envs import EnvBuildError, _build_args, build_settings

    b = build_settings({"constraints": ["setuptools<70"], "env": {"MMCV_WITH_OPS": "0"}, "no_isolation": ["mmcv-full"]})
    args, env = _build_args(b, str(tmp_path))
    assert args == ["--build-constraints", str(tmp_path / "build-constraints.txt"), "--no-build-isolation-package", "mmcv-full"]
    assert (tmp_path / "build-constraints.txt").read_text() == "setuptools<70\n" and env == {"MMCV_WITH_OPS": "0"}
    with pytest.raises(EnvBuildError, match=r"repos.v.build.isolation: unknown key"):
        build_settings({"isolation": False}, "repos.v.build")
    with pytest.raises(EnvBuildError, match=r"build.env: expected a table of strings"):
        build_settings({"env": {"A": 1}})


def test_recorded_lock_is_used_until_the_table_changes(home, trainrepo):
    from runner import repos
    from runner.home import Home

    src, first = trainrepo
    h = Home(home).ensure()
    site = home / "site"
    site.mkdir()
    table = {**repo_table(f"file://{src}", first), "_dir": str(site)}
    path = repos.lock_repo(h, table, "t", None)
    assert path == site / "repo-locks" / "t.lock"
    text = path.read_text()
    assert text.startswith(f"# runner repo lock t: commit={first} python=") and "six==1.16.0" in text
    lines = []
    req = repos.env_request(h, table, "t", None, lines.append)
    assert lines == [f"runner: lock recorded in {path}"] and req.lock == text
    # someone edits the overrides: the recorded lock no longer fits and is not used
    lines.clear()
    changed = {**table, "overrides": ["packaging", "idna"]}
    req = repos.env_request(h, changed, "t", None, lines.append)
    assert "was recorded for other requirements, Python or build settings; ignored" in lines[0] and "idna==" in req.lock


def test_repo_add_writes_sub_tables_finds_nested_entry_and_guesses_the_task(runner, home, tmp_path):
    from runner.registry import load

    src = tmp_path / "poserepo"
    (src / "tools").mkdir(parents=True)
    (src / "requirements").mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "tools" / "train.py").write_text("print('hi')\n")
    (src / "requirements" / "runtime.txt").write_text("six\n")
    (src / "README.md").write_text("# A pose estimation toolbox\nTop-down keypoint detection, pose estimation.\n")
    (src / "LICENSE").write_text("Apache License\nVersion 2.0\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src)
    runner.run("repo", "add", f"file://{src}", "--commit", commit, "--name", "pose")
    text = (home / "registry.toml").read_text()
    assert "[repos.pose.args]" in text and "[repos.pose.parser]" in text and "args = {" not in text
    # the guide's way: keys added under [repos.pose.args] by hand
    (home / "registry.toml").write_text(text.replace("[repos.pose.args]\n", "[repos.pose.args]\ncpu = [\"--no-accel\"]\n"))
    t = load(type("H", (), {"registry_file": home / "registry.toml"})()).get_repo("pose")
    assert (t["entry"], t["requirements"], t["task_type"], t["license"]) == ("tools/train.py", "requirements/runtime.txt", "pose_estimation", "Apache-2.0")
    assert t["args"]["cpu"] == ["--no-accel"] and t["args"]["template"] == []  # train.py takes no flags: none invented
    assert "# runner could not tell: tools/train.py has no add_argument call" in text
    r = runner.run("repo", "add", f"file://{src}", "--commit", commit, "--name", "p2", "--task", "posing", check=False)
    assert r.returncode == 1 and "--task: given 'posing'; expected one of" in r.stderr


def test_synth_command_makes_every_kind(tmp_path):
    def synth(*args):
        return subprocess.run([sys.executable, "-m", "runner.synth", *map(str, args)], capture_output=True, text=True, check=True).stdout

    synth("shapes", tmp_path / "s", "--classes", 5, "--per-class", 2, "--val-per-class", 1)
    assert sorted(p.name for p in (tmp_path / "s" / "train").iterdir()) == ["circle", "class3", "class4", "square", "triangle"]
    assert len(list((tmp_path / "s" / "val").rglob("*.png"))) == 5
    synth("yolo", tmp_path / "y", "--task", "pose", "--train", 3, "--val", 2)
    assert "kpt_shape: [4, 3]" in (tmp_path / "y" / "data.yaml").read_text() and len(list((tmp_path / "y" / "labels" / "train").iterdir())) == 3
    synth("coco", tmp_path / "c")
    assert len(json.loads((tmp_path / "c" / "annotations.json").read_text())["annotations"]) == 12
    synth("keypoints", tmp_path / "k", "--train", 4, "--val", 2)
    coco = json.loads((tmp_path / "k" / "annotations.json").read_text())
    assert coco["categories"][0]["name"] == "person" and len(coco["categories"][0]["keypoints"]) == 17
    a = coco["annotations"][0]
    assert len(a["keypoints"]) == 51 and a["num_keypoints"] == 17 and set(a["keypoints"][2::3]) == {2}
    x, y, w, h = a["bbox"]
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in zip(a["keypoints"][0::3], a["keypoints"][1::3]))
    assert len(json.loads((tmp_path / "k" / "val.json").read_text())["images"]) == 2
    r = subprocess.run([sys.executable, "-m", "runner.synth", "shapes", str(tmp_path / "z"), "--classes", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--classes" in r.stderr


@pytest.mark.slow
def test_a_table_that_asks_for_another_python_gets_it(runner, daemon, home, tmp_path, shapes):
    """python = "3.8": the env is built with that interpreter (pyenv's here) and the script runs in it."""
    if not sorted(Path.home().glob(".pyenv/versions/3.8*/bin/python3.8")):
        pytest.skip("no Python 3.8 on this machine")
    src = tmp_path / "oldrepo"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "train.py").write_text("import sys, six\nprint('python %d.%d' % sys.version_info[:2])\nfor e in range(2):\n"
                                  "    print('EVAL epoch %d: acc 0.5 val_loss 1.0' % e)\n")
    (src / "requirements.txt").write_text("six\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    table = repo_table(f"file://{src}", git("rev-parse", "HEAD", cwd=src), python="3.8", overrides=[], checkpoints=[],
                       args={"template": [], "optional": {"lr": ["--lr", "{lr}"]}}, build={"constraints": ["setuptools<70"]})
    del table["parser"]["results_file"]
    add_table(home, "old", table)
    j = runner.wait_state(runner.submit(job(tmp_path, shapes, name="old")), timeout=300)
    log = runner.run("logs", j["id"]).stdout
    assert j["state"] == "succeeded", log
    assert "python 3.8" in log and [m["epoch"] for m in runner.json("metrics", j["id"])["series"]["acc"]] == [1, 2]


def test_shipped_files_come_from_the_tables_folder_only(tmp_path):
    from runner import repos
    from runner.exceptions import RepoError

    site = tmp_path / "site"
    (site / "extra").mkdir(parents=True)
    (site / "extra" / "font.ttf").write_bytes(b"\x00font")
    (tmp_path / "secret").write_text("not yours")
    (site / "extra" / "link").symlink_to(tmp_path / "secret")
    src = tmp_path / "src"
    src.mkdir()
    repos.copy_files(src, {"_dir": str(site), "files": {"a/font.ttf": "extra/font.ttf", "cfg.json": {"text": "{}"}}}, "t")
    assert (src / "a" / "font.ttf").read_bytes() == b"\x00font" and (src / "cfg.json").read_text() == "{}"
    for bad in ("../secret", str(tmp_path / "secret"), "extra/link"):
        with pytest.raises(RepoError, match="outside the folder of the registry file"):
            repos.copy_files(src, {"_dir": str(site), "files": {"x": bad}}, "t")
    with pytest.raises(RepoError, match=r"repos.t.files: '../x' must be a path inside the checkout"):
        repos.copy_files(src, {"_dir": str(site), "files": {"../x": "extra/font.ttf"}}, "t")
    assert not (tmp_path / "x").exists() and not (src / "x").exists()


@pytest.mark.parametrize("task, values", [("obb_detection", 9), ("object_detection", 5)])
def test_a_published_set_reaches_a_yolo_repo_in_its_tasks_layout(tmp_path, task, values):
    """A DOTA set given to a yolo repo is converted once, as oriented boxes for an OBB repo (it
    was made axis-aligned boxes whatever the task, losing the angles) and as boxes for a detector;
    the data.yaml runner writes names the converted set, and its labels pass the task's check."""
    from config_translators import repo as translator
    from runner.synth_tasks import make_dota

    dota = make_dota(tmp_path / "dota", train=2, val=1, size=32)
    table = repo_table("file:///x", "0" * 40, task_type=task, dataset={"format": "yolo"},
                       args={"template": ["--data", "{data}"]})
    spec = {"model": "repo/t", "dataset": {"path": str(dota), "format": "dota"}, "train": {}, "resources": {"gpus": 0}}
    assert translator.check_dataset(spec["dataset"], table) == []
    out = translator.translate({"spec": spec, "repo": table, "id": "x"}, str(tmp_path / "job"), str(tmp_path / "job" / "src"), "/py")
    yaml = dict(line.split(": ", 1) for line in out["files"]["data.yaml"].splitlines())
    labels = sorted(Path(yaml["train"].replace("/images/", "/labels/")).glob("*.txt"))
    assert len(labels) == 2 and {len(line.split()) for f in labels for line in f.read_text().splitlines()} == {values}
    assert out["argv"][2:] == ["--data", str(tmp_path / "job" / "data.yaml")]


def coco_rle_string(counts: list) -> str:
    """pycocotools' rleToString, transcribed from its maskApi.c (the inverse of the reader under test)."""
    s = ""
    for i, n in enumerate(counts):
        x = n - counts[i - 2] if i > 2 else n
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            s += chr((c | 0x20 if more else c) + 48)
    return s


def test_infer_maps_masks_rotated_boxes_and_captions_for_every_task():
    """What a repo's predict script prints for the tasks beyond boxes and classes: a class's mask
    as an RLE (semantic), an object's polygon or RLE (instance, with the box around it), an
    oriented box as its corners or centre, size and angle (OBB), a caption; a record that gives
    none of them is a warning, never an empty success."""
    import math

    from config_translators import regions
    from config_translators.repo.infer import records, result

    assert coco_rle_string([0, 4]) == "04" and regions.rle_counts({"counts": "04"}) == [0, 4]
    for counts in ([5, 3, 120, 1, 0, 2], [0, 4096], [7, 40, 1, 33, 2, 900, 31, 1]):
        assert regions.rle_counts({"size": [64, 64], "counts": coco_rle_string(counts)}) == counts
    out = {"stdout": True, "format": "jsonl"}
    names = {0: "background", 1: "circle", 2: "square"}
    # semantic: one record a class, its mask as an RLE (compressed or not)
    text = "\n".join(json.dumps(r) for r in [{"label_id": 0, "rle": {"size": [4, 4], "counts": [0, 10, 6]}},
                                             {"label_id": 2, "rle": {"size": [4, 4], "counts": coco_rle_string([10, 6])}}])
    res = result("semantic_segmentation", records(out, text), out, names, (4, 4))
    assert res["masks"] == [{"label_id": 0, "label": "background", "pixels": 10, "fraction": 10 / 16},
                            {"label_id": 2, "label": "square", "pixels": 6, "fraction": 6 / 16}] and "warnings" not in res
    # instance: a polygon (pairs or COCO's flat rings) or an RLE; the box is the mask's when the record has none
    text = "\n".join(json.dumps(r) for r in [
        {"label_id": 1, "score": 0.9, "polygon": [[2, 3], [10, 3], [10, 9], [2, 9]]},
        {"label_id": 2, "score": 0.5, "segmentation": [[1, 1, 5, 1, 5, 4]], "box": [0, 0, 6, 6]},
        {"label_id": 2, "score": 0.4, "rle": {"size": [8, 8], "counts": [8 * 3 + 2, 4, 4, 4]}}])  # columns 3-4, rows 2-5
    res = result("instance_segmentation", records(out, text), out, names, (16, 16))
    assert [[b[k] for k in ("x1", "y1", "x2", "y2")] for b in res["boxes"]] == [[2, 3, 10, 9], [0, 0, 6, 6], [3, 2, 5, 6]]
    assert res["masks"][0] == {"polygon": [[2, 3], [10, 3], [10, 9], [2, 9]], "label_id": 1, "label": "circle"}
    assert res["masks"][1]["polygon"] == [[1, 1], [5, 1], [5, 4]] and res["masks"][2] == {"pixels": 8, "label_id": 2, "label": "square"}
    assert "warnings" not in res
    res = result("instance_segmentation", records(out, json.dumps({"label_id": 1, "box": [0, 0, 2, 2]})), out, names, (4, 4))
    assert res["boxes"] and res["masks"] == [] and "gave no mask" in res["warnings"][0]
    # OBB: centre, size and angle, or four corners in order
    text = "\n".join(json.dumps(r) for r in [{"label_id": 1, "cx": 8, "cy": 8, "w": 6, "h": 2, "angle": 0.5, "confidence": 0.7},
                                             {"label_id": 2, "corners": [0, 0, 4, 4, 2, 6, -2, 2]}, {"label_id": 1}])
    res = result("obb_detection", records(out, text), out, names, (16, 16))
    assert res["rotated_boxes"][0] == {"cx": 8.0, "cy": 8.0, "w": 6.0, "h": 2.0, "angle": 0.5, "confidence": 0.7, "label_id": 1, "label": "circle"}
    rb = res["rotated_boxes"][1]
    assert (rb["cx"], rb["cy"], rb["angle"]) == (1.0, 3.0, math.atan2(4, 4)) and math.isclose(rb["w"], math.sqrt(32))
    assert math.isclose(rb["h"], math.sqrt(8)) and res["warnings"] == ["1 of 3 record(s) mapped to no rotated box (a record needs cx, cy, w, h and angle, or corners)"]
    # captioning: the caption (the most confident where they say)
    res = result("image_captioning", records(out, '{"caption": "a red circle", "score": 0.2}\n{"text": "a circle", "score": 0.6}'), out, {}, (4, 4))
    assert res == {"task": "image_captioning", "caption": "a circle"}
    res = result("image_captioning", records(out, '{"label_id": 1}'), out, {}, (4, 4))
    assert "caption" not in res and "gave no caption" in res["warnings"][0]
