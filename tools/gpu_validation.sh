#!/usr/bin/env bash
# The suite on the lent H100 (docs/validation/gpu-h100/): run after tools/gpu_wheels.py has installed vLLM 0.26
# and Quart into /tmp/site (docs/gpu-wheels.md). Read-only towards the GPU: the DVFS part is a dry run.
# Usage: tools/gpu_validation.sh traditional|disaggregated|disaggregated-2gpu|dry-run|energy-run|energy-compare OUT
# energy-run keeps its run under /tmp/energy (kept while the machine stays warm); run it twice, then
# energy-compare writes the two runs' repeatability table (docs/validation/gpu-h100-energy/).
set -euo pipefail
step=$1
out=$2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# NVLink multicast stays off on the shared multi-GPU machines (device KINDS.md); every server inherits these.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$out/reports"
pytest=(python3 -m pytest benchmarks -p plugin.plugin -p no:cacheprovider -W default --reports-dir "$out/reports")
sizes=(--input-lens 512,2048 --output-lens 128 --decode-prompt-len 32 --e2e-input-len 1024 --e2e-output-len 128
       --concurrency 1,8 --num-requests 16 --gpu-sample-ms 100)
model=/tmp/llama-3.1-8b-shape
[ -d "$model" ] || python3 -m plugin.serving.shape_model configs/llama-3.1-8b "$model"
case $step in
  dry-run)
    "${pytest[@]}" --sm-clocks 900:1980:180,1410 --power-limits 400,700 --dvfs-dry-run --model "$model" \
      2>&1 | tee "$out/dvfs-dry-run.txt" ;;
  traditional)
    "${pytest[@]}" -m traditional --model "$model" --vllm-arg=--load-format=dummy "${sizes[@]}" \
      2>&1 | tee "$out/traditional.txt" ;;
  disaggregated)
    "${pytest[@]}" -m disaggregated --kv-connector nixl --model "$model" --vllm-arg=--load-format=dummy \
      "${sizes[@]}" 2>&1 | tee "$out/disaggregated.txt" ;;
  energy-run)
    mkdir -p /tmp/energy
    "${pytest[@]}" -m "traditional and not serving" --model "$model" --vllm-arg=--load-format=dummy "${sizes[@]}" \
      --reports-dir /tmp/energy 2>&1 | tee "$out/energy-run-$(ls /tmp/energy | grep -c -- -).txt"
    cp -r /tmp/energy/. "$out/reports/" ;;
  energy-compare)
    runs=(/tmp/energy/*-*/)
    python3 tools/energy_repeatability.py "${runs[0]}" "${runs[1]}" --out "$out/repeatability.md"
    cp -r /tmp/energy/. "$out/reports/" ;;
  disaggregated-2gpu)
    "${pytest[@]}" -m disaggregated --kv-connector nixl --prefill-gpus 0 --decode-gpus 1 --model "$model" \
      --vllm-arg=--load-format=dummy "${sizes[@]}" 2>&1 | tee "$out/disaggregated-2gpu.txt" ;;
esac
# Every run folder, with its report, in one archive (the device tool brings back at most 8 files).
tar czf "$out/$step-reports.tgz" -C "$out/reports" .
rm -rf "$out/reports"
