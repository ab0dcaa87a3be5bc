"""timm end to end: real training through the daemon in the real uv-built timm env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_oom_policy

pytestmark = [pytest.mark.slow,
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)


def _reloaded_in_a_fresh_process(m):
    """The checkpoint check's real reload: the model at the end of training, loaded in another
    process, predicts the same on its fixed images (adapters.base.prediction_difference)."""
    rl = {c["name"]: c for c in m["checks"]}["checkpoint"]["detail"]["reload"]
    assert rl["images"] >= 1 and rl["numbers"] > 0 and rl["max_difference"] <= rl["tolerance"] == 1e-3 and rl["fresh_process_seconds"] > 0, (m["model"], rl)
    assert rl["epoch"] == {c["name"]: c for c in m["checks"]}["learns"]["detail"]["epochs"]


def _job(tmp_path, shapes, **train):
    spec = {"name": "shapes-resnet18", "model": "timm/resnet18", "dataset": {"path": str(shapes), "format": "imagefolder"},
            "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "input_size": 64, "pretrained": False, **train},
            "resources": {"gpus": 0}}
    p = tmp_path / f"job{len(list(tmp_path.glob('job*.yaml')))}.yaml"
    p.write_text(json.dumps(spec))
    return p


def test_train_metrics_checkpoint_infer_resume(runner, daemon, shapes, tmp_path):
    jid = runner.submit(_job(tmp_path, shapes))
    job = runner.wait_state(jid, timeout=900)
    assert job["state"] == "succeeded", job.get("log_tail")
    m = job["metrics"]
    assert {"train_loss", "val_loss", "val_top1", "val_top5", "lr", "epoch_time", "val_accuracy"} <= set(m)
    status, body = daemon.get(f"/jobs/{jid}/metrics?name=val_top1")
    assert [p["epoch"] for p in body["metrics"]] == [1, 2]
    log = runner.run("logs", jid).stdout
    line = [l for l in log.splitlines() if l.startswith("[metrics] epoch=2/2")][0]
    assert f"val_top1={m['val_top1']:.6g}" in line
    arts = {Path(a["path"]).name for a in job["artifacts"]}
    assert {"last.pth", "best.pth"} <= arts
    out = json.loads(runner.run("infer", jid, shapes / "val" / "circle" / "circle_000.png").stdout)
    assert out["predicted_label"] in ("circle", "square", "triangle")
    assert len(out["top5_predictions"]) == 3 and {"preprocess_ms", "inference_ms", "postprocess_ms"} <= set(out)
    assert abs(sum(p["confidence"] for p in out["top5_predictions"]) - 1) < 1e-4
    # resume from the last checkpoint for one more epoch
    last = next(a["path"] for a in job["artifacts"] if a["path"].endswith("last.pth"))
    r = runner.wait_state(runner.submit(_job(tmp_path, shapes, epochs=3, resume=last)), timeout=600)
    assert r["state"] == "succeeded"
    rlog = runner.run("logs", r["id"]).stdout
    assert "resumed from" in rlog and "[metrics] epoch=3/3" in rlog and "[metrics] epoch=1/3" not in rlog


@pytest.mark.parametrize("change, expected", [
    ({"model": "timm/resnet9000"}, "neither the registry nor timm knows it"),
    ({"dataset": {"path": "/nonexistent/x"}}, "dataset.path: /nonexistent/x does not exist"),
    ({"train": {"epochs": 1, "warmup": 3}}, "train.warmup: unknown setting for timm"),
    ({"train": {"epochs": 1, "optimizer": "lion"}}, "train.optimizer: given 'lion'; expected one of sgd, adam, adamw, rmsprop"),
    ({"train": {"epochs": 1, "label_smoothing": 0.9}}, "train.label_smoothing: given 0.9; expected <= 0.5"),
])
def test_submit_time_errors(runner, home, shapes, tmp_path, change, expected):
    spec = {"model": "timm/resnet18", "dataset": {"path": str(shapes)}, **change}
    p = tmp_path / "bad.yaml"
    p.write_text(json.dumps(spec))
    r = runner.run("submit", p, check=False)
    assert r.returncode == 2 and expected in r.stderr
    assert not list((home / "spool").glob("*.job.json"))


def test_empty_class_folder_fails_at_submit(runner, shapes, tmp_path):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(shapes, data)
    for f in (data / "train" / "square").iterdir():
        f.unlink()
    p = _job(tmp_path, data)
    r = runner.run("submit", p, check=False)
    assert r.returncode == 2 and f"class folder {data / 'train' / 'square'} is empty" in r.stderr


def test_model_timm_knows_but_registry_lacks_runs_with_warning(runner, shapes, tmp_path):
    spec = {"model": "timm/resnet10t", "dataset": {"path": str(shapes)}, "train": {"input_size": 32}}
    p = tmp_path / "x.yaml"
    p.write_text(json.dumps(spec))
    r = runner.run("submit", p)
    assert "not in the registry; timm knows it" in r.stderr


@pytest.mark.parametrize("auto", [True, False])
def test_oom_is_reported_and_auto_batch_size_retries_once_with_half(runner, daemon, shapes, tmp_path, auto):
    # torch.OutOfMemoryError is injected above batch 4 (FAULT_OOM_ABOVE_BATCH); the rest is real.
    spec = json.loads(_job(tmp_path, shapes, epochs=1, auto_batch_size=auto).read_text())
    spec["env_vars"] = {"FAULT_OOM_ABOVE_BATCH": "4"}
    p = tmp_path / "oom.yaml"
    p.write_text(json.dumps(spec))
    assert_oom_policy(runner, p, auto)


HOST_PROBE = r"""
import json, sys, torch, timm
def peak():  # the address space the process has reached (what RLIMIT_AS, resources.memory_gb, bounds)
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmPeak:"))
size, batch = int(sys.argv[1]), int(sys.argv[2])
m = timm.create_model("resnet18", pretrained=False, num_classes=2).train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
peaks = {}
for b in (batch // 2, batch):
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(torch.randn(b, 3, size, size)), torch.zeros(b, dtype=torch.long)).backward()
        opt.step()
    peaks[b] = peak()
print("PROBE " + json.dumps({"half": peaks[batch // 2], "full": peaks[batch]}))
"""


def test_a_real_host_oom_under_memory_gb_is_retried_with_half_the_batch_and_trains(runner, daemon, tmp_path):
    """The out-of-memory retry against a real allocation failure, on the CPU: nothing is injected.
    A probe job in the same env measures the address space resnet18's training steps reach at
    320 px with 48 and then 96 images (VmPeak: what RLIMIT_AS bounds). The job asks for 96 under a
    resources.memory_gb limit halfway between the two (a margin of 24 images' activations, ~1.2 GB,
    either way; extrapolating from smaller batches missed by ~1 GB in CI), so its first step's
    allocation fails in torch's CPU allocator (a RuntimeError, "can't allocate memory", not a
    MemoryError: is_oom did not know it before). The retry with 48 runs in a fresh process (the
    same pid, exec): retried in the same one, the memory glibc kept mapped after the failed attempt
    made the retry's first convolution fail in CI's run."""
    from runner.synth import make_shapes

    size, batch = 320, 96
    f = tmp_path / "probe.yaml"
    f.write_text(json.dumps({"name": "host-oom-probe", "command": ["python", "-c", HOST_PROBE, str(size), str(batch)], "env": "timm",
                             "workdir": str(tmp_path)}))
    probe = runner.wait_state(runner.submit(f), timeout=600)
    out = runner.run("logs", probe["id"]).stdout
    assert probe["state"] == "succeeded", out[-3000:]
    p = json.loads(next(l for l in out.splitlines() if l.startswith("PROBE "))[6:])
    assert p["full"] - p["half"] > 1 << 30, p  # 48 more 320 px images' activations: GBs, the margins' source
    limit_gb = round((p["half"] + p["full"]) / 2 / 2**30, 2)
    data = make_shapes(tmp_path / "data", per_class=batch // 2 + 1, val_per_class=2, size=32, classes=("circle", "square"))
    spec = {"name": "host-oom", "model": "timm/resnet18", "dataset": {"path": str(data), "format": "imagefolder"},
            "train": {"epochs": 1, "batch_size": batch, "input_size": size, "lr": 0.001, "pretrained": False, "auto_batch_size": True},
            "resources": {"gpus": 0, "memory_gb": limit_gb}}
    f = tmp_path / "oom.yaml"
    f.write_text(json.dumps(spec))
    job = runner.wait_state(runner.submit(f), timeout=900)
    log = runner.run("logs", job["id"]).stdout
    print(json.dumps({"probe": p, "memory_gb": limit_gb, "state": job["state"]}))
    # torch's own message, from the real allocator
    assert "runner: RuntimeError: " in log and "DefaultCPUAllocator: can't allocate memory" in log, log[-3000:]
    assert (f"out of memory at batch_size={batch}; retrying once with batch_size={batch // 2} (auto_batch_size; the host's memory: "
            "in a fresh process)") in log, log[-3000:]
    assert job["state"] == "succeeded", log[-3000:]
    assert "[metrics] epoch=1/1" in log and log.count("runner: out of memory at batch_size=") == 1


def test_check_two_models_learn_and_their_shuffled_label_controls_do_not(runner, home, tmp_path):
    out = tmp_path / "check"
    r = runner.run("check", "timm/resnet18", "timm/resnet50", "--out", out, check=False)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"total": 2, "success": 2, "partial": 0, "failed": 0, "learns": 2, "success_rate": 1.0}, r.stdout + r.stderr
    for m in report["models"]:
        assert [c["name"] for c in m["checks"]] == ["load", "train", "validate", "checkpoint", "infer", "learns"]
        assert all(c["ok"] and c["seconds"] > 0 for c in m["checks"])
        learns = m["checks"][-1]["detail"]
        assert learns["value"] >= learns["criteria"]["at_least"] and len(learns["train_loss"]) == learns["epochs"]
        # the same run with the training labels shuffled stays below the threshold
        assert learns["control"]["value"] < learns["criteria"]["at_least"] and learns["control"]["reached"] is False
        _reloaded_in_a_fresh_process(m)
    assert len(report["commit"].split("+")[0]) == 40 and report["machine"]["cores"] >= 1
    assert report["command"].startswith("runner check timm/resnet18")
    md = (out / "report.md").read_text()
    assert "| timm/resnet18 | timm | image_classification | 64 |" in md and "shuffled-label control" in md


def test_check_reports_a_failure_honestly(runner, home, tmp_path):
    site = home / "registry.toml"
    site.write_text('[models.timm.broken_net]\ndisplay_name = "Broken"\ntask_type = "image_classification"\n')
    out = tmp_path / "check"
    r = runner.run("check", "timm/broken_net", "--out", out, check=False)
    assert r.returncode == 1
    report = json.loads((out / "report.json").read_text())
    m = report["models"][0]
    assert m["status"] == "failed" and report["summary"]["success_rate"] == 0.0
    assert "timm does not know 'broken_net'" in json.dumps(m)


@pytest.mark.skipif("not config.getoption('--full-checks')", reason="the whole timm list: run with --full-checks (the reports under docs/checks are its evidence)")
def test_check_every_timm_model(runner, home, tmp_path):
    out = tmp_path / "check"
    runner.run("check", "--framework", "timm", "--out", out, check=False)
    report = json.loads((out / "report.json").read_text())
    failed = [m["model"] for m in report["models"] if m["status"] == "failed" or len(m["checks"]) != 6
                                                                  or not all(c["ok"] for c in m["checks"][:5])]
    assert report["summary"]["total"] == 13 and not failed
