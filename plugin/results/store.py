"""The versioned ``results.json`` of a run (schema in docs/results-schema.md), rewritten atomically after every
benchmark so that an interrupted run keeps what it measured."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
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


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(handle, 0o644)  # mkstemp makes it private; results are meant to be shared
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=1, default=str)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultsFile:
    """The run's results document; every change is written through to disk at once."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            **header,
            "status": "running",
            "benchmarks": [],
        }
        write_json_atomic(self.path, self.data)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        write_json_atomic(self.path, self.data)

    def add_benchmark(self, entry: dict[str, Any]) -> None:
        self.data["benchmarks"].append(entry)
        write_json_atomic(self.path, self.data)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return data
