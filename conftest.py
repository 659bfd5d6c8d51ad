"""Kept nearly empty on purpose: the plugin arrives through its ``pytest11`` entry point (see pyproject.toml)."""
