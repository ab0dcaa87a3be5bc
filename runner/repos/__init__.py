"""GitHub (or any git) training repos pinned by commit: one clone cache per URL, a worktree per
job, never 'latest'. A repo is onboarded by a `[repos.X]` table in the registry, not by code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .. import envs
from ..atomic import make_dir, write_bytes
from ..exceptions import RepoError

SHA = re.compile(r"^[0-9a-f]{40}$")


UPLOAD_PACK = "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"


class PatchError(RepoError):
    """A source patch that no longer matches its commit."""


def _git(*args, cwd=None, check=True) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"})
    if check and r.returncode != 0:
        raise RepoError(f"git {' '.join(args[:2])}: {(r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout).strip() else 'failed'}")
    return r.stdout.strip()


def cache_dir(home, url: str) -> Path:
    """The bare clone shared by every job of this URL."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", url.rstrip("/").rsplit("/", 2)[-2:][-1] if "/" in url else url)[:40]
    return home.repos / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:10]}.git"


def ensure_clone(home, url: str, commit: str | None = None) -> Path:
    """The cache clone of url, fetched if it lacks `commit`. Serialised by a file lock."""
    from filelock import FileLock

    cache = cache_dir(home, url)
    home.repos.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        if not (cache / "HEAD").exists():
            # A partial clone (no blobs until a checkout needs them): large repos carry hundreds of
            # MB of docs and notebooks that a job never reads, and a mirror may lack a few of them.
            extra = []
            if url.startswith("file://") or os.path.isdir(url):
                extra = ["--upload-pack", UPLOAD_PACK]  # a local "server" must be told to allow filters

            def clone(tmp: Path):
                _git("clone", "--quiet", "--bare", "--filter=blob:none", *extra, url, str(tmp))
                if extra:
                    _git("--git-dir", str(tmp), "config", "remote.origin.uploadpack", UPLOAD_PACK)

            make_dir(cache, clone)  # whole or not at all, with a plain mkdir's mode, as git clone gives
        elif commit and not has_commit(cache, commit):
            _git("--git-dir", str(cache), "fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/heads/*")
    return cache


def has_commit(cache: Path, rev: str) -> bool:
    """Whether the cache holds that commit."""
    return subprocess.run(["git", "--git-dir", str(cache), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True).returncode == 0


def resolve_pin(home, url: str, rev: str) -> tuple[str, str | None]:
    """(commit sha, tag or None) for `rev`: a full sha or a tag. A branch alone is refused."""
    cache = ensure_clone(home, url)
    if SHA.match(rev):
        if not has_commit(cache, rev):
            _git("--git-dir", str(cache), "fetch", "--quiet", "--tags", "origin", check=False)
            if not has_commit(cache, rev):
                raise RepoError(f"--commit {rev}: no such commit in {url}")
        return rev, None
    tags = _git("--git-dir", str(cache), "tag", "--list", rev)
    if tags == rev:
        return _git("--git-dir", str(cache), "rev-list", "-n", "1", rev), rev
    branches = _git("--git-dir", str(cache), "branch", "--list", rev)
    if branches.strip(" *") == rev:
        raise RepoError(f"--commit {rev}: is a branch, which moves; pin a commit (a full sha) or a tag")
    raise RepoError(f"--commit {rev}: neither a full commit sha nor a tag of {url}")


def checkout(home, repo: dict, dest: Path) -> Path:
    """A worktree of the repo at its pinned commit in `dest`, with `exclude` paths left out."""
    cache = ensure_clone(home, repo["url"], repo["commit"])
    if not has_commit(cache, repo["commit"]):
        raise RepoError(f"commit {repo['commit']} is not in {repo['url']}")
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)])
    from filelock import FileLock

    # under the cache's lock: a prune beside another job's `worktree add` (a check job and its
    # control prepared at once) removed that add's half-made entry ("could not open
    # .../worktrees/src3/locked for writing"), and two adds could pick the same entry name
    with FileLock(str(cache) + ".lock"):
        _git("--git-dir", str(cache), "worktree", "prune")
        _git("--git-dir", str(cache), "worktree", "add", "--quiet", "--detach", "--no-checkout", str(dest), repo["commit"])
    excludes = repo.get("exclude", [])
    if excludes:
        _git("sparse-checkout", "set", "--no-cone", "/*", *[f"!/{e.lstrip('/')}" for e in excludes], cwd=dest)
    _git("checkout", "--quiet", repo["commit"], cwd=dest)
    return dest


def apply_patches(src: Path, patches: list[dict]):
    """Find/replace pairs with the count expected; a patch that no longer matches fails clearly."""
    for i, p in enumerate(patches):
        f = src / p["file"]
        try:
            text = f.read_text()
        except FileNotFoundError:
            raise RepoError(f"patches.{i}: {p['file']} does not exist at this commit") from None
        n = text.count(p["find"])
        want = p.get("count", 1)
        if n != want:
            raise PatchError(f"patches.{i}: {p['file']}: expected {want} match(es) of {p['find']!r}, found {n} (the patch no longer applies)")
        f.write_text(text.replace(p["find"], p["replace"]))


def _name(req: str) -> str:
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def merge_requirements(base: str, overrides: list[str]) -> str:
    """The repo's requirements with `overrides` replacing pins of the same package, or added; ""
    when there are none (a repo of the standard library alone), never a lone blank line."""
    names = {_name(o) for o in overrides}
    keep = []
    for line in base.splitlines():
        s = line.split("#", 1)[0].strip()
        if not s or s.startswith("-"):
            continue
        if _name(s) not in names:
            keep.append(s)
    lines = keep + list(overrides)
    return "\n".join(lines) + "\n" if lines else ""


def _shipped(repo: dict, name: str, dest: str, what) -> bytes:
    """The bytes the table's `files` entry `dest` puts into the checkout."""
    base = Path(repo.get("_dir") or ".")
    rel = Path(dest)
    if rel.is_absolute() or ".." in rel.parts:
        raise RepoError(f"repos.{name}.files: {dest!r} must be a path inside the checkout")
    if isinstance(what, dict) and isinstance(what.get("text"), str):
        return what["text"].encode()
    if isinstance(what, str):
        path = (base / what).resolve()
        if not path.is_relative_to(base.resolve()):  # the daemon reads it: nothing outside the table's folder
            raise RepoError(f"repos.{name}.files.{dest}: {what!r} is outside the folder of the registry file that defines the table")
        try:
            return path.read_bytes()
        except OSError:
            raise RepoError(f"repos.{name}.files.{dest}: {path} cannot be read (paths are relative to the registry file that defines the table)") from None
    raise RepoError(f"repos.{name}.files.{dest}: expected a path (string) or {{ text = \"...\" }}")


def copy_files(src: Path, repo: dict, name: str):
    """The table's `files`: small files it ships (a font, a config, a helper script) put into the
    checkout. `{"dest/in/checkout" = "path next to the registry file"}` or `{ text = "..." }`."""
    for dest, what in (repo.get("files") or {}).items():
        data = _shipped(repo, name, dest, what)
        rel = Path(dest)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_symlink():
            (src / rel).unlink()
        (src / rel).write_bytes(data)


def made_from(repo: dict, name: str) -> dict:
    """What a checkout made by this table holds: its commit, and a hash per file the table ships
    (`files`) or patches, so that a later table can be compared with it (`changed_files`). A file
    that cannot be read is hashed as its error: it differs from any content."""
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    files = {}
    for dest, what in (repo.get("files") or {}).items():
        try:
            files[dest] = digest(_shipped(repo, name, dest, what))
        except RepoError as e:
            files[dest] = digest(str(e).encode())
    patches: dict[str, list] = {}
    for p in repo.get("patches") or []:
        patches.setdefault(p["file"], []).append([p["find"], p["replace"], p.get("count", 1)])
    return {"url": repo["url"], "commit": repo["commit"], "files": files,
            "patches": {f: digest(json.dumps(v).encode()) for f, v in patches.items()}}


def changed_files(home, old: dict, new: dict) -> list[str]:
    """The files that a checkout made from `new` (a made_from record) has otherwise than one made
    from `old`: those shipped or patched otherwise, and those its commit changes (read from the
    clone cache; only a note where the cache cannot tell)."""
    names = {f for f in old["files"].keys() | new["files"].keys() if old["files"].get(f) != new["files"].get(f)}
    names |= {f for f in old["patches"].keys() | new["patches"].keys() if old["patches"].get(f) != new["patches"].get(f)}
    if (old["url"], old["commit"]) != (new["url"], new["commit"]):
        r = subprocess.run(["git", "--git-dir", str(cache_dir(home, new["url"])), "diff", "--name-only", old["commit"], new["commit"]],
                           capture_output=True, text=True) if old["url"] == new["url"] else None
        if r is not None and r.returncode == 0:
            names |= set(r.stdout.split("\n")) - {""}
        else:
            names.add(f"(every file: {old['url']} at {old['commit'][:12]}, now {new['url']} at {new['commit'][:12]})")
    return sorted(names)


CHECKOUT_RECORD = "checkout.json"
"""In a job's run folder (the daemon's): made_from of the table its checkout was made by."""


def export(home, repo: dict, dest: Path) -> Path:
    """The repo's files at its pinned commit in `dest`, `exclude` paths left out, without a
    worktree: read from the clone cache alone, so a user who may not write the cache can make it."""
    cache = cache_dir(home, repo["url"])
    if not has_commit(cache, repo["commit"]):
        raise RepoError(f"commit {repo['commit'][:12]} is not in the clone cache of {repo['url']} (a job of this table fetches it)")
    dest.mkdir(parents=True, exist_ok=True)
    excludes = [f":(exclude){e.strip('/')}" for e in repo.get("exclude", [])]
    archive = subprocess.Popen(["git", "--git-dir", str(cache), "archive", "--format=tar", repo["commit"], *(["--", ".", *excludes] if excludes else [])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    err = archive.stderr.read().decode(errors="replace").strip()
    if archive.wait() != 0 or untar.returncode != 0:
        why = (err or untar.stderr.decode(errors="replace")).strip().splitlines()
        raise RepoError(f"git archive {repo['commit'][:12]}: {why[-1] if why else 'failed'}")
    return dest


def lock_path(repo: dict, name: str) -> Path:
    """Where `runner repo lock NAME` records the lock: beside the registry file that pins the repo."""
    return Path(repo.get("_dir") or ".") / "repo-locks" / f"{name}.lock"


def _inputs(repo: dict, name: str, home, for_uid: int | None = None) -> tuple[str, str, str, dict, str]:
    """(requirements text, interpreter, its version, build settings, inputs hash) of a repo at its commit."""
    cache = ensure_clone(home, repo["url"], repo["commit"])
    base = ""
    if repo.get("requirements"):
        try:
            base = _git("--git-dir", str(cache), "show", f"{repo['commit']}:{repo['requirements']}")
        except RepoError:
            raise RepoError(f"repos.{name}.requirements: {repo['requirements']} does not exist at {repo['commit'][:12]}") from None
    text = merge_requirements(base, repo.get("overrides", []))
    # The repo's requirements are resolved and built by the daemon: what its file names must come
    # from the index, like a user's inline requirements. A `name @ file:///home/...` line (or a
    # URL) would have the daemon build whatever that folder holds at build time, as root.
    allow_urls = bool((home.config.get("envs") or {}).get("allow_requirement_urls"))
    for line in text.splitlines():
        why = envs.requirement_problem(line, allow_urls)
        if why:
            where = f"repos.{name}.overrides" if line in repo.get("overrides", []) else f"repos.{name}.requirements ({repo.get('requirements')})"
            raise RepoError(f"{where}: given {line[:120]!r}; {why}; replace it with a pinned package in the table's overrides")
    # One every user can run: a root daemon's repo env is shared by all its users (the daemon's own
    # Python may live in /root, where a user's job got "Permission denied" starting it). Only a job
    # of root's may, where there is none, use one that only root runs (an env of its own: the key
    # holds the interpreter's full version, and a user's job never gets that far).
    try:
        py, ver = envs.base_python(repo.get("python"), home.config.get("envs"), f"repos.{name}.python")
    except envs.EnvBuildError:
        if for_uid != 0 or os.geteuid() != 0:
            raise
        py, ver = envs.find_python(repo.get("python"), f"repos.{name}.python")
    build = envs.build_settings(repo.get("build"), f"repos.{name}.build")
    minor = ".".join(ver.split(".")[:2])
    inputs = hashlib.sha256(f"{repo['commit']}\n{minor}\n{text}\n{sorted(build.items())}".encode()).hexdigest()[:16]
    return text, py, ver, build, inputs


def lock_repo(home, repo: dict, name: str, config: dict | None) -> Path:
    """Compile the repo's lock now and record it beside its table (`runner repo lock NAME`)."""
    text, py, ver, build, inputs = _inputs(repo, name, home, os.geteuid())
    lock = envs.compile_lock(text, ver, config, python=py, build=build)
    path = lock_path(repo, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# runner repo lock {name}: commit={repo['commit']} python={'.'.join(ver.split('.')[:2])} inputs={inputs}\n"
    write_bytes(path, (header + lock).encode())
    return path


def recorded_lock(repo: dict, name: str, inputs: str) -> tuple[str | None, str | None]:
    """(lock text, None) when a recorded lock matches these inputs; (None, why not) otherwise."""
    path = lock_path(repo, name)
    try:
        text = path.read_text()
    except OSError:
        return None, None
    m = re.match(r"^# runner repo lock \S+: commit=(\S+) python=(\S+) inputs=(\S+)\n", text)
    if not m:
        return None, f"{path} has no `runner repo lock` header; ignored"
    if m.group(3) != inputs:
        what = "commit" if m.group(1) != repo["commit"] else "requirements, Python or build settings"
        return None, f"{path} was recorded for other {what}; ignored (run `runner repo lock {name}` again)"
    return text, None


def env_request(home, repo: dict, name: str, config: dict | None, log=None, for_uid: int | None = None):
    """The env of a repo at its commit: its own requirements plus overrides, locked, keyed. The
    lock recorded by `runner repo lock` is used when it matches; otherwise one is compiled once per
    host and kept in the repo cache."""
    text, py, ver, build, inputs = _inputs(repo, name, home, for_uid)
    lock, why = recorded_lock(repo, name, inputs)
    if lock is not None:
        if log:
            log(f"runner: lock recorded in {lock_path(repo, name)}")
    else:
        if why and log:
            log(f"runner: {why}")
        lock_file = home.repos / "locks" / f"{name}-{repo['commit'][:12]}-{inputs}.lock"
        if lock_file.exists():
            lock = lock_file.read_text()
        else:
            lock = envs.compile_lock(text, ver, config, python=py, build=build)
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(lock_file, lock.encode())
    return envs.EnvRequest(name=f"repo:{name}", lock=lock, python=py, python_version=ver,
                           check_imports=repo.get("import_check", []), build=build)


def prepare(job: dict, home, registry, envmgr, log):
    """Prepare a repo job: clone/worktree, shipped files, patches, env, translated argv, launch.json."""
    from config_translators import repo as translator

    from ..launchspec import Prepared, build_env, write_launch

    spec = job["spec"]
    name = spec["model"].split("/", 1)[1]
    repo = registry.get_repo(name)
    job_dir = home.job_dir(job["id"])
    src = job_dir / "src"
    log(f"runner: repo {name} at {repo['commit'][:12]} ({repo['url']})")
    checkout(home, repo, src)
    copy_files(src, repo, name)
    apply_patches(src, repo.get("patches", []))
    from ..atomic import write_json

    write_json(home.run_dir(job["id"]) / CHECKOUT_RECORD, made_from(repo, name))  # what `runner infer` compares a later table with
    req = env_request(home, repo, name, home.config.get("envs"), log, for_uid=job.get("uid"))
    env_dir = build_env(req, envmgr, job, log)
    python = str(env_dir / "bin" / "python")
    from ..identity import hand_over
    from ..launchspec import checked_report, datasets_cache, job_dir_mode, job_person, log_dataset_report, translate_as

    who = job_person(job)
    cache = str(datasets_cache(home, who))
    hand_over(job_dir, who, job_dir_mode(home))  # hers from here on: the daemon writes no more there
    # The dataset is hers: it is read, converted and placed by a helper running as her.
    t = translate_as(who, "repo", {"spec": spec, "repo": repo, "id": job["id"], "datasets_cache": cache}, job_dir,
                     src=str(src), python=python)
    if not (isinstance(t.get("argv"), list) and all(isinstance(a, str) for a in t["argv"]) and isinstance(t.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in t["env"].items())):
        raise RepoError(f"repo {name}: the translation gave no argv")
    if checked_report(t):
        log_dataset_report(spec, checked_report(t), log)
    writable = [src, home.cache]
    if repo.get("dataset", {}).get("writable"):  # e.g. YOLOv7 writes labels/*.cache beside the data
        dataset_dir = Path(spec["dataset"]["path"])
        writable.append(dataset_dir if dataset_dir.is_dir() else dataset_dir.parent)
    resume = t.get("resume")
    if resume is not None and not (isinstance(resume, list) and all(isinstance(a, str) for a in resume)):
        raise RepoError(f"repo {name}: the translation gave a resume that is not a list of strings")
    launch = write_launch(job, home, t["argv"], src, [str(env_dir / "bin")], {"VIRTUAL_ENV": str(env_dir), **t["env"]},
                          spec.get("network", repo.get("network", False)), writable, log, resume_args=resume)
    checkpoints = [translator.job_path(c, f"repos.{name}.checkpoints") for c in repo.get("checkpoints", [])]
    parser = dict(repo.get("parser") or {}) or None
    results_file = parser.pop("results_file", None) if parser else None
    if results_file:
        results_file = {**results_file, "job_path": translator.job_path(results_file["path"], f"repos.{name}.parser.results_file.path")}
    return Prepared(launch, parser, checkpoints, req.key, results_file)


def python_of(repo: dict) -> str:
    """The interpreter a repo asks for (for `repo show`)."""
    return repo.get("python") or ".".join(sys.version.split(".")[:2])
