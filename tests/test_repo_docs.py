"""docs/adding-a-repo.md's complete example, as written: its repo made from the files the page
shows, its table and job file used as they stand (the url pointed at that repo, as a site points
it at a mirror), and what the page says happens checked through the real daemon."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_repos import git

DOC = Path(__file__).resolve().parent.parent / "docs" / "adding-a-repo.md"


def blocks() -> dict:
    """{title: text} of the page's fenced blocks that carry a title."""
    return {m.group(2): m.group(3) + "\n" for m in re.finditer(r'```(\w+) title="([^"]+)"\n(.*?)\n```', DOC.read_text(), re.S)}


def test_the_reference_names_every_key_runner_reads():
    from config_translators.repo import KEYS

    text = DOC.read_text()
    spans = re.findall(r"`([^`\n]+)`", text)  # the page's inline code
    missing = sorted({k for keys in KEYS.values() for k in keys if not any(re.search(rf"(?<![\w.]){k}\b", s) for s in spans)})
    assert missing == [], f"docs/adding-a-repo.md does not describe: {missing}"
    for placeholder in ("output_dir", "src", "job_dir", "device", "gpus", "seed", "checkpoint", "image", "images", "image_stem"):
        assert "{" + placeholder + "}" in text, placeholder


def test_the_guides_parser_rules_are_what_the_parser_does():
    """The guide's words on tqdm redraws and on metrics with no epoch group, held to the code."""
    from log_parsers import LineAssembler, build_parser

    text = " ".join(DOC.read_text().split())
    assert 'reaches the parser as its last `\\r` segment only: `"3/10 loss 0.9\\r10/10 loss 0.5\\n"` is the one line `"10/10 loss 0.5"`' in text
    assert LineAssembler().feed(b"3/10 loss 0.9\r10/10 loss 0.5\n") == ["10/10 loss 0.5"]
    assert '`"Epoch 1: 100% loss 0.8\\rEpoch 2: 100% loss 0.5\\n"` gives both' in text
    assert LineAssembler().feed(b"Epoch 1: 100% loss 0.8\rEpoch 2: 100% loss 0.5\n") == ["Epoch 1: 100% loss 0.8", "Epoch 2: 100% loss 0.5"]
    assert "A metric matched before any line set an epoch is stored with no epoch and no step" in text
    p = build_parser({"patterns": [r"^Epoch (?P<epoch>\d+):.* loss (?P<loss>[\d.]+)", r"^val mIoU (?P<val_miou>[\d.]+)"]})
    lines = ["val mIoU 0.1", "Epoch 2: 100% loss 0.5", "val mIoU 0.4"]
    assert [p.feed_line(line) for line in lines] == [[("val_miou", 0.1, None, None)], [("loss", 0.5, None, 2)], [("val_miou", 0.4, None, 2)]]


@pytest.mark.slow
def test_the_guides_example_works_as_written(runner, daemon, home, tmp_path):
    b = blocks()
    assert {"requirements.txt", "train.py", "predict.py", "tinycls/site.json", "registry.toml", "job.yaml"} <= set(b)
    src = tmp_path / "tinycls"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    for name in ("requirements.txt", "train.py", "predict.py"):
        (src / name).write_text(b[name])
    git("add", ".", cwd=src)
    git("commit", "-qm", "tinycls", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src)
    table = b["registry.toml"].replace("TINYCLS_COMMIT", commit)
    table = table.replace('url = "https://github.com/example-lab/tinycls"', f'url = "file://{src}"')  # the site's mirror
    (home / "registry.toml").write_text(table)
    (home / "tinycls").mkdir()
    (home / "tinycls" / "site.json").write_text(b["tinycls/site.json"])
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.yaml").write_text(b["job.yaml"])
    subprocess.run([sys.executable, "-m", "runner", "synth", "shapes", "shapes", "--easy"], cwd=work, check=True, capture_output=True)

    jid = runner.submit(str(work / "job.yaml"), cwd=work)
    j = runner.wait_state(jid, timeout=600)
    raw = runner.run("logs", jid, "--raw").stdout
    assert j["state"] == "succeeded", raw
    log = runner.run("logs", jid).stdout
    assert "\x1b[32mepoch 0/12\x1b[0m loss" in raw and "\x1b" not in log and "epoch 11/12 loss" in log
    # the table's defaults.epochs, its CPU-only flag, its env placeholder, its output folder
    launch = json.loads((home / "run" / jid / "launch.json").read_text())
    argv = launch["argv"]
    assert argv[argv.index("--epochs") + 1] == "12" and "--no-accel" in argv and "--device" not in argv
    assert launch["env"]["TINYCLS_SAVE"] == str(Path(j["job_dir"]) / "out")
    assert (Path(j["job_dir"]) / "src" / "configs" / "site.json").read_text() == '{"seed": 0}\n'  # the shipped file
    series = runner.json("metrics", jid)["series"]
    assert [p["epoch"] for p in series["loss"]] == list(range(1, 13)) and len(series["val_acc"]) == 12
    assert series["val_acc"][-1]["value"] >= 0.6
    table_out = runner.run("metrics", jid, "--name", "val_acc").stdout.splitlines()
    assert table_out[0].split() == ["EPOCH", "val_acc"] and len(table_out) == 13
    assert j["note"] == "results file agrees with the parsed log (24 values over 12 epochs)"
    assert [a["path"] for a in j["artifacts"]] == [str(Path(j["job_dir"]) / "src" / "weights" / "last.npz")]  # saved in its working folder

    image = work / "shapes" / "val" / "circle" / "circle_000.png"
    res = runner.json("infer", jid, str(image))
    assert res["task"] == "image_classification" and res["predicted_label"] in ("circle", "square", "triangle")
    assert sorted(p["label"] for p in res["top5_predictions"]) == ["circle", "square", "triangle"]
    assert res["checkpoint"].endswith("src/weights/last.npz")

    out = runner.run("repo", "lock", "tinycls").stdout
    assert f"locked repo/tinycls at {commit[:12]}" in out and (home / "repo-locks" / "tinycls.lock").exists()
    j2 = runner.wait_state(runner.submit(str(work / "job.yaml"), cwd=work), timeout=600)
    assert f"runner: lock recorded in {home / 'repo-locks' / 'tinycls.lock'}" in runner.run("logs", j2["id"]).stdout
    assert j2["env_hash"] == j["env_hash"]  # the recorded lock is the one the first job built from

    # the same table with its results file mapped wrongly: on_mismatch = "fail" fails the job
    (home / "registry.toml").write_text(table + "\n" + table.replace("[repos.tinycls", "[repos.tinybad")
                                        .replace('compare = { loss = "loss", val_acc = "val_acc" }', 'compare = { loss = "val_acc" }')
                                        .replace('"configs/site.json" = "tinycls/site.json"', '"configs/site.json" = { text = \'{"seed": 1}\' }'))
    (work / "bad.yaml").write_text(b["job.yaml"].replace("repo/tinycls", "repo/tinybad"))
    j3 = runner.wait_state(runner.submit(str(work / "bad.yaml"), cwd=work), timeout=600)
    assert (j3["state"], j3["reason"]) == ("failed", "results_mismatch")
    assert j3["note"].startswith("results file disagrees with the log: epoch 1: loss="), j3["note"]

    r = runner.run("check", "repo/tinycls", "--out", str(tmp_path / "check"), check=False)
    rep = json.loads((tmp_path / "check" / "report.json").read_text())["models"][0]
    by = {c["name"]: c for c in rep["checks"]}
    assert r.returncode == 0 and rep["status"] == "success", r.stdout
    assert by["infer"]["ok"] and by["checkpoint"]["ok"] and by["learns"]["ok"]
    assert rep["repo_commit"] == commit  # which code was checked (found missing by a newcomer)
    assert f"- repo/tinycls: file://{src} `{commit}`" in (tmp_path / "check" / "report.md").read_text()
    # reused after its checkpoints are gone (as a check of large models removes them, or retention):
    # the inference its report measured stands (it was "has no checkpoint left to infer with")
    for c in by["checkpoint"]["detail"]:
        (Path(runner.json("show", rep["job"])["job_dir"]) / c["path"]).unlink()
    r = runner.run("check", "repo/tinycls", "--out", str(tmp_path / "again"), "--reuse", str(tmp_path / "check" / "report.json"), check=False)
    again = json.loads((tmp_path / "again" / "report.json").read_text())["models"][0]
    assert f"repo/tinycls: job {rep['job']} reused" in r.stderr and again["status"] == "success", r.stderr
    assert {c["name"]: c for c in again["checks"]}["infer"] == by["infer"]


def tinyseg(tmp_path, home) -> tuple[Path, str]:
    """The guide's segmentation repo made from its blocks, committed, and its table in the home's
    registry (the url pointed at that repo): (the repo, its commit)."""
    b = blocks()
    src = tmp_path / "tinyseg"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    for name in ("pngio.py", "train.py", "predict.py"):
        (src / name).write_text(b[f"tinyseg/{name}"])
    git("add", ".", cwd=src)
    git("commit", "-qm", "tinyseg", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src)
    table = b["registry.toml (tinyseg)"].replace("TINYSEG_COMMIT", commit)
    (home / "registry.toml").write_text(table.replace('url = "https://github.com/example-lab/tinyseg"', f'url = "file://{src}"'))
    return src, commit


def test_the_guides_segmentation_example_works_as_written(runner, daemon, home, tmp_path):
    """The guide's second example: its fixed data folders placed by the table, its metrics, its
    checkpoint, and `runner infer` answering with the classes of the PNG its predict script writes."""
    from PIL import Image

    src, _ = tinyseg(tmp_path, home)
    work = tmp_path / "work"
    work.mkdir()
    (work / "seg.yaml").write_text(blocks()["seg.yaml"])
    subprocess.run([sys.executable, "-m", "runner", "synth", "masks", "masks", "--easy"], cwd=work, check=True, capture_output=True)
    j = runner.wait_state(runner.submit(str(work / "seg.yaml"), cwd=work), timeout=300)
    assert j["state"] == "succeeded", runner.run("logs", j["id"]).stdout
    checkout = Path(j["job_dir"]) / "src"
    for part in ("train/images", "train/masks", "val/images", "val/masks", "classes.txt"):
        assert (checkout / "data" / part).resolve() == (work / "masks" / part).resolve(), part
    series = runner.json("metrics", j["id"])["series"]
    miou = [p["value"] for p in series["val_miou"]]
    assert [p["epoch"] for p in series["loss"]] == list(range(1, 9)) and len(miou) == 8
    assert miou[0] < 0.3 <= miou[-1] and series["loss"][-1]["value"] < series["loss"][0]["value"]  # it learns
    assert [a["path"] for a in j["artifacts"]] == [str(checkout / "runs" / "last.json")]

    image = work / "masks" / "val" / "images" / "001.png"
    ans = runner.json("infer", j["id"], str(image))
    # what its predict script writes with that checkpoint, run here by hand
    subprocess.run([sys.executable, "predict.py", "--weights", str(checkout / "runs" / "last.json"), "--out", str(tmp_path / "p.png"),
                    str(image)], cwd=src, check=True)
    drawn = {k: n for n, k in Image.open(tmp_path / "p.png").getcolors()}
    names = (work / "masks" / "classes.txt").read_text().split()
    assert ans["task"] == "semantic_segmentation" and "warnings" not in ans, ans
    assert [(m["label_id"], m["label"], m["pixels"]) for m in ans["masks"]] == [(k, names[k], drawn[k]) for k in sorted(drawn)]
    assert len(drawn) > 1 and ans["masks"][0]["pixels"] == 3367 and round(ans["masks"][0]["fraction"], 2) == 0.82  # as the guide says


def test_runner_check_fills_every_column_for_the_guides_segmentation_repo(runner, home, tmp_path):
    """`runner check repo/tinyseg`: a synthetic masks set made for the table's format, its script
    trained on it (one job, by the check's own daemon), and each column what a user expects."""
    tinyseg(tmp_path, home)
    r = runner.run("check", "repo/tinyseg", "--out", str(tmp_path / "check"), check=False)
    rep = json.loads((tmp_path / "check" / "report.json").read_text())["models"][0]
    by = {c["name"]: c for c in rep["checks"]}
    assert r.returncode == 0 and rep["status"] == "success", r.stdout
    assert (rep["task"], rep["epochs"]) == ("semantic_segmentation", 8)
    job = runner.json("show", rep["job"])
    assert job["spec"]["dataset"]["format"] == "masks" and (Path(job["spec"]["dataset"]["path"]) / "val" / "masks").is_dir()
    assert by["load"]["ok"] and by["train"]["ok"] and by["train"]["seconds"] > 0
    assert by["validate"]["ok"] and set(by["validate"]["detail"]) == {"val_miou"}
    assert by["checkpoint"]["ok"] and by["checkpoint"]["detail"][0]["path"] == "src/runs/last.json"
    assert by["infer"]["ok"] and by["infer"]["detail"]["image"] == "000.png" and "background" in by["infer"]["detail"]["masks"]
    assert len(by["infer"]["detail"]["masks"]) > 1  # a shape's class besides the background
    d = by["learns"]["detail"]
    assert by["learns"]["ok"] and d["criteria"]["at_least"] == 0.3 and d["value"] >= 0.3 and d["epochs"] == 8
    assert d["train_loss"][-1] < d["train_loss"][0]
    assert "| repo/tinyseg | repo | semantic_segmentation |" in r.stdout and f"ok val_miou={d['value']:.3g}" in r.stdout
