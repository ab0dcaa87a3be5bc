"""Screenshots of every dashboard page at 1400x1000 (and the runs table at phone width) into
docs/ui/, taken in headless Chromium against a real root daemon, as a teammate sees them: signed in
as a non-root user (rn_alice, or --user NAME) whose jobs run as her, one of them running while the
pages are taken. Run as root by `bash scripts/ui-screenshots.sh` (the user must exist: useradd)."""

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
JOBS = [str(ROOT / "tests" / "fixtures" / "jobs.py")]
PY = "/usr/bin/python3"  # the machine's python: hers to run (the venv's may lie in root's home)


def main():
    import argparse
    import pwd

    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--user", default="rn_alice", help="the teammate whose jobs and pages are shown (not root)")
    user = pwd.getpwnam(ap.parse_args().user)
    if os.geteuid() != 0 or user.pw_uid == 0:
        sys.exit("ui_screenshots: run as root (the daemon is root's) with --user naming a non-root user, e.g. rn_alice")
    chromium = next(p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and os.path.exists(p))
    top = Path(tempfile.mkdtemp(prefix="runner-ui-"))
    os.chmod(top, 0o755)  # her jobs' folders and the dataset lie below: she must reach them
    home = top / "home"
    home.mkdir()
    os.chmod(home, 0o755)
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
        from runner import tokens
        from runner.home import Home
        from runner.synth import make_shapes

        token = tokens.write(Home(home), user.pw_uid, user.pw_gid)  # what the daemon does for her `runner token`

        def submit(spec: dict) -> str:
            req = urllib.request.Request(url + "/jobs", data=json.dumps(spec).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(req).read())["id"]

        def tag(jid: str, add: list, notes: str | None = None):
            req = urllib.request.Request(f"{url}/jobs/{jid}/tags", data=json.dumps({"add": add, "notes": notes}).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            urllib.request.urlopen(req).read()

        def state(jid: str) -> str:
            return json.loads(urllib.request.urlopen(f"{url}/jobs/{jid}").read())["state"]

        def command(name, *argv, **kw):
            return submit({"name": name, "command": [PY, *JOBS, *argv], "parser": "generic", **kw})

        data = make_shapes(top / "shapes", per_class=6, val_per_class=3)
        subprocess.run(["chmod", "-R", "a+rX", str(data)], check=True)
        trained = submit({"name": "shapes-resnet18", "model": "timm/resnet18", "dataset": {"path": str(data), "format": "imagefolder"},
                          "train": {"epochs": 6, "batch_size": 4, "input_size": 32, "lr": 0.001}})
        curve = command("sweep-lr-0.01", "burst", "5000")
        curve2 = command("sweep-lr-0.03", "burst", "3000")
        command("flaky-script", "exit", "3")
        for _ in range(600):
            if state(trained) in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        print(f"shapes-resnet18: {state(trained)}")
        tag(trained, ["baseline", "shapes"], "6 epochs at 32 px; the reference for the lr sweep")
        tag(curve, ["sweep"])
        tag(curve2, ["sweep"])
        running = command("long-run", "metrics", "400", "0.5")
        command("eval-sweep", "sleep", "300")
        command("night-job", "sleep", "300", priority=-1)
        submit({"name": "waits-for-the-sweep", "command": ["true"], "after": [running]})
        for _ in range(100):
            if state(running) == "running":
                break
            time.sleep(0.2)
        time.sleep(8)  # a few epochs of the running job
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            ctx = b.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.goto(url + "/ui/login")
            page.fill("input[name=token]", token)
            page.click("form[action='/ui/login'] button")
            page.wait_for_url(url + "/ui/")
            shots = [("queue", "/ui/"), ("job", f"/ui/jobs/{trained}"), ("job-running", f"/ui/jobs/{running}"),
                     ("job-log-running", f"/ui/jobs/{running}#log"),
                     ("compare", f"/ui/compare?ids={curve}&ids={curve2}&metric=loss"), ("models", "/ui/models"),
                     ("models-ultralytics", "/ui/models?framework=ultralytics"), ("submit", "/ui/submit?model=ultralytics/yolov8n"),
                     ("submit-command", "/ui/submit?kind=command"),
                     ("gpus", "/ui/gpus"), ("envs", "/ui/envs"), ("checks", "/ui/checks"), ("docs", "/docs"), ("login", "/ui/login")]
            made = []
            for name, path in shots:
                page.goto(url + path)
                if page.locator("#charts").count():
                    page.wait_for_selector(".chart.small canvas", timeout=15000)
                if page.locator("#compare-chart").count():
                    page.wait_for_selector("#compare-chart[data-points]", timeout=15000)
                if name == "job-running":
                    page.wait_for_timeout(4500)  # two live refreshes: the charts and the header moved on
                if name == "job-log-running":
                    page.locator("#log").scroll_into_view_if_needed()
                    page.wait_for_timeout(2500)
                if name == "docs":
                    page.wait_for_selector(".swagger-ui .opblock", timeout=15000)
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
        write_readme(made, user.pw_name)
    finally:
        for j in json.loads(cli("ls", "--json")):  # the daemon ends them (their process trees too)
            subprocess.run([sys.executable, "-m", "runner", "cancel", j["id"]], env=env, capture_output=True)
        for _ in range(100):
            if not json.loads(cli("ls", "--json")):
                break
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        shutil.rmtree(top, ignore_errors=True)


def write_readme(made, user: str):
    """docs/ui/README.md: which commit, machine and command made the screenshots, and of what."""
    from runner.provenance import commit, machine

    lines = ["# Dashboard screenshots", "",
             f"Commit `{commit()}`, made {time.strftime('%Y-%m-%d %H:%M:%S %z')} on {machine()['line']}",
             f"by `bash scripts/ui-screenshots.sh` (headless Debian chromium against a real root daemon, signed in as {user}, a",
             "non-root user whose jobs run as her, one of them running; 1400x1000 unless stated).", ""] + [f"- `{name}.png`: `{path}`" for name, path in made]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
