"""How every figure of the report is written: three significant figures (whole numbers from 100 up), never in
exponent notation for an ordinary magnitude, and a ± half-width with two."""

from __future__ import annotations

import math

import numpy as np

MISSING = "-"


def number(value: float | int | None, digits: int = 3) -> str:
    """``0.0123``, ``4.56``, ``21250``; ``-`` for no value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, int) or abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    return str(np.format_float_positional(float(f"{value:.{digits}g}"), trim="-"))


def with_pm(value: float | None, half_width: float | None, unit: str = "") -> str:
    """``4.56 ± 0.12 J``; without a known half-width the value alone."""
    if value is None:
        return MISSING
    shown = number(value) + ("" if half_width is None else f" ± {number(half_width, 2)}")
    return f"{shown} {unit}" if unit else shown


def signed(value: float, digits: int = 3) -> str:
    """``+12.5``, ``-0.031``: a difference, its sign always written."""
    return ("+" if value >= 0 else "") + number(value, digits)
