#!/usr/bin/env bash
# Issue 23, item 10 on one lent H200 (docs/validation/gpu-h200-graphs/): the serving benchmark as users run vLLM,
# with compilation and CUDA graphs (no --enforce-eager), 3 rounds at a rate below and one past saturation.
# Read-only towards the GPU: no clock, limit or other setting is changed.
# Usage: tools/gpu_accounting.sh STEP OUT, one step a call:
#   setup       after the wheel parts' calls (docs/gpu-wheels.md; part-NN copied into /tmp/wheels): join, install
#               vLLM 0.26 into /tmp/site, build the Llama-3.1-8B shape, record the machine and the versions
#   run1, run2  the serving run with --seed 1 / --seed 2; each run folder (results.json, requests-*.jsonl,
#               power_gpu*.csv, server.log, report) and the terminal output go into OUT/run-seedN.tgz
# RUN_LIMIT_S bounds pytest (default 540 s): at the limit it gets SIGINT, stops its server and keeps the tests it
# finished (SIGKILL 30 s later; a test cut in a round keeps none of its rounds), so the archive is still made within
# the device's 600 s per call. RATES overrides the offered rates (default 8,96), e.g. to redo one rate.
# Seen 2026-12-02: the first server start took 208 s (cold compilation cache; 55 s warm) and a 96 req/s round about
# 65 s with its drain, so setup and run1 together did not fit one call: give setup a call of its own.
set -euo pipefail
step=$1
out=$2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
model=/tmp/llama-3.1-8b-shape
case $step in
  setup)
    python3 tools/gpu_wheels.py join /tmp/wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/wheels/*.whl
    [ -d "$model" ] || python3 -m plugin.serving.shape_model configs/llama-3.1-8b "$model"
    {
      nvidia-smi
      nvidia-smi --query-gpu=name,driver_version,power.limit,power.default_limit,clocks.sm,clocks.max.sm,clocks.mem \
        --format=csv
      uname -r
      python3 -c "import torch, vllm; print('torch', torch.__version__, 'vllm', vllm.__version__)"
    } 2>&1 | tee "$out/machine.txt" ;;
  run1|run2)
    seed=${step#run}
    reports=/tmp/reports-seed$seed
    mkdir -p "$reports"
    set +e
    timeout -k 30 -s INT "${RUN_LIMIT_S:-540}" python3 -m pytest benchmarks -p plugin.plugin -p no:cacheprovider \
      -W default --reports-dir "$reports" -m "serving and traditional" --gpus 0 --model "$model" \
      --vllm-arg=--load-format=dummy --power-backend nvml --gpu-sample-ms 100 \
      --dataset random --e2e-input-len 1024 --e2e-output-len 128 --random-range-ratio 0 \
      --request-rate "${RATES:-8,96}" --duration-s 20 --warmup-s 3 --goodput ttft:200 tpot:20 --rounds 3 --seed "$seed" \
      2>&1 | tee "$reports/terminal.txt"
    echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$reports/terminal.txt"
    set -e
    # One archive per run (the device tool brings back at most 8 files).
    tar czf "$out/run-seed$seed.tgz" -C "$reports" . ;;
  *)
    echo "unknown step $step" >&2
    exit 2 ;;
esac
