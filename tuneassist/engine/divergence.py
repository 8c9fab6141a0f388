"""When a training run has diverged: the rule the training loop, a user's training function and the
Python API's range test all stop on."""

from __future__ import annotations

import math

SMOOTH_BETA = 0.98


class DivergenceMonitor:
    """Debiased EMA of the training loss; flags NaN/inf or a blow-up past `factor` x its best.

    Range tests stop on the plain rule (as fastai's lr_find does). Training runs also require the
    smoothed loss to exceed its starting value, so a run whose loss fell to 0.05 is not called
    diverged when it wobbles back to 0.2.
    """

    def __init__(self, factor: float, strict: bool) -> None:
        self.factor = factor
        self.strict = strict
        self.avg = 0.0
        self.n = 0
        self.best = math.inf
        self.first: float | None = None

    def update(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        self.n += 1
        self.avg = SMOOTH_BETA * self.avg + (1 - SMOOTH_BETA) * loss
        smooth = self.avg / (1 - SMOOTH_BETA**self.n)
        if self.first is None:
            self.first = smooth
        self.best = min(self.best, smooth)
        if self.n < 10:
            return False
        blown = smooth > self.factor * self.best
        if not self.strict:
            blown = blown and smooth > self.first
        return blown

    def state(self) -> dict[str, float]:
        return {"avg": self.avg, "n": self.n, "best": self.best, "first": self.first or 0.0}

    def load(self, s: dict[str, float]) -> None:
        self.avg, self.n, self.best = float(s["avg"]), int(s["n"]), float(s["best"])
        self.first = float(s["first"]) if self.n else None
