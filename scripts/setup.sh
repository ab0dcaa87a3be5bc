# Sourced: make .venv with runner installed (editable) and its test extras; set PY to its python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BASE_PY="$(command -v python3.11 || command -v python3)"
BASE_PY="$("$BASE_PY" -c 'import sys; print(sys.executable)')"  # the real path, not a shim
if [ ! -x .venv/bin/python ]; then "$BASE_PY" -m venv .venv; fi
PY="$(pwd)/.venv/bin/python"
# compat: a plain path in a .pth, not an import hook that costs every interpreter ~10 ms at start
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
# Bytecode for runner's own modules: with PYTHONDONTWRITEBYTECODE set (as on some machines) every
# `runner` command would otherwise compile them again (~15 ms of `runner submit`).
"$PY" -m compileall -q runner adapters config_translators log_parsers >/dev/null
PY="$PY" . scripts/uv-from-pip.sh
export PY
