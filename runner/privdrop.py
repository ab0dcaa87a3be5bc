"""Privilege separation's mechanism: run one named verb as a person in a helper process that has
dropped to her (fork and exec, setuid for good, a JSON payload in, one JSON answer out).

This module knows no verb. The helper it starts is `python -I -m runner.privsep VERB ...`, whose
fixed table (runner/privsep.py, decided in code) says which function a name runs; the helper looks
the name up there and nowhere else, so what crosses the boundary is only a name from that table.
A caller gives its verb's function as `here` too: it runs in the daemon's own process when there
is no boundary to cross (a daemon that is not root), never in a helper. The callers (runner.writes,
runner.prepare, runner.cli.models_cmd) import this module; runner.privsep imports them for its
table; nothing imports back (tests/test_layout.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading

from .exceptions import RunnerError

HELPER = "runner.privsep"
"""The module the helper runs (`python -I -m`): the one that holds the table of verbs and calls serve()."""

MAX_ANSWER = 16 << 20
"""The most bytes of answer a helper may send back."""

HELPER_MEMORY = 8 << 30
"""Address space of a helper (RLIMIT_AS): a dataset check or a translation, never a training run."""


class HelperError(RunnerError):
    """A helper that died, timed out or answered with something that is not an answer."""


_ERRORS = ("SpecError", "RunnerError", "EnvBuildError", "RepoError", "RegistryError", "JobNotFound", "PermissionDenied")


def _raise(answer: dict):
    from . import exceptions

    kind = answer.get("error_kind")
    cls = getattr(exceptions, kind, RunnerError) if kind in _ERRORS else RunnerError
    if cls is exceptions.SpecError:
        problems = answer.get("problems")
        raise cls([str(p) for p in problems] if isinstance(problems, list) and problems else [str(answer.get("error"))])
    raise cls(str(answer.get("error"))[:4000])


def run_as(who, verb: str, payload: dict, timeout: float = 600.0, env: dict | None = None, wait: bool | None = None, *, here):
    """The answer of `verb` on `payload`, computed as `who` (a Person); raises what the verb raised.
    `wait`: whether to wait for one of the user's helper slots (default: yes, but for a submit) or
    raise Busy at once (what an HTTP request wants: its thread is the server's, not the user's).
    `here`: the verb's function, run in this process when there is no boundary to cross; across it
    the helper runs its own table's function of that name (runner.privsep), never one given here."""
    from .identity import drops_privileges

    if not drops_privileges(who.uid):
        return here(payload)
    argv = [sys.executable, "-I", "-m", HELPER, verb, str(who.uid), str(who.gid), ",".join(map(str, who.groups))]
    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": who.home, "USER": who.name, "LOGNAME": who.name,
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    with _slot(who, wait=(verb != "submit") if wait is None else wait):
        r = _communicate(argv, json.dumps(payload).encode(), timeout, environ, f"{verb}: the helper running as {who.name}")
    out = r.stdout[:MAX_ANSWER + 1]
    try:
        answer = json.loads(out) if len(out) <= MAX_ANSWER else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or ("ok" not in answer and "error" not in answer):
        err = r.stderr.decode("utf-8", "replace").strip().splitlines()
        raise HelperError(f"{verb}: the helper running as {who.name} failed (exit {r.returncode})"
                          + (f": {err[-1][:500]}" if err else ""))
    if "error" in answer:
        _raise(answer)
    return answer.get("ok")


HELPERS_PER_USER = 2
"""Helpers of one user at a time: her requests never hold more of the daemon's threads than this."""

STOPPED_SECONDS = 2.0
"""A helper stopped this long (SIGSTOP from its user, who may signal her own processes) is ended."""

_busy: dict[int, int] = {}
_busy_lock = threading.Condition()


class Busy(RunnerError):
    """A user who already has HELPERS_PER_USER requests being worked on."""


@contextlib.contextmanager
def _slot(who, wait: bool):
    """One of the user's helper slots: waited for (prepare), or refused at once when `wait` is
    false (an HTTP submit), so that one user's requests never fill the daemon's threads."""
    with _busy_lock:
        while _busy.get(who.uid, 0) >= HELPERS_PER_USER:
            if not wait:
                raise Busy(f"{who.name} has {HELPERS_PER_USER} requests being checked already; try again when they are answered")
            _busy_lock.wait(1.0)
        _busy[who.uid] = _busy.get(who.uid, 0) + 1
    try:
        yield
    finally:
        with _busy_lock:
            _busy[who.uid] -= 1
            _busy_lock.notify_all()


def _stopped(pid: int) -> bool:
    """Whether a process is stopped by a signal or a tracer (its state in /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


def _communicate(argv, data: bytes, timeout: float, environ: dict, what: str) -> subprocess.CompletedProcess:
    """Run the helper to its end: killed at `timeout`, or sooner when it is held stopped."""
    import time

    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ,
                            cwd="/", start_new_session=True, close_fds=True)
    deadline, stopped_since = time.monotonic() + timeout, None
    while True:
        try:
            out, err = proc.communicate(data, timeout=0.5)
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            data = None  # given once; communicate() keeps sending what is left
        now = time.monotonic()
        if _stopped(proc.pid):
            stopped_since = now if stopped_since is None else stopped_since
        else:
            stopped_since = None
        why = (f"did not answer within {timeout:.0f}s" if now >= deadline else
               f"was held stopped for {STOPPED_SECONDS:.0f}s" if stopped_since is not None and now - stopped_since >= STOPPED_SECONDS
               else None)
        if why:
            proc.kill()
            proc.communicate()
            raise HelperError(f"{what} {why}")


def _drop(uid: int, gid: int, groups: list[int]):
    """Become uid for good: groups, gid, uid, then check that root cannot be had back."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or uid != 0 and _can_regain():
        raise SystemExit("privsep: could not drop privileges")
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: its user cannot ptrace it or read its memory (it holds the daemon's payload)
    except (OSError, AttributeError):
        pass
    os.umask(0o077)


def _can_regain() -> bool:
    try:
        os.setuid(0)
    except PermissionError:
        return False
    return True


def _preload(modules: list[str]):
    """Load a verb's code (and every submodule of its packages) while the daemon's files can still be read."""
    import importlib
    import pkgutil

    for name in [*modules, "runner.config"]:  # every verb reads the config (home's), checked by runner.config
        mod = importlib.import_module(name)
        for info in pkgutil.walk_packages(getattr(mod, "__path__", []), name + "."):
            try:
                importlib.import_module(info.name)
            except ImportError:
                pass  # an optional part (a framework's own adapter imports need the framework)
    # what the standard library loads lazily on some paths
    import ctypes  # noqa: F401
    import difflib  # noqa: F401  (runner.config's "did you mean")
    import encodings.idna  # noqa: F401
    import glob  # noqa: F401
    import hashlib  # noqa: F401
    import shutil  # noqa: F401
    import sqlite3  # noqa: F401
    import tempfile  # noqa: F401
    import tomllib  # noqa: F401


def serve(argv: list[str], verbs: dict) -> int:
    """The helper's life (as root, then as the person): argv is VERB UID GID GROUPS, `verbs` the
    helper module's fixed table, verb -> (modules to load before dropping, function(payload))."""
    verb, uid, gid, groups = argv[0], int(argv[1]), int(argv[2]), [int(g) for g in argv[3].split(",") if g]
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (HELPER_MEMORY, HELPER_MEMORY))
    modules, fn = verbs[verb]
    _preload(modules)
    _drop(uid, gid, groups)
    out = sys.stdout.buffer
    try:
        payload = json.loads(sys.stdin.buffer.read(MAX_ANSWER))
        answer = {"ok": fn(payload)}
    except RunnerError as e:
        answer = {"error": str(e), "error_kind": type(e).__name__, "problems": getattr(e, "problems", None)}
    except Exception as e:  # noqa: BLE001 - any failure is an answer, never a traceback the daemon must parse
        answer = {"error": f"{type(e).__name__}: {e}", "error_kind": "RunnerError"}
    out.write(json.dumps(answer, default=str).encode())
    out.flush()
    return 0

