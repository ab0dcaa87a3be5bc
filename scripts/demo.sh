#!/usr/bin/env bash
# The main job: set up, make a small dataset (circles, squares and triangles, each class in its own
# colour, so a model trained from scratch on a CPU learns it in a minute), start the daemon, train
# ResNet-18 (timm) on it through the daemon, follow its log, show its metrics and checkpoint, run inference, stop.
. "$(dirname "$0")/setup.sh"
export RUNNER_HOME="${RUNNER_HOME:-$(pwd)/demo/home}"
mkdir -p demo
[ -d demo/shapes ] || "$PY" -m runner.synth shapes demo/shapes --per-class 30 --val-per-class 10 --easy >/dev/null  # made once; synth writes only into a new folder
cat > demo/job.yaml <<'YAML'
name: shapes-resnet18
model: timm/resnet18
dataset: {path: shapes, format: imagefolder}
train: {epochs: 6, batch_size: 16, lr: 0.003, input_size: 64, pretrained: false}
resources: {gpus: 0}
YAML
RUNNER=("$PY" -m runner)
"${RUNNER[@]}" daemon --http 127.0.0.1:${RUNNER_DEMO_PORT:-8765} >demo/daemon.log 2>&1 &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null || true' EXIT
ID="$("${RUNNER[@]}" submit demo/job.yaml)"
echo "submitted $ID (the first run builds the timm env with uv: a minute or so)"
for _ in $(seq 20); do LINK="$("${RUNNER[@]}" web-login 2>/dev/null)" && break; LINK="(runner web-login)"; sleep 0.5; done
echo "watch it live in the dashboard while it runs (a one-time sign-in link): $LINK"
"${RUNNER[@]}" logs -f "$ID"
"${RUNNER[@]}" show "$ID"
"${RUNNER[@]}" infer "$ID" demo/shapes/val/circle/circle_000.png
STATE="$("${RUNNER[@]}" show "$ID" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])')"
"$PY" - "$ID" <<'PY'
import json, subprocess, sys
rows = json.loads(subprocess.run([sys.executable, "-m", "runner", "metrics", sys.argv[1], "--name", "val_accuracy", "--json"],
                                 capture_output=True, text=True).stdout or "{}")
vals = [p["value"] for p in rows.get("series", {}).get("val_accuracy", [])]
if vals:
    print(f"validation accuracy by epoch: {' '.join(f'{v:.2f}' for v in vals)} (chance: 0.33)")
PY
echo "the dashboard stopped with the demo's daemon; to look again: RUNNER_HOME=$RUNNER_HOME $PY -m runner daemon --http 127.0.0.1:${RUNNER_DEMO_PORT:-8765} & then $PY -m runner web-login"
[ "$STATE" = succeeded ]
