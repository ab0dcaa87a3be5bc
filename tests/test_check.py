"""The check report's judgement on its own: the learns criteria and verdicts, n/a entries, a
repo's checks read off its job, mAP@0.5, and the report's provenance and wording."""

from __future__ import annotations

import math

import pytest

from adapters.base import map50
from runner import check as chk
from runner.store import Store


@pytest.mark.parametrize("value, ok", [(1.0, True), (0.59, True), (0.58, False), (1 / 3, False), (None, False), (math.nan, False)])
def test_classification_learns_means_chance_plus_a_margin(value, ok):
    crit = chk.learns_criteria("val_accuracy", 3, {})
    assert crit["at_least"] == pytest.approx(1 / 3 + chk.LEARNS_MARGIN, abs=1e-4)
    assert "chance 1/3" in crit["rule"]
    assert chk.judge(crit, value, [1.0, 0.9])["ok"] is ok


@pytest.mark.parametrize("value, losses, ok, why", [
    (0.4, [10.0, 5.0], True, None),
    (0.0, [10.0, 1.0], False, "not above 0"),          # a detector that finds nothing has not learned
    (0.4, [10.0, 8.5], False, "less than 20 %"),       # the metric moved but the loss hardly did
    (0.4, [10.0, 12.0], False, "less than 20 %"),      # loss went up
    (0.4, [10.0], False, "less than 20 %"),            # one epoch: no drop to measure
    (0.4, [math.inf, 1.0], False, "less than 20 %"),
])
def test_other_tasks_need_the_metric_above_zero_and_the_loss_down(value, losses, ok, why):
    crit = chk.learns_criteria("val_map50_box", None, {})
    v = chk.judge(crit, value, losses)
    assert v["ok"] is ok
    assert why is None or why in v["why"]


def test_thresholds_come_from_the_check_table_and_are_stated():
    crit = chk.learns_criteria("val_accuracy", 5, {"learns_margin": 0.4})
    assert crit["at_least"] == pytest.approx(0.6) and "0.40" in crit["rule"]
    crit = chk.learns_criteria("val_bleu", None, {"learns_loss_drop": 0.5})
    assert crit["loss_drop"] == 0.5 and "50 %" in crit["rule"]


def test_pending_learns_is_judged_and_status_follows():
    checks = [{"name": n, "ok": True, "seconds": 0.1} for n in ("load", "train", "validate", "checkpoint", "infer")]
    pending = {"name": "learns", "ok": None, "verdict": "pending", "seconds": 3.0,
               "detail": {"epochs": 8, "metric": "val_accuracy", "value": 1 / 3, "classes": 3, "train_loss": [1.1, 1.0]}}
    judged = chk.judge_learns(pending, {})
    assert judged["ok"] is False and "verdict" not in judged and "< 0.5833" in judged["error"]
    assert judged["detail"]["criteria"]["at_least"] == pytest.approx(0.5833, abs=1e-4)
    assert chk.status_of(checks + [judged]) == "partial"  # runs, does not learn: partial, with the numbers
    assert chk.status_of(checks + [chk.judge_learns({**pending, "detail": {**pending["detail"], "value": 0.9}}, {})]) == "success"
    na = {"name": "learns", "ok": None, "seconds": None, "reason": "not set"}
    assert chk.status_of(checks + [na]) == "success"  # n/a does not count against
    assert chk.status_of(checks) == "partial"  # a missing check is not a pass
    assert chk.status_of([{**c, "ok": False} for c in checks] + [na]) == "failed"


def test_map50():
    truth = [[(0, [0, 0, 10, 10])], [(1, [5, 5, 20, 20])]]
    assert map50([[(0.9, 0, [0, 0, 10, 10])], [(0.8, 1, [5, 5, 20, 20])]], truth) == 1.0
    assert map50([[(0.9, 0, [30, 30, 40, 40])], []], truth) == 0.0
    # a false positive ranked above the hit halves class 0's precision; class 1 is missed
    assert map50([[(0.95, 0, [50, 50, 60, 60]), (0.9, 0, [0, 0, 10, 10])], []], truth) == pytest.approx(0.25)
    assert map50([[(0.9, 1, [0, 0, 10, 10])], []], truth) == 0.0  # right box, wrong class
    assert map50([[(0.9, 0, [0, 0, 10, 14])], []], truth) == pytest.approx(0.5)  # IoU 0.71 >= 0.5 counts
    assert map50([[(0.9, 0, [0, 0, 10, 25])], []], truth) == 0.0  # IoU 0.4 does not


@pytest.fixture
def repo_job(tmp_path):
    s = Store(tmp_path / "db")
    job_dir = tmp_path / "jobs" / "r1"
    (job_dir / "out").mkdir(parents=True)
    s.insert_job({"id": "r1", "name": "check-convnext", "user": "u", "uid": 0, "kind": "model", "spec": {"task": "image_classification"},
                  "gpus": [], "after": [], "job_dir": str(job_dir)}, now=100.0)
    s.transition("r1", "preparing", now=101.0)
    s.transition("r1", "running", now=131.0, started_at=131.0)
    for e, (loss, acc) in enumerate([(1.6, 20.0), (1.2, 40.0), (0.6, 80.0)]):
        s.add_metrics("r1", [("train_loss", loss, None, e + 1), ("test_acc1", acc, None, e + 1), ("file/test_acc1", acc, None, e + 1)])
    (job_dir / "out" / "checkpoint-2.pth").write_bytes(b"x" * 123)
    s.add_artifact("r1", str(job_dir / "out" / "checkpoint-2.pth"), "checkpoint", 123)
    s.transition("r1", "succeeded", now=191.0, finished_at=191.0, exit_code=0)
    return s, s.get_job("r1")


LEARNS = {"learns": {"metric": "test_acc1", "at_least": 45.0, "chance": 20.0}}


def test_repo_checks_are_measured_or_na_never_placeholders(repo_job):
    s, job = repo_job
    rep = chk.repo_checks(s, job, LEARNS)
    by = {c["name"]: c for c in rep["checks"]}
    assert [c["name"] for c in rep["checks"]] == list(chk.CHECKS)
    assert by["load"]["seconds"] == pytest.approx(30.0)  # preparing -> running
    assert by["train"]["seconds"] == pytest.approx(60.0)  # the script's run
    for name in ("validate", "checkpoint", "infer"):
        assert by[name]["seconds"] is None  # not timed apart: n/a, not 0.0
    assert by["validate"]["ok"] and "file/test_acc1" not in by["validate"]["detail"]
    assert by["checkpoint"]["ok"] is None and "no inference mapped to reload them" in by["checkpoint"]["reason"]
    assert by["checkpoint"]["detail"] == [{"path": "out/checkpoint-2.pth", "bytes": 123}]
    assert by["infer"]["ok"] is None and by["infer"]["reason"]
    assert by["learns"]["ok"] is True and by["learns"]["detail"]["value"] == 80.0
    assert rep["status"] == "success"
    # with the table's inference: it reloads the checkpoint, so both pass or both fail
    ran = {"name": "infer", "ok": True, "seconds": 2.5, "detail": {"predicted_label": "circle"}}
    by = {c["name"]: c for c in chk.repo_checks(s, job, LEARNS, ran)["checks"]}
    assert by["infer"] is ran and by["checkpoint"]["ok"] is True
    failed = {"name": "infer", "ok": False, "seconds": 1.0, "error": "KeyError: 'model'"}
    rep = chk.repo_checks(s, job, LEARNS, failed)
    by = {c["name"]: c for c in rep["checks"]}
    assert by["checkpoint"]["ok"] is False and "KeyError: 'model'" in by["checkpoint"]["error"] and rep["status"] != "success"


def test_repo_that_does_not_learn_is_partial(repo_job):
    s, job = repo_job
    rep = chk.repo_checks(s, job, {"learns": {"metric": "test_acc1", "at_least": 95.0, "chance": 20.0}})
    assert rep["status"] == "partial" and "80 < 95" in {c["name"]: c for c in rep["checks"]}["learns"]["error"]
    rep = chk.repo_checks(s, job, {"learns": {"metric": "no_such_metric", "loss": "train_loss"}})
    assert rep["status"] == "partial"
    assert chk.repo_checks(s, job, {})["checks"][-1]["ok"] is None  # no learns table: n/a, with the reason


def test_markdown_states_provenance_criteria_and_na_reasons(repo_job):
    s, job = repo_job
    report = chk.gather(s, None, {}, command="runner check repo/convnext")
    assert len(report["commit"].split("+")[0]) in (40, 7) or report["commit"] == "unknown"
    assert report["machine"]["cores"] >= 1 and report["command"] == "runner check repo/convnext"
    rep = chk.repo_checks(s, job, LEARNS)
    report["models"] = [{"model": "repo/convnext", "framework": "repo", "task": "image_classification", "job": "r1", "job_state": "succeeded",
                         "status": rep["status"], "checks": rep["checks"], "seconds": 90.0, "input_size": 64, "epochs": 3, "note": None}]
    report["summary"].update(total=1, success=1, learns=1, success_rate=1.0)
    md = chk.markdown(report, "t")
    assert report["commit"] in md and "runner check repo/convnext" in md and report["machine"]["line"] in md
    assert "chance plus 25 points" in md
    assert "| repo/convnext | repo | image_classification | 64 | 3 | success | ok 30.0s | ok 60.0s | ok | n/a | n/a | ok test_acc1=80 |" in md
    assert "repo/convnext infer: the table maps no inference" in md
    assert " 0.0s" not in md  # no placeholder times
