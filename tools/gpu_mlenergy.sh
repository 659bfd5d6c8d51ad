#!/usr/bin/env bash
# Issue 29 item 3 on one lent GPU (docs/validation/gpu-h100-mlenergy/): the ML.ENERGY benchmark's way beside the
# suite's own figures, as users run vLLM (CUDA graphs on, no --enforce-eager): the Llama-3.1-8B shape with dummy
# weights, vLLM's batch bounded at 64 (--max-num-seqs), 512 requests sent at once, each prompt 256 tokens and each
# answer 394 tokens (ML.ENERGY's published H100 figures for Llama-3.1-8B on lm-arena-chat: 46.9 J per response at
# 0.119 J per output token, i.e. 394 tokens a response on average). Read-only towards the GPU: no clock, limit or
# other setting is changed.
# Usage, after the wheel parts' calls (docs/gpu-wheels.md; part-NN copied into /tmp/wheels):
#   tools/gpu_mlenergy.sh OUT     joins and installs vLLM 0.26 into /tmp/site, builds the model's shape, records the
#                                 machine, runs the benchmark; the run folder and the terminal output go into
#                                 OUT/mlenergy-run.tgz, the machine into OUT/machine.txt
# RUN_LIMIT_S bounds pytest (default 420 s): at the limit it gets SIGINT and keeps what it finished.
set -euo pipefail
out=$1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
model=/tmp/llama-3.1-8b-shape
reports=/tmp/reports-mlenergy
python3 tools/gpu_wheels.py join /tmp/wheels
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/wheels/*.whl
[ -d "$model" ] || python3 -m plugin.serving.shape_model configs/llama-3.1-8b "$model"
{
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,power.limit,power.default_limit,clocks.sm,clocks.max.sm,clocks.mem \
    --format=csv
  python3 -c "import torch, vllm; print('torch', torch.__version__, 'vllm', vllm.__version__)"
} 2>&1 | tee "$out/machine.txt"
mkdir -p "$reports"
set +e
timeout -k 30 -s INT "${RUN_LIMIT_S:-420}" python3 -m pytest benchmarks -p plugin.plugin -p no:cacheprovider \
  -W default --reports-dir "$reports" -m "serving and traditional" --gpus 0 --model "$model" \
  --vllm-arg=--load-format=dummy --power-backend nvml --gpu-sample-ms 100 \
  --dataset random --e2e-input-len 256 --e2e-output-len 394 --random-range-ratio 0 \
  --request-rate inf --num-requests 512 --mlenergy-max-num-seqs 64 --min-window-s 0 --rounds 2 \
  --energy-usd-per-kwh 0.12 --pue 1.2 --grid-gco2e-per-kwh 400 --vllm-results \
  2>&1 | tee "$reports/terminal.txt"
echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$reports/terminal.txt"
set -e
tar czf "$out/mlenergy-run.tgz" -C "$reports" .
