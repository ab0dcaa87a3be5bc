#!/usr/bin/env bash
# The main job: set up, make a small dataset, start the daemon, train ResNet-18 (timm) on it
# through the daemon, follow its log, show its metrics and checkpoint, run inference, stop.
. "$(dirname "$0")/setup.sh"
export RUNNER_HOME="${RUNNER_HOME:-$(pwd)/demo/home}"
mkdir -p demo
[ -d demo/shapes ] || "$PY" -m runner.synth shapes demo/shapes >/dev/null  # made once; synth writes only into a new folder
cat > demo/job.yaml <<'YAML'
name: shapes-resnet18
model: timm/resnet18
dataset: {path: shapes, format: imagefolder}
train: {epochs: 3, batch_size: 8, lr: 0.005, input_size: 64, pretrained: false}
resources: {gpus: 0}
YAML
RUNNER=("$PY" -m runner)
"${RUNNER[@]}" daemon --http 127.0.0.1:${RUNNER_DEMO_PORT:-8765} >demo/daemon.log 2>&1 &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null || true' EXIT
ID="$("${RUNNER[@]}" submit demo/job.yaml)"
echo "submitted $ID (the first run builds the timm env with uv: a minute or so)"
"${RUNNER[@]}" logs -f "$ID"
"${RUNNER[@]}" show "$ID"
"${RUNNER[@]}" infer "$ID" demo/shapes/val/circle/circle_000.png
STATE="$("${RUNNER[@]}" show "$ID" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])')"
[ "$STATE" = succeeded ]
