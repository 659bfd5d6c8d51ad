"""Cost and carbon of a benchmark, derived from its measured energy and GPU time at the user's own prices.

Nothing here is a price the suite knows: every figure comes from the inputs the user gave (``Prices``: the energy
price in $/kWh, the data centre's PUE, a GPU-hour price, the grid's carbon intensity in gCO2e/kWh) and is absent
for an input not given. The formulas, with the one accounting's counts (``plugin.analysis.accounting``: the work
done inside the power windows):

- facility energy (kWh) = measured GPU energy (J) x PUE / 3.6e6; energy cost ($) = that x $/kWh;
  carbon (gCO2e) = that x gCO2e/kWh;
- GPU time (GPU-h) = the windows' time x every GPU of the budget (idle and unused ones too) / 3600;
  GPU-time cost ($) = that x $/GPU-h;
- $ per million input (output) tokens: each cost's prefill (decode) share over the prompt (output) tokens made
  inside the windows, x 1e6. The energy's share is its phase split's (``plugin.analysis.energy``); the GPU time is
  split by the same rules, as the energy would be if every GPU drew 1 W (``gpu_time``). Idle energy and idle GPU
  time go to the two phases in proportion to their busy shares, so input and output together pay the whole cost;
- $ per good request, gCO2e per good request: the cost (carbon) over the good requests completed inside the
  windows (``--goodput``); gCO2e per million output tokens: the carbon over every output token made inside them.

Each figure's ± (95 %) is built as ``plugin.analysis.uncertainty`` builds the energy's: the energy's measurement
parts (sensor edges, counter gap) carried to the energy part, the figure's own spread between rounds, and for a
figure per good request the good share's Wilson interval. The GPU time is read off the clock: its part has no
measurement error (a ``clock`` part of 0), only the rounds' spread, so a figure of GPU time alone, with one round,
is exact (± 0 from ``clock`` alone, said so, never left without a ±). Pure functions: no I/O.

Published carbon intensities (gCO2e/kWh) to take the grid's figure from: Electricity Maps
(app.electricitymaps.com), Ember's yearly data (ember-energy.org), the US EPA's eGRID, and national grid
operators (e.g. the UK's carbonintensity.org.uk, RTE's eco2mix in France).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from plugin.analysis.accounting import Work
from plugin.analysis.energy import PhaseRecord, attribute_energy
from plugin.analysis.uncertainty import combine, good_share_relative, round_spread
from plugin.analysis.verdict import Point, serving_points
from plugin.option_values import Prices
from plugin.power.window import PowerCurve
from plugin.records.results import BenchmarkPower, BenchmarkResult, PhaseSplit

J_PER_KWH = 3.6e6
S_PER_HOUR = 3600.0
PER_MILLION = 1e6
COST_KEY = "cost"
"""Where a benchmark's summary keeps these figures (absent without a price or a carbon intensity)."""
COST_FIGURE = "$ per good request"
"""What ``cost_points`` rank by, in the verdict's words."""


@dataclass(frozen=True, slots=True)
class GpuTime:
    """GPU-seconds of the budget over windows, split between prefill, decode and idle by the energy's rules."""

    prefill_s: float
    decode_s: float
    idle_s: float

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s + self.idle_s

    def __add__(self, other: GpuTime) -> GpuTime:
        return GpuTime(self.prefill_s + other.prefill_s, self.decode_s + other.decode_s, self.idle_s + other.idle_s)


def gpu_time(
    records: Sequence[PhaseRecord],
    start_s: float,
    end_s: float,
    roles: Iterable[str],
    prefill_s: float | None = None,
) -> GpuTime:
    """The window's GPU time, one GPU per role (``roles``: every GPU of the budget, ``unused`` ones too; where the
    roles are unknown, as on CPU, ``unknown`` once per slot of the budget), charged by ``attribute_energy`` as
    energy is, on a power of 1 W: one joule per GPU-second."""
    one_watt = PowerCurve()
    one_watt.add(start_s, 1.0)
    one_watt.add(end_s, 1.0)
    done = [record for record in records if record.ok]
    total = GpuTime(0.0, 0.0, 0.0)
    for role in roles:
        split = attribute_energy([one_watt], done, start_s, end_s, role=role, prefill_s=prefill_s)
        total += GpuTime(split.prefill_j or 0.0, split.decode_j or 0.0, split.idle_j or 0.0)
    return total


def budget_roles(gpu_roles: Mapping[int, str], gpu_budget: int) -> list[str]:
    """One role per GPU of the budget: the windows' roles, or where there are none (CPU), ``unknown`` per slot."""
    return list(gpu_roles.values()) if gpu_roles else ["unknown"] * gpu_budget


def stored_prices(cost: Mapping[str, Any] | None) -> Prices | None:
    """The inputs a stored ``cost`` object was computed with (``plugin.reanalyse`` computes it again with them)."""
    if not cost:
        return None
    inputs = cost["inputs"]
    return Prices(
        inputs["energy_usd_per_kwh"], inputs["gpu_usd_per_hour"], inputs["grid_g_co2e_per_kwh"], inputs["pue"]
    )


def benchmark_cost(
    prices: Prices, power: BenchmarkPower, works: Sequence[Work], times: Sequence[GpuTime]
) -> dict[str, Any]:
    """The ``cost`` object of a benchmark's summary: the inputs, the figures of all rounds together and their ±
    (the spread between rounds from each round's own figures: ``works``, ``times`` and ``power.windows`` are per
    round, in order)."""
    total_work = sum(works[1:], works[0]) if works else Work(0.0, 0, 0, 0)
    total_time = sum(times[1:], times[0]) if times else GpuTime(0.0, 0.0, 0.0)
    figures = _figures(prices, power.energy_j, power.phases, total_work, total_time)
    per_round = [
        _figures(prices, window.energy_j, window.phases, work, time)
        for window, work, time in zip(power.windows, works, times, strict=True)
    ]
    uncertainty, sources = _uncertainty(figures, per_round, power, total_work)
    return {
        "inputs": {
            "energy_usd_per_kwh": prices.energy_usd_per_kwh,
            "pue": prices.pue,
            "gpu_usd_per_hour": prices.gpu_usd_per_hour,
            "grid_g_co2e_per_kwh": prices.grid_g_co2e_per_kwh,
        },
        "gpu_s": {"prefill": total_time.prefill_s, "decode": total_time.decode_s, "idle": total_time.idle_s},
        **figures,
        "uncertainty": uncertainty,
        "uncertainty_sources": sources,
        "note": _note(prices, power, total_work),
    }


def _figures(
    prices: Prices, energy_j: float | None, phases: PhaseSplit | None, work: Work, time: GpuTime
) -> dict[str, float | None]:
    """Every figure of one stretch of windows (one round, or all of them); a figure whose input or measurement is
    missing is ``None``."""
    kwh = None if energy_j is None else energy_j * prices.pue / J_PER_KWH
    energy_usd = _times(kwh, prices.energy_usd_per_kwh)
    gpu_time_usd = _times(time.total_s / S_PER_HOUR, prices.gpu_usd_per_hour)
    g_co2e = _times(kwh, prices.grid_g_co2e_per_kwh)
    energy_share = None if phases is None else _share(phases.prefill_j, phases.decode_j)
    time_share = _share(time.prefill_s, time.decode_s)
    priced = [(energy_usd, prices.energy_usd_per_kwh), (gpu_time_usd, prices.gpu_usd_per_hour)]
    figures: dict[str, float | None] = {
        "energy_kwh": kwh,
        "energy_usd": energy_usd,
        "gpu_hours": time.total_s / S_PER_HOUR,
        "gpu_time_usd": gpu_time_usd,
        "usd": _sum_priced(priced),
        "g_co2e": g_co2e,
    }
    shares = {
        "input": (work.prompt_tokens, energy_share, time_share),
        "output": (work.output_tokens, _rest(energy_share), _rest(time_share)),
    }
    for side, (count, energy_part_share, time_part_share) in shares.items():
        energy_part = _per_million(_times(energy_usd, energy_part_share), count)
        time_part = _per_million(_times(gpu_time_usd, time_part_share), count)
        figures[f"energy_usd_per_million_{side}_tokens"] = energy_part
        figures[f"gpu_time_usd_per_million_{side}_tokens"] = time_part
        figures[f"usd_per_million_{side}_tokens"] = _sum_priced(
            [(energy_part, prices.energy_usd_per_kwh), (time_part, prices.gpu_usd_per_hour)]
        )
    good = work.good_completed
    figures["energy_usd_per_good_request"] = _per(energy_usd, good)
    figures["gpu_time_usd_per_good_request"] = _per(gpu_time_usd, good)
    figures["usd_per_good_request"] = _per(figures["usd"], good)
    figures["g_co2e_per_good_request"] = _per(g_co2e, good)
    figures["g_co2e_per_million_output_tokens"] = _per_million(g_co2e, work.output_tokens)
    return figures


ENERGY_PARTS = {
    "energy_usd": "energy_usd",
    "usd": "energy_usd",
    "g_co2e": "g_co2e",
    "energy_usd_per_million_input_tokens": "energy_usd_per_million_input_tokens",
    "usd_per_million_input_tokens": "energy_usd_per_million_input_tokens",
    "energy_usd_per_million_output_tokens": "energy_usd_per_million_output_tokens",
    "usd_per_million_output_tokens": "energy_usd_per_million_output_tokens",
    "energy_usd_per_good_request": "energy_usd_per_good_request",
    "usd_per_good_request": "energy_usd_per_good_request",
    "g_co2e_per_good_request": "g_co2e_per_good_request",
    "g_co2e_per_million_output_tokens": "g_co2e_per_million_output_tokens",
}
"""Each figure with a ± -> its part that comes from the measured energy (the rest is GPU time, off the clock)."""
TIME_PARTS = {
    "gpu_hours": "gpu_hours",
    "gpu_time_usd": "gpu_time_usd",
    "usd": "gpu_time_usd",
    "gpu_time_usd_per_million_input_tokens": "gpu_time_usd_per_million_input_tokens",
    "usd_per_million_input_tokens": "gpu_time_usd_per_million_input_tokens",
    "gpu_time_usd_per_million_output_tokens": "gpu_time_usd_per_million_output_tokens",
    "usd_per_million_output_tokens": "gpu_time_usd_per_million_output_tokens",
    "gpu_time_usd_per_good_request": "gpu_time_usd_per_good_request",
    "usd_per_good_request": "gpu_time_usd_per_good_request",
}
"""Each figure with a ± -> its part that comes from the GPU time (priced or not: ``gpu_hours`` is always there)."""
CLOCK = "clock"
"""The GPU time's measurement part: 0, the windows' edges are read off the monotonic clock."""
TOTALS = ("energy_usd", "usd", "g_co2e", "gpu_time_usd", "gpu_hours")
"""Figures of the whole energy or GPU time: the energy's relative ±, its rounds part included; no spread of their
own between rounds (a total's rounds are its parts, not repeats of it)."""
PER_GOOD = ("energy_usd_per_good_request", "usd_per_good_request", "g_co2e_per_good_request")


def _uncertainty(
    figures: Mapping[str, float | None],
    per_round: Sequence[Mapping[str, float | None]],
    power: BenchmarkPower,
    work: Work,
) -> tuple[dict[str, float | None], dict[str, list[str]]]:
    """Each figure's ± half-width (95 %), in its unit (module docstring), ``None`` where no part is known; and the
    parts each holds (``clock`` alone: exact)."""
    energy_j, parts = power.energy_j, power.uncertainty_parts
    found: dict[str, float | None] = {}
    sources: dict[str, list[str]] = {}
    for name in dict.fromkeys([*ENERGY_PARTS, *TIME_PARTS]):
        value = figures.get(name)
        if value is None:
            found[name], sources[name] = None, []
            continue
        energy_part = figures.get(ENERGY_PARTS[name]) if name in ENERGY_PARTS else None
        relative = {
            part: None if size is None or not energy_j else size / energy_j
            for part, size in parts.items()
            if name in TOTALS or part != "rounds"
        }
        pieces = {
            part: None if r is None or energy_part is None else r * abs(energy_part) for part, r in relative.items()
        }
        if name not in TOTALS:
            pieces["rounds"] = round_spread([one.get(name) for one in per_round])
        if name in PER_GOOD:
            share = good_share_relative(work.good_completed, work.completed)
            pieces["good_count"] = None if share is None else share * abs(value)
        if name in TIME_PARTS and figures.get(TIME_PARTS[name]) is not None:
            pieces[CLOCK] = 0.0
        found[name] = combine(pieces)
        sources[name] = sorted(part for part, size in pieces.items() if size is not None)
    return found, sources


def _note(prices: Prices, power: BenchmarkPower, work: Work) -> str | None:
    """Why figures are missing, in words; ``None`` when none is."""
    notes = []
    if not power.measured and (prices.energy_usd_per_kwh is not None or prices.grid_g_co2e_per_kwh is not None):
        notes.append(f"power was not measured ({power.unmeasured_reason}): no energy cost and no carbon")
    if work.good_completed is None:
        notes.append("no --goodput targets: no figure per good request")
    elif not work.good_completed:
        notes.append("no good request completed inside the power windows: no figure per good request")
    return "; ".join(notes) or None


def is_exact(cost: Mapping[str, Any], key: str) -> bool:
    """A stored figure's ± holds no part but the GPU time's clock (0): exact, as measured, shown as such rather than
    "± 0" (files from before ``uncertainty_sources``: never)."""
    return (cost.get("uncertainty_sources") or {}).get(key) == [CLOCK] and cost["uncertainty"].get(key) == 0.0


def cost_points(entries: Iterable[BenchmarkResult]) -> list[Point]:
    """The topology verdict's points (``plugin.analysis.verdict.serving_points``) with $ per good request and its ±
    in place of the energy's, for the priced entries: the same rule then ranks the topologies by what they cost.
    Its ± has the energy's parts (carried to the energy's share), so the point keeps the energy's sources."""
    points = []
    for entry in entries:
        cost = entry.summary.get(COST_KEY)
        if cost is None or cost.get("usd") is None:
            continue
        for point in serving_points([entry]):
            usd, pm = cost["usd_per_good_request"], cost["uncertainty"].get("usd_per_good_request")
            points.append(replace(point, per_good_request=usd, per_good_request_pm=pm))
    return points


def formula_lines(inputs: Mapping[str, Any]) -> list[str]:
    """The formulas with the inputs a run used, for the terminal and the report: what every figure derives from."""
    pue = inputs.get("pue", 1.0)
    lines = []
    if inputs.get("energy_usd_per_kwh") is not None:
        lines.append(f"energy $ = measured GPU J x PUE {pue:g} / 3.6e6 J/kWh x ${inputs['energy_usd_per_kwh']:g}/kWh")
    if inputs.get("gpu_usd_per_hour") is not None:
        lines.append(
            f"GPU-time $ = window s x GPUs of the budget / 3600 x ${inputs['gpu_usd_per_hour']:g}/GPU-h "
            "(idle and unused GPUs charged)"
        )
    if inputs.get("grid_g_co2e_per_kwh") is not None:
        lines.append(
            f"gCO2e = measured GPU J x PUE {pue:g} / 3.6e6 J/kWh x {inputs['grid_g_co2e_per_kwh']:g} gCO2e/kWh"
        )
    lines.append(
        "$ per million input (output) tokens = each cost's prefill (decode) share / prompt (output) tokens made inside "
        "the windows x 1e6 (idle shared in proportion); per good request: / good requests completed inside them"
    )
    return lines


def _share(prefill: float | None, decode: float | None) -> float | None:
    """Prefill's share of the busy (prefill + decode) amount; ``None`` when nothing was busy."""
    if prefill is None or decode is None or prefill + decode <= 0:
        return None
    return prefill / (prefill + decode)


def _rest(share: float | None) -> float | None:
    """Decode's share, where ``share`` is prefill's."""
    return None if share is None else 1.0 - share


def _times(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a * b


def _per(amount: float | None, count: int | None) -> float | None:
    return None if amount is None or not count else amount / count


def _per_million(amount: float | None, count: int | None) -> float | None:
    per_one = _per(amount, count)
    return None if per_one is None else per_one * PER_MILLION


def _sum_priced(parts: Sequence[tuple[float | None, float | None]]) -> float | None:
    """The sum of the parts whose price was given; ``None`` if one of them is missing (an unmeasured energy) or
    none was priced."""
    priced = [value for value, price in parts if price is not None]
    if not priced or any(value is None for value in priced):
        return None
    return math.fsum(value for value in priced if value is not None)
