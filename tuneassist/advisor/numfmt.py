"""How numbers read in the advisor's sentences and tables: 0.35, 1e-4, 3e-5; and rounding to them.

Kept apart so every part of the advisor (and the front ends) words a value the same way.
"""

from __future__ import annotations

import math


def fmt_num(x: float | None) -> str:
    """Short human form of a hyperparameter: 3.0, 0.35, 1e-4, 0 (two significant digits)."""
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a < 1e-3 or a >= 1e5:
        mant, _, exp = f"{x:.1e}".partition("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    s = f"{x:.2g}"
    if "e" in s:  # .2g switches to exponent for e.g. 1.2e+02
        s = f"{x:.0f}"
    if 1 <= a < 10 and "." not in s:
        s += ".0"
    return s


def fmt_acc(a: float | None, digits: int = 1) -> str:
    """An accuracy in percent; a fraction (<= 1) is scaled."""
    if a is None:
        return "—"
    return f"{a * 100:.{digits}f}%" if a <= 1.0 else f"{a:.{digits}f}%"


def acc_digits(values: list[float | None]) -> int:
    """Decimals that tell the quoted accuracies apart: "27.0% vs 27.0%, 128 trails on both" read as a
    contradiction when the values were 27.04% and 26.98%."""
    shown = {fmt_acc(v) for v in values}
    return 1 if len(shown) == len(set(values)) else 2


def fmt_sci(x: float) -> str:
    """Weight decays read best as powers of ten: 1e-2, 3e-5, 0."""
    if x == 0:
        return "0"
    mant, _, exp = f"{x:.1e}".partition("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def round_sig(x: float, digits: int = 1) -> float:
    """Round to `digits` significant digits (0.84 -> 0.8, 2.6 -> 3)."""
    if x == 0 or not math.isfinite(x):
        return x
    k = digits - 1 - math.floor(math.log10(abs(x)))
    return round(x, k)


def floor_sig(x: float, digits: int = 1) -> float:
    """Round down to `digits` significant digits (2.7 -> 2), for values that must stay below a cap."""
    if x <= 0 or not math.isfinite(x):
        return x
    k = digits - 1 - math.floor(math.log10(x))
    scale = 10.0**k
    return math.floor(x * scale * (1 + 1e-12)) / scale
