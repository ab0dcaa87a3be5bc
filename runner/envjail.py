"""Where a user's requirements are built: never as root.

An env built from requirements a user wrote runs code she chose (a package's setup.py, its build
backend, a .pth file) while uv resolves, builds and compiles it. A root daemon therefore runs every
step of such a build (`uv pip compile`, `uv venv`, `uv pip sync`, the import check) as an
unprivileged build user (`[envs] build_user`, default `runner-build` if it exists, else `nobody`),
inside bubblewrap when it can run as that user: the system read-only; /home, /root, runner's state
folder and the other build caches hidden behind empty read-only folders; only the build's own folder
and the uv cache of the requirements' owner writable; its own pid namespace, so nothing it started
outlives it. When the build is done the daemon makes the tree root's and read-only for everyone
else (`seal`) before it names it an env, so no later build can change what a job runs.

Each owner has a cache of her own (`[envs] build_cache`/UID, shared by every RUNNER_HOME of the
machine) and her inline envs are keyed with her uid: a build can poison only what its own owner
will run. Without bubblewrap the steps still run as the build user, apart from root and from every
user's files, but not from one another.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional

from . import defaults
from .exceptions import EnvBuildError
from .identity import Person, person

HIDDEN = ("/home", "/root", "/tmp")
"""Folders a build never sees (an empty read-only folder stands in), with the state folder and the build caches."""

WORK = "/tmp/build"
CACHE = "/tmp/uv-cache"
"""Where a sandboxed build sees its own folder and its uv cache (the real /tmp is hidden): bound by
root, so the build user needs no way to them through the folders above (a state folder may sit in
a 0700 one)."""

_PASS_ENV = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
             "SSL_CERT_FILE", "SSL_CERT_DIR", "LANG", "LC_ALL", "TZ")
"""Variables a build inherits besides uv's own UV_* index settings."""

_NOT_PASSED = ("UV_CACHE_DIR", "UV_PYTHON_INSTALL_DIR", "UV_TOOL_DIR", "UV_CONFIG_FILE")
"""UV_* variables of the daemon that name its own folders: never a build's."""


def drain(proc, log: Callable[[str], None] | None = None) -> tuple[int, str]:
    """A build step's output lines, each to `log` as it comes; (exit status, the whole output)."""
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if log:
            log(lines[-1])
    return proc.wait(), "\n".join(lines)


def drops_for_builds() -> bool:
    """Whether user-supplied builds run as another user (the daemon is root)."""
    return os.geteuid() == 0


def build_person(config: dict | None = None) -> Person:
    """The build user: `[envs] build_user`, else `runner-build` if it exists, else `nobody`."""
    import pwd

    name = (config or {}).get("build_user")
    for candidate in ([name] if name else [defaults.BUILD_USER, "nobody"]):
        try:
            who = person(pwd.getpwnam(candidate).pw_uid)
        except KeyError:
            continue
        if who.uid == 0:
            raise EnvBuildError(f"[envs] build_user: {candidate} is root; expected an unprivileged user (e.g. {defaults.BUILD_USER})")
        return who
    if name:
        raise EnvBuildError(f"[envs] build_user: no user {name!r} on this machine; create it (useradd --system {name}) or remove the key")
    raise EnvBuildError(f"envs: neither {defaults.BUILD_USER} nor nobody exists to build users' envs as; "
                        f"create one (useradd --system {defaults.BUILD_USER}) or set [envs] build_user")


def _sandbox() -> Optional[tuple[str, str]]:
    """(bwrap, setpriv) when both are here and bubblewrap works: the sandbox is set up by root (so
    it can bind folders the build user could not reach) and setpriv drops to the build user inside
    it, for good (no groups, no capabilities, no_new_privs). None otherwise."""
    from .sandbox import bwrap_path

    bwrap, setpriv = bwrap_path(), shutil.which("setpriv")
    return (bwrap, setpriv) if bwrap and setpriv else None


def _dirs(paths) -> list[str]:
    """Existing folders among paths, resolved, each once, parents first."""
    out = []
    for p in paths:
        if p is None:
            continue
        real = os.path.realpath(p)
        if real != "/" and os.path.isdir(real) and real not in out:
            out.append(real)
    return sorted(out, key=lambda p: p.count("/"))


def sandboxed(argv: list[str], tools: tuple[str, str], who: Person, cwd: str, binds: dict | None = None,
              hidden=()) -> list[str]:
    """argv as `who` under bubblewrap: the system read-only, `hidden` folders empty and read-only,
    each folder of `binds` ({real: where}) bound writable where it says."""
    bwrap, setpriv = tools
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--die-with-parent", "--new-session"]
    hidden = _dirs(hidden)
    for h in hidden:
        args += ["--tmpfs", h]
    for real, where in (binds or {}).items():
        args += ["--bind", str(real), where]
    exe = os.path.realpath(argv[0]) if os.path.isabs(argv[0]) else argv[0]
    if os.path.basename(exe) == "uv" and any(exe.startswith(h.rstrip("/") + "/") for h in hidden):
        # uv itself (a standalone binary, from a venv under /tmp, say) lies in a hidden folder:
        # it alone is shown, read-only, at its own path. Never an interpreter: whether the build
        # user can run one is what runs_as asks.
        args += ["--ro-bind", exe, exe]
        argv = [exe, *argv[1:]]
    for h in hidden:  # after the binds: their mount points were made in the empty folder first
        args += ["--remount-ro", h]
    drop = [setpriv, f"--reuid={who.uid}", f"--regid={who.gid}", "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "--"]
    return args + ["--chdir", cwd, "--", *drop, *argv]


def runs_as(path: str, who: Person) -> Optional[str]:
    """The Python version `path` reports when `who` runs it (with /home and /root hidden, as in a build), or None."""
    return _runs_as(path, who.uid, who.gid)


@functools.lru_cache(maxsize=64)
def _runs_as(path: str, uid: int, gid: int) -> Optional[str]:
    if not os.path.isfile(path):
        return None
    argv = [path, "-I", "-c", "import platform; print(platform.python_version())"]
    tools = _sandbox()
    if tools:  # run as a build runs it: in the sandbox, dropped inside
        argv, drop = sandboxed(argv, tools, Person(uid, gid, (gid,), "", ""), "/", hidden=HIDDEN), {}
    else:
        drop = dict(user=uid, group=gid, extra_groups=[])
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                           **drop)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def _own_folder(path: Path, who: Person, what: str):
    """A folder that is `who`'s alone (0700), made or taken back; never through a link."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EnvBuildError(f"{what}: {path} is not a folder; remove it")
    if st.st_uid != who.uid:  # made for another build user: a cache, so start it again
        shutil.rmtree(path)
        path.mkdir(mode=0o700)
    os.lchown(path, who.uid, who.gid)
    os.chmod(path, 0o700)


class Jail:
    """Runs the steps of one owner's builds as the build user, sandboxed where bubblewrap allows."""

    def __init__(self, config: dict | None, owner: int, hide=()):
        self.config = config or {}
        self.who = build_person(self.config)
        self.owner = int(owner)
        self.cache_root = Path(self.config.get("build_cache") or defaults.BUILD_CACHE)
        self.hidden = [*HIDDEN, str(self.cache_root), *(str(h) for h in hide)]
        self.tools = _sandbox()
        self._cache: Optional[Path] = None

    @property
    def cache(self) -> Path:
        """The owner's uv cache, the build user's (0700) inside a root-owned folder that nobody may list."""
        if self._cache is None:
            root = self.cache_root
            root.mkdir(parents=True, exist_ok=True)
            st = os.lstat(root)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                raise EnvBuildError(f"[envs] build_cache: {root} must be a folder owned by root")
            os.chmod(root, 0o711)
            self._cache = root / str(self.owner)
            _own_folder(self._cache, self.who, "[envs] build_cache")
        return self._cache

    def note(self) -> str:
        """One line for a build's log: who builds, and in what."""
        where = "in bubblewrap" if self.tools else "WITHOUT a sandbox (install bubblewrap: builds would then not see each other)"
        return f"runner: building as {self.who.name} (uid {self.who.uid}) {where}, not as root"

    @contextlib.contextmanager
    def workdir(self, parent: Optional[Path] = None, files: dict | None = None):
        """A fresh folder of the build user's (0700) with `files` written in it first; removed afterwards."""
        d = Path(tempfile.mkdtemp(prefix="runner-build-", dir=parent))
        try:
            for name, text in (files or {}).items():
                fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
            os.lchown(d, self.who.uid, self.who.gid)
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)  # fd-based: a link planted inside is removed, never followed

    def at(self, folder: Path) -> str:
        """Where a step sees `folder` (its work folder): WORK in the sandbox, the folder itself without one."""
        return WORK if self.tools else str(folder)

    def environ(self, folder: Path, uv_env: dict | None = None) -> dict:
        """A build step's environment, built from nothing: uv's index settings, proxies, its own folders."""
        env = {k: v for k, v in (uv_env or os.environ).items() if (k.startswith("UV_") and k not in _NOT_PASSED) or k in _PASS_ENV}
        env.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.at(folder), "TMPDIR": self.at(folder),
                    "USER": self.who.name, "LOGNAME": self.who.name, "UV_CACHE_DIR": CACHE if self.tools else str(self.cache),
                    "UV_PYTHON_DOWNLOADS": "never", "PYTHONNOUSERSITE": "1"})
        env.setdefault("LANG", "C.UTF-8")
        return env

    def _popen(self, argv: list[str], folder: Path, uv_env: dict | None, **kw) -> subprocess.Popen:
        env = self.environ(folder, uv_env)
        common = dict(env=env, umask=0o022, close_fds=True, stdin=subprocess.DEVNULL, **kw)
        if self.tools:  # bubblewrap starts as root and drops inside, once its folders are bound
            argv = sandboxed(argv, self.tools, self.who, WORK, {folder: WORK, self.cache: CACHE}, self.hidden)
            return subprocess.Popen(argv, cwd="/", **common)
        from .identity import may_access

        if not may_access(folder, self.who, "w"):
            raise EnvBuildError(f"envs: the build user {self.who.name} cannot reach {folder}; make the folders above "
                                "runner's state folder searchable by all (chmod o+x), as every user's jobs need them too")
        return subprocess.Popen(argv, cwd=str(folder), user=self.who.uid, group=self.who.gid, extra_groups=[], **common)

    def stream(self, argv: list[str], folder: Path, uv_env: dict | None = None,
               log: Callable[[str], None] | None = None) -> tuple[int, str]:
        """Run one step in `folder`, its output lines to `log`; returns (exit status, output)."""
        return drain(self._popen(argv, folder, uv_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), log)

    def capture(self, argv: list[str], folder: Path, uv_env: dict | None = None) -> subprocess.CompletedProcess:
        """Run one step in `folder`; returns its exit status, stdout and stderr apart."""
        proc = self._popen(argv, folder, uv_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def jail_for(config: dict | None, owner: Optional[int], hide=()) -> Optional[Jail]:
    """The jail for a build of `owner`'s requirements, or None where the daemon is not root (nobody to drop to)."""
    if owner is None or not drops_for_builds():
        return None
    return Jail(config, owner, hide)


def seal(tree: Path, builder: int):
    """Make a finished build's tree root's and writable by root alone (no set-id bits), links not
    followed. Its processes are gone; parents are taken before their entries are read, so nothing
    can be swapped under the walk. A file of any other user (a hard link planted by the build) is refused."""
    st = os.lstat(tree)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EnvBuildError(f"the build left {tree.name} as something other than a folder; refused")

    def take(path: str, st: os.stat_result):
        if st.st_uid not in (builder, 0):
            raise EnvBuildError(f"the build left {path} owned by uid {st.st_uid}; refused")
        os.lchown(path, 0, 0)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o755)

    take(str(tree), st)
    for root, dirs, files in os.walk(tree, followlinks=False):
        for name in dirs + files:
            p = os.path.join(root, name)
            take(p, os.lstat(p))


def write_new(path: Path, text: str, mode: int = 0o644):
    """Write a file the daemon adds to a sealed tree: whatever the build left under that name is removed first."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
