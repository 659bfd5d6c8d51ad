"""The prefill/decode proxy: a Quart app that sends each request to a prefill instance, then to a decode instance
that takes over the KV cache, and streams decode's answer back unchanged. Run it with ``python -m proxy``."""
