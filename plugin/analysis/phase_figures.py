"""Which energy figures a benchmark shows, by its phase: the display choice the terminal, the report, the
comparison and the uncertainty keys share. The figures themselves are the results' (``BenchmarkPower``)."""

from __future__ import annotations

from plugin.records.results import BenchmarkResult


def energy_figures(benchmark: BenchmarkResult) -> dict[str, float | None]:
    """The energy figures that mean something for the benchmark's phase: the window's energy over the prompt
    tokens of a prefill benchmark, over the output tokens of a decode one, per request end to end and serving,
    plus, where both phases ran, the phase split's prefill J per prompt token and decode J per output token. The window
    energy over the other phase's tokens is not a figure of that phase, so it is left out."""
    power = benchmark.power
    if benchmark.phase == "prefill":
        return {"j_per_prompt_token": power.energy_per_prompt_token_j}
    if benchmark.phase == "decode":
        return {"j_per_output_token": power.energy_per_output_token_j}
    figures = {"j_per_request": power.energy_per_request_j}
    phases = power.phases
    if phases is not None and phases.prefill_s > 0 and phases.decode_s > 0:
        figures["prefill_j_per_prompt_token"] = phases.j_per_prompt_token
        figures["decode_j_per_output_token"] = phases.j_per_output_token
    if "energy_per_good_request_j" in benchmark.summary:  # --goodput targets were given
        figures["j_per_good_request"] = benchmark.summary["energy_per_good_request_j"]
    return figures
