"""Keys under which the plugin keeps its state in ``config.stash`` (no module-level mutable state)."""

from __future__ import annotations

import pytest

from plugin.session import RunSession

SESSION_KEY = pytest.StashKey[RunSession]()
