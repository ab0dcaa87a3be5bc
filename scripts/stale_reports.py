"""Which committed check reports are older than what they cover (`bash scripts/check-reports.sh --stale`).

A report under docs/checks/FW/ names the commit it was made on. It is stale when a later commit
changed a file it covers (the framework's adapter, translator, schema and env; the parsers; the
check's own code) or, in registry.toml, the tables of its framework ([frameworks.FW] and
[models.FW.*]; [repos.*] for the repos report): a registry change for one framework leaves the
others' reports current. A warning: it exits 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["adapters/base.py", "adapters/__main__.py", "log_parsers", "runner/check", "runner/check.py", "runner/checkdata.py", "runner/synth.py",
          "runner/synth_draw.py", "runner/synth_tasks.py", "runner/cli/check_cmd.py", "config_translators/datasets.py", "envs/base"]


def covers(fw: str) -> list[str]:
    if fw == "repos":
        return COMMON + ["config_translators/repo", "config_translators/repo.py", "config_translators/repo_fields.py",
                         "config_translators/repo_infer.py", "config_translators/dataset_formats", "config_translators/dataset_formats.py", "runner/repos",
                         "runner/repos.py", "runner/repo_infer.py", "repo-files", "repo-locks"]
    return COMMON + [f"adapters/{fw}_adapter.py", f"adapters/schemas/{fw}.json", f"config_translators/{fw}.py", f"envs/{fw}"]


def git(*args) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout


def registry_tables(text: str, fw: str) -> dict:
    data = tomllib.loads(text) if text else {}
    if fw == "repos":
        return {"repos": data.get("repos", {})}
    return {"framework": data.get("frameworks", {}).get(fw), "models": data.get("models", {}).get(fw)}


def main() -> int:
    stale = 0
    for rep in sorted(ROOT.glob("docs/checks/*/report.json")):
        fw = rep.parent.name
        made = (json.loads(rep.read_text()).get("commit") or "").split("+")[0]
        if not made or subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{made}^{{commit}}"], capture_output=True).returncode:
            print(f"stale: docs/checks/{fw} names no commit of this repository ({made or 'none'}); regenerate: bash scripts/check-reports.sh {fw}")
            stale += 1
            continue
        # What it covers as it is now against what it was then (a change made and undone is no change);
        # rows kept from an earlier report (runner check --keep-measured) against that report's commit
        kept = {(m.get("kept_from") or {}).get("commit") for m in json.loads(rep.read_text()).get("models") or []} - {None, made}
        why = []
        for when in [made, *sorted(c.split("+")[0] for c in kept)]:
            if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{when}^{{commit}}"], capture_output=True).returncode:
                why.append(f"rows kept from {when[:12]}, not a commit of this repository")
                continue
            rows = "" if when == made else f"(rows kept from {when[:12]}) "
            same = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", when, "--", *covers(fw)], capture_output=True).returncode == 0
            why += [] if same else [rows + w for w in git("log", "--format=%h %s", f"{when}..HEAD", "--", *covers(fw)).splitlines()[:5]]
            if registry_tables(git("show", f"{when}:registry.toml"), fw) != registry_tables((ROOT / "registry.toml").read_text(), fw):
                why.append(f"{rows}registry.toml: the {fw} tables changed")
        if why:
            print(f"stale: docs/checks/{fw} was made on {made[:12]}; since then these changed what it covers:")
            print("\n".join(f"  {w}" for w in why))
            print(f"  regenerate: bash scripts/check-reports.sh {fw}")
            stale += 1
        else:
            print(f"current: docs/checks/{fw} (made on {made[:12]}; nothing it covers changed since)")
    if stale:
        print(f"warning: {stale} report(s) stale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
