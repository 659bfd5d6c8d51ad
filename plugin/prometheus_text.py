"""Prometheus text exposition parsed with prometheus_client's own parser, for every source that speaks it: vLLM's
``/metrics`` (``plugin.serving.prometheus``) and the DCGM exporter (``plugin.power.dcgm``).

Two views of one scrape: ``parse_families`` keeps every series with its labels (for sources where labels matter,
such as a GPU exporter); ``parse`` sums each sample name over its labels, which is what a per-server delta needs
(vLLM labels every series with ``model_name`` and ``engine``, one series per engine core)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from plugin.errors import BenchError

_PER_BUCKET_LABELS = {"histogram": "le", "gaugehistogram": "le", "summary": "quantile"}
"""Series that split one distribution by a label: summing them over that label means nothing."""
_WITH_CREATED = {"counter", "histogram", "gaugehistogram", "summary"}


class MetricsFormatError(BenchError):
    """The text is not Prometheus exposition format (an HTML error page, a proxy's answer, a truncated body)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of a family: ``name`` is the sample's own name (``..._sum``, ``..._bucket``, ``..._total``)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_s: float | None = None
    """The line's own timestamp (Unix seconds; the text gives milliseconds) where it has one."""


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family as its ``# TYPE`` line declares it (a counter's family name has no ``_total``)."""

    name: str
    type: str
    help: str
    samples: tuple[Sample, ...]


def parse_families(text: str) -> dict[str, Family]:
    """Every family of a scrape by name, labels kept. ``MetricsFormatError`` when any line is not valid."""
    merged: dict[str, Family] = {}
    try:
        for parsed in text_string_to_metric_families(text):
            samples = tuple(
                Sample(s.name, dict(s.labels), float(s.value), None if s.timestamp is None else float(s.timestamp))
                for s in parsed.samples
            )
            known = merged.get(parsed.name)
            if known is None:
                merged[parsed.name] = Family(parsed.name, parsed.type, parsed.documentation, samples)
            else:  # the parser gives each line of a series without a TYPE line a family of its own
                merged[parsed.name] = Family(known.name, known.type, known.help, known.samples + samples)
    except (ValueError, TypeError, IndexError, KeyError) as error:  # the parser's errors for malformed lines
        raise MetricsFormatError(f"not Prometheus text format: {error}") from error
    return merged


def totals(families: dict[str, Family]) -> dict[str, float]:
    """Each sample name summed over its labels, without histogram buckets, summary quantiles and ``_created``
    timestamps (a sum of those over labels is no figure of anything)."""
    created = {f"{name}_created" for name, family in families.items() if family.type in _WITH_CREATED}
    result: dict[str, float] = {}
    for family in families.values():
        if family.name in created:  # the 0.0.4 text format lists a counter's _created as a gauge family of its own
            continue
        split_by = _PER_BUCKET_LABELS.get(family.type)
        for sample in family.samples:
            if sample.name.endswith("_created") or (split_by is not None and split_by in sample.labels):
                continue
            if math.isnan(sample.value):
                continue
            result[sample.name] = result.get(sample.name, 0.0) + sample.value
    return result


def parse(text: str) -> dict[str, float]:
    """Each sample name summed over its labels (``totals``); empty when the text is not Prometheus format."""
    try:
        return totals(parse_families(text))
    except MetricsFormatError:
        return {}
