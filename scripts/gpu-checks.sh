#!/usr/bin/env bash
# The checks that need a real GPU, in one run with a time budget, for a machine with an NVIDIA GPU,
# its driver and a Python that already has torch, timm and transformers (a lent GPU box with no
# package index: runner's own dependencies come as wheels in .whl/, see docs/gpu/README.md).
#
#   bash scripts/gpu-checks.sh OUT_DIR [BUDGET_SECONDS]
#
# 1. the NVML and GPU tests (tests/test_nvml.py, test_gpus.py, test_inventory_contract.py) and the
#    out-of-memory retry against a real CUDA OOM (tests/test_gpu_oom.py), jobs in this interpreter;
# 2. `runner check` of every timm model on the GPU at its usual input size (224), each with its
#    shuffled-label control, then of three Transformers models while the budget lasts (the
#    framework envs are this interpreter: a site registry sets them to `system`). What the budget
#    does not reach is cancelled and its report says so.
# OUT_DIR gets: gpu.txt (the machine), tests.log, timm.{md,json}, transformers.{md,json}, daemon.log.
set -u
out="$1"; budget="${2:-540}"
t0=$(date +%s)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RUNNER_TEST_GPU_ENV=system
# into the interpreter's own environment: the tests and the daemon start runner with PYTHONPATH set
# to the checkout alone, so a --target folder on PYTHONPATH would not reach them
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl 2>&1 | tail -3
fi
export PYTHONPATH="$(pwd)"
"$PY" -c 'import fastapi, pydantic, sqlite_utils, watchfiles, uvicorn, multipart' || { echo "runner's dependencies are missing"; exit 1; }
mkdir -p "$out"
{ nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
  "$PY" -c 'import sys, torch, timm, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__, "transformers", transformers.__version__)'
  nproc; free -g | sed -n 2p; git log -1 --format='commit %H'; } > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
left() { echo $(( budget - ($(date +%s) - t0) )); }

timeout 240 "$PY" -m pytest -q -rA -s -p no:cacheprovider tests/test_nvml.py tests/test_gpus.py \
  tests/test_inventory_contract.py tests/test_gpu_oom.py > "$out/tests.log" 2>&1
echo "tests: exit $? after $(( $(date +%s) - t0 ))s"; tail -3 "$out/tests.log"

home=/tmp/runner-gpu-checks
rm -rf "$home"; mkdir -p "$home"
printf '[frameworks.timm]\nenv = "system"\n[frameworks.transformers]\nenv = "system"\n' > "$home/registry.toml"
check() {  # check NAME SECONDS MODELS...: runner check on the GPU, its report into OUT as NAME.{md,json}
  local name="$1" secs="$2"; shift 2
  RUNNER_CHECK_COMMAND="bash scripts/gpu-checks.sh (runner check $* --gpus 1 --input-size usual)" \
    timeout $(( secs + 90 )) "$PY" -m runner check --home "$home" "$@" --gpus 1 --input-size usual \
    --out "$home/$name" --timeout "$secs" > "$home/$name.out" 2>&1
  echo "$name: exit $? after $(( $(date +%s) - t0 ))s"
  cp "$home/$name/report.md" "$out/$name.md" 2>/dev/null; cp "$home/$name/report.json" "$out/$name.json" 2>/dev/null
  grep -E "models passed|^report:" "$home/$name.out"
}
check timm $(( $(left) - 70 )) --framework timm
[ "$(left)" -gt 150 ] && check transformers $(( $(left) - 70 )) \
  transformers/nvidia/segformer-b0-finetuned-ade-512-512 transformers/google/vit-base-patch16-224 \
  transformers/facebook/deit-base-distilled-patch16-224 transformers/facebook/detr-resnet-50 \
  transformers/Salesforce/blip-image-captioning-base
{ for f in "$home"/*.out; do echo "== $f"; tail -40 "$f"; done; echo "== daemon"; tail -60 "$home/check-daemon.log"; } > "$out/daemon.log" 2>&1
echo "done after $(( $(date +%s) - t0 ))s"
