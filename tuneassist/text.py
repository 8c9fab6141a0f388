"""Numbers as both front ends print them: the TUI's screens and the CLI's lines read the same.

Plain strings, no Rich and no torch, so the CLI can use them without loading the UI.
"""

from __future__ import annotations

import math


def g(v: float | None, digits: int = 3) -> str:
    """A number to `digits` significant digits; '-' for a missing one (None or NaN, as a store row reads)."""
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal ('70.0%'); '-' for a missing one."""
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"
