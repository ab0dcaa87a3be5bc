"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright with
`executable_path`), against a real daemon: every page renders, charts hold the stored (or
downsampled) points, model filters filter, the submit form makes a job that runs, cancel works
for the owner and is refused for another user, and a write without a session is refused."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import FIXTURES, LOOPBACK, DaemonProc, Runner, wait_for

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and os.path.exists(p)), None)
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"),
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)
JOB = [sys.executable, str(FIXTURES / "jobs.py")]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    home = tmp_path_factory.mktemp("web") / "home"
    home.mkdir()
    runner = Runner(home)
    d = DaemonProc(home, runner.env, extra=("--max-running", "4")).start()
    yield d, runner
    d.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


def page_as(browser, d, token=None, width=1400, height=1000):
    """A fresh browser context, signed in with `token` through the sign-in page when given."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    if token:
        page.goto(d.url + "/ui/login")
        page.fill("input[name=token]", token)
        page.click("form[action='/ui/login'] button")
        page.wait_for_url(d.url + "/ui/")
    return page


def test_every_page_renders(web, browser):
    d, runner = web
    jid = runner.submit("--name", "render-me", "--parser", "generic", "--", *JOB, "metrics", "3")
    runner.wait_state(jid)
    page = page_as(browser, d)
    for path, heading in [("/", "Queue"), ("/ui/", "Queue"), (f"/ui/jobs/{jid}", "render-me"), (f"/ui/compare?ids={jid}", "Compare"),
                          ("/ui/models", "Models"), ("/ui/submit", "Submit a job"), ("/ui/submit?model=timm/resnet18", "Train ResNet-18"),
                          ("/ui/gpus", "GPUs"), ("/ui/envs", "Envs"), ("/ui/checks", "Plugin check reports"), ("/ui/login", "Sign in")]:
        r = page.goto(d.url + path)
        assert r.status == 200, path
        assert heading in page.inner_text("h1"), (path, page.inner_text("h1"))
    assert "sign in" in page.inner_text("#who")  # nobody signed in
    assert page.errors == []


def test_queue_orders_running_queued_ended_and_filters(web, browser):
    d, runner = web
    done = runner.submit("--name", "q-done", "--", "true")
    runner.wait_state(done)
    running = [runner.submit("--name", f"q-run{i}", "--", *JOB, "sleep", "60") for i in range(4)]
    for r in running:
        runner.wait_state(r, "running")
    waiting = runner.submit("--name", "q-wait", "--", "true")  # the 4 slots are full: it waits
    page = page_as(browser, d)
    page.goto(d.url + "/ui/")
    wait_for(lambda: page.locator(f"tr[data-job='{waiting}']").count() == 1, 15, what="the queued job listed")
    order = page.eval_on_selector_all("table.jobs tbody tr", "rows => rows.map(r => r.dataset.job)")
    assert order.index(running[0]) < order.index(waiting) < order.index(done)
    assert "queue 1" in page.inner_text(f"tr[data-job='{waiting}']")
    page.goto(d.url + "/ui/?state=succeeded")
    states = page.eval_on_selector_all("table.jobs tbody tr", "rows => rows.map(r => r.className)")
    assert states and set(states) == {"succeeded"}
    page.goto(d.url + "/ui/?user=nobody-here")
    assert "No jobs match" in page.inner_text("main")
    for r in running:
        runner.run("cancel", r)
    runner.wait_state(waiting)


def test_chart_holds_the_stored_points_and_long_series_are_downsampled(web, browser):
    d, runner = web
    small = runner.submit("--name", "chart-small", "--parser", "generic", "--", *JOB, "burst", "300")
    big = runner.submit("--name", "chart-big", "--parser", "generic", "--", *JOB, "burst", "20000")
    page = page_as(browser, d)
    for jid, stored in ((small, 300), (big, 20000)):
        job = runner.wait_state(jid)
        wait_for(lambda: len(json.loads(runner.run("show", jid, "--json").stdout)["metrics"]) > 0, 10, what="metrics stored")
        page.goto(d.url + f"/ui/jobs/{job['id']}")
        chart = ".chart.small[data-names='loss']"
        page.wait_for_selector(chart + "[data-points]")
        wait_for(lambda: page.get_attribute(chart, "data-total") == str(stored), 10, what="the chart of the metric")
        drawn = int(page.get_attribute(chart, "data-points"))
        if stored <= 1000:
            assert drawn == stored
        else:
            assert 500 < drawn <= 1000  # min and max per bucket
        assert page.locator(chart + " canvas").count() == 1
        best = float(page.inner_text("#best tr[data-metric='loss'] .best"))
        assert best == pytest.approx(float("%.6f" % (1 / stored)))  # the lowest loss (the last one printed), from every point
    page.goto(d.url + f"/ui/compare?ids={small},{big}&metric=loss")
    page.wait_for_selector("#compare-chart[data-points]")
    pts = [int(x) for x in page.get_attribute("#compare-chart", "data-points").split(",")]
    assert pts[0] == 300 and 1000 < pts[1] <= 2000  # both overlaid, each at most 2,000 points
    assert "chart-small" in page.inner_text("table.jobs") and page.locator("#compare-chart canvas").count() == 1
    s = json.loads(LOOPBACK.open(d.url + f"/jobs/{big}/series?name=loss&points=100").read())
    assert s["total"] == 20000 and s["points"] <= 100 and s["downsampled"]
    assert s["y"][0] == 1.0 and max(s["y"]) == 1.0 and min(s["y"]) == pytest.approx(1 / 20000, rel=1e-3)  # the extremes survive


def test_model_filters_filter(web, browser):
    d, _ = web
    page = page_as(browser, d)
    page.goto(d.url + "/ui/models?framework=ultralytics")
    fws = page.eval_on_selector_all("article.card", "cards => cards.map(c => c.dataset.framework)")
    assert len(fws) == 14 and set(fws) == {"ultralytics"}
    assert page.locator("article.card .warning").count() == 14  # AGPL-3.0: flagged on every card
    page.goto(d.url + "/ui/models")
    total = page.locator("article.card").count()
    page.select_option("select[name=task]", "semantic_segmentation")
    page.click("#model-filters button")
    refs = page.eval_on_selector_all("article.card", "cards => cards.map(c => c.dataset.ref)")
    assert refs == ["transformers/nvidia/segformer-b0-finetuned-ade-512-512"] and total > 30
    page.goto(d.url + "/ui/models?q=resnet")
    refs = page.eval_on_selector_all("article.card", "cards => cards.map(c => c.dataset.ref)")
    assert refs and all("resnet" in r for r in refs)


def test_submit_form_makes_a_job_that_runs_and_shows_errors_by_the_field(web, browser, shapes):
    d, runner = web
    page = page_as(browser, d, runner.token())
    page.goto(d.url + "/ui/submit?model=timm/resnet18")
    page.fill("#f-dataset\\.path", str(shapes / "no-such-folder"))
    page.fill("#f-train\\.epochs", "1")
    page.fill("#f-train\\.batch_size", "4")
    page.fill("#f-train\\.input_size", "32")
    wait_for(lambda: "epochs: 1" in page.inner_text("#yaml"), 15, 0.1, "the YAML beside the form")  # the CSP evaluates no strings
    page.click("#submit-form button[type=submit]")
    # the same check and the same one line as `runner submit`, next to the field it names
    err = page.inner_text(".field.bad .field-error")
    assert err.startswith("dataset.path:") and "no-such-folder" in err and "\n" not in err.strip(), err
    assert page.input_value("#f-train\\.epochs") == "1"  # what was typed is kept
    page.fill("#f-dataset\\.path", str(shapes))
    page.click("#submit-form button[type=submit]")
    page.wait_for_url(lambda u: "/ui/jobs/" in u)
    jid = page.url.rsplit("/", 1)[1]
    job = runner.wait_state(jid, timeout=900)
    assert job["state"] == "succeeded", job.get("log_tail")
    assert job["spec"]["train"]["epochs"] == 1 and job["user"] == pwd.getpwuid(os.getuid()).pw_name


def _other_user():
    if os.geteuid() != 0 or not shutil.which("useradd"):
        return None
    name = "rn_bob"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    return pwd.getpwnam(name)


def test_cancel_from_the_page_owner_yes_other_user_no(web, browser):
    d, runner = web
    jid = runner.submit("--name", "cancel-me", "--", *JOB, "sleep", "120")
    runner.wait_state(jid, "running")
    bob = _other_user()
    if bob is not None:
        from runner import tokens
        from runner.home import Home

        bob_token = tokens.write(Home(runner.home), bob.pw_uid, bob.pw_gid)  # what the daemon does for `runner token`
        page = page_as(browser, d, bob_token)
        page.goto(d.url + f"/ui/jobs/{jid}")
        assert "signed in as rn_bob" in page.inner_text("#who")
        assert page.locator("#cancel").count() == 0  # not his job: no button
        # a forged form from his own session (his CSRF value) is still refused
        csrf = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-Runner-CSRF']")
        r = page.request.post(d.url + f"/ui/jobs/{jid}/cancel", form={"csrf": csrf}, headers={"Origin": d.url}, max_redirects=0)
        assert r.status == 403 and "only its owner" in r.text() or r.status == 403
        assert runner.show(jid)["state"] == "running"
    page = page_as(browser, d, runner.token())
    page.goto(d.url + f"/ui/jobs/{jid}")
    page.once("dialog", lambda dlg: dlg.accept())  # "Cancel cancel-me?"
    page.click("#cancel")
    assert runner.wait_state(jid, timeout=30)["state"] == "cancelled"


def test_writes_without_a_session_or_from_another_site_are_refused(web, browser):
    d, runner = web
    jid = runner.submit("--name", "keep-me", "--", *JOB, "sleep", "120")
    runner.wait_state(jid, "running")

    def post(path, data, headers=None):
        req = urllib.request.Request(d.url + path, data=urllib.parse.urlencode(data).encode(), headers=headers or {}, method="POST")
        try:
            with LOOPBACK.open(req) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post(f"/ui/jobs/{jid}/cancel", {}) == 403  # nobody signed in
    page = page_as(browser, d, runner.token())
    cookie = next(c for c in page.context.cookies() if c["name"] == "runner_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    jar = {"Cookie": f"runner_session={cookie['value']}"}
    assert post(f"/ui/jobs/{jid}/cancel", {}, jar) == 403  # a session but no CSRF value
    page.goto(d.url + "/ui/")
    csrf = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-Runner-CSRF']")
    assert post(f"/ui/jobs/{jid}/cancel", {"csrf": csrf}, {**jar, "Origin": "http://evil.example"}) == 403  # another site
    assert post("/ui/submit", {"model": "timm/resnet18", "csrf": "x"}, jar) == 403
    assert runner.show(jid)["state"] == "running"
    runner.run("cancel", jid)


def test_web_login_link_signs_in_once(web, browser):
    d, runner = web
    link = runner.run("web-login").stdout.strip()
    assert link.startswith(d.url + "/ui/login?")
    page = page_as(browser, d)
    page.goto(link)
    assert "signed in as " + pwd.getpwuid(os.getuid()).pw_name in page.inner_text("#who")
    again = page_as(browser, d)
    r = again.goto(link)
    assert r.status == 403 and "already used" in again.inner_text(".error")
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    r = again.goto(forged)
    assert r.status == 403 and "not valid" in again.inner_text(".error")


def test_pages_work_with_javascript_off(web, browser):
    d, runner = web
    jid = runner.submit("--name", "no-js", "--", "true")
    runner.wait_state(jid)
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(d.url + "/ui/")
    assert page.locator(f"tr[data-job='{jid}']").count() == 1  # rendered on the server, not by a script
    page.select_option("select[name=state]", "succeeded")
    page.click("form.filters button")  # a plain GET form
    assert "state=succeeded" in page.url and set(page.eval_on_selector_all("table.jobs tbody tr", "r => r.map(x => x.className)")) == {"succeeded"}
    page.goto(d.url + "/ui/models")
    page.select_option("select[name=framework]", "transformers")
    page.click("#model-filters button")
    assert page.locator("article.card").count() == 5
    page.goto(d.url + f"/ui/jobs/{jid}")
    assert "no-js" in page.inner_text("h1") and "exit code" in page.inner_text("table.kv")
    ctx.close()
