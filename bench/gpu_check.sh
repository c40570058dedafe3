#!/usr/bin/env bash
# One-command GPU acceptance check (make gpu-check): on a CUDA machine, offline, in ~8 minutes on an
# H100/H200. Checks, each pass/fail in one summary table:
#   1. builds a same-size random Qwen2-VL-2B (qlora_grpo.tiny ARCHS) and a phantom dataset
#   2. trains 10 GRPO steps through train_qlora_grpo.py (profile rtx_24gb, shortened) with each of
#      lora-bf16 (hf, 16-bit), qlora-hf (hf, NF4), qlora-unsloth (Unsloth, NF4)
#   3. evaluates each adapter with eval.evaluate (base loaded as trained, from run_config.yaml)
#   4. bench/memory_throughput.py for the 2B model, the same three modes, 3 measured steps
#   5. the same benchmark for today's families' same-size models (Qwen3-VL-2B, MedGemma-4B), NF4 hf vs
#      Unsloth, 2 measured steps (GPU_CHECK_FAMILIES="" skips it; GPU_CHECK_FAMILIES="qwen3-vl-4b" picks others)
#   6. the gpu-marked tests (pytest -m gpu)
# Writes OUT/summary.md (+ summary.json, logs/, runs/, bench/). On a CPU machine: an error, exit 2.
#
#   bash bench/gpu_check.sh [OUT]          (default runs/gpu_check/<date>)
# Offline bundle (../shared/gpu-bundle/make_bundle.sh): unpack it to /tmp/site and set
#   PYTHONPATH=/tmp/site  (this script adds the repository root in front); PY=python3 by default
#   when no .venv exists.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# no NVIDIA driver: refuse at once; else ask torch (a CPU-only torch build refuses too)
if ! command -v nvidia-smi > /dev/null || ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: make gpu-check needs a CUDA GPU (no nvidia-smi, or torch.cuda.is_available() is False with $PY); run it on a" \
         "GPU machine (offline: unpack ../shared/gpu-bundle/gpu-site.tar.gz to /tmp/site, PYTHONPATH=/tmp/site)" >&2
    exit 2
fi

OUT=${1:-runs/gpu_check/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs" "$OUT/runs"
WORK=${GPU_CHECK_WORK:-runs/gpu_check/work}   # model + data, reused by later checks
STEPS=${GPU_CHECK_STEPS:-10}
status="$OUT/status.tsv"; : > "$status"

check() {  # check NAME CMD... : run, log, record pass/fail and seconds
    local name=$1; shift
    local t0=$(date +%s)
    echo "== $name"
    if "$@" > "$OUT/logs/$name.log" 2>&1; then rc=0; else rc=$?; fi
    printf '%s\t%s\t%s\n' "$name" "$([ $rc -eq 0 ] && echo pass || echo "FAIL (rc $rc)")" "$(( $(date +%s) - t0 ))" >> "$status"
    tail -n 3 "$OUT/logs/$name.log"
}

MODEL="$WORK/qwen2-vl-2b"
DATA="$WORK/phantoms"
check build-model "$PY" -c "
import sys; from pathlib import Path; from qlora_grpo.tiny import build_arch
p = Path(sys.argv[1])
print(p if (p / 'config.json').is_file() else build_arch(p, 'qwen2-vl-2b', seed=0))" "$MODEL"
check build-data bash -c "[ -f '$DATA/prepare_report.json' ] || { '$PY' -m medvqa_data.phantoms --out '$WORK/phantoms_raw' \
    --n 400 --seed 0 && '$PY' -m medvqa_data.prepare --source omnimedvqa --root '$WORK/phantoms_raw' --out '$DATA' \
    --split modality --overwrite; }"

# mode: backend quantization compute_dtype (as MODES in bench/throughput/workload.py)
declare -A MODES=([lora-bf16]="hf none bfloat16" [qlora-hf]="hf nf4 auto" [qlora-unsloth]="unsloth nf4 auto")
for mode in lora-bf16 qlora-hf qlora-unsloth; do
    read -r backend quant dtype <<< "${MODES[$mode]}"
    run="$OUT/runs/$mode"
    check "train-$mode" "$PY" train_qlora_grpo.py --config configs/rtx_24gb.yaml --model_name_or_path "$MODEL" \
        --data_path "$DATA" --output_dir "$run" --backend "$backend" --quantization "$quant" --compute_dtype "$dtype" \
        --max_steps "$STEPS" --gradient_accumulation_steps 1 --max_completion_length 128 --max_pixels 200704 \
        --logging_steps 1 --save_steps 1000 --report_to none --evaluate_after_training false --resume never
    check "eval-$mode" "$PY" -m eval.evaluate --model "$MODEL" --adapter "$run" --data "$DATA" --split test \
        --limit 64 --batch-size 16 --max-new-tokens 64 --out "$run/eval"
done

check memory-throughput "$PY" bench/memory_throughput.py --models qwen2-vl-2b --modes lora-bf16 qlora-hf qlora-unsloth \
    --warmup-steps 1 --measured-steps 3 --no-fit --out "$OUT/bench" --work-dir "$WORK/bench"
# today's families (qlora_grpo.families): same-size Qwen3-VL-2B and MedGemma-4B, NF4 through transformers and
# through Unsloth, no fit scan. ~3 more minutes (two model builds); GPU_CHECK_FAMILIES="" skips it.
FAMILIES=${GPU_CHECK_FAMILIES-qwen3-vl-2b medgemma-4b}
if [ -n "$FAMILIES" ]; then
    # shellcheck disable=SC2086  # one word per model
    check memory-throughput-families "$PY" bench/memory_throughput.py --models $FAMILIES --modes qlora-hf qlora-unsloth \
        --warmup-steps 1 --measured-steps 2 --no-fit --out "$OUT/bench-families" --work-dir "$WORK/bench"
fi
check gpu-tests "$PY" -m pytest -m gpu -q -p no:cacheprovider

"$PY" bench/gpu_check_summary.py "$OUT"
! grep -q FAIL "$status"
