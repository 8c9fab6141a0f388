"""Net kinds and the candidate grids of the sweep steps (WD, momentum, TBS), and the LR rescaling rule.

Kept apart from `sweep` (which imports `diagnosis`) so the diagnosis can name a concrete first WD for
a net trained without any, from the same grid the WD step would try.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from tuneassist.advisor.numfmt import fmt_num, round_sig


def model_kind(model: str) -> str:
    """'shallow' for the 3-layer net, 'deep' for everything else (ResNets, DenseNet, user nets)."""
    return "shallow" if model == "simple3" else "deep"


def weight_decay_grid(model_kind: str) -> list[float]:
    """The paper's WD grids: shallow nets need more regularisation, deep nets / complex data less."""
    if model_kind == "shallow":
        return [1e-2, 1e-3, 1e-4]
    if model_kind == "deep":
        return [1e-4, 1e-5, 1e-6, 0.0]
    raise ValueError(f"model kind {model_kind!r}: use 'shallow' or 'deep'")


def first_weight_decay(model: str) -> float:
    """The WD to add to a net trained without any: the smallest non-zero value of its kind's grid
    (1e-4 for the shallow net, 1e-6 for deep ones), the next step up from 0 on that grid."""
    return min(v for v in weight_decay_grid(model_kind(model)) if v > 0)


def refine_between(a: float, b: float) -> float:
    """One value between two good WDs: the log-midpoint at one significant digit (1e-4, 1e-5 -> 3e-5).

    With 0 as one end there is no log-midpoint; the value half a decade below the other end is used.
    """
    lo, hi = sorted((float(a), float(b)))
    if lo < 0 or hi <= 0 or lo == hi:
        raise ValueError(f"refine_between needs two different non-negative values, got {a} and {b}")
    mid = hi / math.sqrt(10) if lo == 0 else math.sqrt(lo * hi)
    v = round_sig(mid, 1)
    if v in (lo, hi):
        v = round_sig(mid, 2)
    return v


def momentum_candidates(model: str | None = None) -> list[tuple[float, float]]:
    """(max, min) momentum pairs: constant 0.99, 0.97, 0.95, 0.9 and cyclical 0.95–0.85.

    For DenseNet the paper found lower values better, so cyclical 0.9–0.85 is added.
    """
    out = [(0.99, 0.99), (0.97, 0.97), (0.95, 0.95), (0.9, 0.9), (0.95, 0.85)]
    if model is not None and model.startswith("densenet"):
        out.append((0.9, 0.85))
    return out


def batch_size_candidates(
    start: int, max_fit: int | None = None, devices: int = 1, *, train_size: int | None = None
) -> list[int]:
    """Total batch sizes to compare, ascending: half, the start value and double.

    Compared at equal epochs, as the final run's budget is stated in epochs: a doubled TBS halves the
    final run's steps, which the short runs show. A TBS must split evenly over the devices, fit each
    device (`max_fit` per device, from the memory probe; None: no known limit), be at least 16 and
    leave at least 20 steps per epoch.
    """
    if devices < 1:
        raise ValueError("devices must be at least 1")
    cap = max_fit * devices if max_fit is not None else 1 << 20
    if train_size is not None:
        cap = min(cap, train_size // 20)
    sizes = [t for t in (start // 2, start, start * 2) if 16 <= t <= cap and t % devices == 0]
    return sorted(set(sizes) | {start})


class Rescaled(NamedTuple):
    lr: float
    reason: str


def rescale_lr_for_batch(lr: float, old_tbs: int, new_tbs: int) -> Rescaled:
    """Linear scaling rule: the LR moves with the TBS, so the gradient noise per step stays the same."""
    if old_tbs <= 0 or new_tbs <= 0:
        raise ValueError("batch sizes must be positive")
    if old_tbs == new_tbs:
        return Rescaled(lr, f"TBS unchanged at {new_tbs}; LR stays {fmt_num(lr)}")
    f = new_tbs / old_tbs
    new = lr * f
    return Rescaled(
        new,
        f"LR {fmt_num(lr)} → {fmt_num(new)} (x{f:.3g}) as TBS goes {old_tbs} → {new_tbs}: linear scaling "
        "rule (k times the batch averages away k times the gradient noise, so it can take k times the step; "
        "Goyal et al. 2017)",
    )
