#!/usr/bin/env bash
# The CUDA paths that a CPU-only CI never runs, in one short script for a machine with a GPU.
#
#   bash benchmarks/cuda_check.sh           # about 3-4 minutes on one H100/H200; results in $OUT
#   python benchmarks/gpu.py --json "$OUT/gpu.json"   # the speed table, separately (5-7 minutes)
#
# Each step has its own time limit and its own log, and a failing step does not stop the others:
# $OUT/summary.txt lists every step with its exit code and seconds. Needs the package importable
# (pip install -e . --no-deps, plus platformdirs where it is missing).
set -u
OUT=${OUT:-./cuda-check-out}
mkdir -p "$OUT"
export TUNEASSIST_HOME="$OUT/ws" PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-22s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" | tee -a "$SUMMARY"
    tail -n 4 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
}

step env 60 python -c "
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('device', torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())
"
step devices_panel 30 python -c "
from tuneassist.hardware import describe, read_devices
r = read_devices(); print(r.source); print(*describe(r), sep='\n')
"
# bf16 + channels_last is the engine's default on CUDA; fp32 for comparison.
step train_bf16_cl 150 tuneassist train --data synthetic:20000 --model resnet20 --device cuda \
    --schedule onecycle --lr 0.1:1 --epochs 3 --batch-size 512 --json
step train_fp32 120 tuneassist train --data synthetic:20000 --model resnet20 --device cuda \
    --schedule onecycle --lr 0.1:1 --epochs 3 --batch-size 512 --no-bf16 --no-channels-last --json
step train_compile 240 tuneassist train --data synthetic:20000 --model resnet20 --device cuda \
    --schedule onecycle --lr 0.1:1 --epochs 3 --batch-size 512 --compile --json
step lr_find 150 tuneassist lr-find --data synthetic --model resnet56 --device cuda --json
step probe 150 python -m tuneassist.engine.probe --model resnet56 --data synthetic --device cuda --json
step oom_injected 120 env TUNEASSIST_FAKE_OOM_ABOVE=256 python -m tuneassist.engine.probe \
    --model resnet20 --data synthetic --device cuda --json
# Two background runs, one GPU slot: the second is handed to the standby worker (torch loaded while the
# first trained; it picks its GPU by index, not by CUDA_VISIBLE_DEVICES).
step background_runs 180 env TUNEASSIST_MAX_PER_DEVICE=1 bash -c '
    for lr in 0.1 0.2; do tuneassist train --data synthetic:5000 --model resnet20 --device cuda --epochs 2 \
        --lr $lr --background || exit 1; done;
    for _ in $(seq 150); do tuneassist runs --json | grep -q "\"status\": \"running\"\|\"status\": \"queued\"" || break; sleep 1; done;
    tuneassist runs; cat "$TUNEASSIST_HOME/standby.log"; grep -h "on cuda\|start:" "$TUNEASSIST_HOME"/runs/*/worker.log'
step packing_memory 120 python benchmarks/gpu_memory.py --json "$OUT/gpu_memory.json"
step torchrun_1 150 torchrun --standalone --nproc-per-node 1 -m tuneassist.cli.main train --device cuda \
    --data synthetic:5000 --model resnet20 --epochs 1 --batch-size 256
echo "done: $SUMMARY"
