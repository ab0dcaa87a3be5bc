#!/usr/bin/env bash
# The committed plugin validation reports under docs/checks/ (minutes per framework):
#   bash scripts/check-reports.sh [timm] [ultralytics] [transformers] [repos]   regenerate them
#   bash scripts/check-reports.sh --stale                                       list the stale ones
#   bash scripts/check-reports.sh --keep-measured FW...   keep each row the committed report measured
#       (passed, same check table) and run only what it lacks (controls, failed or changed models):
#       runner check --reuse docs/checks/FW/report.json --keep-measured; the report names what it kept
#   bash scripts/check-reports.sh --keep-measured --rerun MODEL [--rerun MODEL...] FW   the same, these trained again
# A report is stale when a commit after the one it names changed what it covers: the framework's
# adapter, translator, env, the parsers, its tables in the registry, or the check itself
# (scripts/stale_reports.py). --stale warns (exit 0): regenerating takes many minutes and needs the
# repos' snapshots, so CI does not fail on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = "--stale" ]; then
  exec "$(command -v python3.11 || command -v python3)" scripts/stale_reports.py
fi

keep=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep-measured) keep+=(--keep-measured); shift ;;
    --rerun) keep+=(--rerun "$2"); shift 2 ;;   # with --keep-measured: this model trains again
    *) break ;;
  esac
done

. scripts/setup.sh
export RUNNER_HOME="${RUNNER_HOME:-$(pwd)/.runner-home/checks}" HF_HUB_OFFLINE=1
for fw in "${@:-timm}"; do
  export RUNNER_CHECK_COMMAND="bash scripts/check-reports.sh ${keep[*]:+${keep[*]} }$fw"
  reuse=()
  if [ ${#keep[@]} -gt 0 ] && [ -f "docs/checks/$fw/report.json" ]; then
    cp "docs/checks/$fw/report.json" "docs/checks/$fw/.kept-from.json"  # (the report it replaces, read before it is written)
    reuse=(--reuse "docs/checks/$fw/.kept-from.json" "${keep[@]}")
  fi
  if [ "$fw" = repos ]; then
    "$PY" -m runner check $("$PY" -m runner models --framework repo --json | "$PY" -c 'import json,sys; print(" ".join(m["ref"] for m in json.load(sys.stdin)))') --out "docs/checks/repos" --timeout 21600 "${reuse[@]}" || true
  else
    "$PY" -m runner check --framework "$fw" --out "docs/checks/$fw" --timeout 21600 "${reuse[@]}" || true
  fi
  rm -rf "docs/checks/$fw/data" "docs/checks/$fw/.kept-from.json"  # (after its jobs: runner check waits up to 6 h; 1 h was too short for timm's 26 jobs under load)
  # a repo fetched from a local snapshot names its folder in error lines: keep this machine's folders out
  sed -i -E 's#file://(/[^ )"\\]*)?/([^/ )"\\]+/repo)#file:///.../\2#g' "docs/checks/$fw/report.md" "docs/checks/$fw/report.json" 2>/dev/null || true
done
