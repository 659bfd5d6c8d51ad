"""The one monotonic clock that request records and power samples share, so their timelines line up."""

from __future__ import annotations

import time

now_s = time.perf_counter
