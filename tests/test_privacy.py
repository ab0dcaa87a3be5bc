"""A job's log is its owner's: no view gives another user (or an anonymous client) a failed job's
last lines, the store that everyone may read holds none, and a private log's `key=value` lines
become metrics (which everyone sees) only when the job asks. Two real users, a root daemon."""

from __future__ import annotations

import json

from conftest import wait_for
from test_users import ALICE, BOB, SYSTEM_PY, User, team, users, world  # noqa: F401

PRIVATE = "alice-private-line-7d1f"


def _fail(alice: User, *extra) -> str:
    # the command is public (everyone sees the queue): the private line is made only when it runs
    head, tail = PRIVATE.rsplit("-", 1)
    script = f"printf '{head}-%s\\n' {tail}; echo pin=4711; exit 3"
    return alice.run("submit", *extra, "--", "/bin/sh", "-c", script).stdout.strip().splitlines()[-1]


def test_a_failed_jobs_last_lines_reach_only_its_owner_and_root(team):
    d, alice, bob, home = team
    jid = _fail(alice)
    job = alice.wait(jid)
    assert (job["state"], job["exit_code"]) == ("failed", 3)
    assert PRIVATE in (job["log_tail"] or "")  # hers: `runner show` gives her the tail
    assert PRIVATE in alice.run("show", jid).stdout
    # root sees it too (the CLI as root)
    from conftest import Runner

    assert PRIVATE in Runner(home).run("show", jid).stdout
    # nobody else, in any view
    views = {"bob show": bob.run("show", jid).stdout, "bob show --json": bob.run("show", jid, "--json").stdout,
             "bob ls": bob.run("ls", "--all", "--json").stdout}
    tokens = {"anonymous": None, "bob": bob.run("token").stdout.strip()}
    for who, tok in tokens.items():
        for path in (f"/jobs/{jid}", "/jobs?all=true", f"/jobs/{jid}/metrics"):
            views[f"{who} GET {path}"] = json.dumps(d.get(path, tok)[1])
    for what, text in views.items():
        assert PRIVATE not in text, what
    assert json.loads(views["bob show --json"])["log_tail"] is None
    status, body = d.get(f"/jobs/{jid}", alice.run("token").stdout.strip())
    assert status == 200 and PRIVATE in body["log_tail"]
    # the store, which every user may read, holds none of it
    assert not any(PRIVATE.encode() in p.read_bytes() for p in home.glob("runner.db*"))
    assert d.proc.poll() is None


def test_a_private_logs_numbers_become_metrics_only_when_asked(team):
    d, alice, bob, home = team
    plain = _fail(alice)
    asked = _fail(alice, "--parser", "generic")
    alice.wait(plain), alice.wait(asked)
    bob_token = bob.run("token").stdout.strip()
    assert d.get(f"/jobs/{plain}/metrics", bob_token)[1]["metrics"] == []
    assert "pin" not in bob.show(plain)["metrics"]
    assert "not made into metrics" in alice.logs(plain)
    # asked for: metrics, as on any job (and everyone sees them, as the job file said)
    wait_for(lambda: "pin" in bob.show(asked)["metrics"], 10, what="the asked-for metric")
    assert bob.show(asked)["metrics"]["pin"] == 4711
