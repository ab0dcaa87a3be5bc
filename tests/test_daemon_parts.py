"""The daemon is a loop over plain parts (#32, docs/daemon.md): `Daemon` has no base classes, each
module of runner/daemon/ stays small, no part holds a reference back into the daemon, and intake is
a table of handlers by request kind that works without a daemon around it."""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAEMON = ROOT / "runner" / "daemon"
MAX_LINES = 200


def test_the_daemon_has_no_base_classes():
    from runner.daemon import Daemon

    assert Daemon.__bases__ == (object,), Daemon.__bases__


def test_each_module_of_the_daemon_is_under_200_lines():
    sizes = {f.name: len(f.read_text().splitlines()) for f in sorted(DAEMON.glob("*.py"))}
    assert sizes and all(n < MAX_LINES for n in sizes.values()), {k: n for k, n in sizes.items() if n >= MAX_LINES}


def test_no_part_is_handed_the_daemon():
    """No part of runner/daemon/ takes the daemon (a `daemon` or `d` parameter) or reads
    `self.daemon.x` / `self.d.x`: each is handed the things it needs."""
    found = []
    for f in sorted(DAEMON.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.arg) and node.arg in ("daemon", "d") and f.name != "serve.py":  # serve: the HTTP face's view
                found.append(f"{f.name}:{node.lineno}: parameter {node.arg}")
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr in ("daemon", "d")
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
                found.append(f"{f.name}:{node.lineno}: self.{node.value.attr}.{node.attr}")
    assert not found, found


def test_intake_hands_each_file_to_the_handler_of_its_kind(tmp_path):
    """Intake without a daemon: a table of two kinds; a file of each reaches its handler with its
    record and owner, one of no kind is set aside with the kinds the table has."""
    from runner.daemon.intake import Intake
    from runner.home import Home

    home = Home(tmp_path / "home").ensure()
    os.makedirs(home.taking, exist_ok=True)
    seen = []
    intake = Intake(home.store(), home, {".ping.json": lambda rec, uid, now, again, born: seen.append(("ping", rec, uid)),
                                         ".pong.json": lambda rec, uid, now, again, born: seen.append(("pong", rec, uid))})
    for name, rec in (("1-a.ping.json", {"n": 1}), ("2-b.pong.json", {"n": 2}), ("3-c.job.json", {"n": 3})):
        (home.spool / name).write_text(json.dumps(rec))
    intake.ingest(time.time())
    assert seen == [("ping", {"n": 1}, os.geteuid()), ("pong", {"n": 2}, os.geteuid())]
    reason = (home.quarantine / "3-c.job.json.reason").read_text()
    assert "not a .ping.json or .pong.json file" in reason, reason
    assert not list(home.taking.iterdir()) and not list(home.spool.glob("*.json"))


def test_alive_and_started_at_agree_with_psutil_and_see_zombies_and_reused_pids():
    # proctl reads /proc/PID/stat once (the daemon asks for each running job on each pass); its start
    # time is psutil's create_time(), which rows written before it hold
    import subprocess

    import psutil

    from conftest import wait_for

    from runner.proctl import alive, started_at

    me = os.getpid()
    assert abs(started_at(me) - psutil.Process(me).create_time()) < 0.02
    assert alive(me) and alive(me, psutil.Process(me).create_time())
    assert not alive(me, psutil.Process(me).create_time() - 10)  # another process with this pid
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert alive(child.pid, started_at(child.pid))
        child.kill()
        wait_for(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 10, what="a zombie")
        assert not alive(child.pid)  # a zombie is not alive
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid) and started_at(child.pid) is None and not alive(None) and not alive(0)
