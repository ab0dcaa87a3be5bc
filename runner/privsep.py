"""Privilege separation: whatever the root daemon does with a user's input runs in a helper that
has dropped to that user, as OpenSSH separates its privileged monitor from the code that parses
what a client sends.

`run_as(who, verb, payload)` starts `python -I -m runner.privsep VERB` as root, which loads the
code the verb needs (the daemon's interpreter and libraries may live where users cannot read
them), then drops to the person's uid, gid and groups for good (no capabilities, no way back,
no_new_privs) before it reads the payload or touches any file. Only then does the verb run: with
her permissions, so a path she cannot read is one the helper cannot read either. Its answer is one
JSON object on stdout, which the daemon treats as her input (bounded, its types checked by the
caller). A verb's error comes back as the same exception class with the same one-line message.

A daemon that is not root runs only its own user's jobs: there is no boundary to cross, and the
verb runs in the daemon's process.
"""

from __future__ import annotations

import base64  # (the infer verb's upload: loaded before the helper drops, as every module it uses)
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .exceptions import RunnerError

MAX_ANSWER = 16 << 20
"""The most bytes of answer a helper may send back."""

HELPER_MEMORY = 8 << 30
"""Address space of a helper (RLIMIT_AS): a dataset check or a translation, never a training run."""


class HelperError(RunnerError):
    """A helper that died, timed out or answered with something that is not an answer."""


def _verbs() -> dict:
    """verb -> (modules to load before dropping, function(payload) -> JSON-able answer)."""
    return {
        "submit": (["runner.writes", "runner.resolve", "runner.spec", "runner.registry", "runner.queries",
                    "runner.store", "runner.spool", "runner.sitereg", "runner.envs", "config_translators"], _submit),
        "translate": (["runner.prepare", "runner.atomic", "config_translators", "log_parsers"], _translate),
        "infer": (["runner.cli.models_cmd", "runner.cli.common", "runner.repos", "runner.repos.infer", "runner.envs", "runner.prepare",
                   "runner.registry", "runner.queries", "runner.store", "runner.home", "config_translators"], _infer),
    }


def _infer(payload: dict):
    """`runner infer` on a user's job or checkpoint, run as its owner: what her checkpoint (a pickle,
    for some frameworks) or her checkout makes the framework run, runs as her, never as root."""
    from .cli.models_cmd import run_inference
    from .home import Home

    upload = payload.get("upload")
    if not upload:
        return run_inference(Home(payload["home"]), payload["source"], payload["images"], payload.get("model"), payload.get("table") or "job")
    # an image sent to the dashboard: written by her, in a folder of hers, for the length of the inference
    folder = tempfile.mkdtemp(prefix="runner-infer-")
    try:
        image = os.path.join(folder, "upload" + (upload["suffix"] if upload.get("suffix") in UPLOAD_SUFFIXES else ".png"))
        with open(image, "xb") as f:
            f.write(base64.b64decode(upload["data"], validate=True))
        return run_inference(Home(payload["home"]), payload["source"], [image], payload.get("model"), payload.get("table") or "job")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


UPLOAD_SUFFIXES = (".png", ".jpg", ".bmp", ".tif")
"""The file names an uploaded image may get (by its kind, told from its first bytes by the dashboard)."""


def _submit(payload: dict):
    """A job posted over HTTP, validated and spooled as its user, as if she had run `runner submit`."""
    from . import writes
    from .home import Home

    home = Home(payload["home"])
    rec, warnings = writes.submit(home, home.store(migrate=False), payload["data"], Path(payload["base"]))
    return {"id": rec["id"], "warnings": warnings}


def _translate(payload: dict):
    """A job's translation (runner.prepare.translate_here): reads and converts her dataset, writes into her job folder."""
    from .prepare import translate_here

    return translate_here(payload)


_ERRORS = ("SpecError", "RunnerError", "EnvBuildError", "RepoError", "RegistryError", "JobNotFound", "PermissionDenied")


def _raise(answer: dict):
    from . import exceptions

    kind = answer.get("error_kind")
    cls = getattr(exceptions, kind, RunnerError) if kind in _ERRORS else RunnerError
    if cls is exceptions.SpecError:
        problems = answer.get("problems")
        raise cls([str(p) for p in problems] if isinstance(problems, list) and problems else [str(answer.get("error"))])
    raise cls(str(answer.get("error"))[:4000])


def run_as(who, verb: str, payload: dict, timeout: float = 600.0, env: dict | None = None, wait: bool | None = None):
    """The answer of `verb` on `payload`, computed as `who` (a Person); raises what the verb raised.
    `wait`: whether to wait for one of the user's helper slots (default: yes, but for a submit) or
    raise Busy at once (what an HTTP request wants: its thread is the server's, not the user's)."""
    from .identity import drops_privileges

    if not drops_privileges(who.uid):
        return _verbs()[verb][1](payload)
    argv = [sys.executable, "-I", "-m", "runner.privsep", verb, str(who.uid), str(who.gid), ",".join(map(str, who.groups))]
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


def main(argv: list[str]) -> int:
    verb, uid, gid, groups = argv[0], int(argv[1]), int(argv[2]), [int(g) for g in argv[3].split(",") if g]
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (HELPER_MEMORY, HELPER_MEMORY))
    modules, fn = _verbs()[verb]
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
