"""DOTA, HRSC2016 and Pascal VOC read as published and written as YOLO(-OBB): exact labels (angles
and point order), file:line for malformed files, `runner dataset`, the cache, tiles, refusals at
submit, and real training through the daemon."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest

from config_translators import dataset_formats as df
from config_translators.ultralytics import check_dataset, convert_published
from runner.synth import write_png
from runner.synth_tasks import make_dota, make_hrsc, make_voc, write_bmp

pytestmark = pytest.mark.shared_envs  # its homes reuse the session's framework envs (tests/envcache.py)


def _image(path: Path, w: int, h: int, bmp: bool = False):
    rows = [bytearray(random.Random(1).randint(0, 255) for _ in range(3 * w)) for _ in range(h)]
    path.parent.mkdir(parents=True, exist_ok=True)
    (write_bmp if bmp else write_png)(path, rows, w, h)


def _dota(root: Path, lines: list[str], w=100, h=50, name="P0001", split="train"):
    _image(root / split / "images" / f"{name}.png", w, h)
    (root / split / "labelTxt").mkdir(parents=True, exist_ok=True)
    (root / split / "labelTxt" / f"{name}.txt").write_text("\n".join(lines) + "\n")


def _labels(out: Path, split: str, stem: str) -> list[str]:
    return (out / "labels" / split / f"{stem}.txt").read_text().splitlines()


def test_dota_points_keep_their_order_and_difficult_ones_are_skipped(tmp_path):
    root = tmp_path / "dota"
    _dota(root, ["imagesource:GoogleEarth", "gsd:0.15", "10 5 40 5 40 25 10 25 plane 0", "60 10 90 20 80 40 50 30 ship 1",
                 "20 30 30 30 30 45 20 45 ship 0"])
    _dota(root, ["10 10 20 10 20 20 10 20 plane 0"], name="P0002", split="val")
    ds = df.read(root, "dota")
    assert ds.names == ["plane", "ship"] and ds.problems == []
    out = tmp_path / "out"
    rep = df.write_yolo(ds, out, "yolo-obb")
    # x / 100, y / 50, in the order given; the difficult ship is left out
    assert _labels(out, "train", "P0001") == ["0 0.100000 0.100000 0.400000 0.100000 0.400000 0.500000 0.100000 0.500000",
                                              "1 0.200000 0.600000 0.300000 0.600000 0.300000 0.900000 0.200000 0.900000"]
    assert rep["skipped_difficult"] == 1 and rep["written_objects"] == 3 and rep["splits"] == {"train": 1, "val": 1}
    assert (out / "images" / "train" / "P0001.png").resolve() == (root / "train" / "images" / "P0001.png").resolve()
    assert "names:\n  0: plane\n  1: ship" in (out / "data.yaml").read_text()
    kept = df.write_yolo(df.read(root, "dota"), tmp_path / "kept", "yolo-obb", keep_difficult=True)
    assert kept["written_objects"] == 4
    assert _labels(tmp_path / "kept", "train", "P0001")[1] == "1 0.600000 0.200000 0.900000 0.400000 0.800000 0.800000 0.500000 0.600000"
    # as detection boxes: the polygon's axis-aligned bounds
    df.write_yolo(df.read(root, "dota"), tmp_path / "det", "yolo", keep_difficult=True)
    assert _labels(tmp_path / "det", "train", "P0001")[1] == "1 0.700000 0.500000 0.400000 0.600000"


def test_hrsc_rotated_boxes_at_known_angles(tmp_path):
    root = tmp_path / "hrsc"
    for k, ang in enumerate((0.0, 0.5, -math.pi / 4)):
        name = f"10000000{k}"
        _image(root / "AllImages" / f"{name}.bmp", 100, 50, bmp=True)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<HRSC_Image><Img_SizeWidth>100</Img_SizeWidth><Img_SizeHeight>50</Img_SizeHeight><HRSC_Objects>"
            f"<HRSC_Object><Class_ID>100000001</Class_ID><difficult>0</difficult><mbox_cx>50</mbox_cx><mbox_cy>25</mbox_cy>"
            f"<mbox_w>40</mbox_w><mbox_h>10</mbox_h><mbox_ang>{ang}</mbox_ang></HRSC_Object></HRSC_Objects></HRSC_Image>")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("100000000\n100000001\n")
    (root / "ImageSets" / "val.txt").write_text("100000002\n")
    assert df.image_size(root / "AllImages" / "100000000.bmp") == (100, 50)
    out = tmp_path / "out"
    df.write_yolo(df.read(root, "hrsc2016"), out, "yolo-obb")
    assert _labels(out, "train", "100000000") == ["0 0.300000 0.400000 0.700000 0.400000 0.700000 0.600000 0.300000 0.600000"]
    for split, stem, ang in (("train", "100000001", 0.5), ("val", "100000002", -math.pi / 4)):
        (line,) = _labels(out, split, stem)
        v = [float(x) for x in line.split()[1:]]
        pts = [(v[i] * 100, v[i + 1] * 50) for i in range(0, 8, 2)]
        # first corner: (-w/2, -h/2) rotated about the centre
        c, s = math.cos(ang), math.sin(ang)
        assert pts[0] == pytest.approx((50 - 20 * c + 5 * s, 25 - 20 * s - 5 * c), abs=1e-3)
        # the first side is the w side at the box's angle, the second the h side
        assert math.atan2(pts[1][1] - pts[0][1], pts[1][0] - pts[0][0]) == pytest.approx(ang, abs=1e-4)
        assert math.dist(pts[0], pts[1]) == pytest.approx(40, abs=1e-3) and math.dist(pts[1], pts[2]) == pytest.approx(10, abs=1e-3)
        # clockwise on the image (y down): positive shoelace sum
        area = sum(pts[i][0] * pts[(i + 1) % 4][1] - pts[(i + 1) % 4][0] * pts[i][1] for i in range(4)) / 2
        assert area == pytest.approx(400, abs=1e-2)


def test_voc_boxes_exactly(tmp_path):
    root = make_voc(tmp_path / "voc", train=2, val=1)
    ann = root / "Annotations" / "2007_000000.xml"
    ann.write_text(ann.read_text().replace(ann.read_text().split("<bndbox>")[1].split("</bndbox>")[0],
                                           "<xmin>10</xmin><ymin>5</ymin><xmax>30</xmax><ymax>25</ymax>"))
    out = tmp_path / "out"
    df.write_yolo(df.read(root, "voc"), out, "yolo")
    names = df.read(root, "voc").names
    shape = ann.read_text().split("<name>")[1].split("</name>")[0]
    # (10,5)-(30,25) on 64 x 64: centre (20,15), size 20 x 20
    assert _labels(out, "train", "2007_000000") == [f"{names.index(shape)} 0.312500 0.234375 0.312500 0.312500"]
    df.write_yolo(df.read(root, "voc"), tmp_path / "obb", "yolo-obb")
    assert _labels(tmp_path / "obb", "train", "2007_000000") == [
        f"{names.index(shape)} 0.156250 0.078125 0.468750 0.078125 0.468750 0.390625 0.156250 0.390625"]


def test_malformed_files_are_named_with_their_line(tmp_path):
    dota = tmp_path / "dota"
    _dota(dota, ["imagesource:x", "10 5 40 5 40 25 plane 0", "1 2 3 4 5 6 7 8 plane 2", "a b c d e f g h plane 0"])
    lbl = dota / "train" / "labelTxt" / "P0001.txt"
    assert df.check(dota, "dota") == [
        f"{lbl}:2: expected 'x1 y1 x2 y2 x3 y3 x4 y4 category difficult', got '10 5 40 5 40 25 plane 0'",
        f"{lbl}:3: difficult must be 0 or 1, got '2'",
        f"{lbl}:4: expected 'x1 y1 x2 y2 x3 y3 x4 y4 category difficult', got 'a b c d e f g h plane 0'"]
    hrsc = make_hrsc(tmp_path / "hrsc", train=2, val=1)
    ann = hrsc / "Annotations" / "100000001.xml"
    ann.write_text(ann.read_text().replace("<mbox_ang>", "<mbox_angle>").replace("</mbox_ang>", "</mbox_angle>"))
    assert df.check(hrsc, "hrsc2016") == [f"{ann}:6: HRSC_Object 1: missing <mbox_ang>"]
    voc = make_voc(tmp_path / "voc", train=2, val=1)
    bad = voc / "Annotations" / "2007_000001.xml"
    bad.write_text(bad.read_text().replace("</object>", ""))
    problems = df.check(voc, "voc")
    assert problems[0].startswith(f"{bad}:") and "not valid XML" in problems[0]
    worse = voc / "Annotations" / "2007_000000.xml"
    worse.write_text(worse.read_text().replace("<xmax>", "<xmax>-").replace("<ymax>", "<ymax>-"))
    assert any(p.startswith(f"{worse}:5: object 1: an empty box") for p in df.check(voc, "voc"))


def test_image_sizes_from_headers(tmp_path):
    _image(tmp_path / "a.png", 37, 21)
    _image(tmp_path / "a.bmp", 37, 21, bmp=True)
    assert df.image_size(tmp_path / "a.png") == (37, 21) and df.image_size(tmp_path / "a.bmp") == (37, 21)
    jpeg = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffc0001108002a003703012200021101031101") + b"\0" * 16
    (tmp_path / "a.jpg").write_bytes(jpeg)
    assert df.image_size(tmp_path / "a.jpg") == (55, 42)
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ValueError):
        df.image_size(tmp_path / "x.png")


def test_conversion_is_cached_per_version_of_the_files(tmp_path):
    root = make_dota(tmp_path / "dota", train=4, val=2)
    ds = {"path": str(root), "format": "dota"}
    data, rep = convert_published(ds, "obb", tmp_path / "cache")
    assert not rep["reused"] and rep["images"] == 6 and data.exists()
    again, rep2 = convert_published(ds, "obb", tmp_path / "cache")
    assert again == data and rep2["reused"]
    label = root / "train" / "labelTxt" / "Pt0000.txt"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    third, rep3 = convert_published(ds, "obb", tmp_path / "cache")
    assert third != data and not rep3["reused"]
    other, _ = convert_published({**ds, "keep_difficult": True}, "obb", tmp_path / "cache")
    assert other not in (data, third)
    assert f"path: {data.parent}" in data.read_text()


def test_tiles_cut_large_images_and_clip_their_boxes(tmp_path):
    root = tmp_path / "dota"
    _dota(root, ["10 10 50 10 50 30 10 30 plane 0", "150 150 190 150 190 190 150 190 ship 0"], w=200, h=200)
    _dota(root, ["10 10 20 10 20 20 10 20 plane 0"], name="P0002", split="val", w=64, h=64)  # small: not cut
    assert df.tiles(200, 200, 128, 32) == [(0, 0, 128, 128), (72, 0, 200, 128), (0, 72, 128, 200), (72, 72, 200, 200)]
    out = tmp_path / "out"
    rep = df.write_yolo(df.read(root, "dota", 0.5), out, "yolo-obb", tile=128, overlap=32)
    assert rep["tiles"] == 4
    plan = json.loads((out / "crops.json").read_text())
    assert [p["box"] for p in plan] == [list(w) for w in df.tiles(200, 200, 128, 32)]
    # the crops are cut in the data plane (Pillow), as a job or `runner dataset convert` does
    import subprocess
    import sys

    from conftest import ROOT

    pytest.importorskip("PIL")
    r = subprocess.run([sys.executable, "-m", "adapters.crop", str(out / "crops.json")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "cut 4 tiles" in r.stdout, r.stderr
    from PIL import Image

    with Image.open(out / "images" / "train" / "P0001__72_72.png") as im:
        assert im.size == (128, 128)
    assert _labels(out, "train", "P0001__0_0") == ["0 0.078125 0.078125 0.390625 0.078125 0.390625 0.234375 0.078125 0.234375"]
    assert _labels(out, "train", "P0001__72_72") == ["1 0.609375 0.609375 0.921875 0.609375 0.921875 0.921875 0.609375 0.921875"]
    assert _labels(out, "train", "P0001__72_0") == []


def test_submit_time_refusals(runner, tmp_path):
    voc = make_voc(tmp_path / "voc", train=2, val=1)
    job = tmp_path / "pose.yaml"
    job.write_text(json.dumps({"model": "ultralytics/yolov8n-pose", "dataset": {"path": str(voc), "format": "voc"}}))
    r = runner.run("submit", job, check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "runner: dataset.format: 'voc' holds boxes; ultralytics/yolov8n-pose (pose_estimation) takes 'yolo' with pose labels"]
    dota = tmp_path / "dota"
    _dota(dota, ["10 5 40 5 40 25 plane"], name="P0001")
    _dota(dota, ["10 5 40 5 40 25 10 25 plane 0"], name="P0002", split="val")
    job.write_text(json.dumps({"model": "ultralytics/yolov8n-obb", "dataset": {"path": str(dota), "format": "dota"}}))
    r = runner.run("submit", job, check=False)
    assert r.returncode == 2 and f"{dota / 'train' / 'labelTxt' / 'P0001.txt'}:1: expected" in r.stderr
    job.write_text(json.dumps({"model": "timm/resnet18", "dataset": {"path": str(dota), "format": "dota"}}))
    r = runner.run("submit", job, check=False)
    assert r.returncode == 2 and "dataset.format" in r.stderr
    job.write_text(json.dumps({"model": "ultralytics/yolov8n-obb", "dataset": {"path": str(dota), "format": "dota", "tile": 64, "overlap": 64}}))
    r = runner.run("submit", job, check=False)
    assert r.returncode == 2 and "overlap (64) must be smaller than tile (64)" in r.stderr


def test_runner_dataset_check_and_convert(runner, tmp_path):
    for fmt, make in (("dota", make_dota), ("hrsc2016", make_hrsc), ("voc", make_voc)):
        root = make(tmp_path / fmt, train=4, val=2)
        r = runner.run("dataset", "check", root, "--format", fmt, "--task", "obb_detection")
        assert r.returncode == 0 and "6 images (train 4, val 2), 6 objects" in r.stdout and "problems: none" in r.stdout
        assert "a obb_detection model gets it as yolo-obb" in r.stdout
        rep = json.loads(runner.run("dataset", "check", root, "--format", fmt, "--json").stdout)
        assert rep["images"] == 6 and rep["problems"] == []
        out = tmp_path / f"{fmt}-yolo"
        r = runner.run("dataset", "convert", root, "--from", fmt, "--to", "yolo", "--out", out)
        assert "wrote" in r.stdout and len(list((out / "labels" / "train").glob("*.txt"))) == 4
        r = runner.run("dataset", "convert", root, "--from", fmt, "--to", "yolo", "--out", out, check=False)
        assert r.returncode == 1 and "is not empty" in r.stderr
    pytest.importorskip("PIL")
    out = tmp_path / "tiles"
    r = runner.run("dataset", "convert", tmp_path / "dota", "--from", "dota", "--to", "yolo-obb", "--out", out, "--tile", "48",
                   "--overlap", "16")
    assert "24 tiles" in r.stdout and len(list((out / "images" / "train").glob("*__*.png"))) == 16  # 4 per 64 px image
    bad = tmp_path / "dota" / "train" / "labelTxt" / "Pt0000.txt"
    bad.write_text("1 2 3\n")
    r = runner.run("dataset", "check", tmp_path / "dota", "--format", "dota", check=False)
    assert r.returncode == 1 and f"{bad}:1: expected" in r.stdout
    r = runner.run("dataset", "check", tmp_path / "dota", "--format", "cocoa", check=False)
    assert r.returncode == 2 and "--format: given 'cocoa'" in r.stderr
    r = runner.run("dataset", "check", tmp_path / "dota", "--format", "coco", check=False)  # checked as COCO: no JSON there
    assert r.returncode == 1 and "dataset.annotations:" in r.stdout


def test_check_dataset_for_each_task():
    model = {"ref": "ultralytics/yolov8n-seg", "task_type": "instance_segmentation"}
    assert check_dataset({"path": "/x", "format": "dota"}, model)[0].startswith("dataset.format: 'dota' holds boxes")


@pytest.mark.slow
def test_obb_and_detection_models_train_on_published_layouts(runner, daemon, tmp_path):
    jobs = {}
    for fmt, make, model in (("dota", make_dota, "yolov8n-obb"), ("hrsc2016", make_hrsc, "yolov8n-obb"), ("voc", make_voc, "yolov8n")):
        ds = {"format": fmt}
        if fmt == "dota":  # 96 px images cut into 64 px tiles by the job itself
            ds.update(path=str(make(tmp_path / fmt, train=8, val=4, size=96, difficult_every=4)), tile=64, overlap=32)
        else:
            ds["path"] = str(make(tmp_path / fmt, train=8, val=4))
        spec = tmp_path / f"{fmt}.yaml"
        spec.write_text(json.dumps({"name": f"ds-{fmt}", "model": f"ultralytics/{model}", "dataset": ds,
                                    "train": {"epochs": 1, "batch_size": 4, "input_size": 64, "mosaic": 0.0}}))
        jobs[fmt] = runner.submit(spec)
    for fmt, jid in jobs.items():
        job = runner.wait_state(jid, timeout=900)
        assert job["state"] == "succeeded", job.get("log_tail")
        log = runner.run("logs", jid).stdout
        target = "yolo" if fmt == "voc" else "yolo-obb"
        assert f"runner: dataset {fmt} -> {target}: 12 images (train 8, val 4)" in log
        if fmt == "dota":
            assert "skipped 3 difficult objects" in log  # every 4th of 8 train and of 4 val
            assert "48 tiles" in log and "runner: cut 48 tiles of the dataset" in log  # 4 per image, cut by the job
        assert {Path(a["path"]).name for a in job["artifacts"]} >= {"last.pt", "best.pt"}
        assert job["metrics"], "no metrics parsed"
    again = runner.wait_state(runner.submit(tmp_path / "voc.yaml"), timeout=900)
    assert "(converted before: reused)" in runner.run("logs", again["id"]).stdout


def test_a_repo_table_that_takes_yolo_gets_a_converted_voc_set(tmp_path):
    from config_translators import repo as repo_translator

    voc = make_voc(tmp_path / "voc", train=4, val=2)
    table = {"dataset": {"format": "yolo"}, "entry": "train.py", "args": {"template": ["--data", "{data}", "--epochs", "{epochs}"]}}
    ds = {"path": str(voc), "format": "voc"}
    assert repo_translator.check_dataset(ds, table) == []
    bad = voc / "Annotations" / "2007_000000.xml"
    bad.write_text(bad.read_text().replace("<xmin>", "<xmin>x"))
    assert repo_translator.check_dataset(ds, table)[0].startswith(f"{bad}:5: object 1:")
    make_voc(voc, train=4, val=2)  # the same files again, good
    job = {"spec": {"dataset": ds, "train": {"epochs": 1}}, "repo": table, "datasets_cache": str(tmp_path / "cache")}
    out = repo_translator.translate(job, str(tmp_path / "job"), str(tmp_path / "src"), "python")
    assert out["argv"][:4] == ["python", "train.py", "--data", str(tmp_path / "job" / "data.yaml")]
    assert out["dataset_report"]["images"] == 6 and out["dataset_report"]["target"] == "yolo"
    data = out["files"]["data.yaml"]
    key = out["dataset_report"]["key"]
    assert f"train: {tmp_path / 'cache' / key / 'images' / 'train'}" in data and "nc: 3" in data
