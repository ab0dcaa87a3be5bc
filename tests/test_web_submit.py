"""The submit form in Debian's Chromium, used by a real non-root user against a root daemon: an
Ultralytics detection job, a timm job, a Transformers job, a repo job and a command job (env_vars,
limits) each submitted from the form succeed; the YAML beside the form holds every value the form
shows and is what the job got; clone fills the form with a job's values (her secret never on a
page); another user's clone shows the values and not the secret. One daemon for all of it: each
framework env is built once."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import wait_for
from test_users import ALICE, SYSTEM_PY, team_home, users, world  # noqa: F401  (fixtures)
from test_web import CHROMIUM, page_as

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root daemon and real users"), pytest.mark.slow,
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)

SYSTEM_VERSION = subprocess.run([SYSTEM_PY, "-c", "import platform; print(platform.python_version())"], capture_output=True,
                                text=True).stdout.strip() if os.path.exists(SYSTEM_PY) else ""
SMALL_VIT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}

TRAIN = """\
import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, required=True)
p.add_argument("--batch-size", type=int, required=True)
p.add_argument("--img-size", type=int, required=True)
p.add_argument("--train-dir", required=True)
p.add_argument("--val-dir", required=True)
p.add_argument("--out", required=True)
a = p.parse_args()
import six  # from the repo's own env
os.makedirs(a.out, exist_ok=True)
for e in range(a.epochs):
    print(f"EVAL epoch {e}: acc {0.5 + 0.1 * e:.4f} classes {len(os.listdir(a.train_dir))}", flush=True)
    open(os.path.join(a.out, f"ckpt-{e}.pt"), "wb").write(b"weights")
"""


def _git(*args, cwd):
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def _repo_table(folder: Path) -> dict:
    # The users' Python by its exact version: the daemon's own (this venv's) may be one they cannot
    # run (root's pyenv), and "3.11" would pick it.
    src = folder / "formrepo"
    src.mkdir()
    _git("init", "-q", "-b", "main", cwd=src)
    (src / "train.py").write_text(TRAIN)
    (src / "requirements.txt").write_text("six==1.16.0\n")  # as tests/test_repos.py's repo: a small env of its own
    _git("add", ".", cwd=src)
    _git("commit", "-qm", "v1", cwd=src)
    subprocess.run(["chmod", "-R", "a+rX", str(src)], check=True)
    return {"url": f"file://{src}", "commit": _git("rev-parse", "HEAD", cwd=src), "license": "MIT",
            "python": SYSTEM_VERSION, "entry": "train.py", "requirements": "requirements.txt", "task_type": "image_classification",
            "display_name": "Form repo", "dataset": {"format": "imagefolder"}, "checkpoints": ["ckpt-*.pt"],
            "args": {"template": ["--epochs", "{epochs}", "--batch-size", "{batch_size}", "--img-size", "{input_size}",
                                  "--train-dir", "{train_dir}", "--val-dir", "{val_dir}", "--out", "{output_dir}"]},
            "defaults": {"epochs": 1, "batch_size": 4, "input_size": 32},
            "parser": {"patterns": [{"regex": r"^EVAL epoch (?P<epoch>\d+): acc (?P<acc>[\d.]+)", "epoch_offset": 1}]}}


@pytest.fixture(scope="module")
def dash(world, users):  # noqa: F811
    """A root daemon, alice and bob signed in to the dashboard, her data in her home."""
    from playwright.sync_api import sync_playwright

    from runner import sitereg
    from runner.synth import make_shapes
    from runner.synth_tasks import make_yolo

    with team_home(world, users) as (d, alice, bob, home):
        sitereg.put(home / "registry.toml", 'models.transformers."google/vit-base-patch16-224"', {"config": SMALL_VIT})
        sitereg.put(home / "registry.toml", "repos.formrepo", _repo_table(world))
        os.chmod(home / "registry.toml", 0o644)
        data = Path(users[ALICE].pw_dir) / "form-data"
        shutil.rmtree(data, ignore_errors=True)
        shapes = make_shapes(data / "shapes", per_class=4, val_per_class=2, size=32)
        yolo = make_yolo(data / "yolo", train=4, val=2)
        subprocess.run(["chown", "-R", f"{alice.uid}:{users[ALICE].pw_gid}", str(data)], check=True)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            pages = {"alice": page_as(b, d, alice.run("token").stdout.strip()), "bob": page_as(b, d, bob.run("token").stdout.strip())}
            yield {"d": d, "alice": alice, "bob": bob, "home": home, "pages": pages, "shapes": shapes, "yolo": yolo, "browser": b}
            b.close()
        shutil.rmtree(data, ignore_errors=True)


def _sel(name: str) -> str:
    return "#f-" + name.replace(".", "\\.")


def fill(page, values: dict):
    """Type values into the form as a person does, then wait for the YAML beside it to catch up."""
    for name, value in values.items():
        loc = page.locator(_sel(name))
        if loc.evaluate("e => e.tagName") == "SELECT":
            loc.select_option(str(value))
        else:
            loc.fill(str(value))
    page.locator(_sel("name")).press("End")  # a keyup: the preview is asked for
    want = f"name: {values['name']}"
    wait_for(lambda: want in page.inner_text("#yaml"), 15, 0.1, f"the YAML to show {want!r}")
    page.wait_for_timeout(600)  # the keyup's delayed request, if any, lands too
    return yaml.safe_load(page.inner_text("#yaml"))


def shown(page) -> dict:
    """{field: value} of every field the form shows a value in (env_vars values and the more box aside)."""
    rows = page.eval_on_selector_all("#submit-form [name]", """els => els.map(e => [e.name, e.type,
        e.type === 'checkbox' ? e.checked : e.value])""")
    skip = ("csrf", "posted", "model", "kind", "more")
    return {n: v for n, t, v in rows if n not in skip and not n.startswith("env_vars.") and v not in ("", None)}


def leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("dataset", "train", "resources", "env_vars"):
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def same(form_value, spec_value) -> bool:
    if isinstance(spec_value, bool):
        return form_value is spec_value
    if isinstance(spec_value, (int, float)):
        return float(form_value) == float(spec_value)
    return str(form_value) == str(spec_value)


def submit(page, d) -> str:
    page.click("#submit-form button[type=submit]")
    page.wait_for_url(lambda u: "/ui/jobs/" in u, timeout=120_000)
    return page.url.rsplit("/", 1)[1]


def test_every_framework_and_a_command_from_the_form_then_clone(dash):
    d, alice, page = dash["d"], dash["alice"], dash["pages"]["alice"]
    small = {"train.epochs": 1, "train.batch_size": 4}  # 12 images a split: no batch of one (BatchNorm)
    jobs = {
        "ultralytics/yolov8n": {"dataset.path": dash["yolo"], **small, "train.input_size": 64, "name": "form-yolo"},
        "timm/resnet18": {"dataset.path": dash["shapes"], **small, "train.input_size": 32, "name": "form-timm"},
        "transformers/google/vit-base-patch16-224": {"dataset.path": dash["shapes"], **small, "train.input_size": 32, "name": "form-vit"},
        "repo/formrepo": {"dataset.path": dash["shapes"], "name": "form-repo"},
    }
    previews, ids = {}, {}
    for ref, values in jobs.items():
        page.goto(d.url + f"/ui/submit?model={ref}")
        preview = fill(page, values)
        # every value the form shows is in the YAML beside it, as shown
        flat = leaves(preview)
        for name, value in shown(page).items():
            assert name in flat and same(value, flat[name]), (ref, name, value, flat.get(name))
        if ref == "ultralytics/yolov8n":
            assert flat["dataset.format"] == "yolo" and page.input_value(_sel("dataset.format")) == "yolo"
        previews[ref], ids[ref] = preview, submit(page, d)
    # a command job: command, workdir, env_vars (a secret), limits
    page.goto(d.url + "/ui/submit")
    page.click("#command-form")
    work = pwd.getpwnam(ALICE).pw_dir
    page.fill(_sel("env_vars.0.name"), "API_KEY")
    page.fill(_sel("env_vars.0.value"), "hunter2-of-alice")
    cmd = f"{SYSTEM_PY} {alice.world / 'jobs.py'} env"
    preview = fill(page, {"command": cmd, "workdir": work, "resources.memory_gb": 4, "resources.time_limit": 600, "name": "form-cmd"})
    assert preview["env_vars"] == {"API_KEY": "<hidden>"} and "hunter2" not in page.content()
    assert preview["command"] == cmd and preview["workdir"] == work and preview["resources"]["memory_gb"] == 4.0
    previews["command"], ids["command"] = preview, submit(page, d)
    # her job's page: the spec hides the value (her own log may print it: the job printed its env)
    assert "hunter2" not in page.inner_text("pre.spec") and "hunter2" not in page.inner_text("table.kv")

    for what, jid in ids.items():
        job = alice.wait(jid, timeout=1500)
        assert job["state"] == "succeeded", (what, job.get("note"), alice.logs(jid)[-3000:])
        assert job["user"] == ALICE
        got = leaves(job["spec"])
        for key, value in leaves(previews[what]).items():  # the YAML beside the form is what the job got
            assert got.get(key) == value, (what, key, value, got.get(key))
    assert "API_KEY=hunter2-of-alice" in alice.logs(ids["command"])

    # "Try the model" on her job's page: an uploaded image, answered by the job's checkpoint (as her), drawn on the page
    for ref, task in (("timm/resnet18", "image_classification"), ("ultralytics/yolov8n", "object_detection")):
        page.goto(d.url + f"/ui/jobs/{ids[ref]}")
        data = Path(dash["shapes"] if ref.startswith("timm") else dash["yolo"])
        image = sorted(p for p in (data if data.is_dir() else data.parent).rglob("*") if p.suffix in (".png", ".jpg"))[-1]
        page.set_input_files("#infer-image", str(image))
        page.click("#infer-run")
        page.wait_for_selector("#infer-out:not([hidden])", timeout=300_000)
        answer = json.loads(page.text_content("#infer-json"))
        assert answer.get("task") == task and answer.get("image") == image.name and "error" not in answer, answer
        wait_for(lambda: "the last answer took" in page.inner_text("#infer-form"), 10, 0.2, "the wait said, with the env's start")
        if task == "image_classification":
            assert answer["predicted_label"] in ("circle", "square", "triangle") and "class" in page.inner_text("#infer-table")
        wait_for(lambda: page.is_visible("#infer-canvas"), 10, 0.2, "the image drawn with the answer")
    his = dash["pages"]["bob"]
    his.goto(d.url + f"/ui/jobs/{ids['timm/resnet18']}")
    assert his.locator("#infer-form").count() == 0  # not his job: no box, and the route refuses him
    his_csrf = json.loads(his.get_attribute("body", "hx-headers"))["X-Runner-CSRF"]
    r = his.context.request.post(d.url + f"/ui/jobs/{ids['timm/resnet18']}/infer", multipart={
        "csrf": his_csrf, "image": {"name": "x.png", "mimeType": "image/png", "buffer": image.read_bytes()}})
    assert r.status == 403 and "only they (or root) run inference" in r.text()
    r = page.context.request.post(d.url + f"/ui/jobs/{ids['timm/resnet18']}/infer", multipart={
        "csrf": json.loads(page.get_attribute("body", "hx-headers"))["X-Runner-CSRF"],
        "image": {"name": "x.txt", "mimeType": "text/plain", "buffer": b"not an image"}})
    assert r.status == 400 and "image: not a PNG, JPEG, BMP or TIFF file" in r.text()

    # clone: the form comes back with the job's values; the secret is asked for again, never shown
    page.goto(d.url + f"/ui/jobs/{ids['command']}")
    page.click("#clone")
    assert "enter them again" in page.inner_text("#clone-note")
    assert page.input_value(_sel("command")) == cmd and page.input_value(_sel("workdir")) == work
    assert page.input_value(_sel("resources.memory_gb")) == "4.0" and page.input_value(_sel("env_vars.0.name")) == "API_KEY"
    assert page.input_value(_sel("env_vars.0.value")) == "" and "hunter2" not in page.content()
    page.fill(_sel("env_vars.0.value"), "hunter3-of-alice")
    again = fill(page, {"resources.time_limit": 300, "name": "form-cmd-2"})
    assert {**previews["command"], "name": "form-cmd-2", "resources": {**previews["command"]["resources"], "time_limit": 300.0}} == again
    clone = alice.wait(submit(page, d))
    assert clone["state"] == "succeeded" and clone["spec"]["resources"]["time_limit"] == 300.0
    assert "API_KEY=hunter3-of-alice" in alice.logs(clone["id"])
    # a model job's clone is the form she filled in, whole
    page.goto(d.url + f"/ui/jobs/{ids['ultralytics/yolov8n']}")
    page.click("#clone")
    assert yaml.safe_load(page.inner_text("#yaml")) == previews["ultralytics/yolov8n"]
    assert page.input_value(_sel("train.input_size")) == "64" and page.input_value(_sel("dataset.format")) == "yolo"

    # bob may see her job's spec, so he may clone it: her values, never her secret
    his = dash["pages"]["bob"]
    his.goto(d.url + f"/ui/submit?clone={ids['command']}")
    assert his.input_value(_sel("command")) == cmd and "hunter2" not in his.content() and "hunter3" not in his.content()
    assert page.errors == [] and his.errors == []


def test_the_form_its_errors_and_clone_work_with_javascript_off(dash):
    d, alice = dash["d"], dash["alice"]
    ctx = dash["browser"].new_context(java_script_enabled=False)
    page = ctx.new_page()
    page.goto(d.url + "/ui/login")
    page.fill("input[name=token]", alice.run("token").stdout.strip())
    page.click("form[action='/ui/login'] button")
    page.goto(d.url + "/ui/submit?kind=command")
    cmd = f"{SYSTEM_PY} {alice.world / 'jobs.py'} env"
    page.fill(_sel("command"), cmd)
    page.fill(_sel("workdir"), pwd.getpwnam(ALICE).pw_dir)
    page.fill(_sel("env_vars.0.name"), "TOKEN_NO_JS")
    page.fill(_sel("more"), "network: false\npriority: 2")
    page.click("#submit-form button[type=submit]")
    # refused on the server, each line by its field; what was typed is kept (the secret's value excepted)
    assert "env_vars.TOKEN_NO_JS: no value" in page.inner_text("#env-vars")
    assert "more: priority is set by its field 'priority' above" in page.inner_text(".field.bad")
    assert page.input_value(_sel("command")) == cmd and page.input_value(_sel("env_vars.0.name")) == "TOKEN_NO_JS"
    page.fill(_sel("more"), "network: false")
    page.fill(_sel("env_vars.0.value"), "s3cret-no-js")
    page.click("#submit-form button[type=submit]")
    page.wait_for_url(lambda u: "/ui/jobs/" in u)
    job = alice.wait(page.url.rsplit("/", 1)[1])
    assert job["state"] == "succeeded" and job["spec"]["network"] is False and "TOKEN_NO_JS=s3cret-no-js" in alice.logs(job["id"])
    page.click("#clone")
    assert page.input_value(_sel("command")) == cmd and page.input_value(_sel("more")).strip() == "network: false"
    assert "s3cret" not in page.content()
    ctx.close()
