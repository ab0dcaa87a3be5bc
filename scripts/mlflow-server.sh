#!/usr/bin/env bash
# A local MLflow tracking server for development and the tests, in its own uv-built venv
# (.mlflow-venv: MLflow's server and its dependencies never enter runner's environment).
#   bash scripts/mlflow-server.sh venv              build the venv; print its mlflow executable
#   bash scripts/mlflow-server.sh start DIR PORT    serve DIR/mlflow.db (SQLite) and DIR/artifacts
#                                                   on 127.0.0.1:PORT in the foreground
# A job of a site whose config says `[mlflow] tracking_uri = "http://127.0.0.1:PORT"` is mirrored there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
VENV="${MLFLOW_VENV:-$(pwd)/.mlflow-venv}"
build() {
  if [ ! -x "$VENV/bin/mlflow" ] || ! grep -qx "$MLFLOW_VERSION" "$VENV/.version" 2>/dev/null; then
    . scripts/setup.sh >/dev/null
    UV="$(dirname "$PY")/uv"
    "$UV" venv -q --clear --python "$BASE_PY" "$VENV"
    "$UV" pip install -q --python "$VENV/bin/python" --compile-bytecode "mlflow==$MLFLOW_VERSION"
    echo "$MLFLOW_VERSION" > "$VENV/.version"
  fi
}
case "${1:-}" in
  venv) build >&2; echo "$VENV/bin/mlflow" ;;
  start)
    dir="${2:?DIR}"; port="${3:?PORT}"; build >&2; mkdir -p "$dir/artifacts"
    exec "$VENV/bin/mlflow" server --backend-store-uri "sqlite:///$(cd "$dir" && pwd)/mlflow.db" \
      --artifacts-destination "$(cd "$dir" && pwd)/artifacts" --host 127.0.0.1 --port "$port" --workers 1 ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
