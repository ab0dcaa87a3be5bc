"""The `runner` command builds only the parser of the verb it runs (#30: building all of them cost
`runner ls` a third of its time), and prints, parses and fails exactly as the full parser did."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import runner.cli as cli

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "cli_output.json"


def _golden():
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", _golden()["cases"], ids=lambda c: " ".join(c["argv"]) or "(no verb)")
def test_the_command_prints_what_it_printed_before(case, tmp_path):
    """Outputs captured from the command before it built one verb's parser (Python 3.11, 100 columns:
    argparse's wording and wrapping differ in other versions)."""
    g = _golden()
    if tuple(g["python"]) != sys.version_info[:2]:
        pytest.skip(f"captured with Python {g['python'][0]}.{g['python'][1]} (argparse words it differently elsewhere)")
    r = subprocess.run([sys.executable, "-m", "runner", *case["argv"]], capture_output=True, text=True, cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "COLUMNS": str(g["columns"]), "RUNNER_HOME": str(tmp_path / "home"),
                            "PYTHONPATH": str(ROOT)})
    assert (r.returncode, r.stdout, r.stderr) == (case["rc"], case["stdout"], case["stderr"])


def _run(argv, full: bool, monkeypatch):
    """main(argv) in this process: (exit status, stdout, stderr), with the parser of argv's verb or
    of every verb. The verb itself is not run: the parsed arguments are printed instead."""
    build = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", (lambda _argv=None: build()) if full else build)
    monkeypatch.setattr(cli, "VERBS", {v: ("json", "dumps", h) for v, (_, _, h) in build.__globals__["VERBS"].items()})
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
        except TypeError as e:  # json.dumps(Namespace): the parse went through; show what it gave
            rc = "parsed"
            print(str(e))
    return rc, out.getvalue(), err.getvalue()


ARGVS = [[], ["-h"], ["--help"], ["help"], ["lss"], ["-x", "ls"], ["--home", "x", "ls"], ["ls", "--bogus"], ["ls", "extra"],
         ["ls", "--stat"], ["ls", "-h", "--bogus"], ["submit", "a", "b"], ["submit", "--gpus", "x"], ["submit", "--", "true"],
         ["envs"], ["envs", "bad"], ["show"], ["synth", "--help"]]
ARGVS += [[v, "--help"] for v in cli.VERBS] + [[v] for v in cli.VERBS]


@pytest.mark.parametrize("argv", ARGVS, ids=lambda a: " ".join(a) or "(no verb)")
def test_one_verbs_parser_answers_as_the_full_one(argv, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert _run(argv, False, monkeypatch) == _run(argv, True, monkeypatch)


def test_a_verb_builds_only_its_own_parser():
    sub = next(a for a in cli.build_parser(["ls"])._actions if a.dest == "verb")
    assert list(sub.choices) == ["ls"]
    for argv in ([], ["--help"], ["lss"], ["-h", "ls"]):
        sub = next(a for a in cli.build_parser(argv)._actions if a.dest == "verb")
        assert list(sub.choices) == list(cli.VERBS)


def test_ls_and_submit_do_not_import_what_they_do_not_use(tmp_path):
    """runner.synth (the synth verb's arguments) is imported only by the synth verb or full help;
    shutil (argparse's way to the terminal's width) not by `runner ls`."""
    code = ("import sys, runpy; mods = sys.argv[1].split(','); sys.argv=['runner', *sys.argv[2:]]\n"
            "try:\n    runpy.run_module('runner', run_name='__main__')\nexcept SystemExit: pass\n"
            "print('LOADED', [m for m in mods if m in sys.modules])")
    for modules, verb in (("runner.synth,shutil", ["ls"]), ("runner.synth", ["submit", "--help"])):
        r = subprocess.run([sys.executable, "-c", code, modules, *verb], capture_output=True, text=True, cwd=ROOT,
                           env={"RUNNER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
        assert "LOADED []" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("columns", [None, "", "abc", "0", "-5", "37", "120"])
def test_the_help_width_is_the_one_argparse_would_find(columns, monkeypatch):
    """argparse reads it with shutil.get_terminal_size; runner, to spare the import, as that does."""
    import shutil

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli._columns() == shutil.get_terminal_size().columns

