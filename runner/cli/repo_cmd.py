"""runner repo add URL --commit SHA [--name N] [--task T] | ls | show N | rm N | lock N"""

from __future__ import annotations

import os
import re
import sys

from .common import home, print_json, table

LICENSES = [("MIT License", "MIT"), ("Apache License", "Apache-2.0"), ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL-3.0"),
            ("GNU GENERAL PUBLIC LICENSE", "GPL-3.0"), ("BSD 3-Clause", "BSD-3-Clause"), ("Attribution-NonCommercial", "CC-BY-NC-4.0")]


def _at(cache, commit, path):
    import subprocess

    r = subprocess.run(["git", "--git-dir", str(cache), "show", f"{commit}:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


ENTRIES = ("train.py", "main.py", "tools/train.py", "scripts/train.py", "src/train.py", "train/train.py", "main_train.py")
REQUIREMENTS = ("requirements.txt", "requirements/runtime.txt", "requirements/requirements.txt", "requirements/base.txt",
                "requirements/train.txt", "requirements-train.txt", "requirements.in")
TASK_WORDS = [("pose_estimation", ("pose estimation", "keypoint")), ("instance_segmentation", ("instance segmentation",)),
              ("semantic_segmentation", ("semantic segmentation",)), ("obb_detection", ("oriented bounding", "rotated box")),
              ("object_detection", ("object detection", "detector", "detection")), ("image_captioning", ("captioning",)),
              ("image_classification", ("classification", "imagenet"))]


def _files(cache, commit) -> list[str]:
    import subprocess

    r = subprocess.run(["git", "--git-dir", str(cache), "ls-tree", "-r", "--name-only", commit], capture_output=True, text=True)
    return r.stdout.splitlines() if r.returncode == 0 else []


def _first(files: list[str], wanted) -> str | None:
    """The first of `wanted` in the tree; else a file of that name at most two folders down."""
    have = set(files)
    for w in wanted:
        if w in have:
            return w
    for w in wanted:
        base = w.rsplit("/", 1)[-1]
        deep = sorted((f for f in files if f.rsplit("/", 1)[-1] == base and f.count("/") <= 2), key=lambda f: (f.count("/"), f))
        if deep:
            return deep[0]
    return None


def _guess_task(readme: str) -> str:
    """The task its README talks about most, by a few words; classification when it says none."""
    text = readme.lower()
    counts = [(sum(text.count(w) for w in words), task) for task, words in TASK_WORDS]
    best = max(counts, key=lambda c: c[0])
    return best[1] if best[0] else "image_classification"


TASK_FORMATS = {"semantic_segmentation": "masks", "image_captioning": "captions", "object_detection": "yolo", "obb_detection": "yolo",
                "instance_segmentation": "coco", "pose_estimation": "coco"}
"""The dataset format a new table starts from, by its task (imagefolder otherwise); a person edits it."""


def _proposal(cache, commit, files: list[str], entry: str, fmt: str):
    """The args the entry script's own argparse calls suggest (read with ast, nothing run); the
    module it imports when its parser is defined there."""
    from config_translators.repo import PART_FIELDS
    from runner import script_args

    source = _at(cache, commit, entry)
    if source is None:
        return script_args.propose([], (), entry, [f"{script_args.NOT_TOLD}{entry} is not in the repo at {commit[:12]}; "
                                                   "set entry and write args.template by hand"])
    found, notes = script_args.read_arguments(source, entry)
    if not found and not notes:
        for mod in script_args.local_modules(source, entry, set(files))[:8]:
            more, more_notes = script_args.read_arguments(_at(cache, commit, mod) or "", mod)
            if more:
                found, notes = more, [*more_notes, f"# flags read from {mod}, which {entry} imports"]
                break
    return script_args.propose(found, PART_FIELDS[fmt], entry, notes)


def _in_site_registry(path, name: str) -> bool:
    """Whether the site registry already has a table repos.NAME (the one `repo add` would write)."""
    import tomllib

    try:
        return name in tomllib.loads(path.read_text()).get("repos", {})
    except FileNotFoundError:
        return False


def repo(args):
    """Dispatch the repo sub-verbs."""
    from runner import repos, sitereg
    from runner.exceptions import RepoError
    from runner.registry import load

    h = home(args).ensure()
    if args.action == "add":
        if not args.target or not args.commit:
            raise RepoError("repo add: give URL and --commit SHA (or a tag); a branch moves and is refused")
        url = args.target
        name = args.name or re.sub(r"\.git$", "", url.rstrip("/").rsplit("/", 1)[-1])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise RepoError(f"--name: given {name!r}; expected letters, digits, '_', '.', '-'")
        if not os.access(h.repos, os.W_OK) or not os.access(h.root, os.W_OK):
            raise RepoError(f"repo add: {h.root} is the daemon's and not writable by you: an admin (root) adds repos "
                            "to a team server (docs/adding-a-repo.md); or run a daemon of your own (RUNNER_HOME)")
        if _in_site_registry(h.registry_file, name) and not args.replace:
            raise RepoError(f"repo add: repos.{name} is in {h.registry_file} already, and your edits to it are kept: to move its "
                            f"pin, set its commit = \"SHA\" there (runner fetches it at the next job); to start it again from a "
                            f"new starter table, give --replace (or --name for a second table)")
        commit, tag = repos.resolve_pin(h, url, args.commit)
        cache = repos.cache_dir(h, url)
        lic = _at(cache, commit, "LICENSE") or _at(cache, commit, "LICENSE.md") or ""
        license_ = next((spdx for key, spdx in LICENSES if key.lower() in lic[:400].lower()), "unknown")
        files = _files(cache, commit)
        entry = _first(files, ENTRIES) or "train.py"
        reqs = _first(files, REQUIREMENTS)
        task = args.task or _guess_task(_at(cache, commit, _first(files, ("README.md", "README.rst", "README")) or "README.md") or "")
        from runner.registry import TASK_TYPES

        if task not in TASK_TYPES:
            raise RepoError(f"--task: given {task!r}; expected one of {', '.join(TASK_TYPES)}")
        fmt = TASK_FORMATS.get(task, "imagefolder")
        proposal = _proposal(cache, commit, files, entry, fmt)
        table_ = {
            "url": url, "commit": commit, "tag": tag, "license": license_, "python": ".".join(map(str, sys.version_info[:2])),
            "entry": entry, "requirements": reqs,
            "task_type": task, "display_name": name, "description": f"{url} at {commit[:12]}",
            "dataset": {"format": fmt},
            "args": {"template": proposal.template, **({"optional": proposal.optional} if proposal.optional else {})},
            **({"defaults": proposal.defaults} if proposal.defaults else {}),
            "parser": {"generic": True},
            "checkpoints": ["**/*.pt", "**/*.pth"] if proposal.writes_to_output_dir else ["{src}/**/*.pt", "{src}/**/*.pth"],
        }
        sitereg.put(h.registry_file, f"repos.{name}", table_, {"args": proposal.notes})
        print(f"added repo/{name} at {commit}{f' (tag {tag})' if tag else ''} to {h.registry_file}; edit its table to map flags and parser")
        told = ", ".join(f"{{{f}}} -> {flag}" for f, flag in proposal.mapped.items())
        print(f"args from {entry}'s argparse: {told or 'none'}")
        from runner.script_args import NOT_TOLD

        for note in proposal.notes:
            if note.startswith(NOT_TOLD):
                print(note.removeprefix("# "))
        return 0
    reg = load(h)
    if args.action == "ls":
        rows = [{"name": n, **{k: v for k, v in r.items() if not k.startswith("_")}} for n, r in sorted(reg.repos.items())]
        if args.json:
            print_json(rows)
        else:
            table([[r["name"], r["url"], r["commit"][:12], r.get("tag") or "", r.get("license", ""), r.get("task_type", "")] for r in rows],
                  ["NAME", "URL", "COMMIT", "TAG", "LICENSE", "TASK"])
        return 0
    if not args.target:
        raise RepoError(f"repo {args.action}: give a repo name (see `runner repo ls`)")
    if args.action == "show":
        r = reg.get_repo(args.target)
        print_json({"name": args.target, **{k: v for k, v in r.items() if not k.startswith("_")}, "defined_in": r.get("_dir"),
                    "lock": str(repos.lock_path(r, args.target)) if repos.lock_path(r, args.target).exists() else None})
        return 0
    if args.action == "lock":
        repo_ = reg.get_repo(args.target)
        path = repos.lock_path(repo_, args.target)
        if not os.access(path.parent if path.parent.exists() else path.parent.parent, os.W_OK):
            raise RepoError(f"repo lock: {path.parent} is not writable by you (the lock is kept beside the registry file that pins the repo)")
        written = repos.lock_repo(h, repo_, args.target, h.config.get("envs"))
        pins = sum(1 for line in written.read_text().splitlines() if "==" in line and not line.startswith("#"))
        print(f"locked repo/{args.target} at {repo_['commit'][:12]}: {pins} packages pinned in {written}")
        return 0
    if args.action == "rm":
        if not sitereg.remove(h.registry_file, f"repos.{args.target}"):
            raise RepoError(f"repo rm: {args.target} is not in the site registry {h.registry_file} (packaged repos are edited in registry.toml)")
        print(f"removed repo/{args.target}")
        return 0
    return 2
