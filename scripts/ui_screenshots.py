"""Screenshots of every dashboard page at 1400x1000 (and the queue at phone width) into docs/ui/,
taken in headless Chromium against a real daemon with a few real jobs. Run by
`bash scripts/ui-screenshots.sh`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "ui"
JOBS = [sys.executable, str(ROOT / "tests" / "fixtures" / "jobs.py")]


def main():
    from playwright.sync_api import sync_playwright

    chromium = next(p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and os.path.exists(p))
    home = Path(tempfile.mkdtemp(prefix="runner-ui-")) / "home"
    home.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    url = f"http://127.0.0.1:{port}"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], env=env, capture_output=True, text=True, check=True).stdout.strip()

    daemon = subprocess.Popen([sys.executable, "-m", "runner", "daemon", "--http", f"127.0.0.1:{port}", "--max-running", "3"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        from runner.synth import make_shapes

        data = make_shapes(home.parent / "shapes", per_class=6, val_per_class=3)
        spec = home.parent / "resnet18.yaml"
        spec.write_text(json.dumps({"name": "shapes-resnet18", "model": "timm/resnet18", "dataset": {"path": str(data), "format": "imagefolder"},
                                    "train": {"epochs": 6, "batch_size": 4, "input_size": 32, "lr": 0.001}}))
        trained = cli("submit", spec)
        curve = cli("submit", "--name", "sweep-lr-0.01", "--", *JOBS, "burst", "5000")
        cli("submit", "--name", "flaky-script", "--", *JOBS, "exit", "3")
        for _ in range(300):
            if json.loads(cli("show", trained, "--json"))["state"] in ("succeeded", "failed"):
                break
            time.sleep(1)
        running = cli("submit", "--name", "long-run", "--", *JOBS, "metrics", "200", "0.5")
        cli("submit", "--name", "eval-sweep", "--", *JOBS, "sleep", "300")
        cli("submit", "--name", "night-job", "--priority", "-1", "--", *JOBS, "sleep", "300")
        cli("submit", "--name", "waits-for-the-sweep", "--after", running, "--", "true")
        time.sleep(4)
        token = cli("token")
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            ctx = b.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.goto(url + "/ui/login")
            page.fill("input[name=token]", token)
            page.click("form[action='/ui/login'] button")
            page.wait_for_url(url + "/ui/")
            shots = [("queue", "/ui/"), ("job", f"/ui/jobs/{trained}"), ("job-log-running", f"/ui/jobs/{running}"),
                     ("compare", f"/ui/compare?ids={trained},{curve}&metric=train_loss"), ("models", "/ui/models"),
                     ("models-ultralytics", "/ui/models?framework=ultralytics"), ("submit", "/ui/submit?model=ultralytics/yolov8n"),
                     ("gpus", "/ui/gpus"), ("envs", "/ui/envs"), ("checks", "/ui/checks"), ("login", "/ui/login")]
            made = []
            for name, path in shots:
                page.goto(url + path)
                if page.locator("#chart, #compare-chart").count():
                    page.wait_for_selector("#chart[data-points], #compare-chart[data-points]", timeout=15000)
                if name == "job-log-running":
                    page.wait_for_timeout(2500)
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
                print(f"docs/ui/{name}.png  {path}")
                made.append((name, path))
            phone = b.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
            ph = phone.new_page()
            ph.goto(url + "/ui/")
            ph.screenshot(path=str(OUT / "queue-phone.png"))
            print("docs/ui/queue-phone.png  /ui/ at 390x844")
            made.append(("queue-phone", "/ui/ at 390x844"))
            b.close()
        write_readme(made)
    finally:
        for j in json.loads(cli("ls", "--json")):  # the daemon ends them (their process trees too)
            subprocess.run([sys.executable, "-m", "runner", "cancel", j["id"]], env=env, capture_output=True)
        for _ in range(100):
            if not json.loads(cli("ls", "--json")):
                break
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        shutil.rmtree(home.parent, ignore_errors=True)


def write_readme(made):
    """docs/ui/README.md: which commit, machine and command made the screenshots, and of what."""
    from runner.provenance import commit, machine

    lines = ["# Dashboard screenshots", "",
             f"Commit `{commit()}`, made {time.strftime('%Y-%m-%d %H:%M:%S %z')} on {machine()['line']}",
             "by `bash scripts/ui-screenshots.sh` (headless Debian chromium against a real daemon with a few real jobs; 1400x1000",
             "unless stated).", ""] + [f"- `{name}.png`: `{path}`" for name, path in made]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
