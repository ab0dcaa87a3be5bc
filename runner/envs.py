"""Pinned virtualenvs built with uv: one per lock, built once, shared, never half-built.

An env is named by a hash of (Python version, locked requirements, platform): the content of the
lock, never a file name. It is built in a temporary folder under a file lock, import-checked, and
renamed into place only when complete, so two jobs that need it build it once and a killed build
leaves nothing that looks finished. Index settings reach uv only through its own UV_* variables
or the `[envs]` table of the site config.

Who builds what: the envs of envs/ (committed, hash-locked locks) and of the registry's repo tables
(admin data) are built by the daemon itself, so that they share its uv cache (torch is 5.5 GB) and
their bytecode; an env built from a user's inline requirements is built by the build user in a
sandbox (runner.envjail), never as root, keyed with its owner's uid. A user names a packaged env
only by its name in envs/, and import checks come only from packaged envs and repo tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from .exceptions import EnvBuildError, RunnerError
from .requirement import SPECIFIER_EXPECTED, SPECIFIER_OR_URL_EXPECTED, requirement_problem  # noqa: F401 (named here too)
from .specrules import ENVS_SRC, named_env_names  # the packaged envs, listed there for runner submit (without this module)
from .pythons import base_python, find_python  # noqa: F401 (named here too)
from .uvenv import (  # noqa: F401 (uv's settings and messages, named here too)
    _CONFIG_TO_UV, _build_args, build_settings, mask_urls, masked, relevant_lines, uv_binary, uv_cause, uv_environ, uv_settings,
)

if TYPE_CHECKING:  # the jail is loaded only when a user's build needs it
    from .envjail import Jail

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMPLETE = ".runner-env.json"

def platform_tag() -> str:
    """The platform part of an env's key."""
    return f"{sys.platform}-{platform.machine()}"


@dataclass
class EnvRequest:
    """What a job needs: a display name, the exact lock text, and the Python to build with."""

    name: str
    lock: str
    python: str = field(default_factory=lambda: sys.executable)
    python_version: str = field(default_factory=lambda: platform.python_version())
    check_imports: list[str] = field(default_factory=list)
    build: dict = field(default_factory=dict)  # build_settings(): how sdists are built
    owner: Optional[int] = None  # uid whose inline requirements these are: built by the build user, hers alone
    inputs: Optional[str] = None  # inline_inputs(): what the owner asked for, known before anything is locked

    @property
    def key(self) -> str:
        """sha256 of (Python version, lock content, platform, build settings and owner if any), 16 hex digits."""
        h = hashlib.sha256()
        h.update(f"python={self.python_version}\nplatform={platform_tag()}\n".encode())
        h.update(normalise_lock(self.lock).encode())
        if self.build:
            h.update(json.dumps(self.build, sort_keys=True).encode())
        if self.owner is not None:
            h.update(f"owner={self.owner}\n".encode())
        return h.hexdigest()[:16]


def site_packages(venv: Path) -> list[Path]:
    """The site-packages folders of a venv."""
    return sorted(venv.glob("lib/python*/site-packages"))


def borrow_bytecode(donor: Path, venv: Path) -> int:
    """Hard-link into `venv` the compiled bytecode of `donor` for every source file the two share
    (the same file: uv links both from its cache, so the bytecode's recorded mtime and size hold
    for both). What is left is compiled afterwards; envs are never written after they are built.
    Returns the number of files linked."""
    import importlib.util

    tag = importlib.util.cache_from_source("x.py").split(os.sep)[-1].split(".")[1]  # e.g. cpython-311
    linked = 0
    for sp in site_packages(venv):
        dsp = donor / sp.relative_to(venv)
        if not dsp.is_dir():
            continue
        for root, dirs, files in os.walk(sp):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            droot = dsp / os.path.relpath(root, sp)
            for name in files:
                if not name.endswith(".py"):
                    continue
                try:
                    if os.stat(os.path.join(root, name)).st_ino != os.stat(droot / name).st_ino:
                        continue
                except OSError:
                    continue
                pyc = f"{name[:-3]}.{tag}.pyc"
                src = droot / "__pycache__" / pyc
                if not src.is_file():
                    continue
                cache = os.path.join(root, "__pycache__")
                os.makedirs(cache, exist_ok=True)
                try:
                    os.link(src, os.path.join(cache, pyc))
                    linked += 1
                except OSError:
                    pass  # another filesystem, or already there: compiled below
    return linked


def normalise_lock(text: str) -> str:
    """The lock without comments and blank lines: what changes the env and nothing else."""
    out = []
    for line in text.splitlines():
        s = line.split("#", 1)[0].rstrip() if not line.lstrip().startswith("--hash") else line.strip()
        if s.strip():
            out.append(s.strip())
    return "\n".join(out) + "\n"


def inline_inputs(requirements: list[str], python: Optional[str], owner: Optional[int]) -> str:
    """What an inline env was asked for (owner, Python, requirements), hashed: it names the env's
    request before its lock exists, so that `runner envs gc` keeps an env a queued job will use."""
    return hashlib.sha256(json.dumps([owner, python or "", list(requirements)]).encode()).hexdigest()[:16]


_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def checked_imports(modules, where: str) -> list[str]:
    """Module names for an import check, each a dotted name (they are pasted into `python -c`)."""
    bad = [m for m in modules if not isinstance(m, str) or not _MODULE.fullmatch(m)]
    if bad:
        raise EnvBuildError(f"{where}: given {bad[0]!r}; expected module names such as \"torch, timm\"")
    return list(modules)


def _import_checks(requirements_in: str, where: str) -> list[str]:
    m = re.search(r"^#\s*import-check:\s*(.+)$", requirements_in, re.M)
    return checked_imports([s.strip() for s in m.group(1).split(",") if s.strip()] if m else [], where)


def named_request(name: str, python: Optional[str] = None, config: dict | None = None) -> EnvRequest:
    """The request for an env defined in envs/NAME (its committed lock). The name must be one of
    envs/'s own: it is never taken as a path."""
    known = named_env_names()
    if name not in known:
        raise RunnerError(f"env: given {str(name)[:60]!r}; expected 'system' or one of envs/: {', '.join(known)}")
    folder = ENVS_SRC / name
    lock = folder / "requirements.lock"
    if not lock.exists():
        raise RunnerError(f"env {name}: no lock yet (run `runner envs lock {name}`)")
    py, ver = base_python(python, config)
    return EnvRequest(name=name, lock=lock.read_text(), python=py, python_version=ver,
                      check_imports=_import_checks((folder / "requirements.in").read_text(), f"envs/{name}/requirements.in"))


def compile_lock(requirements: str, python_version: str, config: dict | None = None, python: str | None = None,
                 build: dict | None = None, jail: Jail | None = None) -> str:
    """Lock a requirements text with `uv pip compile` (exact versions, hashes). With `python`, a
    package that must be built to know its dependencies is built by that interpreter. With a
    jail (a user's requirements), uv runs as the build user in it. Not --quiet: uv's warnings (a CA
    bundle it cannot use) belong with its error."""
    minor = ".".join(python_version.split(".")[:2])
    if jail is not None:
        with jail.workdir(files={"requirements.in": requirements}) as d:
            src = f"{jail.at(d)}/requirements.in"
            r = jail.capture([uv_binary(), "pip", "compile", "--generate-hashes", "--no-header", "--python", python,
                              "--python-version", minor, src], d, uv_environ(config))
    else:
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "requirements.in"
            src.write_text(requirements)
            extra, build_env = _build_args(build, d)
            target = ["--python", python] if python and python != sys.executable else []
            r = subprocess.run(
                [uv_binary(), "pip", "compile", "--generate-hashes", "--no-header", *target,
                 "--python-version", minor, *extra, str(src)],
                capture_output=True, text=True, env={**uv_environ(config), **build_env}, cwd="/",
            )
    if r.returncode != 0:
        raise EnvBuildError(f"cannot resolve the requirements: {uv_cause(r.stderr)}\n" + relevant_lines(r.stderr))
    return r.stdout.replace(str(src), "requirements.in")  # a recorded lock names no temporary folder


def inline_request(requirements: list[str], python: Optional[str] = None, config: dict | None = None, name: str = "inline",
                   owner: Optional[int] = None, state_root: Path | None = None) -> EnvRequest:
    """The request for `owner`'s inline requirements list (default: ours), locked now and keyed by
    the lock and the owner. Each is checked again to be a package specifier (a record may have
    reached the queue by hand); a root daemon locks them as the build user (runner.envjail), with
    `state_root` hidden."""
    from .envjail import jail_for

    allow = bool((config or {}).get("allow_requirement_urls"))
    problems = [f"env.requirements.{i}: given {str(r)[:60]!r}; expected {p}"
                for i, r in enumerate(requirements) if (p := requirement_problem(r, allow))]
    if problems:
        raise EnvBuildError(problems[0])
    owner = os.getuid() if owner is None else int(owner)
    py, ver = base_python(python, config)
    jail = jail_for(config, owner, [state_root] if state_root else [])
    lock = compile_lock("\n".join(requirements) + "\n", ver, config, python=py, jail=jail)
    return EnvRequest(name=name, lock=lock, python=py, python_version=ver, owner=owner,
                      inputs=inline_inputs(requirements, python, owner))


def lock_named(name: str, python: Optional[str] = None, config: dict | None = None) -> Path:
    """`runner envs lock NAME`: refresh envs/NAME/requirements.lock on purpose."""
    folder = ENVS_SRC / name
    src = folder / "requirements.in"
    if not src.exists():
        raise RunnerError(f"env: {name!r} is not defined (known: {', '.join(named_env_names())})")
    _, ver = find_python(python)
    text = compile_lock(src.read_text(), ver, config)
    header = (f"# Locked by `runner envs lock {name}` for Python {'.'.join(ver.split('.')[:2])}; "
              "edit requirements.in, then lock again. Never edit by hand.\n")
    out = folder / "requirements.lock"
    from .atomic import write_bytes

    write_bytes(out, (header + text).encode())
    return out


def disk_usage(path: Path, seen: set | None = None) -> int:
    """Bytes under path, counting each hard-linked file once."""
    seen = set() if seen is None else seen
    total = 0
    for root, dirs, files in os.walk(path):
        for n in files:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


class EnvManager:
    """Builds and finds envs under $RUNNER_HOME/envs/<key>."""

    def __init__(self, root: Path, store=None, config: dict | None = None):
        self.root = Path(root)
        self.store = store
        self.config = config or {}
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where the env with that key lives (complete or not)."""
        return self.root / key

    def ready(self, key: str) -> bool:
        """Whether a complete env with that key exists: a lookup, no uv call."""
        return (self.root / key / COMPLETE).exists()

    def python(self, key: str) -> Path:
        """The env's interpreter."""
        return self.root / key / "bin" / "python"

    def ensure(self, req: EnvRequest, job_id: str | None = None, log: Callable[[str], None] | None = None) -> Path:
        """The env for `req`, built if missing. Returns its folder."""
        key = req.key
        if self.ready(key):
            if self.store:
                self.store.touch_env(key)
            return self.path(key)
        from filelock import FileLock

        with FileLock(str(self.root / f".{key}.lock")):
            if self.ready(key):  # built by someone else while we waited
                if self.store:
                    self.store.touch_env(key)
                return self.path(key)
            return self._build(req, key, job_id, log)

    def _run(self, argv, log, env):
        # cwd "/": `python -m compileall` (and any Python it starts) imports from its folder first, and
        # root's `runner envs build` may be typed in /tmp or a teammate's folder
        from .envjail import drain

        return drain(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd="/"), log)

    def _build(self, req: EnvRequest, key: str, job_id, log) -> Path:
        started = time.time()
        final = self.path(key)
        if final.exists():  # a leftover without the completion marker: never trust it
            shutil.rmtree(final, ignore_errors=True)
        for stale in self.root.glob(f".build-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=self.root))
        error = None
        try:
            if req.owner is None:
                venv = self._build_here(req, tmp, log)
            else:
                venv = self._build_jailed(req, tmp, log)
            meta = {"key": key, "name": req.name, "python": req.python_version, "platform": platform_tag(),
                    "built_at": time.time(), "build_seconds": time.time() - started}
            if req.owner is not None:
                meta.update(owner=req.owner, inputs=req.inputs)
            from .envjail import write_new

            write_new(venv / "requirements.lock", req.lock)  # the lock as asked for, never a file the build left
            write_new(venv / COMPLETE, json.dumps(meta))
            os.rename(venv, final)
            shutil.rmtree(tmp, ignore_errors=True)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            error = e
            raise
        finally:
            if self.store:
                self.store.add_env_build({
                    "hash": key, "name": req.name, "job_id": job_id, "started_at": started,
                    "finished_at": time.time(), "seconds": time.time() - started,
                    "ok": 0 if error else 1, "error": str(error)[:4000] if error else None,
                })
        if self.store:
            self.store.upsert_env({
                "hash": key, "name": req.name, "python": req.python_version, "path": str(final),
                "size": disk_usage(final), "built_at": meta["built_at"], "last_used": time.time(),
                "build_seconds": meta["build_seconds"],
            })
        return final

    def _build_here(self, req: EnvRequest, tmp: Path, log) -> Path:
        """A packaged or registry env (admin data), built by the daemon itself: it shares the daemon's
        uv cache (hard links) and the bytecode of the nearest env. Returns the venv."""
        env = uv_environ(self.config)
        uv = uv_binary()
        (tmp / "requirements.lock").write_text(req.lock)
        nearest = self.nearest(req)
        build_args, build_env = _build_args(req.build, str(tmp))
        env.update(build_env)
        steps = [
            [uv, "venv", "--quiet", "--relocatable", "--python", req.python, str(tmp / "venv")],
            # bytecode: uv compiles everything when there is no built env to borrow from
            [uv, "pip", "sync", *([] if nearest else ["--compile-bytecode"]), "--python", str(tmp / "venv" / "bin" / "python"),
             *build_args, str(tmp / "requirements.lock")],
        ]
        for argv in steps:
            rc, out = self._run(argv, log, env)
            if rc != 0:
                raise EnvBuildError(f"uv {argv[1]} failed (exit {rc}): {uv_cause(out)}\n" + relevant_lines(out))
        if nearest:
            t0 = time.time()
            linked = borrow_bytecode(nearest, tmp / "venv")
            # a file that does not compile (torch ships some for newer Pythons) is skipped, as uv
            # skips it; the import check below is what says whether the env works
            self._run([str(tmp / "venv" / "bin" / "python"), "-m", "compileall", "-q", "-j", "0",
                       *map(str, site_packages(tmp / "venv"))], None, env)
            if log:
                log(f"runner: bytecode of {linked} files shared with env {nearest.name}, the rest compiled, in {time.time() - t0:.1f}s")
        check = "import sys" + "".join(f"; import {m}" for m in checked_imports(req.check_imports, f"env {req.name}: import check"))
        r = subprocess.run([str(tmp / "venv" / "bin" / "python"), "-c", check], capture_output=True, text=True, cwd="/")
        if r.returncode != 0:
            said = [l.strip() for l in r.stderr.splitlines() if l.strip()]
            # the error itself on the first line: that line alone is the job's note
            raise EnvBuildError(f"import check failed ({check}): {said[-1][:300] if said else f'exit {r.returncode}'}\n"
                                + relevant_lines(r.stderr))
        return tmp / "venv"

    def _build_jailed(self, req: EnvRequest, tmp: Path, log) -> Path:
        """An env of a user's requirements: every step that runs code of its packages (uv venv, uv pip
        sync with its sdist builds, bytecode, the interpreter check) runs as the build user in the
        jail (runner.envjail), in a folder of its own that nobody may find (`tmp` is root's, 0711);
        then the tree is sealed (root's, read-only for others). Its files are copies, never links
        into a cache; nothing is borrowed from other envs. Returns the venv."""
        from .envjail import jail_for, seal

        jail = jail_for(self.config, req.owner, [self.root.parent])
        uv = uv_binary()
        env = uv_environ(self.config)
        if jail is None:  # the daemon is not root: it builds its own user's requirements as that user
            (tmp / "requirements.lock").write_text(req.lock)
            for argv in ([uv, "venv", "--quiet", "--relocatable", "--python", req.python, str(tmp / "venv")],
                         [uv, "pip", "sync", "--compile-bytecode", "--python", str(tmp / "venv" / "bin" / "python"),
                          str(tmp / "requirements.lock")]):
                rc, out = self._run(argv, log, env)
                if rc != 0:
                    raise EnvBuildError(f"uv {argv[1]} failed (exit {rc}): {uv_cause(out)}\n" + relevant_lines(out))
            return tmp / "venv"
        if log:
            log(jail.note())
        os.chmod(tmp, 0o711)
        work = Path(tempfile.mkdtemp(dir=tmp))  # its name is the build's secret: tmp cannot be listed
        (work / "requirements.lock").write_text(req.lock)
        os.lchown(work, jail.who.uid, jail.who.gid)
        inside = jail.at(work)
        python = f"{inside}/venv/bin/python"
        steps = [
            [uv, "venv", "--quiet", "--relocatable", "--python", req.python, f"{inside}/venv"],
            [uv, "pip", "sync", "--compile-bytecode", "--link-mode", "copy", "--python", python, f"{inside}/requirements.lock"],
            [python, "-c", "import sys"],  # the env's interpreter runs as a user, not only as root
        ]
        for argv in steps:
            rc, out = jail.stream(argv, work, env, log)
            if rc != 0:
                what = f"uv {argv[1]}" if argv[0] == uv else "its interpreter"
                raise EnvBuildError(f"{what} failed as {jail.who.name} (exit {rc}): {uv_cause(out)}\n" + relevant_lines(out))
        os.lchown(work, 0, 0)  # from here the build user can rename nothing in it
        os.chmod(work, 0o711)
        seal(work / "venv", jail.who.uid)
        return work / "venv"

    def nearest(self, req: EnvRequest) -> Optional[Path]:
        """The built env (same Python, same platform) whose lock shares the most lines with req's:
        its compiled bytecode can be shared. None when there is none or it shares nothing."""
        want = set(normalise_lock(req.lock).splitlines())
        best, best_n = None, 0
        for p in self.root.iterdir() if self.root.exists() else []:
            try:
                meta = json.loads((p / COMPLETE).read_text())
                if meta.get("python") != req.python_version or meta.get("platform") != platform_tag():
                    continue
                if meta.get("owner") is not None:  # built from a user's requirements: never lent to another env
                    continue
                n = len(want & set(normalise_lock((p / "requirements.lock").read_text()).splitlines()))
            except (OSError, ValueError):
                continue
            if n > best_n:
                best, best_n = p, n
        return best

    def remove(self, key: str):
        """Delete an env folder and its row."""
        shutil.rmtree(self.path(key), ignore_errors=True)
        if self.store:
            self.store.delete_env(key)

    def listing(self) -> list[dict]:
        """Every complete env on disk, with its store row where there is one."""
        rows = {r["hash"]: r for r in (self.store.envs() if self.store else [])}
        out = []
        for p in sorted(self.root.iterdir()):
            meta_file = p / COMPLETE
            if not meta_file.exists():
                continue
            meta = json.loads(meta_file.read_text())
            row = rows.get(p.name, {})
            out.append({"hash": p.name, "name": meta["name"], "python": meta["python"], "path": str(p),
                        "size": row.get("size"), "built_at": meta["built_at"], "last_used": row.get("last_used"),
                        "jobs": row.get("jobs", 0), "active": row.get("active", 0),
                        "build_seconds": meta.get("build_seconds"), "owner": meta.get("owner"), "inputs": meta.get("inputs")})
        return out
