#!/usr/bin/env bash
# The committed plugin validation reports under docs/checks/ (minutes per framework):
#   bash scripts/check-reports.sh [timm] [ultralytics] [transformers] [repos]   regenerate them
#   bash scripts/check-reports.sh --stale                                       list the stale ones
# A report is stale when a commit after the one it names changed what it covers: the framework's
# adapter, translator, env, the parsers, the registry, or the check itself. --stale warns (exit 0):
# regenerating takes many minutes and needs the repos' snapshots, so CI does not fail on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

covers() {  # the paths a framework's report depends on
  local common="adapters/base.py adapters/__main__.py log_parsers registry.toml runner/check.py runner/checkdata.py runner/synth.py runner/synth_tasks.py runner/cli/check_cmd.py"
  case "$1" in
    repos) echo "$common config_translators/repo.py config_translators/datasets.py config_translators/dataset_formats.py runner/repos.py envs/base" ;;
    *) echo "$common adapters/$1_adapter.py adapters/schemas/$1.json config_translators/$1.py config_translators/datasets.py envs/$1 envs/base" ;;
  esac
}

if [ "${1:-}" = "--stale" ]; then
  stale=0
  for dir in docs/checks/*/; do
    fw="$(basename "$dir")"
    rep="$dir/report.json"
    [ -f "$rep" ] || continue
    made="$(python3 -c 'import json,sys; print((json.load(open(sys.argv[1])).get("commit") or "").split("+")[0])' "$rep")"
    if [ -z "$made" ] || ! git cat-file -e "$made^{commit}" 2>/dev/null; then
      echo "stale: docs/checks/$fw names no commit of this repository (${made:-none}); regenerate: bash scripts/check-reports.sh $fw"
      stale=$((stale + 1)); continue
    fi
    # shellcheck disable=SC2046
    changed="$(git log --format='%h %s' "$made..HEAD" -- $(covers "$fw") | head -5)"
    if [ -n "$changed" ]; then
      echo "stale: docs/checks/$fw was made on ${made:0:12}; since then these commits changed what it covers:"
      echo "$changed" | sed 's/^/  /'
      echo "  regenerate: bash scripts/check-reports.sh $fw"
      stale=$((stale + 1))
    else
      echo "current: docs/checks/$fw (made on ${made:0:12}; nothing it covers changed since)"
    fi
  done
  [ "$stale" -eq 0 ] || echo "warning: $stale report(s) stale"
  exit 0
fi

. scripts/setup.sh
export RUNNER_HOME="${RUNNER_HOME:-$(pwd)/.runner-home/checks}" HF_HUB_OFFLINE=1
for fw in "${@:-timm}"; do
  export RUNNER_CHECK_COMMAND="bash scripts/check-reports.sh $fw"
  if [ "$fw" = repos ]; then
    "$PY" -m runner check $("$PY" -m runner models --framework repo --json | "$PY" -c 'import json,sys; print(" ".join(m["ref"] for m in json.load(sys.stdin)))') --out "docs/checks/repos" || true
  else
    "$PY" -m runner check --framework "$fw" --out "docs/checks/$fw" || true
  fi
  rm -rf "docs/checks/$fw/data"
  # a repo fetched from a local snapshot names its folder in error lines: keep this machine's folders out
  sed -i -E 's#file://(/[^ )"\\]*)?/([^/ )"\\]+/repo)#file:///.../\2#g' "docs/checks/$fw/report.md" "docs/checks/$fw/report.json" 2>/dev/null || true
done
