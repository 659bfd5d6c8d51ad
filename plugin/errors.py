"""The suite's one exception base: raised deep inside, turned into a usage error or a test error at the hooks."""

from __future__ import annotations


class BenchError(Exception):
    """Something the user can fix; the message says what to do."""


class ServerStartError(BenchError):
    """A vLLM server (or the proxy) did not become ready."""
