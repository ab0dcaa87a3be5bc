"""A job's tags and notes (issue #25), as two real Unix users and an anonymous client see them: the
owner tags from the CLI, the API and the job page; the runs table shows the tags and filters by
them; a teammate can change none of it by any of those routes nor by a spool file of her own; a
note is text on every page, never markup."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest

from conftest import wait_for
from runner import tags
from test_privsep_http import browser, needs_chromium  # noqa: F401
from test_users import team, users, world  # noqa: F401
from test_web import page_as

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd: the tests make real Unix users")


def _api(d, method: str, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(d.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _tags_of(user, jid):
    return user.show(jid).get("tags") or []


def test_the_tag_rules_in_one_line_each():
    assert tags.check(["baseline", "lr:1e-3", "seed=2", "v1.2_b+c"], ["old"], "two\nlines\tok") == []
    assert tags.check(["bad tag"]) == ["tags: given 'bad tag'; expected a word of 1 to 40 letters, digits or _ . : + = - "
                                       "that starts with a letter or digit"]
    assert tags.check([], ['"x"'])[0].startswith("remove: given '\"x\"'")  # no quote: a tag is found by its quoted word
    assert tags.check(notes="a\x1b[31m") == ["notes: contains a control character; expected text (line breaks and tabs are fine)"]
    assert tags.check(notes="x" * (tags.MAX_NOTES + 1))[0].startswith("notes: given 4001 characters")
    assert tags.apply(["a", "b"], ["c", "a"], ["b"]) == ["a", "c"]
    with pytest.raises(Exception, match="at most 20"):
        tags.apply([f"t{i}" for i in range(20)], ["one-more"])
    assert tags.split(" a, b  c,,") == ["a", "b", "c"]


def test_her_tags_and_notes_from_the_cli_and_the_api_and_no_one_elses(team):
    d, alice, bob, home = team
    jid = alice.wait(alice.job("whoami"))["id"]
    other = alice.wait(alice.job("whoami"))["id"]
    alice.run("tag", jid, "baseline", "lr:0.1", "--notes", "first try\nbatch 8")
    wait_for(lambda: _tags_of(alice, jid) == ["baseline", "lr:0.1"], 10, 0.2, "her tags")
    shown = alice.run("show", jid).stdout
    assert "tags:           baseline, lr:0.1" in shown and "notes:          first try\n                batch 8" in shown
    assert bob.show(jid)["notes"] == "first try\nbatch 8"  # seen by whoever sees the job, as its name is
    listed = [j["id"] for j in json.loads(bob.run("ls", "--all", "--tag", "lr:0.1", "--json").stdout)]
    assert listed == [jid]  # the other job is untagged; and "lr:0.1" is no LIKE pattern
    assert json.loads(bob.run("ls", "--all", "--tag", "lr", "--json").stdout) == []  # a tag, not a part of one

    r = alice.run("tag", jid, "has space", check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "runner: tags: given 'has space'; expected a word of 1 to 40 letters, digits or _ . : + = - that starts with a letter or digit"]

    # bob: the CLI, the API and a spool file he writes by hand all leave her job as it was
    r = bob.run("tag", jid, "mine-now", "--notes", "bob was here", check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"runner: job {jid}: belongs to {alice.name}; only its owner or root may tag it"
    a_token, b_token = alice.run("token").stdout.strip(), bob.run("token").stdout.strip()
    assert _api(d, "POST", f"/jobs/{jid}/tags", b_token, {"add": ["x"]})[0] == 403
    assert _api(d, "POST", f"/jobs/{jid}/tags", None, {"add": ["x"]})[0] == 401
    bob.python("import json, os\n"
               f"p = {str(home / 'spool' / ('.h-' + jid))!r}\n"
               f"open(p, 'w').write(json.dumps({{'id': {jid!r}, 'add': ['forged'], 'remove': ['baseline'], 'notes': 'forged'}}))\n"
               f"os.rename(p, {str(home / 'spool' / ('0001-' + jid + '.tags.json'))!r})")
    reason = home / "spool" / "quarantine" / f"0001-{jid}.tags.json.reason"
    wait_for(reason.exists, 15, what="bob's forged request to be set aside")
    assert f"{bob.name} may not tag a job of {alice.name}" in reason.read_text()

    # her token: 202, applied a moment later; removing one tag keeps the others and the notes
    status, body = _api(d, "POST", f"/jobs/{jid}/tags", a_token, {"add": ["best"], "remove": ["baseline"]})
    assert status == 202 and body["id"] == jid
    wait_for(lambda: _tags_of(alice, jid) == ["lr:0.1", "best"], 10, 0.2, "her API change")
    assert alice.show(jid)["notes"] == "first try\nbatch 8"
    status, body = _api(d, "POST", f"/jobs/{jid}/tags", a_token, {"add": ["no good"]})
    assert status == 422 and body["error"].startswith("tags: given 'no good'")
    status, body = _api(d, "GET", "/jobs?tag=best")
    assert [j["id"] for j in body["jobs"]] == [jid] and body["jobs"][0]["tags"] == ["lr:0.1", "best"]
    assert other not in [j["id"] for j in body["jobs"]]
    alice.run("tag", jid, "--notes", "")  # cleared
    wait_for(lambda: alice.show(jid)["notes"] is None, 10, 0.2, "her notes cleared")
    assert d.proc.poll() is None


@needs_chromium
def test_the_owner_edits_tags_on_the_page_and_the_runs_table_filters_by_them(team, browser):
    d, alice, bob, home = team
    jid = alice.wait(alice.job("whoami"))["id"]
    other = alice.wait(alice.job("whoami"))["id"]
    page = page_as(browser, d, alice.run("token").stdout.strip())
    page.goto(f"{d.url}/ui/jobs/{jid}")
    page.click(".tag-edit summary")
    page.fill("#tag-input", "sweep-3, lr:0.01")
    page.fill("#notes-input", "<script>alert(1)</script><b>bold?</b>\nsecond line")
    dialogs = []
    page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
    page.click("#tag-save")
    page.wait_for_url(f"{d.url}/ui/jobs/{jid}")
    assert page.inner_text("#tags").split() == ["sweep-3", "lr:0.01"]
    assert page.inner_text("#notes") == "<script>alert(1)</script><b>bold?</b>\nsecond line"  # shown as text
    assert page.locator("#notes b").count() == 0 and dialogs == []

    page.click(".tag-edit summary")
    page.fill("#tag-input", "sweep-3 has!bang")  # refused whole, in one line, with what she typed kept
    page.click("#tag-save")
    assert page.locator(".tag-edit .error").inner_text().startswith("tags: given 'has!bang'")
    assert page.input_value("#tag-input") == "sweep-3 has!bang"
    assert alice.show(jid)["tags"] == ["sweep-3", "lr:0.01"]

    page.goto(f"{d.url}/ui/")  # the runs table: her tags as links to their filter
    page.click(f"tr[data-job='{jid}'] .tags a:text-is('lr:0.01')")
    page.wait_for_url(f"{d.url}/ui/?tag=lr%3A0.01")
    assert page.locator(f"tr[data-job='{jid}']").count() == 1 and page.locator(f"tr[data-job='{other}']").count() == 0

    theirs = page_as(browser, d, bob.run("token").stdout.strip())  # bob sees them, and no form to change them
    theirs.goto(f"{d.url}/ui/jobs/{jid}")
    assert theirs.inner_text("#tags").split() == ["sweep-3", "lr:0.01"] and theirs.locator("#tag-form").count() == 0
    csrf = json.loads(theirs.locator("body").get_attribute("hx-headers"))["X-Runner-CSRF"]  # his own session's
    r = theirs.request.post(f"{d.url}/ui/jobs/{jid}/tags", form={"csrf": csrf, "tags": "", "notes": "bob"},
                            headers={"Origin": d.url}, max_redirects=0)
    assert r.status == 403 and "only its owner or root may tag it" in r.text()
    assert alice.show(jid)["tags"] == ["sweep-3", "lr:0.01"] and page.errors == [] and theirs.errors == []
