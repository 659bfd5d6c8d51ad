"""Writes ``before.txt`` and ``after.txt``: ``/metrics`` text as vLLM 0.32 serves it, made by vLLM's own
``PrometheusStatLogger`` (two engine cores, no engine started) fed known requests, then cut to the families the
tests read. Run with the interpreter that has vLLM: ``python tests/data/vllm-metrics/capture.py MODEL_DIR``.

before: request A finished on engine 0. after: also B on engine 0 and C on engine 1. Per request (seconds):
queue, prefill, decode (inference = prefill + decode), e2e, ttft; prompt and output tokens; one engine step each.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REQUESTS = {  # name: (engine, queue, prefill, decode, e2e, ttft, prompt tokens, output tokens)
    "A": (0, 0.25, 0.125, 0.5, 1.0, 0.375, 100, 8),
    "B": (0, 0.5, 0.25, 1.0, 2.0, 0.75, 200, 16),
    "C": (1, 0.0625, 0.5, 2.0, 3.0, 0.5625, 300, 32),
}
GAP_S = 0.0625
"""Every inter-token gap: a request with n output tokens adds n - 1 of them."""
KEPT = (
    "python_gc_objects_collected",
    "process_cpu_seconds",
    "vllm:num_requests_running",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:request_success",
    "vllm:iteration_tokens_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
)


def exposition(model_dir: str, names: str) -> str:
    """The registry's text after the requests ``names``, as the server's ``/metrics`` would serve it."""
    import prometheus_client
    from vllm.config import ModelConfig, VllmConfig
    from vllm.v1.engine import FinishReason
    from vllm.v1.metrics.loggers import PrometheusStatLogger
    from vllm.v1.metrics.stats import FinishedRequestStats, IterationStats

    config = VllmConfig(model_config=ModelConfig(model=model_dir, max_model_len=1024, served_model_name="tiny"))
    logger = PrometheusStatLogger(config, engine_indexes=[0, 1])
    for name in names:
        engine, queue, prefill, decode, e2e, ttft, prompt, output = REQUESTS[name]
        step = IterationStats()
        step.prompt_token_stats.computed = step.prompt_token_stats.total = prompt
        step.num_generation_tokens = output
        step.time_to_first_tokens_iter.append(ttft)
        step.inter_token_latencies_iter.extend([GAP_S] * (output - 1))
        step.finished_requests.append(
            FinishedRequestStats(
                FinishReason.LENGTH, e2e_latency=e2e, num_prompt_tokens=prompt, num_generation_tokens=output,
                queued_time=queue, prefill_time=prefill, inference_time=prefill + decode, decode_time=decode,
            )
        )  # fmt: skip
        logger.record(scheduler_stats=None, iteration_stats=step, engine_idx=engine)
    return prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()


def kept(text: str) -> str:
    """Only the HELP/TYPE blocks of ``KEPT`` (with their ``_created`` families), in the server's order."""
    blocks = ["# HELP" + block for block in text.split("# HELP")[1:]]
    wanted = {f"{name}{suffix}" for name in KEPT for suffix in ("", "_total", "_created")}
    return "".join(block for block in blocks if block.split(maxsplit=3)[2] in wanted)


def main() -> None:
    here = Path(__file__).parent
    if len(sys.argv) == 3:  # one registry per process: vLLM registers its metrics globally
        print(kept(exposition(sys.argv[1], sys.argv[2])), end="")
        return
    for file, names in (("before.txt", "A"), ("after.txt", "ABC")):
        run = subprocess.run([sys.executable, __file__, sys.argv[1], names], capture_output=True, text=True, check=True)
        (here / file).write_text(run.stdout)


if __name__ == "__main__":
    main()
