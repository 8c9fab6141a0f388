"""Under-/over-fitting diagnosis of one run from its train and validation curves.

The paper's reading (DESIGN.md §2 step 5): validation loss still falling steadily means the run
underfits (more LR, less regularisation); validation loss rising while the training loss falls means
it overfits (more regularisation, WD first); the optimum is where the validation loss flattens.
The reading is made on the last window of the run (a third of its evaluations) with a straight-line
fit, and a change counts only when it is larger than the curve's own jitter, so noise is not
mistaken for a trend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tuneassist.advisor.grids import first_weight_decay, model_kind
from tuneassist.advisor.numfmt import fmt_acc, fmt_num, fmt_sci, round_sig

KINDS = ("underfitting", "overfitting", "good_fit", "diverged", "too_noisy", "too_short", "not_learning")
MIN_EVALS = 4
# A window change counts when it is at least this fraction of the loss level and 2 standard errors.
TREND = 0.02
# Jitter above this fraction of the loss level, without a clear trend, is "too noisy to tell".
NOISE = 0.05
# Val accuracy below chance x this + 2 points is "not learning yet", whatever the loss curve's shape.
CHANCE_FACTOR = 1.5


@dataclass
class Diagnosis:
    """What the curves say, the numbers behind it, and the next value to try."""

    kind: str
    evidence: dict[str, float | int | str | None]
    remedy: str
    explanation: str
    window: tuple[int, int] | None = None  # first and last step of the window read
    notes: list[str] = field(default_factory=list)
    # The remedy's first step as factors on the current values ({"lr_max": 2.0}); a WD added from 0 is
    # given as the value itself. Empty when there is nothing concrete to try.
    change: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window) if self.window else None
        return d


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line: (change over the span of x, residual sigma, standard error of that change)."""
    span = float(x[-1] - x[0])
    xm = x - x.mean()
    sxx = float(np.sum(xm**2))
    if len(x) < 2 or sxx == 0:
        return 0.0, 0.0, math.inf
    slope = float(np.sum(xm * (y - y.mean())) / sxx)
    res = y - (y.mean() + slope * xm)
    sigma = float(math.sqrt(np.sum(res**2) / (len(x) - 2))) if len(x) > 2 else 0.0
    se = sigma / math.sqrt(sxx) * span if len(x) > 2 else math.inf
    return slope * span, sigma, se


def _arr(v: Sequence[float | None] | None) -> np.ndarray:
    return np.asarray([] if v is None else v, dtype=float).ravel()


def _more(
    name: str, current: Mapping[str, float | None] | None, factor: float, model: str | None = None
) -> str:
    """'raise WD to 3e-4' style phrase when the current value is known, else a relative one.

    From WD 0 there is no multiple to raise: the first value is the smallest non-zero one of the net
    kind's grid (1e-4 for the shallow net, which the paper gives 1e-2 to 1e-4), 1e-5 when the net is
    not known.
    """
    v = (current or {}).get(name)
    label = {"lr_max": "the max LR", "weight_decay": "WD", "batch_size": "TBS"}[name]
    verb = "raise" if factor > 1 else "lower"
    if v is None:
        return f"{verb} {label} ({'x' if factor > 1 else '÷'}{fmt_num(factor if factor > 1 else 1 / factor)})"
    if name == "batch_size":
        return f"{verb} {label} to {int(v * factor)} (from {int(v)})"
    if name == "weight_decay" and v == 0:
        if factor <= 1:
            return "keep WD at 0"
        if model is None:
            return "add WD (1e-5)"
        return (
            f"add WD ({fmt_sci(first_weight_decay(model))}, the low end of the {model_kind(model)}-net grid)"
        )
    fmt = fmt_sci if name == "weight_decay" else fmt_num
    return f"{verb} {label} to {fmt(round_sig(v * factor))} (from {fmt(v)})"


def _wd_factor(current: Mapping[str, float | None] | None, model: str | None) -> float:
    """x3 on the current WD; from 0, the value `_more` names (the low end of the net kind's grid)."""
    if (current or {}).get("weight_decay") == 0:
        return first_weight_decay(model) if model is not None else 1e-5
    return 3.0


@dataclass
class _Window:
    """The last window of the validation curve, read with a straight line, and the numbers behind it."""

    wx: np.ndarray  # steps of the window
    wy: np.ndarray  # val loss in the window
    level: float  # mean absolute val loss in the window: what a change is measured against
    change: float  # fitted change over the window
    sigma: float  # residual jitter around the line
    t: float  # change / its standard error
    i_med: int  # index of the best val loss on a 3-point running median
    i_min: int  # index of the recorded val loss quoted as the best
    v_min: float
    rebound: float  # the fitted end of the window above the best
    evidence: dict[str, float | int | str | None]
    t_change_rel: float | None  # relative change of the train loss over the window
    nums: str  # the numbers in words, for the sentences

    @property
    def span(self) -> tuple[int, int]:
        return (int(self.wx[0]), int(self.wx[-1]))


def _nan_diverged(
    ts: np.ndarray, tl: np.ndarray, vs: np.ndarray, vl: np.ndarray, current: Mapping[str, float | None] | None
) -> Diagnosis | None:
    """Diverged when any loss is NaN/inf: at the first step where one became so."""
    bad_t = np.nonzero(~np.isfinite(tl))[0]
    bad_v = np.nonzero(~np.isfinite(vl))[0]
    if not (len(bad_t) or len(bad_v)):
        return None
    firsts = [float(ts[bad_t[0]])] if len(bad_t) else []
    firsts += [float(vs[bad_v[0]])] if len(bad_v) else []
    at = min(firsts)
    return Diagnosis(
        kind="diverged",
        evidence={"diverged_at_step": int(at)},
        remedy=f"{_more('lr_max', current, 1 / 3)} and run again.",
        change={"lr_max": 1 / 3},
        explanation=f"Diverged: the loss became NaN/inf at step {int(at)}; the LR is too high for this "
        "setup.",
    )


def _read_window(
    ts: np.ndarray, tl: np.ndarray, vs: np.ndarray, vl: np.ndarray, va: np.ndarray | None, fraction: float
) -> _Window:
    """Fit the last `fraction` of the evaluations (at least 3), find the best val loss, and the train
    curve over the same steps."""
    n = len(vl)
    w = min(n, max(3, math.ceil(n * fraction)))
    wx, wy = vs[-w:], vl[-w:]
    level = float(max(np.mean(np.abs(wy)), 1e-12))
    change, sigma, se = _fit(wx, wy)
    t = change / se if se > 0 else math.copysign(math.inf, change) if change else 0.0
    # The best value on a 3-point running median: one lucky evaluation is not "the best". The ends keep
    # their own value (a median of two would be their mean, a loss never recorded), and the best is
    # quoted as recorded, at the step that recorded it.
    med = np.array([np.median(vl[i - 1 : i + 2]) if 0 < i < n - 1 else vl[i] for i in range(n)])
    i_med = int(np.argmin(med))
    v_min = float(med[i_med])
    i_min = max(0, i_med - 1) + int(np.argmin(np.abs(vl[max(0, i_med - 1) : i_med + 2] - v_min)))
    end_fit = float(np.mean(wy) + change / 2)  # the fitted line at the window's end

    evidence: dict[str, float | int | str | None] = {
        "val_change": change,
        "val_change_rel": change / level,
        "val_noise": sigma,
        "val_t": t,
        "val_last": float(vl[-1]),
        "val_min": v_min,
        "val_min_step": int(vs[i_min]),
        "window_start": int(wx[0]),
        "window_end": int(wx[-1]),
    }
    in_win = ts >= wx[0]
    t_change_rel: float | None = None
    if int(np.sum(in_win)) >= 3:
        t_change, _, _ = _fit(ts[in_win], tl[in_win])
        t_level = float(max(np.mean(np.abs(tl[in_win])), 1e-12))
        t_change_rel = t_change / t_level
        evidence["train_change_rel"] = t_change_rel
        evidence["gap"] = float(np.mean(wy) - np.mean(tl[in_win]))
    else:
        evidence["train_change_rel"] = None
        evidence["gap"] = None
    if va is not None and np.all(np.isfinite(va[-w:])):
        evidence["val_acc_last"] = float(va[-1])
        evidence["val_acc_change"], _, _ = _fit(wx, va[-w:])

    gap = evidence["gap"]
    gap_txt = f", train/val gap {gap:.3g}" if isinstance(gap, float) else ""
    nums = (
        f"val loss {end_fit - change:.3g} → {end_fit:.3g} on a line fitted to steps "
        f"{int(wx[0])}–{int(wx[-1])}, noise {sigma:.2g}"
        f"{gap_txt}"
    )
    return _Window(
        wx, wy, level, change, sigma, t, i_med, i_min, v_min, end_fit - v_min, evidence, t_change_rel, nums
    )


def _near_chance(
    win: _Window, vl: np.ndarray, num_classes: int | None, current: Mapping[str, float | None] | None
) -> Diagnosis | None:
    """Not learning yet: val accuracy (else val loss) still near chance, so no fit can be read."""
    if not (num_classes and num_classes > 1):
        return None
    chance = 1.0 / num_classes
    acc_last = win.evidence.get("val_acc_last")
    near = (
        acc_last <= CHANCE_FACTOR * chance + 0.02
        if isinstance(acc_last, float)
        else float(vl[-1]) >= 0.97 * math.log(num_classes)
    )
    if not near:
        return None
    what = f"val accuracy {fmt_acc(acc_last)}" if isinstance(acc_last, float) else f"val loss {vl[-1]:.3g}"
    return Diagnosis(
        kind="not_learning",
        evidence={**win.evidence, "chance_acc": chance},
        remedy="Train longer before reading it; if it stays at chance, check the data and labels, "
        f"then {_more('lr_max', current, 1 / 3)} (or raise it, if the loss never fell).",
        explanation=f"Not learning yet: {what} is near chance ({100 * chance:.0f}% for {num_classes} "
        "classes), so no fit can be read.",
        window=win.span,
    )


def _val_climbed(
    win: _Window, vs: np.ndarray, vl: np.ndarray, current: Mapping[str, float | None] | None
) -> Diagnosis | None:
    """Diverged without a NaN: the val loss ended over 3x its best and above where it started."""
    v_min = win.v_min
    if not (v_min > 0 and float(vl[-1]) > 3 * v_min and float(vl[-1]) > float(vl[0])):
        return None
    return Diagnosis(
        kind="diverged",
        evidence=win.evidence,
        remedy=f"{_more('lr_max', current, 1 / 3)} and run again.",
        change={"lr_max": 1 / 3},
        explanation=f"Diverged: val loss climbed to {vl[-1]:.3g}, over 3x its best {v_min:.3g} (step "
        f"{int(vs[win.i_min])}) and above its start.",
        window=win.span,
    )


def _rising(
    win: _Window, vs: np.ndarray, current: Mapping[str, float | None] | None, model: str | None
) -> Diagnosis:
    """The val loss rises at the end: unstable when the train loss rises too, else overfitting."""
    if win.t_change_rel is not None and win.t_change_rel > TREND:
        return Diagnosis(
            kind="diverged",
            evidence={**win.evidence, "unstable": "train and val loss both rising"},
            remedy=f"{_more('lr_max', current, 1 / 3)}: training is unstable.",
            change={"lr_max": 1 / 3},
            explanation=f"Unstable: train and val loss both rise at the end ({win.nums}); "
            "the run is on its way to diverging.",
            window=win.span,
        )
    return Diagnosis(
        kind="overfitting",
        evidence=win.evidence,
        remedy=f"{_more('weight_decay', current, 3, model)}; if that is not enough, regularise more in "
        "other ways (stronger augmentation, a smaller TBS).",
        change={"weight_decay": _wd_factor(current, model)},
        explanation=f"Overfitting: val loss rises from its best {win.v_min:.3g} at step {int(vs[win.i_min])} "
        f"while train loss does not ({win.nums}).",
        window=win.span,
    )


def _trend(
    win: _Window, n: int, vs: np.ndarray, current: Mapping[str, float | None] | None, model: str | None
) -> Diagnosis:
    """The window's trend, against its jitter: rising, falling, too noisy to tell, or flat (a good fit)."""
    change, level, t, sigma = win.change, win.level, win.t, win.sigma
    w = len(win.wx)
    rising = (change > TREND * level and t > 2) or (
        win.i_med < n - w and win.rebound > max(0.05 * level, 3 * sigma) and change >= 0
    )
    if rising:
        return _rising(win, vs, current, model)
    if change < -TREND * level and t < -2:
        return Diagnosis(
            kind="underfitting",
            evidence=win.evidence,
            remedy=f"{_more('lr_max', current, 2)} or {_more('weight_decay', current, 1 / 3)}, "
            "or train longer.",
            change={"lr_max": 2.0},
            explanation=f"Underfitting: val loss is still falling steadily ({win.nums}).",
            window=win.span,
        )
    if sigma > NOISE * level:
        # No `change`, on purpose: a larger TBS is no factor the final refinement (reading.py) can apply
        # alone, as the 1cycle range was found at this TBS (it needs rescale_lr_for_batch or a new range
        # test); the other remedies (more eval images, longer runs) change the reading, not the values.
        return Diagnosis(
            kind="too_noisy",
            evidence=win.evidence,
            remedy=f"{_more('batch_size', current, 2)}, evaluate on more images, or train longer "
            "to read a trend.",
            explanation=f"Too noisy to tell: the val loss jitters by {sigma:.2g} ({sigma / level * 100:.0f}% "
            f"of its level) with no clear trend ({win.nums}).",
            window=win.span,
        )
    return Diagnosis(
        kind="good_fit",
        evidence=win.evidence,
        remedy="Keep these values.",
        explanation=f"Good fit: val loss has flattened ({win.nums}).",
        window=win.span,
    )


def diagnose(
    steps: Sequence[float],
    train_loss: Sequence[float | None],
    val_steps: Sequence[float],
    val_loss: Sequence[float | None],
    val_acc: Sequence[float | None] | None = None,
    *,
    lr_max: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    model: str | None = None,
    window_fraction: float = 1 / 3,
    num_classes: int | None = None,
) -> Diagnosis:
    """Under-/over-fitting diagnosis of logged curves (the paper's step 5): underfitting / overfitting /
    good_fit / diverged / too_noisy / too_short / not_learning. Also the public `tuneassist.diagnose`.

    `steps`/`train_loss` per training step, `val_steps`/`val_loss` (and `val_acc`) per evaluation, on
    the same step axis. Give the run's `lr_max`, `weight_decay` and `batch_size` and the remedy names
    values ("raise the max LR to 0.2") instead of directions; `model` picks the first WD to add to a
    run without any; `num_classes` tells a net still at chance ("not_learning") from a good fit.
    Losses may contain None or NaN (a blown-up step); that reads as diverged. Returns the `Diagnosis`:
    `.kind`, `.explanation`, `.remedy`, `.evidence`.
    """
    given = (("lr_max", lr_max), ("weight_decay", weight_decay), ("batch_size", batch_size))
    current = {k: float(v) for k, v in given if v is not None} or None
    ts, tl = _arr(steps), _arr(train_loss)
    vs, vl = _arr(val_steps), _arr(val_loss)
    va = _arr(val_acc) if val_acc is not None and len(val_acc) == len(vl) else None
    if len(ts) != len(tl) or len(vs) != len(vl):
        raise ValueError(
            "steps and losses must have the same length: give one train loss per entry of steps and "
            "one val loss per entry of val_steps"
        )
    nan = _nan_diverged(ts, tl, vs, vl, current)
    if nan is not None:
        return nan
    if len(vl) < MIN_EVALS:
        return Diagnosis(
            kind="too_short",
            evidence={"evaluations": len(vl)},
            remedy=f"Evaluate more often or train longer: at least {MIN_EVALS} validation points are needed.",
            explanation=f"Too short to tell: {len(vl)} validation point(s).",
        )
    win = _read_window(ts, tl, vs, vl, va, window_fraction)
    return (
        _near_chance(win, vl, num_classes, current)
        or _val_climbed(win, vs, vl, current)
        or _trend(win, len(vl), vs, current, model)
    )
