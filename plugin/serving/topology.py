"""The two architectures the benchmarks run on, which fixture serves each, and which GPUs each uses in what role.

Shared by the hooks (parametrization, ordering, preflight) and the fixtures, so that neither imports the other.
"""

from __future__ import annotations

import pytest

from plugin.options import Settings

ARCHITECTURES = ("traditional", "disaggregated")
ENDPOINT_FIXTURES = {"traditional": "vllm_endpoint", "disaggregated": "disagg_cluster"}


def gpu_roles_of(settings: Settings, architecture: str) -> dict[int, str]:
    """The GPUs an architecture's servers use, each with its role (a GPU both roles share: ``prefill+decode``)."""
    if architecture == "traditional":
        return dict.fromkeys(settings.gpus, "prefill+decode")
    roles = {**dict.fromkeys(settings.prefill_gpus, "prefill"), **dict.fromkeys(settings.decode_gpus, "decode")}
    return {**roles, **dict.fromkeys(set(settings.prefill_gpus) & set(settings.decode_gpus), "prefill+decode")}


def architectures_in(session: pytest.Session) -> list[str]:
    found = {architecture_of(item) for item in session.items}
    return [architecture for architecture in ARCHITECTURES if architecture in found]


def sampled_gpus(settings: Settings, session: pytest.Session) -> tuple[int, ...]:
    """The GPUs of the architectures among the session's benchmarks, each once."""
    return tuple(sorted({gpu for a in architectures_in(session) for gpu in gpu_roles_of(settings, a)}))


def architecture_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("architecture")
