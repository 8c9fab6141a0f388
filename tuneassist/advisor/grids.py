"""Net kinds and the paper's weight-decay grids, shared by the sweep ranking and the diagnosis.

Kept apart from `sweep` (which imports `diagnosis`) so the diagnosis can name a concrete first WD for
a net trained without any, from the same grid the WD step would try.
"""

from __future__ import annotations


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
