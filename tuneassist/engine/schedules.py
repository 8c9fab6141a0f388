"""Per-iteration learning-rate and momentum schedules (Smith 2018, the paper's checklist).

Every schedule is a pure function of the step index, so a resumed run, the plots and the tests see
exactly the values the training loop used. Momentum means SGD momentum or Adam's beta1 (see
``optim.set_hyper``). Steps outside ``[0, total_steps)`` are clamped to the ends.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from tuneassist.errors import UserError
from tuneassist.spec import RISE_FRACTION_RANGE, RunSpec, lr_range_ok, rise_fraction_ok

__all__ = [
    "ConstantSchedule",
    "OneCycleSchedule",
    "RangeTestSchedule",
    "Schedule",
    "StepSchedule",
    "build_schedule",
]


class Schedule(ABC):
    """LR and momentum for each of ``total_steps`` training steps (step 0 is the first)."""

    def __init__(self, total_steps: int) -> None:
        if not isinstance(total_steps, int | np.integer) or total_steps < 1:
            raise UserError(
                f"a schedule needs at least 1 step, got {total_steps}; raise --epochs/--steps or "
                "lower --batch-size"
            )
        self.total_steps = int(total_steps)

    def _clamp(self, step: int) -> int:
        return min(max(int(step), 0), self.total_steps - 1)

    @abstractmethod
    def lr(self, step: int) -> float: ...

    @abstractmethod
    def momentum(self, step: int) -> float: ...

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(lr, momentum) for every step as float64 arrays, for plots and tests."""
        n = self.total_steps
        lr = np.fromiter((self.lr(i) for i in range(n)), dtype=np.float64, count=n)
        mom = np.fromiter((self.momentum(i) for i in range(n)), dtype=np.float64, count=n)
        return lr, mom

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ConstantSchedule(Schedule):
    """The plain baseline: one LR and one momentum throughout."""

    def __init__(self, total_steps: int, lr: float, momentum: float) -> None:
        super().__init__(total_steps)
        self.lr_value = float(lr)
        self.momentum_value = float(momentum)

    def lr(self, step: int) -> float:
        return self.lr_value

    def momentum(self, step: int) -> float:
        return self.momentum_value


class StepSchedule(Schedule):
    """``lr`` times ``gamma`` at each milestone: the classic schedule Table 1 compares 1cycle with.

    A milestone at fraction f of the run takes effect from step ``round(f * total_steps)`` on.
    """

    def __init__(
        self, total_steps: int, lr: float, milestones: list[float], gamma: float, momentum: float
    ) -> None:
        super().__init__(total_steps)
        for f in milestones:
            if not (0.0 < f < 1.0):
                raise UserError(f"step milestone {f} must be a fraction of the run in (0, 1), e.g. 0.5")
        if not (math.isfinite(gamma) and gamma > 0):
            raise UserError(f"step gamma {gamma} must be a positive factor, e.g. 0.1")
        self.base_lr = float(lr)
        self.gamma = float(gamma)
        self.momentum_value = float(momentum)
        self.milestone_steps = sorted(round(f * self.total_steps) for f in milestones)

    def lr(self, step: int) -> float:
        step = self._clamp(step)
        drops = sum(1 for m in self.milestone_steps if step >= m)
        return self.base_lr * self.gamma**drops

    def momentum(self, step: int) -> float:
        return self.momentum_value


@dataclass(repr=False, eq=False)
class _Sweep(Schedule):
    """The fields of a schedule that sweeps the LR between two values and the momentum between two
    (the range test, 1cycle), given once; `_check` refuses an LR range that is not 0 < min <= max."""

    total_steps: int
    lr_min: float
    lr_max: float
    momentum_max: float
    momentum_min: float

    def _check(self, what: str, example: str) -> None:
        Schedule.__init__(self, self.total_steps)
        if not lr_range_ok(self.lr_min, self.lr_max):
            raise UserError(
                f"{what} needs 0 < lr_min <= lr_max, got {self.lr_min:g}:{self.lr_max:g}; e.g. --lr {example}"
            )
        self.lr_min, self.lr_max = float(self.lr_min), float(self.lr_max)
        self.momentum_max, self.momentum_min = float(self.momentum_max), float(self.momentum_min)


@dataclass(repr=False, eq=False)
class RangeTestSchedule(_Sweep):
    """The LR range test: LR from ``lr_min`` at step 0 to ``lr_max`` at the last step.

    ``exponential`` spaces the LRs evenly in log (each decade gets equal steps), otherwise
    linearly. Momentum falls linearly in the step from ``momentum_max`` to ``momentum_min`` as
    the LR rises: the paper runs the range test with cyclical momentum because it keeps large
    LRs stable, so the LR found is the one 1cycle can use.
    """

    exponential: bool = True

    def __post_init__(self) -> None:
        self._check("range test", "1e-4:10")
        self.exponential = bool(self.exponential)

    def _frac(self, step: int) -> float:
        return self._clamp(step) / (self.total_steps - 1) if self.total_steps > 1 else 0.0

    def lr(self, step: int) -> float:
        t = self._frac(step)
        if t >= 1.0:
            return self.lr_max  # exact endpoint, free of rounding
        if self.exponential:
            return self.lr_min * (self.lr_max / self.lr_min) ** t
        return self.lr_min + (self.lr_max - self.lr_min) * t

    def momentum(self, step: int) -> float:
        t = self._frac(step)
        if t >= 1.0:
            return self.momentum_min
        return self.momentum_max + (self.momentum_min - self.momentum_max) * t


@dataclass(repr=False, eq=False)
class OneCycleSchedule(_Sweep):
    """Smith's 1cycle in closed form, equal to ``torch.optim.lr_scheduler.OneCycleLR`` with
    ``three_phase=True, anneal_strategy="linear"``, ``max_lr=lr_max``, ``div_factor=lr_max/lr_min``,
    ``final_div_factor=final_div``, ``pct_start=rise_fraction``, ``base_momentum=momentum_min``,
    ``max_momentum=momentum_max``.

    LR rises linearly lr_min -> lr_max over the first ``rise_fraction`` of the run, falls back to
    lr_min over the same length, then anneals to lr_min / final_div over the rest; momentum falls
    max -> min while the LR rises, climbs back while it falls and stays at max in the anneal.
    The phase boundaries are OneCycleLR's (``rise_fraction * total_steps - 1`` and
    ``2 * rise_fraction * total_steps - 2``), so values agree step for step. For runs so short
    that the rise has no length (where OneCycleLR divides by zero) the first step uses lr_min.
    """

    rise_fraction: float = 0.45
    final_div: float = 100.0

    def __post_init__(self) -> None:
        self._check("1cycle", "0.1:1")
        if not rise_fraction_ok(self.rise_fraction):
            raise UserError(f"1cycle rise fraction {self.rise_fraction} must be in {RISE_FRACTION_RANGE}")
        if not (self.final_div >= 1):
            raise UserError(f"1cycle final divisor {self.final_div} must be >= 1")
        self.rise_fraction = float(self.rise_fraction)
        self.final_div = float(self.final_div)
        self.lr_final = self.lr_min / self.final_div
        end1 = float(self.rise_fraction * self.total_steps) - 1
        end2 = float(2 * self.rise_fraction * self.total_steps) - 2
        end3 = float(self.total_steps - 1)
        # (end step, lr start, lr end, momentum start, momentum end) per phase, as OneCycleLR.
        self._phases = (
            (end1, self.lr_min, self.lr_max, self.momentum_max, self.momentum_min),
            (end2, self.lr_max, self.lr_min, self.momentum_min, self.momentum_max),
            (end3, self.lr_min, self.lr_final, self.momentum_max, self.momentum_max),
        )

    def _locate(self, step: int) -> tuple[float, tuple[float, float, float, float, float]]:
        """The fraction of its phase that ``step`` is at, and the phase."""
        step = self._clamp(step)
        start = 0.0
        for i, phase in enumerate(self._phases):
            end = phase[0]
            if step <= end or i == len(self._phases) - 1:
                pct = (step - start) / (end - start) if end > start else 0.0
                return pct, phase
            start = end
        raise AssertionError("unreachable")

    @staticmethod
    def _lerp(start: float, end: float, pct: float) -> float:
        return (end - start) * pct + start  # OneCycleLR's own formula, for bitwise agreement

    def lr(self, step: int) -> float:
        pct, (_, lo, hi, _, _) = self._locate(step)
        return self._lerp(lo, hi, pct)

    def momentum(self, step: int) -> float:
        pct, (_, _, _, lo, hi) = self._locate(step)
        return self._lerp(lo, hi, pct)


def build_schedule(spec: RunSpec, total_steps: int) -> Schedule:
    """The schedule ``spec.schedule`` names, over ``total_steps`` steps."""
    kind = spec.schedule
    if kind == "onecycle":
        return OneCycleSchedule(
            total_steps,
            spec.lr_min,
            spec.lr_max,
            spec.momentum_max,
            spec.momentum_min,
            rise_fraction=spec.rise_fraction,
            final_div=spec.final_div,
        )
    if kind in ("range_exp", "range_linear"):
        return RangeTestSchedule(
            total_steps,
            spec.lr_min,
            spec.lr_max,
            spec.momentum_max,
            spec.momentum_min,
            exponential=kind == "range_exp",
        )
    if kind == "step":
        return StepSchedule(
            total_steps, spec.lr_max, list(spec.step_milestones), spec.step_gamma, spec.momentum_max
        )
    if kind == "constant":
        return ConstantSchedule(total_steps, spec.lr_max, spec.momentum_max)
    raise UserError(f"unknown schedule {kind!r}; use onecycle, constant, step, range_exp or range_linear")
