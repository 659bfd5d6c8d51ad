"""Secrets kept out of results: values of secret-looking options and URL credentials in a command line."""

from __future__ import annotations

import re

_SECRET_WORDS = frozenset({"token", "key", "apikey", "secret", "password", "passwd", "auth"})
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")
_WRAPPER = "--vllm-arg"
REDACTED = "***"


def _is_secret_option(arg: str) -> bool:
    """``--hf-token`` and ``--api-key`` are secret; ``--max-num-batched-tokens`` is not (whole words only)."""
    return arg.startswith("-") and not _SECRET_WORDS.isdisjoint(re.split(r"[-_]+", arg.lstrip("-").lower()))


def redact_command_line(args: list[str]) -> list[str]:
    """Hide the values of secret-looking options and URL credentials, also inside ``--vllm-arg``."""
    cleaned: list[str] = []
    hide_next = False
    for arg in args:
        if arg == _WRAPPER:  # `--vllm-arg --hf-token --vllm-arg VALUE`: the value follows a second wrapper
            cleaned.append(arg)
            continue
        prefix = f"{_WRAPPER}=" if arg.startswith(f"{_WRAPPER}=") else ""
        inner = arg[len(prefix) :]
        name, equals, _ = inner.partition("=")
        if hide_next and not inner.startswith("-"):
            cleaned.append(f"{prefix}{REDACTED}")
        elif _is_secret_option(name) and equals:
            cleaned.append(f"{prefix}{name}={REDACTED}")
        else:
            cleaned.append(_URL_CREDENTIALS.sub(rf"\1{REDACTED}@", arg))
        hide_next = _is_secret_option(inner) and not equals
    return cleaned
