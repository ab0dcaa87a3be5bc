"""Ultralytics through the same contract: the parser against real captured output, the five
tasks trained for real through the daemon, COCO conversion, label checks at submit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import FIXTURES, assert_oom_policy
from config_translators.ultralytics import check_dataset, coco_to_yolo
from log_parsers import LineAssembler, build_parser
from runner.registry import load
from runner.synth import make_shapes
from runner.synth_tasks import make_coco, make_yolo

pytestmark = pytest.mark.shared_envs  # its homes reuse the session's framework envs (tests/envcache.py)

PARSER = load().frameworks["ultralytics"]["parser"]
TASKS = {"detect": "yolov8n", "segment": "yolov8n-seg", "pose": "yolov8n-pose", "obb": "yolov8n-obb", "classify": "yolov8n-cls"}


def _reloaded_in_a_fresh_process(m):
    """The checkpoint check's real reload: the model at the end of training, loaded in another
    process, predicts the same on its fixed images (adapters.base.prediction_difference)."""
    rl = {c["name"]: c for c in m["checks"]}["checkpoint"]["detail"]["reload"]
    assert rl["images"] >= 1 and rl["numbers"] > 0 and rl["max_difference"] <= rl["tolerance"] == 1e-3 and rl["fresh_process_seconds"] > 0, (m["model"], rl)
    assert rl["epoch"] == {c["name"]: c for c in m["checks"]}["learns"]["detail"]["epochs"]


def csv_name(col: str) -> str | None:
    """results.csv column -> the metric name the log parser gives."""
    if col.startswith("train/"):
        return col[len("train/"):]
    if col.startswith("metrics/"):
        m = col[len("metrics/"):]
        if m.startswith("accuracy_"):
            return "val_" + m[len("accuracy_"):] + "_acc"
        base, _, kind = m.partition("(")
        group = {"B": "box", "M": "mask", "P": "pose"}[kind.rstrip(")")]
        base = {"precision": "p", "recall": "r"}.get(base, base.lower().replace("-", "_"))
        return f"val_{group}_{base}"
    return None


def parse(data: bytes) -> list[tuple]:
    a, p = LineAssembler(), build_parser(PARSER)
    return [pt for line in a.feed(data) + a.finish() for pt in p.feed_line(line)]


def agree(points, results_csv: Path):
    """Every results.csv value the log prints equals the parsed one, epoch by epoch."""
    rows = list(csv.DictReader(results_csv.read_text().splitlines()))
    by_epoch = {}
    for name, value, _, epoch in points:
        if epoch is not None:
            by_epoch.setdefault(epoch, {})[name] = value
    assert sorted(by_epoch) == [int(r["epoch"]) for r in rows]
    compared = 0
    for r in rows:
        got = by_epoch[int(r["epoch"])]
        for col, v in r.items():
            name = csv_name(col.strip())
            if name is None or name not in got:
                continue
            assert got[name] == pytest.approx(float(v), rel=2e-3, abs=6e-4), (r["epoch"], col)
            compared += 1
    return compared


@pytest.mark.parametrize("task", list(TASKS))
def test_parser_on_real_captured_output(task):
    points = parse((FIXTURES / "ultralytics" / f"{task}.log").read_bytes())
    n = agree(points, FIXTURES / "ultralytics" / f"{task}.results.csv")
    names = {p[0] for p in points}
    expected = {"detect": {"box_loss", "cls_loss", "dfl_loss", "val_box_map50", "val_box_map50_95", "val_box_p", "val_box_r"},
                "segment": {"seg_loss", "val_mask_map50", "val_mask_map50_95"},
                "pose": {"pose_loss", "kobj_loss", "val_pose_map50"},
                "obb": {"box_loss", "val_box_map50_95"},
                "classify": {"loss", "val_top1_acc", "val_top5_acc"}}[task]
    assert expected <= names and n >= 3 * (3 if task == "classify" else 6)
    if task != "classify":
        assert {"circle/box_map50", "final_val_box_map50"} <= names  # per-class and final results at the end


def test_coco_to_yolo(tmp_path):
    images, ann = make_coco(tmp_path / "coco", train=3, val=1)
    data = coco_to_yolo(images, ann, tmp_path / "yolo", "detect", 0.25)
    coco = json.loads(ann.read_text())
    a0, img0 = coco["annotations"][0], coco["images"][0]
    x, y, w, h = a0["bbox"]
    line = (tmp_path / "yolo" / "labels" / "train" / "img_000.txt").read_text().split()
    assert line == ["0", f"{(x + w / 2) / 64:.6f}", f"{(y + h / 2) / 64:.6f}", f"{w / 64:.6f}", f"{h / 64:.6f}"]
    assert sorted(p.name for p in (tmp_path / "yolo" / "labels" / "val").iterdir()) == ["img_003.txt"]
    assert "  2: triangle" in data.read_text()
    seg = coco_to_yolo(images, ann, tmp_path / "yolo-seg", "segment", 0.25)
    poly = (tmp_path / "yolo-seg" / "labels" / "train" / "img_000.txt").read_text().split()
    assert len(poly) == 1 + len(a0["segmentation"][0]) and float(poly[1]) == pytest.approx(a0["segmentation"][0][0] / 64, abs=1e-6)
    assert check_dataset({"path": str(seg), "format": "yolo"}, {"task_type": "instance_segmentation"}) == []


def test_label_that_does_not_match_the_task_fails_at_submit(runner, tmp_path):
    det = make_yolo(tmp_path / "det", "detect", train=2, val=1)
    job = tmp_path / "pose.yaml"
    job.write_text(json.dumps({"model": "ultralytics/yolov8n-pose", "dataset": {"path": str(det), "format": "yolo"}}))
    r = runner.run("submit", job, check=False)
    assert r.returncode == 2 and "has no kpt_shape" in r.stderr
    lf = tmp_path / "det" / "labels" / "train" / "train_001.txt"
    lf.write_text("7 0.5 0.5 0.2 0.2\n")
    job.write_text(json.dumps({"model": "ultralytics/yolov8n", "dataset": {"path": str(det), "format": "yolo"}}))
    r = runner.run("submit", job, check=False)
    assert r.returncode == 2 and f"{lf}:1: class id 7 is not among the 3 names" in r.stderr
    job.write_text(json.dumps({"model": "ultralytics/yolov8n", "dataset": {"path": str(det), "format": "yolo"}, "train": {"mosaic": 2}}))
    assert "train.mosaic: given 2; expected <= 1.0" in runner.run("submit", job, check=False).stderr


@pytest.mark.slow
def test_five_tasks_train_for_real_and_infer(runner, daemon, tmp_path):
    jobs = {}
    for task, model in TASKS.items():
        if task == "classify":
            ds = {"path": str(make_shapes(tmp_path / "cls", per_class=6, val_per_class=3)), "format": "imagefolder"}
        else:
            ds = {"path": str(make_yolo(tmp_path / task, task)), "format": "yolo"}
        spec = tmp_path / f"{task}.yaml"
        spec.write_text(json.dumps({"name": f"u-{task}", "model": f"ultralytics/{model}", "dataset": ds,
                                    "train": {"epochs": 2, "batch_size": 4, "input_size": 64, "mosaic": 0.0}}))
        jobs[task] = runner.submit(spec)
    fields = {"detect": "boxes", "segment": "masks", "pose": "keypoints", "obb": "rotated_boxes", "classify": "top5_predictions"}
    for task, jid in jobs.items():
        job = runner.wait_state(jid, timeout=900)
        assert job["state"] == "succeeded", job.get("log_tail")
        from runner.store import Store

        s = Store(runner.home / "runner.db")
        points = [(m["name"], m["value"], m["step"], m["epoch"]) for m in s.metrics(job["id"])]
        assert agree(points, Path(job["job_dir"]) / "runs" / "train" / "results.csv") >= 4
        assert {Path(a["path"]).name for a in job["artifacts"]} >= {"last.pt", "best.pt"}
        img = next((tmp_path / ("cls/val/circle" if task == "classify" else f"{task}/images/val")).iterdir())
        out = json.loads(runner.run("infer", jid, img).stdout)
        assert fields[task] in out or (task != "classify" and "boxes" in out and out["boxes"] == []), out
        assert out["task"] == {"detect": "object_detection", "segment": "instance_segmentation", "pose": "pose_estimation",
                               "obb": "obb_detection", "classify": "image_classification"}[task]


@pytest.mark.slow
def test_check_three_ultralytics_models(runner, tmp_path):
    out = tmp_path / "check"
    r = runner.run("check", "ultralytics/yolov8n", "ultralytics/yolov8n-seg", "ultralytics/yolov8n-pose", "--out", out, check=False)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["success"] == 3 and report["summary"]["learns"] == 3, r.stdout + r.stderr
    for m in report["models"]:
        learns = {c["name"]: c for c in m["checks"]}["learns"]["detail"]
        # from scratch, 30 epochs of 64 easy images: boxes, masks and keypoints are found past the floor, the loss falls
        assert learns["metric"] in ("val_map50_box", "val_map50_mask", "val_map50_pose") and learns["value"] >= learns["criteria"]["at_least"]
        assert learns["loss_drop"] >= 0.2 and len(learns["train_loss"]) == 30
        # its control (each training image given another image's label file) stays below the floor
        ctl = learns["control"]
        assert ctl["job"] and ctl["job"] != m["job"] and ctl["value"] is not None and ctl["reached"] is False, ctl
        _reloaded_in_a_fresh_process(m)
    assert "with a control for instance_segmentation, object_detection, pose_estimation" in " ".join(report["criteria"])


@pytest.mark.slow
@pytest.mark.skipif("not config.getoption('--full-checks')", reason="every Ultralytics model: run with --full-checks (the reports under docs/checks are its evidence)")
def test_check_every_ultralytics_model(runner, tmp_path):
    out = tmp_path / "check"
    runner.run("check", "--framework", "ultralytics", "--out", out, check=False)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["total"] == 14 and [m["model"] for m in report["models"] if m["status"] == "failed" or len(m["checks"]) != 6
                                                                  or not all(c["ok"] for c in m["checks"][:5])] == []


@pytest.mark.slow
@pytest.mark.parametrize("auto", [True, False])
def test_oom_is_reported_and_auto_batch_size_retries_once_with_half(runner, daemon, tmp_path, auto):
    # torch.OutOfMemoryError is injected above batch 4 (FAULT_OOM_ABOVE_BATCH) where YOLO.train
    # starts; the retry policy around it is the adapter's own.
    spec = tmp_path / "oom.json"
    spec.write_text(json.dumps({"model": "ultralytics/yolov8n", "dataset": {"path": str(make_yolo(tmp_path / "det", "detect")), "format": "yolo"},
                                "train": {"epochs": 1, "batch_size": 8, "input_size": 64, "auto_batch_size": auto},
                                "env_vars": {"FAULT_OOM_ABOVE_BATCH": "4"}}))
    assert_oom_policy(runner, spec, auto)
