"""GitHub-style repos pinned by commit, tested on real git repositories the test creates."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TRAIN = textwrap.dedent('''
    import argparse, csv, json, os, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--img-size", type=int, nargs=2, required=True)
    p.add_argument("--train-dir", required=True)
    p.add_argument("--val-dir", required=True)
    p.add_argument("--hyp", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    import six  # from the repo's own requirements
    assert a.img_size[0] == a.img_size[1]
    # as YAML reads it: a comment starts at a "#" after whitespace ("0.05# x" is one string)
    hyp = {k: v.split(" #")[0].strip() for k, v in (l.split(": ", 1) for l in open(a.hyp).read().splitlines() if ": " in l)}
    os.makedirs(a.out, exist_ok=True)
    classes = sorted(os.listdir(a.train_dir))
    print(f"classes={len(classes)} momentum={hyp['momentum']} lr0={hyp['lr0']!r}", flush=True)
    rows = []
    for e in range(a.epochs):
        for s in range(1, 5):
            sys.stderr.write(f"\\r  {e}/{a.epochs - 1}  step {s}/4  loss {1.0 / (e + s):.5f}")
            sys.stderr.flush()
        sys.stderr.write("\\n")
        acc = round(0.4 + 0.1 * e, 4)
        vloss = round(1.0 / (e + 2), 5)
        print(f"EVAL epoch {e}: acc {acc:.4f} val_loss {vloss:.5f}", flush=True)
        with open(os.path.join(a.out, "log.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": e, "acc": acc, "val_loss": vloss}) + "\\n")
        rows.append({"epoch": e, "acc": acc, "val_loss": vloss})
        open(os.path.join(a.out, f"ckpt-{e}.pt"), "wb").write(b"weights" * 100)
    print(f"FINAL re-validation: acc {rows[-1]['acc'] + 0.5:.4f}", flush=True)
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["epoch", "acc", "val_loss"]); w.writeheader(); w.writerows(rows)
''')

HYP = "lr0: 0.01  # initial learning rate\nmomentum: 0.9  # SGD momentum\nweight_decay: 0.0005\n"  # (comments as YOLO's)


def git(*args, cwd):
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def trainrepo(tmp_path):
    src = tmp_path / "trainrepo"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "train.py").write_text(TRAIN)
    (src / "requirements.txt").write_text("six==1.16.0\n")
    (src / "hyp.base.yaml").write_text(HYP)
    (src / "LICENSE").write_text("MIT License\n\nCopyright (c) test\n")
    (src / "docs").mkdir()
    (src / "docs" / "big.bin").write_bytes(b"x" * 100_000)
    git("add", ".", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    first = git("rev-parse", "HEAD", cwd=src)
    git("tag", "v1.0", cwd=src)
    return src, first


def repo_table(url, commit, **over):
    t = {
        "url": url, "commit": commit, "license": "MIT", "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "entry": "train.py", "requirements": "requirements.txt", "overrides": ["packaging"], "task_type": "image_classification",
        "display_name": "Test repo", "description": "a repo made by the test", "dataset": {"format": "imagefolder"},
        "args": {"template": ["--epochs", "{epochs}", "--batch-size", "{batch_size}", "--img-size", "{input_size}", "{input_size}",
                              "--train-dir", "{train_dir}", "--val-dir", "{val_dir}", "--out", "{output_dir}"],
                 "optional": {"lr": ["--lr", "{lr}"]},
                 "hyp": {"base": "hyp.base.yaml", "flag": "--hyp", "set": {"lr0": "{lr}"}}},
        "defaults": {"epochs": 2, "batch_size": 4, "input_size": 32},
        "exclude": ["docs/"],
        "checkpoints": ["ckpt-*.pt"],
        "parser": {"patterns": [{"regex": r"^\s*(?P<epoch>\d+)/\d+\s+step \d+/\d+\s+loss (?P<train_loss>[\d.]+)", "epoch_offset": 1},
                                {"regex": r"^EVAL epoch (?P<epoch>\d+): acc (?P<acc>[\d.]+) val_loss (?P<val_loss>[\d.]+)", "epoch_offset": 1}],
                   "ignore": ["^FINAL re-validation"],
                   "results_file": {"path": "results.csv", "format": "csv", "epoch_column": "epoch", "epoch_offset": 1,
                                    "compare": {"acc": "acc", "val_loss": "val_loss"}}},
    }
    t.update(over)
    return t


def add_table(home, name, table):
    from runner import sitereg

    sitereg.put(home / "registry.toml", f"repos.{name}", table)


def job(tmp_path, shapes, name="testrepo", **extra):
    p = tmp_path / f"{name}-{len(list(tmp_path.glob('*.json')))}.json"
    p.write_text(json.dumps({"model": f"repo/{name}", "dataset": {"path": str(shapes), "format": "imagefolder"},
                             "train": {"epochs": 3, "lr": 0.05, **extra}}))
    return p


def test_repo_add_pins_and_refuses_branches(runner, home, trainrepo):
    src, first = trainrepo
    url = f"file://{src}"
    r = runner.run("repo", "add", url, "--commit", "main", check=False)
    assert r.returncode == 1 and "is a branch" in r.stderr and "pin a commit" in r.stderr
    r = runner.run("repo", "add", url, "--commit", "0" * 40, check=False)
    assert r.returncode == 1 and "no such commit" in r.stderr
    r = runner.run("repo", "add", url, "--commit", "v1.0", "--name", "mine")
    assert first in r.stdout and "tag v1.0" in r.stdout
    rows = runner.json("repo", "ls")
    mine = next(x for x in rows if x["name"] == "mine")
    assert (mine["commit"], mine["tag"], mine["license"], mine["entry"]) == (first, "v1.0", "MIT", "train.py")
    # its args are read from train.py's own add_argument calls (nothing run): the flags it has, what it could not tell marked
    assert mine["args"] == {"template": ["--epochs", "{epochs}", "--img-size", "{input_size}", "{input_size}", "--train-dir", "{train_dir}",
                                         "--val-dir", "{val_dir}", "--out", "{output_dir}"],
                            "optional": {"batch_size": ["--batch-size", "{batch_size}"], "lr": ["--lr", "{lr}"]}}
    assert "runner could not tell: --hyp (required)" in r.stdout
    assert "\n# runner could not tell: --hyp (required)" in (home / "registry.toml").read_text()
    assert runner.json("models", "--framework", "repo")[-1]["ref"] in {f"repo/{x['name']}" for x in rows}
    # adding it again never wipes the table a person edited (found by a newcomer): it says how to move the pin
    reg = home / "registry.toml"
    reg.write_text(reg.read_text().replace('[repos.mine]\n', '[repos.mine]\nnotes = "edited by hand"\n', 1))
    again = runner.run("repo", "add", url, "--commit", "v1.0", "--name", "mine", check=False)
    assert again.returncode == 1 and "repos.mine is in" in again.stderr and "set its commit" in again.stderr
    assert 'notes = "edited by hand"' in reg.read_text()
    runner.run("repo", "add", url, "--commit", "v1.0", "--name", "mine", "--replace")
    assert 'notes = "edited by hand"' not in reg.read_text()
    runner.run("repo", "rm", "mine")
    assert "mine" not in {x["name"] for x in runner.json("repo", "ls")}


@pytest.mark.slow
def test_repo_job_end_to_end(runner, daemon, home, trainrepo, shapes, tmp_path):
    src, first = trainrepo
    add_table(home, "testrepo", repo_table(f"file://{src}", first))
    # the branch moves on after pinning: what runs is still the pinned commit
    (src / "train.py").write_text("raise SystemExit('moved-on branch ran')\n")
    git("commit", "-qam", "v2", cwd=src)
    jid = runner.submit(job(tmp_path, shapes))
    j = runner.wait_state(jid, timeout=300)
    log = runner.run("logs", jid).stdout
    assert j["state"] == "succeeded", log
    assert "classes=3 momentum=0.9 lr0='0.05'" in log  # hyp yaml written from the repo's own base, lr set
    job_dir = Path(j["job_dir"])
    assert not (job_dir / "src" / "docs").exists() and (job_dir / "src" / "train.py").exists()  # sparse checkout
    assert git("rev-parse", "HEAD", cwd=job_dir / "src") == first
    from runner.store import Store

    s = Store(home / "runner.db")
    acc = [(m["epoch"], m["value"]) for m in s.metrics(j["id"], "acc")]
    assert acc == [(1, 0.4), (2, 0.5), (3, 0.6)]  # the final re-validation (1.1) is not an epoch
    assert [m["epoch"] for m in s.metrics(j["id"], "train_loss")] == [1, 2, 3]
    assert "results file agrees with the parsed log (6 values over 3 epochs)" in j["note"]
    assert sorted(Path(a["path"]).name for a in j["artifacts"]) == ["ckpt-0.pt", "ckpt-1.pt", "ckpt-2.pt"]
    # a second job reuses the clone cache and the env, in a worktree of its own
    j2 = runner.wait_state(runner.submit(job(tmp_path, shapes)), timeout=300)
    assert j2["env_hash"] == j["env_hash"] and j2["job_dir"] != j["job_dir"]
    caches = list((home / "repos").glob("*.git"))
    assert len(caches) == 1
    assert "ready" in runner.run("logs", j2["id"]).stdout.split("env repo:testrepo")[1].splitlines()[0]

    # the same repo with its results file mapped onto the wrong log metric: the job says so
    table = repo_table(f"file://{src}", first)
    table["parser"]["results_file"]["compare"] = {"acc": "val_loss"}
    add_table(home, "wrongmap", table)
    j3 = runner.wait_state(runner.submit(job(tmp_path, shapes, name="wrongmap")), timeout=300)
    assert j3["state"] == "succeeded"
    assert j3["note"].startswith("results file disagrees with the log: epoch 1: acc=0.4 in the results file, val_loss="), j3["note"]


@pytest.mark.slow
def test_patch_that_no_longer_applies_fails_at_preparing(runner, daemon, home, trainrepo, shapes, tmp_path):
    src, first = trainrepo
    add_table(home, "testrepo", repo_table(f"file://{src}", first, patches=[
        {"file": "train.py", "find": "import six  # from the repo's own requirements", "replace": "import six", "count": 1},
        {"file": "train.py", "find": "torch._six", "replace": "math", "count": 1}]))
    j = runner.wait_state(runner.submit(job(tmp_path, shapes)), timeout=300)
    assert (j["state"], j["reason"]) == ("failed", "patch_failed")
    assert "patches.1: train.py: expected 1 match(es) of 'torch._six', found 0" in j["log_tail"]


def test_dataset_format_and_missing_fields_fail_clearly(runner, home, trainrepo, shapes, tmp_path):
    src, first = trainrepo
    add_table(home, "testrepo", repo_table(f"file://{src}", first, dataset={"format": "yolo"}))
    r = runner.run("submit", job(tmp_path, shapes), check=False)
    assert r.returncode == 2 and "this repo expects 'yolo'" in r.stderr
    r = runner.run("submit", job(tmp_path, shapes, name="nope"), check=False)
    assert "repo/nope is not in the registry" in r.stderr


def test_a_repos_requirements_never_make_the_daemon_build_a_local_folder(runner, daemon, home, tmp_path, shapes):
    """A repo (pinned by an admin) whose requirements file names `pkg @ file:///...`: the daemon
    resolves and builds a repo's env itself, so such a line would have it build whatever that
    folder holds at build time, as root. The job fails at prepare in one line; nothing is built."""
    pkg = tmp_path / "pwnpkg"
    pkg.mkdir()
    marker = tmp_path / "built-as"
    (pkg / "pyproject.toml").write_text('[build-system]\nrequires = []\nbackend-path = ["."]\nbuild-backend = "backend"\n'
                                        '[project]\nname = "pwnpkg"\nversion = "1"\n')
    (pkg / "backend.py").write_text(f"import os\nopen({str(marker)!r}, 'a').write(str(os.getuid()))\n")
    src = tmp_path / "evilrepo"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "train.py").write_text(TRAIN)
    (src / "requirements.txt").write_text(f"six==1.16.0\npwnpkg @ file://{pkg}\n")
    (src / "LICENSE").write_text("MIT License\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    add_table(home, "evilrepo", repo_table(f"file://{src}", git("rev-parse", "HEAD", cwd=src)))
    j = runner.wait_state(runner.submit(job(tmp_path, shapes, name="evilrepo")), timeout=120)
    assert (j["state"], j["reason"]) == ("failed", "prepare_failed"), j
    assert "repos.evilrepo.requirements" in j["note"] and "pwnpkg @ file://" in j["note"] and "package specifier" in j["note"], j["note"]
    assert not marker.exists()
    assert daemon.proc.poll() is None


SEG_TRAIN = textwrap.dedent('''
    # a segmentation repo that reads fixed relative folders, as research scripts do
    import os, sys
    epochs = int(sys.argv[sys.argv.index("--epochs") + 1])
    classes = [c for c in open("data/classes.txt").read().splitlines() if c]
    for split in ("train", "val"):
        imgs = sorted(os.listdir(f"data/{split}/images"))
        masks = sorted(os.listdir(f"data/{split}/masks"))
        assert imgs and imgs == masks, (split, imgs, masks)
    print(f"classes={len(classes)} train={len(imgs)} copied_classes={not os.path.islink('data/classes.txt')}", flush=True)
    os.makedirs("runs", exist_ok=True)
    for e in range(epochs):
        print(f"Epoch {e + 1}: train_loss={1.0 / (e + 1):.4f} val_miou={0.2 + 0.1 * e:.4f}", flush=True)
        open(f"runs/seg-{e}.pt", "wb").write(b"w" * 64)
''')


SEG_PREDICT = textwrap.dedent('''
    # writes its prediction as a mask PNG (here: the image's own mask, placed beside it by the table)
    import shutil, sys
    ckpt, image, out = sys.argv[1:4]
    assert open(ckpt, "rb").read(1) == b"w"
    stem = image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    shutil.copy(f"data/val/masks/{stem}.png", out)
''')


def test_a_mask_png_is_read_whatever_its_filters_and_palette():
    import io
    import random

    from PIL import Image

    from config_translators.repo.infer import mask_records

    rng = random.Random(3)
    img = Image.new("L", (37, 23))
    img.putdata([rng.choice((0, 0, 0, 1, 2, 7)) if (x // 5 + y // 4) % 3 else 2 for y in range(23) for x in range(37)])
    want = sorted((k, n) for n, k in img.getcolors())
    for mode in ("L", "P"):
        for optimize in (False, True):
            buf = io.BytesIO()
            (img if mode == "L" else img.convert("P")).save(buf, "PNG", optimize=optimize)
            got = [(r["label_id"], r["pixels"]) for r in mask_records(buf.getvalue())]
            if mode == "P":  # palette indices: the same partition of the pixels
                assert sorted(n for _, n in got) == sorted(n for _, n in want)
            else:
                assert got == want, (optimize, got, want)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "PNG")
    with pytest.raises(ValueError, match="colour type 2; expected 8-bit grey or palette"):
        mask_records(buf.getvalue())


def test_a_segmentation_repo_reads_its_fixed_folders_by_its_table_alone(runner, daemon, home, tmp_path):
    """dataset.format = masks and dataset.place link the set's parts where the script reads them (a
    copy where the table asks): no patch, no wrapper."""
    from runner.synth_tasks import make_masks

    src = tmp_path / "segrepo"
    (src / "data").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=src)
    (src / "train.py").write_text(SEG_TRAIN)
    (src / "data" / ".keep").write_text("")  # the repo ships its data folder empty
    (src / "requirements.txt").write_text("six==1.16.0\n")
    (src / "predict.py").write_text(SEG_PREDICT)
    git("add", ".", cwd=src)
    git("commit", "-qm", "seg", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src)
    data = make_masks(tmp_path / "masks", train=4, val=2, size=16)
    table = {"url": f"file://{src}", "commit": commit, "license": "MIT", "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
             "entry": "train.py", "requirements": "requirements.txt", "task_type": "semantic_segmentation",
             "dataset": {"format": "masks", "place": {
                 "data/train/images": "{train_images}", "data/train/masks": "{train_masks}",
                 "data/val/images": "{val_images}", "{src}/data/val/masks": "{val_masks}",
                 "data/classes.txt": {"from": "{classes_file}", "copy": True}}},
             "args": {"template": ["--epochs", "{epochs}"]}, "defaults": {"epochs": 2},
             "checkpoints": ["{src}/runs/seg-*.pt"],
             "parser": {"patterns": [{"regex": r"^Epoch (?P<epoch>\d+): train_loss=(?P<train_loss>[\d.]+) val_miou=(?P<val_miou>[\d.]+)"}]},
             "infer": {"template": ["predict.py", "{checkpoint}", "{image}", "{output_dir}/{image_stem}.png"],
                       "output": {"file": "{image_stem}.png", "format": "png"}}}
    add_table(home, "segrepo", table)
    spec = tmp_path / "seg.json"
    spec.write_text(json.dumps({"model": "repo/segrepo", "dataset": {"path": str(data)}, "train": {"epochs": 2}}))
    j = runner.wait_state(runner.submit(spec), timeout=300)
    log = runner.run("logs", j["id"]).stdout
    assert j["state"] == "succeeded", log
    assert "classes=4 train=2 copied_classes=True" in log  # (the last split read: val)
    from runner.store import Store

    assert [(m["epoch"], m["value"]) for m in Store(home / "runner.db").metrics(j["id"], "val_miou")] == [(1, 0.2), (2, 0.3)]
    link = Path(j["job_dir"]) / "src" / "data" / "train" / "images"
    assert link.is_symlink() and link.resolve() == (data / "train" / "images").resolve()
    assert sorted(Path(a["path"]).name for a in j["artifacts"]) == ["seg-0.pt", "seg-1.pt"]
    # its predict script writes a mask PNG: the answer is the mask's classes, as the script drew them
    image = data / "val" / "images" / "001.png"
    ans = json.loads(runner.run("infer", j["id"], image).stdout)
    from PIL import Image

    drawn = Image.open(data / "val" / "masks" / "001.png")
    counts = {k: n for n, k in drawn.getcolors()}
    names = (data / "classes.txt").read_text().split()
    assert ans["task"] == "semantic_segmentation" and "warnings" not in ans, ans
    assert [(m["label_id"], m["label"], m["pixels"]) for m in ans["masks"]] == [(k, names[k], counts[k]) for k in sorted(counts)]
    assert abs(sum(m["fraction"] for m in ans["masks"]) - 1.0) < 1e-9

    # the table ships a new predict script after the job: infer still uses the job's checkout, says
    # which file differs, and --table current uses the registry's (its dataset parts placed again)
    other = {k: n for n, k in Image.open(data / "val" / "masks" / "000.png").getcolors()}
    assert other != counts
    add_table(home, "segrepo", {**table, "files": {"predict.py": {"text": SEG_PREDICT.replace('f"data/val/masks/{stem}.png"', '"data/val/masks/000.png"')}}})
    r = runner.run("infer", j["id"], image)
    assert f"job {j['id']} was prepared by an earlier table of repo/segrepo: predict.py differ" in r.stderr and "--table current" in r.stderr, r.stderr
    assert [m["pixels"] for m in json.loads(r.stdout)["masks"]] == [counts[k] for k in sorted(counts)]
    r = runner.run("infer", j["id"], image, "--table", "current")
    assert [(m["label_id"], m["pixels"]) for m in json.loads(r.stdout)["masks"]] == sorted(other.items()) and "earlier table" not in r.stderr


@pytest.mark.parametrize("dataset, says", [
    ({"format": "segmentation"}, "repos.bad.dataset.format: given 'segmentation'; expected one of imagefolder, yolo, coco, masks, captions"),
    ({"format": "masks", "place": {"../../etc/x": "{train_images}"}}, "repos.bad.dataset.place.../../etc/x: '{src}/../../etc/x' leaves the job folder"),
    ({"format": "masks", "place": {"data/x": "{train_dir}/images"}}, "repos.bad.dataset.place.data/x: given '{train_dir}/images'; expected one of {train_images}"),
    ({"format": "imagefolder", "place": {"data/x": "{train_images}"}}, "expected one of {train_dir}, {val_dir}, {data} (the parts of a imagefolder dataset)"),
    ({"format": "masks", "place": {"{output_dir}/x": "{val_masks}"}}, "only {src}/ or {job_dir}/ may start a placement"),
    ({"format": "masks", "place": {"{src}/": "{val_masks}"}}, "names the folder itself"),
])
def test_a_repo_tables_dataset_is_refused_at_load_in_one_line(dataset, says):
    from config_translators.repo import check_table

    problems = check_table("bad", {"url": "file:///x", "commit": "0" * 40, "dataset": dataset})
    assert any(says in p for p in problems), problems


def test_a_repo_with_no_requirements_builds_and_a_failed_import_check_says_its_error(runner, home, tmp_path):
    """A repo of the standard library alone: no `requirements` key and no overrides. Its lock is
    empty (it was a lone blank line, which the requirement check refused as not a package) and its
    env builds. An import check that fails puts the error on the line a job's note shows (the note
    stopped at "...):", the error on the next line)."""
    from runner import repos
    from runner.repos import merge_requirements

    assert merge_requirements("", []) == "" and merge_requirements("# none\n\n", []) == ""
    assert merge_requirements("", ["six==1.16.0"]) == "six==1.16.0\n"
    src = tmp_path / "stdlibrepo"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "train.py").write_text("print('epoch 1 acc 0.5')\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    table = repo_table(f"file://{src}", git("rev-parse", "HEAD", cwd=src), overrides=[])
    del table["requirements"]
    add_table(home, "stdlibrepo", table)
    r = runner.run("repo", "lock", "stdlibrepo")
    assert "0 packages pinned" in r.stdout, r.stdout
    # its env builds (nothing to install); an import check that fails says its error on the note's line
    from runner import envs
    from runner.daemon.launch import public_note
    from runner.home import Home
    from runner.registry import load

    h = Home(home).ensure()
    req = repos.env_request(h, {**load(h).get_repo("stdlibrepo"), "import_check": ["json", "no_such_module_x"]}, "stdlibrepo", None)
    with pytest.raises(envs.EnvBuildError) as e:
        envs.EnvManager(h.envs).ensure(req)
    assert public_note(str(e.value)) == ("import check failed (import sys; import json; import no_such_module_x): "
                                         "ModuleNotFoundError: No module named 'no_such_module_x'")
    import dataclasses

    assert (envs.EnvManager(h.envs).ensure(dataclasses.replace(req, check_imports=["json"])) / "bin" / "python").exists()


def test_what_a_newer_table_changes_in_a_checkout_is_named(home, trainrepo):
    """repos.made_from (recorded at a job's prepare) against the registry's table now: the files it
    ships or patches otherwise, and those its new commit changes (read from the clone cache)."""
    from runner import repos
    from runner.home import Home

    src, first = trainrepo
    (src / "predict.py").write_text("print('boxes')\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "v2", cwd=src)
    second = git("rev-parse", "HEAD", cwd=src)
    h = Home(home).ensure()
    old = repo_table(f"file://{src}", first, files={"conf.yaml": {"text": "a: 1\n"}})
    repos.ensure_clone(h, old["url"], second)
    was = repos.made_from(old, "t")
    assert repos.changed_files(h, was, repos.made_from(old, "t")) == []
    new = {**old, "files": {"conf.yaml": {"text": "a: 2\n"}, "extra.py": {"text": ""}},
           "patches": [{"file": "train.py", "find": "import six", "replace": "import os"}]}
    assert repos.changed_files(h, was, repos.made_from(new, "t")) == ["conf.yaml", "extra.py", "train.py"]
    assert repos.changed_files(h, was, repos.made_from({**old, "commit": second}, "t")) == ["predict.py"]


@pytest.fixture
def seg_job(tmp_path):
    """A finished semantic-segmentation repo job in a real store: val_miou over three epochs, a
    checkpoint, and a masks dataset with one validation image."""
    from runner.store import Store

    s = Store(tmp_path / "db")
    job_dir = tmp_path / "jobs" / "s1"
    (job_dir / "src" / "runs").mkdir(parents=True)
    (tmp_path / "masks" / "val" / "images").mkdir(parents=True)
    (tmp_path / "masks" / "val" / "images" / "000.png").write_bytes(b"png")
    s.insert_job({"id": "s1", "name": "check-tinyseg", "user": "u", "uid": 0, "kind": "model", "gpus": [], "after": [],
                  "spec": {"task": "semantic_segmentation", "model": "repo/tinyseg",
                           "dataset": {"path": str(tmp_path / "masks"), "format": "masks"}}, "job_dir": str(job_dir)}, now=100.0)
    s.transition("s1", "preparing", now=101.0)
    s.transition("s1", "running", now=102.0, started_at=102.0)
    for e, (loss, miou) in enumerate([(1.39, 0.0), (0.65, 0.14), (0.26, 0.33)]):
        s.add_metrics("s1", [("loss", loss, None, e + 1), ("val_miou", miou, None, e + 1)])
    (job_dir / "src" / "runs" / "last.json").write_text("{}")
    s.add_artifact("s1", str(job_dir / "src" / "runs" / "last.json"), "checkpoint", 2)
    s.transition("s1", "succeeded", now=110.0, finished_at=110.0, exit_code=0)
    return s, s.get_job("s1")


def test_a_segmentation_repos_learns_takes_its_tasks_floor_unless_the_table_states_one(seg_job):
    from runner import check as chk

    s, job = seg_job
    learns = chk.repo_learns(s, job, {"learns": {"metric": "val_miou", "loss": "loss"}})
    assert learns["ok"] and learns["detail"]["criteria"]["at_least"] == chk.LEARNS_FLOOR["semantic_segmentation"] == 0.3
    assert learns["detail"]["criteria"]["rule"] == "val_miou >= 0.3 on the held-out set (semantic_segmentation's floor)"
    assert learns["detail"]["train_loss"] == [1.39, 0.65, 0.26]
    learns = chk.repo_learns(s, job, {"learns": {"metric": "val_miou", "at_least": 0.5}})
    assert not learns["ok"] and learns["error"] == "val_miou 0.33 < 0.5"
    learns = chk.repo_learns(s, {**job, "spec": {**job["spec"], "task": "image_classification"}}, {"learns": {"metric": "val_miou"}})
    assert not learns["ok"] and "no `check.learns.at_least`" in learns["error"]  # classification's floor depends on its classes
    # a COCO set is one annotations file that a table maps to training and validation alike: the rule says so
    coco = {**job, "spec": {**job["spec"], "dataset": {"path": "/x/images", "format": "coco", "annotations": "/x/a.json"}}}
    rule = chk.repo_learns(s, coco, {"learns": {"metric": "val_miou"}})["detail"]["criteria"]["rule"]
    assert rule.startswith("val_miou >= 0.3 on its training images (") and "held-out set" not in rule


@pytest.mark.parametrize("answer, ok, says", [
    ({"masks": [{"label_id": 0, "label": "background", "pixels": 90, "fraction": 0.9},
                {"label_id": 2, "label": "square", "pixels": 10, "fraction": 0.1}]}, True, None),
    ({"masks": []}, False, "gave no semantic_segmentation prediction"),
    ({"masks": [], "warnings": ["1 record(s) gave no mask (a mask record needs label_id and pixels: output format png)"]}, False,
     "records that map to nothing: 1 record(s) gave no mask"),
    ({"task": "instance_segmentation", "boxes": [{"x1": 0, "y1": 0, "x2": 4, "y2": 4}], "masks": []}, False,
     "gave no instance_segmentation prediction"),
    ({"task": "obb_detection", "rotated_boxes": [{"cx": 1, "cy": 1, "w": 2, "h": 1, "angle": 0.3}]}, True, None),
    ({"task": "obb_detection", "boxes": []}, False, "gave no obb_detection prediction"),
    ({"task": "image_captioning", "caption": " "}, False, "gave no image_captioning prediction"),
    ({"task": "image_captioning", "caption": "a red circle"}, True, None),
])
def test_a_repos_infer_check_needs_what_its_task_predicts(seg_job, monkeypatch, answer, ok, says):
    """The infer column of a repo: a mask of some class passes a segmentation repo, a rotated box an
    OBB one, a caption a captioning one; an answer without them, or with records that mapped to
    nothing, fails (it passed as any non-empty answer)."""
    from runner import check as chk
    from runner import envs
    from runner.repos import infer as repo_infer

    s, job = seg_job
    ckpt = str(Path(job["job_dir"]) / "src" / "runs" / "last.json")
    seen = []
    monkeypatch.setattr(envs, "EnvManager", lambda *a: None)
    monkeypatch.setattr(repo_infer, "infer", lambda home, store, reg, em, j, images: seen.append(images) or
                        [{"task": "semantic_segmentation", "checkpoint": ckpt, **answer}])

    class Registry:
        def get_repo(self, name):
            return {"infer": {"template": ["predict.py"]}} if name == "tinyseg" else {}

    home = type("Home", (), {"envs": None, "config": {}})()
    c = chk.repo_infer_check(home, s, Registry(), "s1")
    assert seen == [[str(Path(job["spec"]["dataset"]["path"]) / "val" / "images" / "000.png")]]
    assert c["ok"] is ok and c["detail"]["checkpoint"] == "src/runs/last.json", c
    assert (says in c["error"]) if says else "error" not in c
    if ok and "masks" in answer:
        assert c["detail"]["masks"] == ["background", "square"]



POSE_CORE = textwrap.dedent('''
    # what the pose repo's train.py and predict.py share
    import struct, zlib

    def read_rgb(path):  # an 8-bit RGB PNG with unfiltered rows (what runner.synth writes): rows of (r, g, b)
        d = open(path, "rb").read()
        w, h = struct.unpack(">II", d[16:24])
        pos, idat = 8, b""
        while pos < len(d):
            n, tag = struct.unpack(">I4s", d[pos:pos + 8])
            idat += d[pos + 8:pos + 8 + n] if tag == b"IDAT" else b""
            pos += 12 + n
        raw = zlib.decompress(idat)
        return [[tuple(raw[y * (3 * w + 1) + 1 + 3 * x:y * (3 * w + 1) + 4 + 3 * x]) for x in range(w)] for y in range(h)]

    def found(img, t):  # the pixels brighter than the threshold t (their brightest channel)
        img_of[:] = [img]
        return [(x, y) for y, row in enumerate(img) for x, v in enumerate(row) if max(v) > t]

    def corners(pts, n):  # normalised corners of the points' box, clockwise from top left (the centre if none)
        if not pts:
            return [(0.5, 0.5)] * 4
        x0, x1 = min(p[0] for p in pts) / n, max(p[0] for p in pts) / n
        y0, y1 = min(p[1] for p in pts) / n, max(p[1] for p in pts) / n
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]

    def colour(img, pts):  # the dominant channel of the points
        c = [sum(img[y][x][k] for x, y in pts) for k in range(3)]
        return c.index(max(c))

    def place(pts, n, memory):  # the keypoints at the places learnt for the points' colour (the corners if none)
        (x0, y0), _, (x1, y1), _ = corners(pts, n)
        offsets = memory.get(str(colour(img_of[0], pts))) if pts and img_of else None
        offsets = offsets or [(0, 0), (1, 0), (1, 1), (0, 1)]
        return [(x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)) for fx, fy in offsets]

    img_of = []  # the image place() looks at (set by found)
''')

POSE_TRAIN = textwrap.dedent('''
    # a pose repo: the four corner keypoints of the one bright shape in an image, found by a brightness
    # threshold that it fits over the epochs; it reads a YOLO pose data.yaml and its label files
    import json, os, sys
    from posecore import colour, corners, found, place, read_rgb
    a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    cfg = dict(l.split(": ", 1) for l in open(a["--data"]).read().splitlines() if ": " in l and not l.startswith(" "))
    assert cfg["kpt_shape"] == "[4, 3]", cfg

    def split(name):
        d = os.path.join(os.path.dirname(a["--data"]), cfg.get("path", ""), cfg[name])
        for f in sorted(os.listdir(d)):
            lab = [float(v) for v in open(os.path.join(d.replace("images", "labels"), f.rsplit(".", 1)[0] + ".txt")).read().split()]
            yield read_rgb(os.path.join(d, f)), list(zip(lab[5::3], lab[6::3]))

    train, val, t = list(split("train")), list(split("val")), 255.0
    for e in range(int(a["--epochs"])):
        targets = []  # per image: midway between the mean brightness inside and outside its keypoints' box
        for img, kps in train:
            n, (x0, y0), (x1, y1) = len(img), kps[0], kps[2]
            parts = ([], [])
            for y, row in enumerate(img):
                for x, v in enumerate(row):
                    parts[x0 <= x / n <= x1 and y0 <= y / n <= y1].append(max(v))
            targets.append(sum(sum(p) / len(p) for p in parts) / 2)
        t += 0.7 * (sum(targets) / len(targets) - t)
        # and, per colour, where its training image's labelled keypoints lie in the found shape's box (a
        # memory of its labels: shuffled labels teach it places that are wrong for every other image)
        memory = {}
        for img, kps in train:
            pts = found(img, t)
            (x0, y0), _, (x1, y1), _ = corners(pts, len(img))
            if x1 > x0 and y1 > y0:
                memory.setdefault(str(colour(img, pts)), [[(x - x0) / (x1 - x0), (y - y0) / (y1 - y0)] for x, y in kps[:4]])
        near = [abs(px - x) <= 0.1 and abs(py - y) <= 0.1 for img, kps in val
                for (px, py), (x, y) in zip(place(found(img, t), len(img), memory), kps)]
        print(f"epoch {e + 1} threshold {t:.2f} val_pck {sum(near) / len(near):.4f}", flush=True)
        json.dump({"threshold": t, "memory": memory}, open(os.path.join(a["--out"], f"pose-{e}.json"), "w"))
''')

POSE_PREDICT = textwrap.dedent('''
    # one JSON line an image: the shape's class (its dominant colour), its box and its four keypoints, in pixels
    import json, sys
    from posecore import corners, found, place, read_rgb
    ckpt = json.load(open(sys.argv[1]))
    t = ckpt["threshold"]
    for image in sys.argv[2:]:
        img = read_rgb(image)
        n, pts = len(img), found(img, t)
        colour = [sum(img[y][x][c] for x, y in pts) for c in range(3)]
        kps = [[round(x * n, 2), round(y * n, 2), 1.0] for x, y in place(pts, n, ckpt["memory"])]
        print(json.dumps({"image": image, "label_id": colour.index(max(colour)), "confidence": round(len(pts) / n / n, 4),
                          "box": kps[0][:2] + kps[2][:2], "keypoints": kps}))
''')


@pytest.fixture
def poserepo(home, tmp_path):
    """A pure-Python pose repo (POSE_*) committed in a real git repo, its table in the home's registry."""
    src = tmp_path / "poserepo"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    for name, text in (("posecore.py", POSE_CORE), ("train.py", POSE_TRAIN), ("predict.py", POSE_PREDICT)):
        (src / name).write_text(text)
    git("add", ".", cwd=src)
    git("commit", "-qm", "pose", cwd=src)
    add_table(home, "poserepo", {
        "url": f"file://{src}", "commit": git("rev-parse", "HEAD", cwd=src), "license": "MIT", "entry": "train.py",
        "task_type": "pose_estimation", "dataset": {"format": "yolo"},
        "args": {"template": ["--data", "{data}", "--epochs", "{epochs}", "--out", "{output_dir}"]}, "defaults": {"epochs": 2},
        "checkpoints": ["pose-*.json"], "check": {"epochs": 2, "val_images": 12, "learns": {"metric": "val_pck"}},
        "parser": {"patterns": [{"regex": r"^epoch (?P<epoch>\d+) threshold (?P<threshold>[\d.]+) val_pck (?P<val_pck>[\d.]+)"}]},
        "infer": {"template": ["predict.py", "{checkpoint}", "{images}"], "output": {"stdout": True, "format": "jsonl"}}})
    return src


def test_a_pose_repo_trains_on_a_yolo_pose_set_and_infers_keypoints_by_its_table_alone(runner, daemon, home, tmp_path, poserepo):
    """dataset.format = yolo for a pose_estimation repo: its pose labels are checked as pose (they
    were refused as detection lines), and the keypoints its predict script prints are the answer."""
    from runner.synth_tasks import make_yolo

    src = poserepo
    data = make_yolo(tmp_path / "pose", "pose", train=3, val=3, size=24, easy=True)
    spec = tmp_path / "pose.json"
    spec.write_text(json.dumps({"model": "repo/poserepo", "dataset": {"path": str(data), "format": "yolo"}}))
    j = runner.wait_state(runner.submit(spec), timeout=300)
    assert j["state"] == "succeeded", runner.run("logs", j["id"]).stdout
    series = runner.json("metrics", j["id"])["series"]
    assert [p["epoch"] for p in series["val_pck"]] == [1, 2] and [p["epoch"] for p in series["threshold"]] == [1, 2]
    assert sorted(Path(a["path"]).name for a in j["artifacts"]) == ["pose-0.json", "pose-1.json"]

    images = [str(data.parent / "images" / "val" / f"val_00{i}.png") for i in range(2)]
    ans = json.loads(runner.run("infer", j["id"], *images).stdout)
    # what its predict script prints with that checkpoint, run here by hand
    ckpt = str(Path(j["job_dir"]) / "out" / "pose-1.json")
    printed = [json.loads(line) for line in subprocess.run([sys.executable, "predict.py", ckpt, *images], cwd=src, check=True,
                                                           capture_output=True, text=True).stdout.splitlines()]
    assert [r["task"] for r in ans] == ["pose_estimation"] * 2 and not any("warnings" in r for r in ans), ans
    for res, rec in zip(ans, printed):
        assert res["keypoints"] == [[{"x": x, "y": y, "confidence": c} for x, y, c in rec["keypoints"]]]
        box = res["boxes"][0]
        assert [box[k] for k in ("x1", "y1", "x2", "y2")] == rec["box"] and box["label_id"] == rec["label_id"]
        assert box["label"] == ["circle", "square", "triangle"][rec["label_id"]]
    assert [r["label_id"] for r in printed] == [0, 1]  # the easy set's colours: val_000 a red circle, val_001 a green square


def test_runner_check_fills_every_column_for_a_pose_repo(runner, home, tmp_path, poserepo):
    """`runner check repo/poserepo`: a synthetic YOLO pose set made for its table (format yolo,
    task pose_estimation), its script trained on it (one job), each column what a user expects."""
    r = runner.run("check", "repo/poserepo", "--out", str(tmp_path / "check"), check=False)
    rep = json.loads((tmp_path / "check" / "report.json").read_text())["models"][0]
    by = {c["name"]: c for c in rep["checks"]}
    assert r.returncode == 0 and rep["status"] == "success", r.stdout
    job = runner.json("show", rep["job"])
    assert job["spec"]["dataset"]["format"] == "yolo" and "kpt_shape: [4, 3]" in Path(job["spec"]["dataset"]["path"]).read_text()
    assert by["load"]["ok"] and by["train"]["ok"] and set(by["validate"]["detail"]) == {"val_pck"}
    assert by["checkpoint"]["ok"] and by["checkpoint"]["detail"][0]["path"].startswith("out/pose-")
    assert by["infer"]["ok"] and (by["infer"]["detail"]["people"], by["infer"]["detail"]["keypoints"]) == (1, 4)
    assert by["learns"]["ok"] and by["learns"]["detail"]["criteria"]["at_least"] == 0.3 and by["learns"]["detail"]["epochs"] == 2
    # a repo's YOLO set has its shuffled-label control too: the same script, each training image given
    # another's labels, stays under the floor (its keypoint places are learnt from the labels)
    control = by["learns"]["detail"]["control"]
    assert control["value"] < 0.3 and not control["reached"] and runner.json("show", control["job"])["state"] == "succeeded"


def test_runner_check_makes_the_data_a_repo_table_declares(tmp_path):
    """The synthetic set `runner check repo/X` trains on is of the table's task and format (a table
    that names no dataset takes an ImageFolder, as its jobs do: it was a KeyError)."""
    from runner import checkdata

    cases = [({"task_type": "semantic_segmentation", "dataset": {"format": "masks"}}, "masks", "val/masks/000.png"),
             ({"task_type": "pose_estimation", "dataset": {"format": "yolo"}}, "yolo", "labels/val/val_000.txt"),
             ({"task_type": "pose_estimation", "dataset": {"format": "coco"}}, "coco", "../val.json"),
             ({"task_type": "image_captioning", "dataset": {"format": "captions"}}, "captions", "val/captions.jsonl"),
             ({"task_type": "image_classification"}, "imagefolder", "val/circle")]
    for table, fmt, part in cases:
        model = {"framework": "repo", "model_name": "x", "task_type": table["task_type"]}
        path, got = checkdata.make("repo", model, checkdata.repo_framework(table), tmp_path / "data")
        root = path.parent if path.suffix == ".yaml" else path
        assert got == fmt and (root / part).exists(), (table, path, got)
    yolo = (tmp_path / "data" / "yolo-pose" / "labels" / "val" / "val_000.txt").read_text().split()
    assert len(yolo) == 5 + 4 * 3  # pose lines, with their keypoints


def test_a_repo_job_whose_table_catches_nothing_says_so(runner, daemon, home, tmp_path, shapes):
    """A starter table's generic parser and globs match nothing this script prints or writes: the job
    succeeds, and its note says that no metric and no checkpoint were caught (found by a newcomer:
    it said nothing, and only `runner check` told)."""
    src = tmp_path / "quietrepo"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src)
    (src / "train.py").write_text("import logging, sys\nlogging.basicConfig(level=logging.INFO)\n"
                                  "logging.info('epoch 1/1 loss 0.41 val_miou 0.62')\nopen('model.ckpt', 'w').write('w')\n")
    git("add", ".", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    table = repo_table(f"file://{src}", git("rev-parse", "HEAD", cwd=src), overrides=[], args={"template": [], "optional": {"lr": ["--lr", "{lr}"]}},
                       parser={"generic": True}, checkpoints=["{src}/**/*.pt"])
    del table["requirements"]
    add_table(home, "quietrepo", table)
    j = runner.wait_state(runner.submit(job(tmp_path, shapes, "quietrepo")), timeout=300)
    assert j["state"] == "succeeded", runner.run("logs", j["id"]).stdout
    assert j["note"] == ("no metric was parsed from its log (its table's parser matches none of its lines); no checkpoint "
                         "matched its table's checkpoints globs: see docs/adding-a-repo.md, or `runner check` for more")


def test_a_repo_jobs_train_key_its_table_never_passes_is_refused(runner, home, trainrepo, shapes, tmp_path):
    """`train: {epoch: 3}` (a typo) or a setting the table maps to no flag ran with the script's own
    default, silently (found by a newcomer): refused at submit in one line naming what it takes."""
    src, first = trainrepo
    add_table(home, "testrepo", repo_table(f"file://{src}", first))
    r = runner.run("submit", job(tmp_path, shapes, epoch=3, stride=1), check=False)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("runner: train.")]
    assert lines == [f"runner: train.{k}: repo/testrepo's table passes no {{{k}}} to its script (it takes batch_size, epochs, "
                     "input_size, lr); map it in the table's args, or leave it out" for k in ("epoch", "stride")], r.stderr


def test_worktrees_of_one_repo_made_at_once_all_succeed(home, trainrepo, tmp_path):
    """A check job and its control are prepared at the same moment, each a worktree of the same clone
    cache: `worktree prune` beside another's `worktree add` removed that add's half-made entry (CI:
    "could not open .../worktrees/src3/locked for writing"). 8 processes at once, 4 rounds: each
    worktree is made, at the pinned commit."""
    import multiprocessing

    from runner import repos
    from runner.home import Home

    src, first = trainrepo
    h = Home(home).ensure()
    table = repo_table(f"file://{src}", first)
    repos.ensure_clone(h, table["url"], first)
    ctx = multiprocessing.get_context("fork")
    for rnd in range(4):
        dests = [tmp_path / f"r{rnd}" / f"j{i}" / "src" for i in range(8)]
        procs = [ctx.Process(target=repos.checkout, args=(h, table, d)) for d in dests]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 8, rnd
        assert all((d / "train.py").is_file() and git("rev-parse", "HEAD", cwd=d) == first for d in dests), rnd
