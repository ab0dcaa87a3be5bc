"""runner repo add URL --commit SHA [--name N] | ls | show N | rm N"""

from __future__ import annotations

import re
import sys

from .common import home, print_json, table

LICENSES = [("MIT License", "MIT"), ("Apache License", "Apache-2.0"), ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL-3.0"),
            ("GNU GENERAL PUBLIC LICENSE", "GPL-3.0"), ("BSD 3-Clause", "BSD-3-Clause"), ("Attribution-NonCommercial", "CC-BY-NC-4.0")]


def _at(cache, commit, path):
    import subprocess

    r = subprocess.run(["git", "--git-dir", str(cache), "show", f"{commit}:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


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
        commit, tag = repos.resolve_pin(h, url, args.commit)
        cache = repos.cache_dir(h, url)
        lic = _at(cache, commit, "LICENSE") or _at(cache, commit, "LICENSE.md") or ""
        license_ = next((spdx for key, spdx in LICENSES if key.lower() in lic[:400].lower()), "unknown")
        entry = next((e for e in ("train.py", "main.py", "tools/train.py") if _at(cache, commit, e) is not None), "train.py")
        table_ = {
            "url": url, "commit": commit, "tag": tag, "license": license_, "python": ".".join(map(str, sys.version_info[:2])),
            "entry": entry, "requirements": "requirements.txt" if _at(cache, commit, "requirements.txt") is not None else None,
            "task_type": "image_classification", "display_name": name, "description": f"{url} at {commit[:12]}",
            "dataset": {"format": "imagefolder"},
            "args": {"template": ["--epochs", "{epochs}", "--batch-size", "{batch_size}", "--lr", "{lr}", "--data", "{data}",
                                 "--output-dir", "{output_dir}"]},
            "defaults": {"epochs": 1, "batch_size": 8, "lr": 0.001},
            "parser": {"generic": True},
            "checkpoints": ["**/*.pt", "**/*.pth"],
        }
        sitereg.put(h.registry_file, f"repos.{name}", table_)
        print(f"added repo/{name} at {commit}{f' (tag {tag})' if tag else ''} to {h.registry_file}; edit its table to map flags and parser")
        return 0
    reg = load(h)
    if args.action == "ls":
        rows = [{"name": n, **r} for n, r in sorted(reg.repos.items())]
        if args.json:
            print_json(rows)
        else:
            table([[r["name"], r["url"], r["commit"][:12], r.get("tag") or "", r.get("license", ""), r.get("task_type", "")] for r in rows],
                  ["NAME", "URL", "COMMIT", "TAG", "LICENSE", "TASK"])
        return 0
    if not args.target:
        raise RepoError(f"repo {args.action}: give a repo name (see `runner repo ls`)")
    if args.action == "show":
        print_json({"name": args.target, **reg.get_repo(args.target)})
        return 0
    if args.action == "rm":
        if not sitereg.remove(h.registry_file, f"repos.{args.target}"):
            raise RepoError(f"repo rm: {args.target} is not in the site registry {h.registry_file} (packaged repos are edited in registry.toml)")
        print(f"removed repo/{args.target}")
        return 0
    return 2
