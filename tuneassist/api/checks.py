"""Argument checks and number cleaning shared by the API's functions (plain Python, no torch)."""

from __future__ import annotations

import math
from typing import Any


def check_positive(name: str, v: Any, integer: bool = False) -> None:
    """ValueError naming the argument unless `v` is a finite positive number (a whole one if `integer`)."""
    ok = isinstance(v, int) and not isinstance(v, bool) if integer else isinstance(v, int | float)
    if not ok or not math.isfinite(v) or v <= 0:
        kind = "a positive whole number" if integer else "a positive number"
        raise ValueError(f"{name}={v!r}: it must be {kind}")


def finite_or_none(v: float) -> float | None:
    """JSON has no NaN/inf: a curve stores a blown-up loss as None."""
    return v if math.isfinite(v) else None


def number_or_none(name: str, v: Any) -> float | None:
    """A logged value as a float, None for None or NaN/inf; TypeError naming it when not a number."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}={v!r} is not a number") from None
    return f if math.isfinite(f) else None
