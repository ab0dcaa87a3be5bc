"""The layout does not grow tangled (#32): no import cycle among the modules of runner/, config_translators/ and
log_parsers/, no module of them over MAX_LINES (of runner/store/ over STORE_MAX_LINES), and no SQL outside runner/store/.

An import counts wherever it is written: at the top of a module or inside a function (a deferred import, made so
that a command loads less, is still a dependency: the two modules cannot be read or moved apart). A module's
import of its own parent packages is not counted: Python runs a package's __init__ before any module in it, so
every submodule depends on it anyway (runner/web/pages.py takes HERE and LICENSE_WARN from runner/web/__init__.py,
which imports pages inside a function).

KNOWN_CYCLES are the cycles main still has through deferred imports, to be removed: a cycle may shrink or go, a
new one or a bigger one fails. No cycle at all is allowed among top-of-module imports, and none is left through
deferred ones either: runner/prepare.py hands repo jobs to runner/repos/, which builds them with what both share in
runner/launchspec.py (not with prepare's own); runner/privdrop.py (run_as, the helper, the drop) knows no verb and the
callers (writes, prepare, cli/models_cmd) import it; runner/privsep.py, the helper's entry point and its fixed table
of verbs, imports them and none of them imports it back.

MAX_LINES: the issue's goal, 500, for every module of runner/, config_translators/ and log_parsers/; runner/envs.py,
runner/check.py and config_translators/dataset_formats.py were the last over it (550-660 lines). The store, once
runner/store.py (1,000 lines), is the package runner/store/ whose modules keep to STORE_MAX_LINES (500 too).

SQL: a string literal (an f-string with its {...} parts left out) of a module of PACKAGES outside runner/store/ that reads
as a statement (SELECT ... FROM, INSERT INTO, UPDATE x SET, DELETE FROM, CREATE TABLE/INDEX, PRAGMA) fails: the
store is the one place a query is written and read. So does a literal given to an execute() that is only a
transaction's control (BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE], COMMIT, ROLLBACK, SAVEPOINT x, RELEASE x; elsewhere
"COMMIT" is a table's header): runner/daemon/faults.py's bare ROLLBACK of a failed transaction is now the store's
rollback_open().
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runner", "config_translators", "log_parsers")
MAX_LINES = 500
STORE_MAX_LINES = 500
STORE = "runner/store"
SQL = re.compile(r"\bSELECT\b.*?\bFROM\b|\bINSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
                 r"|\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b|\bPRAGMA\s+\w+", re.S)
TXN = re.compile(r"\s*(?:(?:BEGIN(?:\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE))?|COMMIT|ROLLBACK)(?:\s+TRANSACTION)?"
                 r"(?:\s+TO\s+(?:SAVEPOINT\s+)?\w+)?|(?:SAVEPOINT|RELEASE(?:\s+SAVEPOINT)?)\s+\w+)\s*;?\s*")
"""A whole literal that is a transaction's control (one bare word such as "ROLLBACK", not prose that uses it)."""
EXECUTE = {"execute", "executemany", "executescript"}

KNOWN_CYCLES: list[set] = []


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module under PACKAGES."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _top_level(tree: ast.Module):
    """The import statements of a module outside its functions (in if/try blocks and class bodies too)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            todo.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = ROOT, deferred: bool = True) -> dict[str, set[str]]:
    """{module: the modules of PACKAGES it imports}; deferred=False: top-of-module imports only."""
    mods = _modules(root)
    graph = {}
    for name, (f, is_pkg) in mods.items():
        tree = ast.parse(f.read_text())
        nodes = ast.walk(tree) if deferred else _top_level(tree)
        deps = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[:len(here) - (node.level - 1)]
                    base = ".".join(here + ([node.module] if node.module else []))
                # `from pkg import x`: the module pkg.x when there is one, else a name of pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # `import runner.a.b` where only runner.a is ours: runner.a
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's, iterative)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_no_import_cycle_at_the_top_of_modules():
    assert cycles(import_graph(deferred=False)) == []


def test_no_new_or_bigger_import_cycle():
    bad = [sorted(c) for c in cycles(import_graph()) if not any(c <= known for known in KNOWN_CYCLES)]
    assert not bad, f"import cycles (deferred imports count): {bad}"


def test_the_cycle_finder_finds_them(tmp_path):
    """The checks above would pass on a finder that finds nothing: a tiny tree with one of each kind."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "runner" / "a.py").write_text("from . import b\n")
    (tmp_path / "runner" / "b.py").write_text("def f():\n    from .c import x\n")
    (tmp_path / "runner" / "c.py").write_text("import runner.a\nx = 1\n")
    (tmp_path / "runner" / "d.py").write_text("from runner import e\n")
    (tmp_path / "runner" / "e.py").write_text("from .d import y\n")
    (tmp_path / "config_translators" / "p.py").write_text("from . import q\n")
    (tmp_path / "config_translators" / "q.py").write_text("from .p import z\nfrom runner import c\n")
    (tmp_path / "runner" / "sub").mkdir()
    (tmp_path / "runner" / "sub" / "__init__.py").write_text("def f():\n    from . import leaf\n")
    (tmp_path / "runner" / "sub" / "leaf.py").write_text("from . import f\n")  # a child of its package: not counted
    found = sorted(sorted(c) for c in cycles(import_graph(tmp_path)))
    assert found == [["config_translators.p", "config_translators.q"], ["runner.a", "runner.b", "runner.c"],
                     ["runner.d", "runner.e"]]
    top = sorted(sorted(c) for c in cycles(import_graph(tmp_path, deferred=False)))
    assert top == [["config_translators.p", "config_translators.q"], ["runner.d", "runner.e"]]


def test_no_module_over_the_limit():
    sizes = {str(f.relative_to(ROOT)): len(f.read_text().splitlines()) for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")}
    assert sizes and not {f: n for f, n in sizes.items() if n > MAX_LINES}


def test_no_module_of_the_store_over_its_limit():
    sizes = {str(f.relative_to(ROOT)): len(f.read_text().splitlines()) for f in (ROOT / STORE).rglob("*.py")}
    assert len(sizes) > 1 and not {f: n for f, n in sizes.items() if n > STORE_MAX_LINES}


def sql_outside_the_store(root: Path = ROOT) -> dict[str, list[str]]:
    """{module file: the string literals in it that read as SQL} for every module of PACKAGES outside runner/store/."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            if rel.startswith(STORE + "/"):
                continue
            texts, txn = [], []
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.JoinedStr):  # f"SELECT {cols} FROM jobs": its parts as one text
                    texts.append(" ".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)))
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    texts.append(node.value)
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EXECUTE
                        and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                        and TXN.fullmatch(node.args[0].value)):  # conn.execute("ROLLBACK")
                    txn.append(node.args[0].value)
            hits = [s for s in texts if SQL.search(s)] + txn
            if hits:
                out[rel] = hits
    return out


def test_no_sql_outside_the_store():
    assert sql_outside_the_store() == {}


def test_the_sql_finder_finds_it(tmp_path):
    """The check above would pass on a finder that finds nothing: SQL in a plain string, an f-string, a docstring
    and a PRAGMA is found; the store's own, a word such as DELETE_CHUNK and prose are not."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "runner" / "store").mkdir()
    (tmp_path / "runner" / "store" / "__init__.py").write_text('Q = "SELECT id FROM jobs"\n')
    (tmp_path / "runner" / "a.py").write_text('def f(c, w):\n    return c.execute(f"SELECT {w} FROM jobs WHERE id=?")\n')
    (tmp_path / "runner" / "b.py").write_text('"""Reads with\nDELETE FROM metrics WHERE id<?."""\nX = "PRAGMA user_version"\n')
    (tmp_path / "runner" / "c.py").write_text('"""SELECT DISTINCT read every point; DELETE_CHUNK ranges; update the set."""\n')
    (tmp_path / "log_parsers" / "d.py").write_text("Y = ('INSERT OR REPLACE INTO t '\n     'VALUES (?)')\n")
    (tmp_path / "runner" / "e.py").write_text('def f(c):\n    c.execute("ROLLBACK")\n    c.execute("BEGIN IMMEDIATE")\n'
                                               '    c.execute("COMMIT")\n    return ["NAME", "COMMIT"], "ROLLBACK of a failed write, then BEGIN again"\n')
    found = sql_outside_the_store(tmp_path)
    assert sorted(found) == ["log_parsers/d.py", "runner/a.py", "runner/b.py", "runner/e.py"] and len(found["runner/b.py"]) == 2
    assert sorted(found["runner/e.py"]) == ["BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"]  # not the prose, not the header
