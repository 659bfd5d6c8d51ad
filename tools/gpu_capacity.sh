#!/usr/bin/env bash
# Issue 25, item 6: the capacity search as a user runs it, on lent GPUs. vLLM with compilation and CUDA graphs (no
# --enforce-eager), dummy weights of the Llama-3.1-8B shape, random 1024-token prompts and 128-token outputs, Poisson
# arrivals, --goodput ttft:200 tpot:20, then the shared grid up to the largest capacity. Read-only towards the GPU:
# no clock, limit or other setting is changed.
# Usage: tools/gpu_capacity.sh STEP OUT, one step a call:
#   setup    after the wheel parts' calls (docs/gpu-wheels.md; part-NN copied into /tmp/wheels): join, install vLLM
#            into /tmp/site, build the Llama-3.1-8B shape, record the machine and the versions (as gpu_accounting.sh)
#   search   start the search, or go on with it (--resume) from its run folder: repeat the step, one device call
#            each, until its terminal output ends with the answer and no probe or grid point is left to measure.
#            Each call archives the run folder and the terminal output into OUT/capacity-run.tgz.
# The run folder lives in /tmp/capacity-reports (kept while the machine stays warm). On a fresh machine, give the last
# archive back (copy it into the checkout, an ignored path, and name it in run's carry) as CAPACITY_ARCHIVE=PATH:
# the search goes on from the probes it holds. GPUS=1 (default): traditional against prefill and decode sharing
# GPU 0 (the default pair); GPUS=2: dp:2 against 1p1d on GPUs 0,1. RUN_LIMIT_S bounds pytest (default 540 s): at the
# limit it gets SIGINT and keeps every benchmark it finished, so the archive is still made within the device's
# 600 s per call; a probe cut mid-round is measured again by the next call. DURATION_S (30), WARMUP_S (5),
# GRID (3 shared rates), ROUNDS (3 per grid rate; probes take one), MAX_PROBES (6), RESOLUTION (10%) tune it. A
# steady-state probe counts rate x (DURATION_S - WARMUP_S) requests: below 35 (1.4 req/s here) it cannot show 90 %.
# The answer's device time is the probes' wall time; server starts and the grid come on top.
set -euo pipefail
step=$1
out=$2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
model=/tmp/llama-3.1-8b-shape
reports=/tmp/capacity-reports
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
  search)
    mkdir -p "$reports"
    if [ ! -f "$reports/CURRENT" ] && [ -n "${CAPACITY_ARCHIVE:-}" ]; then
      mkdir -p "$reports/resumed"
      tar xzf "$CAPACITY_ARCHIVE" -C "$reports/resumed"
      echo "$reports/resumed" > "$reports/CURRENT"
    fi
    if [ "${GPUS:-1}" = 2 ]; then
      topology=(--gpus 0,1 --topologies dp:2,1p1d)
    else
      topology=(--gpus 0 --topologies traditional,disaggregated --prefill-gpus 0 --decode-gpus 0)
    fi
    resume=()
    [ -f "$reports/CURRENT" ] && resume=(--resume "$(cat "$reports/CURRENT")")
    set +e
    timeout -k 30 -s INT "${RUN_LIMIT_S:-540}" python3 -m pytest benchmarks -p plugin.plugin -p no:cacheprovider \
      -W default --reports-dir "$reports" -m serving "${topology[@]}" --model "$model" \
      --vllm-arg=--load-format=dummy --power-backend nvml --gpu-sample-ms 100 \
      --dataset random --e2e-input-len 1024 --e2e-output-len 128 --random-range-ratio 0 --burstiness 1 \
      --duration-s "${DURATION_S:-30}" --warmup-s "${WARMUP_S:-5}" --goodput ttft:200 tpot:20 \
      --request-rate "capacity:${GRID:-3}" --max-probes "${MAX_PROBES:-6}" --capacity-resolution "${RESOLUTION:-10%}" \
      --rounds "${ROUNDS:-3}" --seed 1 "${resume[@]}" 2>&1 | tee "$reports/terminal.txt"
    echo "pytest exit status: ${PIPESTATUS[0]}" | tee -a "$reports/terminal.txt"
    set -e
    if [ ! -f "$reports/CURRENT" ]; then  # the first call: its run folder is the only one
      find "$reports" -mindepth 1 -maxdepth 1 -type d ! -name resumed | head -n 1 > "$reports/CURRENT"
    fi
    run=$(cat "$reports/CURRENT")
    cp "$reports/terminal.txt" "$run/terminal-$(date -u +%H%M%S).txt"
    # One archive per call (the device tool brings back at most 8 files).
    tar czf "$out/capacity-run.tgz" -C "$run" . ;;
  *)
    echo "unknown step $step" >&2
    exit 2 ;;
esac
