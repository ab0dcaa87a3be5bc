#!/usr/bin/env bash
# Set up and run the whole test suite (the framework tests build real uv envs: minutes).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick ones.
. "$(dirname "$0")/setup.sh"
export HF_HUB_OFFLINE=1
exec "$PY" -m pytest "$@"
