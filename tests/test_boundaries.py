"""The two planes stay apart, and the CLI stays fast to import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "torchvision", "timm", "ultralytics", "transformers", "datasets", "numpy", "PIL"}


def _imports(folder: str, whole: bool = False) -> set[tuple[str, str]]:
    """(file, module) of every absolute import under folder: the top-level name, or (whole) the dotted one."""
    top = (lambda m: m) if whole else (lambda m: m.split(".")[0])
    out = set()
    for f in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                out |= {(str(f.relative_to(ROOT)), top(a.name)) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add((str(f.relative_to(ROOT)), top(node.module)))
    return out


@pytest.mark.parametrize("folder", ["runner", "config_translators", "log_parsers"])
def test_control_plane_never_imports_torch_or_adapters(folder):
    bad = {(f, m) for f, m in _imports(folder) if m in HEAVY | {"adapters"}}
    assert not bad


def test_data_plane_never_imports_runner():
    assert not {(f, m) for f, m in _imports("adapters") if m == "runner"}


def test_pure_modules_import_only_stdlib_and_each_other():
    """...and runner/atomic.py, the one atomic writer, itself of the stdlib alone (below)."""
    allowed = set(sys.stdlib_module_names) | {"log_parsers", "config_translators"}
    for folder in ("log_parsers", "config_translators"):
        assert {m for _, m in _imports(folder)} <= allowed | {"runner"}
        assert {m for _, m in _imports(folder, whole=True) if m.split(".")[0] == "runner"} <= {"runner.atomic"}


def test_the_atomic_writer_needs_only_the_stdlib():
    """The pure modules and the shim (python -I -S) load runner/atomic.py: nothing else of runner comes with it."""
    mods = set()
    for node in ast.walk(ast.parse((ROOT / "runner" / "atomic.py").read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add("." if node.level else node.module.split(".")[0])
    assert mods <= set(sys.stdlib_module_names), mods


@pytest.mark.parametrize("verb", [["--help"], ["ls"], ["show", "x"], ["submit", "--help"]])
def test_cli_verbs_import_neither_http_stack_nor_sqlite_utils(verb, tmp_path):
    from runner.store import Store

    Store(tmp_path / "runner.db")  # an existing store: reads need no migration machinery
    code = ("import sys, runpy; sys.argv=['runner', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('runner', run_name='__main__')\nexcept SystemExit: pass\n"
            "bad = [m for m in ('fastapi','uvicorn','starlette','torch','sqlite_utils','watchfiles') if m in sys.modules]\n"
            "print('LOADED', bad)")
    r = subprocess.run([sys.executable, "-c", code, *verb], capture_output=True, text=True, env={"RUNNER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert "LOADED []" in r.stdout, r.stdout + r.stderr
