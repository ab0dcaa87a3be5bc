#!/usr/bin/env bash
# Regenerate the committed plugin validation reports under docs/checks/ (minutes per framework):
#   bash scripts/check-reports.sh [timm] [ultralytics] [transformers] [repos]
. "$(dirname "$0")/setup.sh"
export RUNNER_HOME="${RUNNER_HOME:-$(pwd)/.runner-home/checks}" HF_HUB_OFFLINE=1
for fw in "${@:-timm}"; do
  if [ "$fw" = repos ]; then
    "$PY" -m runner check $("$PY" -m runner models --framework repo --json | "$PY" -c 'import json,sys; print(" ".join(m["ref"] for m in json.load(sys.stdin)))') --out "docs/checks/repos" || true
  else
    "$PY" -m runner check --framework "$fw" --out "docs/checks/$fw" || true
  fi
  rm -rf "docs/checks/$fw/data"
done
