#!/usr/bin/env bash
# Issue 15 on lent GPUs (docs/validation/gpu-h100x4-topologies/): run after tools/gpu_wheels.py has installed
# vLLM 0.26 and Quart into /tmp/site (docs/gpu-wheels.md). Read-only towards the GPUs (no clock or limit set).
# Usage: tools/gpu_topologies.sh STEP OUT, one step a call:
#   ucx             the NixlConnector hand-off of 2048-token prompts with two instances on one GPU (started one
#                   after the other): cuda_ipc's GET zero-copy forced on, then off; UCX's choices logged
#   ucx-default     one run of the same on one GPU with the suite's own UCX settings (on the one-H100 machine);
#                   with UCX_CUDA_IPC_ENABLE_GET_ZCOPY=auto exported, with UCX's own default instead
#   ucx-two-gpus    the same across GPUs 0 and 1 (the baseline; 30.3 ms on 4 H200s, 2026-11-27)
#   topologies-a/b  dp:4 and 2p2d / 1p3d and 3p1d on GPUs 0-3: serving, 4 offered rates, goodput targets; one
#                   --seed, so both calls meet the same requests at the same times (the load never depends on
#                   the topology); then `python -m plugin.results.merge OUT RUN_A RUN_B && python -m plugin.report OUT`
#                   compares all four in one report
#   topologies-3p1d 3p1d alone, same --seed (merge it only with runs of the same machine and boot: merge joins power
#                   samples by time)
#   topologies-2gpu dp:2 and 1p1d on GPUs 0-1 (the fallback where only two GPUs are lent)
set -euo pipefail
step=$1
out=$2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# NVLink multicast stays off on the shared multi-GPU machines (device KINDS.md); every server inherits these.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$out/reports"
model=/tmp/llama-3.1-8b-shape
[ -d "$model" ] || python3 -m plugin.serving.shape_model configs/llama-3.1-8b "$model"
# Dummy weights and eager mode: every topology starts in well under a minute, so all of them fit one call.
# SIGINT at the limit (SIGKILL 30 s later): pytest stops its servers and keeps what it measured, and the archive
# below is still made within the device's 600 s per call.
limit_s=480
[ "$step" = ucx ] && limit_s=240  # two runs in one call
[ "$step" = ucx-default ] && limit_s=${UCX_LIMIT_S:-240}  # one run, within what device time is left
pytest=(timeout -k 30 -s INT "$limit_s" python3 -m pytest benchmarks -p plugin.plugin -p no:cacheprovider -W default --reports-dir "$out/reports"
        --model "$model" --vllm-arg=--load-format=dummy --vllm-arg=--enforce-eager --kv-connector nixl
        --gpu-sample-ms 100)
handoff=(-m "disaggregated and prefill" --topologies disaggregated --input-lens 2048 --concurrency 1
         --num-requests 8 --min-window-s 0)
serving=(-m serving --dataset random --e2e-input-len 2048 --e2e-output-len 128 --random-range-ratio 0.5
         --request-rate 4,12,24,48 --duration-s 9 --warmup-s 1 --goodput ttft:500 tpot:50 --seed 15)
case $step in
  ucx)
    # UCX turns cuda_ipc's GET zero-copy off by itself ("auto") where GPU 0 has no NVLink (the one-H100 machine);
    # `n` forces that path here, `y` the one auto takes on an NVLink machine: the same GPU, both ways
    UCX_PROTO_INFO=y UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y "${pytest[@]}" "${handoff[@]}" --prefill-gpus 0 --decode-gpus 0 \
      --reports-dir "$out/reports/get-zcopy-y" 2>&1 | tee "$out/ucx-one-gpu-get-zcopy-y.txt" || true
    UCX_PROTO_INFO=y UCX_CUDA_IPC_ENABLE_GET_ZCOPY=n "${pytest[@]}" "${handoff[@]}" --prefill-gpus 0 --decode-gpus 0 \
      --reports-dir "$out/reports/get-zcopy-n" 2>&1 | tee "$out/ucx-one-gpu-get-zcopy-n.txt" || true ;;
  ucx-default)
    UCX_PROTO_INFO=y "${pytest[@]}" "${handoff[@]}" --prefill-gpus 0 --decode-gpus 0 \
      --reports-dir "$out/reports/default" 2>&1 | tee "$out/ucx-one-gpu-default.txt" || true ;;
  ucx-two-gpus)
    UCX_PROTO_INFO=y "${pytest[@]}" "${handoff[@]}" --prefill-gpus 0 --decode-gpus 1 2>&1 | tee "$out/ucx-two-gpus.txt" || true ;;
  topologies-a)
    "${pytest[@]}" "${serving[@]}" --gpus 0,1,2,3 --topologies dp:4,2p2d 2>&1 | tee "$out/topologies-a.txt" || true ;;
  topologies-b)
    "${pytest[@]}" "${serving[@]}" --gpus 0,1,2,3 --topologies 1p3d,3p1d 2>&1 | tee "$out/topologies-b.txt" || true ;;
  topologies-3p1d)
    "${pytest[@]}" "${serving[@]}" --gpus 0,1,2,3 --topologies 3p1d 2>&1 | tee "$out/topologies-3p1d.txt" || true ;;
  topologies-2gpu)
    "${pytest[@]}" "${serving[@]}" --gpus 0,1 --topologies dp:2,1p1d 2>&1 | tee "$out/topologies-2gpu.txt" || true ;;
esac
# The protocol UCX chose for the KV reads (the transfer's table, about 1,100 lines into decode's log).
for log in "$out"/reports/*/decode0.log "$out"/reports/*/*/decode0.log; do [ -f "$log" ] && grep -B2 -A4 "remote memory read" "$log" \
  > "$(dirname "$log")/ucx-decode-protocols.txt" || true; done
# Every run folder, with its report, in one archive (the device tool brings back at most 8 files).
tar czf "$out/$step-reports.tgz" -C "$out/reports" .
rm -rf "$out/reports"
