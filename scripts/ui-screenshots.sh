#!/usr/bin/env bash
# Screenshots of every dashboard page into docs/ui/ (headless Debian chromium, a real root daemon, real jobs
# of a non-root user, rn_alice by default: pass --user NAME; run as root):
#   bash scripts/ui-screenshots.sh
. "$(dirname "$0")/setup.sh"
export HF_HUB_OFFLINE=1
"$PY" scripts/ui_screenshots.py "$@"
