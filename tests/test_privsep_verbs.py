"""Privilege separation's two halves agree (#32): runner/privdrop.py (the mechanism) runs a caller's own
function only where there is no boundary to cross, and across it the helper runs runner/privsep.py's fixed
table's function of that verb's name. So each caller must give, as `here`, the very function that the table
runs for the verb it names: a caller that named "translate" but gave another function would run one thing
for a non-root daemon and another in the helper. And the helper runs nothing but its table's verbs, whatever
name its argv carries. Fast: no real users, no daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner import privdrop, privsep
from runner.identity import Person

ROOT = Path(__file__).resolve().parent.parent
SOMEONE = Person(4242, 4242, (4242,), "someone", "/nonexistent")


class _Asked(Exception):
    pass


@pytest.fixture
def asked(monkeypatch):
    """What each caller hands privdrop.run_as: {verb: here}; the call goes no further."""
    seen = {}

    def fake(who, verb, payload, timeout=600.0, env=None, wait=None, *, here):
        seen[verb] = here
        raise _Asked(verb)

    monkeypatch.setattr(privdrop, "run_as", fake)
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # a root daemon: SOMEONE is across the boundary
    return seen


def _ask_every_caller(tmp_path, monkeypatch):
    from runner import prepare, writes
    from runner.cli import models_cmd

    with pytest.raises(_Asked):
        writes.submit_as(SimpleNamespace(root=tmp_path), None, {}, tmp_path, SOMEONE)
    with pytest.raises(_Asked):
        prepare.translate_as(SOMEONE, "framework", {}, tmp_path / "job")
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"")
    os.chown(ckpt, SOMEONE.uid, SOMEONE.gid)
    monkeypatch.setattr("runner.identity.person", lambda uid: SOMEONE)
    with pytest.raises(_Asked):
        models_cmd.infer(SimpleNamespace(home=str(tmp_path), images=[], source=str(ckpt), model=None, table="job"))


def test_each_caller_gives_the_function_the_helper_runs_for_its_verb(asked, tmp_path, monkeypatch):
    _ask_every_caller(tmp_path, monkeypatch)
    table = privsep._verbs()
    assert set(asked) == set(table) == {"submit", "translate", "infer"}
    for verb, here in asked.items():
        # the table's function of this verb runs the module attribute that the caller gave: swap it for a recorder
        ran = []
        monkeypatch.setattr(sys.modules[here.__module__], here.__name__, lambda payload, verb=verb: ran.append(verb) or "answer")
        assert table[verb][1]({"x": 1}) == "answer", f"privsep's {verb!r} does not run {here.__module__}.{here.__name__}"
        assert ran == [verb]


def test_the_face_by_name_runs_the_tables_function_here(monkeypatch):
    """privsep.run_as (the dashboard's inference names its verb) hands privdrop the table's function."""
    seen = []
    monkeypatch.setattr(privdrop, "run_as", lambda who, verb, payload, timeout, env, wait, *, here: seen.append((verb, here, wait)))
    privsep.run_as(SOMEONE, "infer", {}, 300.0, None, False)
    assert seen == [("infer", privsep._verbs()["infer"][1], False)]


@pytest.mark.skipif(os.geteuid() != 0, reason="the helper starts as root")
@pytest.mark.parametrize("verb", ["nope", "os.system", "_drop", "main"])
def test_the_helper_runs_no_name_outside_its_table(verb):
    r = subprocess.run([sys.executable, "-I", "-m", "runner.privsep", verb, str(SOMEONE.uid), str(SOMEONE.gid), str(SOMEONE.gid)],
                       input=b'{"home": "/nonexistent"}', capture_output=True, cwd=ROOT, timeout=60)
    assert r.returncode != 0 and r.stdout == b""
    assert f"KeyError: '{verb}'" in r.stderr.decode()
