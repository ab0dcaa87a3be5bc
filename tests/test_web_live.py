"""The dashboard as a team uses it, in Debian's Chromium against one root daemon, as the real
non-root users rn_alice and rn_bob (tests/test_users.py): a running job's charts and header change
without a reload, the owner cancels from the runs table (with a confirmation) and the other user
sees no button, a checkpoint downloads byte for byte for its owner and for nobody else (nor
through a link planted in the job folder), a failed job's log is in no view of the other user or
of an anonymous client, /docs loads with no way out. Plus the pure choice of a job's main metric."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import wait_for
from test_users import SYSTEM_PY, team_home, users, world  # noqa: F401 (fixtures)
from test_web import CHROMIUM, browser, page_as  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the tests make real Unix users"),
              pytest.mark.shared_envs]  # its homes reuse the session's framework envs (tests/envcache.py)


@pytest.fixture(scope="module")
def site(world, users):  # noqa: F811
    """One root daemon for the module, alice and bob with their tokens."""
    with team_home(world, users) as (d, alice, bob, home):
        alice.token, bob.token = alice.run("token").stdout.strip(), bob.run("token").stdout.strip()
        yield d, alice, bob, home


def get(page, url):
    """(status, text) of a GET with the page's cookies (its session, or none)."""
    r = page.context.request.get(url, max_redirects=0)
    return r.status, r.text()


def test_a_running_jobs_charts_and_header_change_without_a_reload_and_she_cancels_it_from_the_runs_table(site, browser):  # noqa: F811
    d, alice, bob, home = site
    jid = alice.run("submit", "--name", "live-curve", "--parser", "generic", "--", SYSTEM_PY, alice.world / "jobs.py",
                    "metrics", "60", "0.4").stdout.strip().splitlines()[-1]
    alice.wait(jid, "running")
    wait_for(lambda: alice.show(jid)["metrics"].get("loss") is not None, 30, 0.2, "a first point")
    page = page_as(browser, d, alice.token)
    page.goto(d.url + f"/ui/jobs/{jid}")
    chart = ".chart.small[data-names='loss']"
    page.wait_for_selector(chart + "[data-total]")
    first = int(page.get_attribute(chart, "data-total"))
    dur = page.inner_text("[data-live=duration]")
    page.evaluate("window.__notReloaded = true")
    wait_for(lambda: int(page.get_attribute(chart, "data-total")) >= first + 3, 20, 0.2, "the loss chart grown by three epochs")
    assert page.evaluate("window.__notReloaded") is True  # grown in place, not by a reload
    assert page.inner_text("[data-live=duration]") != dur and "running for" in page.inner_text("[data-live=duration]")
    # train/val of one quantity share a chart; a best/latest table sits on top; epochs are whole numbers
    assert page.locator(".chart.small[data-names='val_acc']").count() == 1
    assert page.inner_text("#best tr[data-metric='val_acc'] .best") == page.inner_text("#best tr[data-metric='val_acc'] .latest")
    assert "loss" in page.inner_text("#log")
    page.check("#log-scale")
    page.wait_for_selector(chart + " canvas")
    # the log follows new lines only while she is at its end; a search shows the lines with a word
    # (a log shorter than its pane is read at its end whatever the scroll: wait until it can scroll)
    wait_for(lambda: page.eval_on_selector("#log", "el => el.scrollHeight - el.clientHeight") > 40, 30, 0.2, "a log taller than its pane")
    page.eval_on_selector("#log", "el => { el.scrollTop = 0; }")
    before = page.inner_text("#log")
    wait_for(lambda: page.inner_text("#log") != before, 15, 0.2, "new log lines")
    assert page.eval_on_selector("#log", "el => el.scrollTop") == 0
    page.fill("#log-q", "val_acc")
    page.click("#log-search button")
    wait_for(lambda: (lambda lines: lines and all("val_acc" in x for x in lines))(page.inner_text("#log").splitlines()), 10, 0.2, "the search")
    status, whole = get(page, d.url + f"/ui/jobs/{jid}/output.log")
    assert status == 200 and "epoch 1 val_acc: 0.510" in whole and "epoch 1 val_acc" not in page.inner_text("#log").splitlines()[-1]

    # the runs table: her row shows its main metric (a command job's last printed, lr left out) and a cancel button; his shows none
    his = page_as(browser, d, bob.token)
    his.goto(d.url + "/ui/")
    row = f"tr[data-job='{jid}']"
    assert his.locator(row).count() == 1 and his.locator(row + " button").count() == 0
    page.goto(d.url + "/ui/")
    assert page.inner_text(row + " td.metric") == "val_acc" and page.inner_text(row + " td.best")
    asked = []
    page.once("dialog", lambda dlg: (asked.append(dlg.message), dlg.dismiss()))
    page.click(row + " button.danger")
    assert asked == ["Cancel live-curve?"] and alice.show(jid)["state"] == "running"  # dismissed: nothing sent
    page.once("dialog", lambda dlg: dlg.accept())
    page.click(row + " button.danger")
    assert alice.wait(jid)["state"] == "cancelled"
    page.goto(d.url + f"/ui/jobs/{jid}")
    assert page.inner_text("h1 .state") == "cancelled" and page.get_attribute("#live", "data-ended") == "1"
    assert page.errors == [] and his.errors == []


def test_a_running_jobs_page_stops_asking_once_it_ended(site, browser):  # noqa: F811
    d, alice, bob, home = site
    jid = alice.run("submit", "--name", "short", "--parser", "generic", "--", SYSTEM_PY, alice.world / "jobs.py",
                    "metrics", "8", "0.7").stdout.strip().splitlines()[-1]
    alice.wait(jid, "running")
    page = page_as(browser, d, alice.token)
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/live?" in r.url else None)
    page.goto(d.url + f"/ui/jobs/{jid}")
    page.wait_for_selector("#live[data-ended='1']", timeout=30000)
    assert page.inner_text("h1 .state") == "succeeded" and "ran " in page.inner_text("[data-live=duration]")
    assert page.locator(".chart.small[data-names='loss']").count() == 1  # its first points came while it ran
    n = len(asked)
    page.wait_for_timeout(4500)
    assert len(asked) == n  # no timer left once it ended

    # compare from the runs table: tick two jobs; legends by job name; a log-scale toggle
    other = alice.run("submit", "--name", "short-too", "--parser", "generic", "--", SYSTEM_PY, alice.world / "jobs.py",
                      "metrics", "3").stdout.strip().splitlines()[-1]
    alice.wait(other)
    page.goto(d.url + "/ui/")
    page.check(f"tr[data-job='{jid}'] input.pick")
    page.check(f"tr[data-job='{other}'] input.pick")
    page.wait_for_timeout(3500)  # a refresh of the rows keeps them ticked
    page.click("#compare-picked")
    page.wait_for_selector("#compare-chart[data-points]")
    assert f"ids={jid}" in page.url and f"ids={other}" in page.url
    labels = page.locator("#compare-chart .u-legend .u-label").all_inner_texts()
    assert sorted(labels[1:]) == ["short", "short-too"]  # by job name, not id
    page.wait_for_selector("#compare-all[data-charts]")  # and every metric they share, each job on each
    assert sorted(page.locator("#compare-all .chart.small").evaluate_all("els => els.map(e => e.dataset.name)")) == ["loss", "lr", "val_acc"]
    assert page.locator("#compare-all .chart.small[data-jobs='2']").count() == 3
    assert sorted(page.locator("#compare-all .chart.small[data-name='val_acc'] .u-legend .u-label").all_inner_texts()[1:]) == ["short", "short-too"]
    page.check("#log-scale")
    page.wait_for_selector("#compare-chart[data-log='1'] canvas")


NEW_METRICS = """import time
time.sleep(6)
for i in range(1, 5):
    print(f"loss={1 / i:.3f}", flush=True)
    time.sleep(0.7)
for i in range(1, 5):
    print(f"loss={0.2 / i:.3f} val_acc={0.5 + i / 10:.2f}", flush=True)
    time.sleep(0.7)
print("all done", flush=True)
"""


def test_a_page_opened_before_any_metric_follows_every_new_one_to_the_end(site, browser):  # noqa: F811
    """Opened while the job had printed nothing: its first metric, then a second one that appears
    later, each gets its chart in place; the log reaches the job's last line; the timer stops."""
    d, alice, bob, home = site
    jid = alice.run("submit", "--name", "late-metrics", "--parser", "generic", "--", SYSTEM_PY, "-c",
                    NEW_METRICS).stdout.strip().splitlines()[-1]
    alice.wait(jid, "running")
    page = page_as(browser, d, alice.token)
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(d.url + f"/ui/jobs/{jid}")
    assert "No metrics yet." in page.inner_text("#charts")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector(".chart.small[data-names='loss']", timeout=20000)
    page.wait_for_selector(".chart.small[data-names='val_acc']", timeout=20000)  # a metric that came later
    page.wait_for_selector("#live[data-ended='1']", timeout=30000)
    assert page.evaluate("window.__notReloaded") is True
    assert page.get_attribute(".chart.small[data-names='val_acc']", "data-total") == "4"
    assert "all done" in page.inner_text("#log") and page.inner_text("h1 .state") == "succeeded"
    assert not [u for u in asked if "/ui/jobs/" in u and jid not in u], asked  # no other page asked for by mistake


CKPT = "mkdir -p \"$RUNNER_JOB_DIR/checkpoints\" && head -c 300000 /dev/urandom > \"$RUNNER_JOB_DIR/checkpoints/model.pt\""


def test_a_checkpoint_downloads_for_its_owner_only_and_never_through_a_planted_link(site, browser, tmp_path):  # noqa: F811
    d, alice, bob, home = site
    spec = Path(alice.pw.pw_dir) / "ckpt.json"
    spec.write_text(json.dumps({"name": "with-ckpt", "command": ["/bin/sh", "-c", CKPT], "checkpoints": ["checkpoints/*.pt"]}))
    os.chown(spec, alice.uid, alice.pw.pw_gid)
    jid = alice.run("submit", spec).stdout.strip().splitlines()[-1]
    assert alice.wait(jid)["state"] == "succeeded"
    on_disk = home / "jobs" / jid / "checkpoints" / "model.pt"
    wait_for(lambda: alice.show(jid)["artifacts"], 15, 0.2, "the checkpoint recorded")
    page = page_as(browser, d, alice.token)
    page.goto(d.url + f"/ui/jobs/{jid}")
    with page.expect_download() as dl:
        page.click("#checkpoints a")
    got = Path(dl.value.path()).read_bytes()
    assert got == on_disk.read_bytes() and len(got) == 300000 and dl.value.suggested_filename == "model.pt"

    url = d.url + f"/ui/jobs/{jid}/checkpoint?path=checkpoints/model.pt"
    his, anyone = page_as(browser, d, bob.token), page_as(browser, d)
    for other in (his, anyone):
        other.goto(d.url + f"/ui/jobs/{jid}")
        assert other.locator("#checkpoints a").count() == 0
        for path in (f"/ui/jobs/{jid}/checkpoint?path=checkpoints/model.pt", f"/ui/jobs/{jid}/output.log"):
            status, text = get(other, d.url + path)
            assert status == 403 and "alice" in text, (path, status)

    # links she plants in her job folder after the fact: the file itself, then its folder
    shadow = Path("/etc/shadow").read_bytes()
    victim = bobs_model(bob)
    alice.python(f"import os; os.remove({str(on_disk)!r}); os.symlink('/etc/shadow', {str(on_disk)!r})")
    assert on_disk.is_symlink()
    status, text = get(page, url)
    assert status == 403 and "symbolic link" in text and shadow[:20].decode(errors="replace") not in text
    alice.python(f"import os, shutil; shutil.rmtree({str(on_disk.parent)!r}); os.symlink({str(victim.parent)!r}, {str(on_disk.parent)!r})")
    status, text = get(page, url)
    assert status == 403 and "bob's model" not in text
    status, _ = get(page, d.url + f"/ui/jobs/{jid}/checkpoint?path=../../../../etc/shadow")
    assert status == 404  # not a recorded checkpoint: never opened


def bobs_model(bob) -> Path:
    """A model.pt of bob's own, in a folder of his."""
    folder = Path(bob.pw.pw_dir) / "models"
    bob.python(f"import os; os.makedirs({str(folder)!r}, exist_ok=True); open({str(folder / 'model.pt')!r}, 'w').write(\"bob's model\")")
    assert (folder / "model.pt").exists()
    return folder / "model.pt"


def test_a_failed_jobs_log_is_in_no_view_of_another_user_or_an_anonymous_client(site, browser):  # noqa: F811
    d, alice, bob, home = site
    marker = "ALICE-PRIVATE-TAIL-42"  # printed by the job, not written in its (public) spec
    jid = alice.run("submit", "--name", "fails", "--", "/bin/sh", "-c", "echo ALICE-PRIVATE-TAIL-$((40+2)); echo loss=0.5; exit 3").stdout.strip().splitlines()[-1]
    assert alice.wait(jid)["state"] == "failed"
    mine = page_as(browser, d, alice.token)
    mine.goto(d.url + f"/ui/jobs/{jid}")
    assert marker in mine.inner_text("#log")
    paths = ["/ui/", "/ui/?state=failed", "/ui/queue/rows", f"/ui/jobs/{jid}", f"/ui/jobs/{jid}/log", f"/ui/jobs/{jid}/log?q=ALICE",
             f"/ui/jobs/{jid}/output.log", f"/ui/jobs/{jid}/output.log?download=1", f"/ui/jobs/{jid}/live?after=0", f"/ui/jobs/{jid}/charts",
             f"/ui/compare?ids={jid}", f"/jobs/{jid}", "/jobs", f"/jobs/{jid}/log", f"/jobs/{jid}/metrics", "/status"]
    for who in (page_as(browser, d, bob.token), page_as(browser, d)):
        for path in paths:
            status, text = get(who, d.url + path)
            assert marker not in text, (path, status)
        who.goto(d.url + f"/ui/jobs/{jid}")
        assert marker not in who.content() and "sign in as rn_alice" in who.inner_text("main")
    assert marker not in bob.run("show", jid).stdout + bob.run("show", jid, "--json").stdout


def test_docs_load_with_no_way_out(site, browser):  # noqa: F811
    d = site[0]
    page = page_as(browser, d)
    outside = []

    def only_here(route):
        if route.request.url.startswith(d.url):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", only_here)
    page.goto(d.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
    assert "runner" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock").count() > 5 and outside == []
    assert get(page, d.url + "/redoc")[0] == 404


def test_a_jobs_main_metric_is_its_tasks():
    from runner.web.metricsview import group_key, lower_is_better, main_metric

    assert main_metric("model", ["train_loss", "val_loss", "val_accuracy", "lr"]) == "val_accuracy"
    assert main_metric("model", ["val_map50_box", "val_map50_95_box", "val_map50_mask"]) == "val_map50_mask"  # instance segmentation
    assert main_metric("model", ["val_loss", "val_mean_iou_fg"]) == "val_mean_iou_fg"
    assert main_metric("model", ["val_bleu", "train_loss"]) == "val_bleu"
    assert main_metric("model", ["metrics/mAP50-95(B)", "metrics/mAP50(B)", "train/box_loss"]) == "metrics/mAP50(B)"  # a repo's names
    assert main_metric("command", ["val_acc", "loss", "lr", "gpu0_memory_mb"]) == "loss"  # the last printed, samples left out
    assert main_metric("command", ["gpu0_memory_mb"]) is None
    assert lower_is_better("val_loss") and not lower_is_better("val_map50_box")
    assert group_key("train_loss") == group_key("val_loss") == "loss" and group_key("val/box_loss") == "box_loss"


def test_under_share_logs_everyone_downloads_and_a_swapped_or_linked_file_is_refused(tmp_path):
    """No daemon: a store with one ended job of rn_bob's (uid), its log and a recorded checkpoint;
    [server] share_logs opens both to an anonymous client; a checkpoint replaced by another file,
    or given a second name, is not served."""
    import pwd

    from fastapi.testclient import TestClient

    from runner.atomic import write_json
    from runner.home import Home
    from runner.http import create_app
    from runner.watch import IDENTITIES, Identity

    try:
        bob = pwd.getpwnam("rn_bob")
    except KeyError:
        pytest.skip("needs the user rn_bob (tests/test_users.py makes it)")
    (tmp_path / "config.toml").write_text("[server]\nshare_logs = true\n")
    h = Home(tmp_path).ensure()
    store = h.store()
    store.insert_job({"id": "shared01", "name": "shared", "user": "rn_bob", "uid": bob.pw_uid, "kind": "command", "model": None,
                      "spec": {"command": ["true"]}, "gpus": [], "after": [], "state": "succeeded", "reason": None, "created_at": 1.0,
                      "started_at": 1.0, "finished_at": 2.0, "exit_code": 0}, now=1.0)
    run, job = h.run_dir("shared01"), h.job_dir("shared01")
    run.mkdir(parents=True)
    (run / "output.log").write_text("epoch 1 loss=0.5\n")
    (job / "ck").mkdir(parents=True)
    ck = job / "ck" / "a.pt"
    ck.write_bytes(b"weights" * 1000)
    os.chown(ck, bob.pw_uid, bob.pw_gid)
    write_json(run / IDENTITIES, {str(ck): list(Identity.of(ck.stat()))})
    store.add_artifact("shared01", str(ck), "checkpoint", ck.stat().st_size)
    c = TestClient(create_app(h), base_url="http://127.0.0.1:8765")
    assert c.get("/ui/jobs/shared01/output.log").text == "epoch 1 loss=0.5\n"
    r = c.get("/ui/jobs/shared01/checkpoint", params={"path": "ck/a.pt"})
    assert r.status_code == 200 and r.content == b"weights" * 1000 and 'filename="a.pt"' in r.headers["content-disposition"]
    os.link(ck, job / "second-name")  # a second name: it may be someone else's file under hers
    assert c.get("/ui/jobs/shared01/checkpoint", params={"path": "ck/a.pt"}).status_code == 403
    os.unlink(job / "second-name")
    other = job / "ck" / "b.tmp"
    other.write_bytes(b"other")
    os.chown(other, bob.pw_uid, bob.pw_gid)
    os.replace(other, ck)  # another file at the recorded path (as a save by rename makes it), not yet recorded
    r = c.get("/ui/jobs/shared01/checkpoint", params={"path": "ck/a.pt"})
    assert r.status_code == 409 and "replaced" in r.json()["error"]


def test_a_rows_best_follows_new_points(tmp_path):
    from runner.home import Home
    from runner.web.metricsview import Best, main_metrics

    store = Home(tmp_path).ensure().store()
    store.insert_job({"id": "best0001", "name": "b", "user": "u", "uid": 0, "kind": "model", "model": "timm/resnet18", "spec": {},
                      "gpus": [], "after": [], "state": "running", "reason": None, "created_at": 1.0}, now=1.0)
    job = store.get_job("best0001")
    best = Best()
    store.add_metrics("best0001", [("val_accuracy", v, None, e) for e, v in enumerate((0.2, 0.6, 0.4))] + [("val_loss", 0.1, None, 0)])
    assert main_metrics(store, [job], best)["best0001"] == {"name": "val_accuracy", "latest": 0.4, "best": 0.6, "lower": False}
    store.add_metrics("best0001", [("val_accuracy", 0.7, None, 3), ("val_accuracy", 0.5, None, 4)])
    assert main_metrics(store, [job], best)["best0001"]["best"] == 0.7 and main_metrics(store, [job], best)["best0001"]["latest"] == 0.5


def test_the_headers_memory_and_cpu_are_the_whole_process_trees(tmp_path):
    """A job whose two workers hold most of its memory: the header counts them, not only the main process."""
    import subprocess
    import sys
    import time

    from runner.web.jobpage import process_usage

    code = ("import subprocess, sys, time\n"
            "kids = [subprocess.Popen([sys.executable, '-c', 'b = bytearray(64 << 20); import time; time.sleep(60)']) for _ in range(2)]\n"
            "print('up', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == b"up"
        import psutil

        (tmp_path / "child.json").write_text(json.dumps({"pid": p.pid, "pgid": p.pid, "started_at": psutil.Process(p.pid).create_time()}))
        usage = wait_for(lambda: (lambda u: u if u and u[0] > 128 << 20 else None)(process_usage(tmp_path)), 20, 0.2, "the workers' memory")
        assert usage[2] == 3 and usage[1] >= 0
        main_only = psutil.Process(p.pid).memory_info().rss
        assert usage[0] > main_only + (128 << 20) * 0.9
        (tmp_path / "child.json").write_text(json.dumps({"pid": p.pid, "pgid": p.pid, "started_at": time.time() - 3600}))
        assert process_usage(tmp_path) is None  # a pid whose start time is not the job's: another process
    finally:
        os.killpg(p.pid, 9)
        p.wait()


def test_a_long_chart_keeps_its_spike_its_gap_and_says_infinity_as_null(tmp_path):
    from runner.home import Home
    from runner.web import metricsview

    store = Home(tmp_path).ensure().store()
    store.insert_job({"id": "long0001", "name": "x", "user": "u", "uid": 0, "kind": "command", "spec": {}, "gpus": [], "after": []})
    ys = [1.0 / (k + 1) for k in range(50_000)]
    ys[31_337], ys[40_000] = 50.0, float("inf")
    store.add_metrics("long0001", [("loss", ys[k], k, k // 1000) for k in range(50_000)])
    store.add_metrics("long0001", [("val_loss", v, None, e) for e, v in enumerate((0.9, float("nan"), 0.7))])
    out = metricsview.charts(store, "long0001", points=1000)
    loss, val = out["series"]["loss"], out["series"]["val_loss"]
    assert loss["axis"] == "step" and loss["total"] == 50_000 and len(loss["x"]) <= 1000
    assert (31_337, 50.0) in zip(loss["x"], loss["y"])  # the spike survives the decimation
    assert (40_000, None) not in zip(loss["x"], loss["y"]) and max(y for y in loss["y"] if y is not None) == 50.0
    assert loss["x"][0] == 0 and loss["x"][-1] == 49_999 and loss["x"] == sorted(loss["x"])
    assert val == {"axis": "epoch", "x": [0, 1, 2], "y": [0.9, None, 0.7], "total": 3, "lower": True}
    assert out["groups"] == [{"title": "loss", "names": ["loss", "val_loss"]}]
