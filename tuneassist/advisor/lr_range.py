"""Reading an LR range test: the largest LR at which the loss still falls is the top of 1cycle.

The paper (after Smith 2018) reads the range-test curve by eye. Here the same reading is made
repeatable: the loss is smoothed on the log-LR axis, several independent estimates of "where the
loss stops falling" are computed, and the ones that agree are combined into the recommended max LR.
Each estimate, and whether they agree, is reported, so a person can check the reasoning.

Estimates (all on the smoothed curve, x = log10 LR):
- ``valley``: the end of the descent, the largest LR before the minimum where the loss still falls
  at least a tenth as fast as at its steepest (the floor of the valley, where fastai's valley rule
  ends its search);
- ``steepest``: the LR of steepest descent (usually a few times below the top: a cautious value);
- ``min_div10``: the LR of the lowest loss divided by 10 (the classic rule; it counts in the vote as
  the minimum itself, ``min_div10 * 10``, since 1cycle's top is where the loss stops falling);
- ``val_min``: the LR of the lowest validation loss, when the range test recorded one (the paper's
  reading);
- ``divergence``: where the loss blew up (the training loss, or the validation loss staying above
  10x its best); a bound, not a vote: the max LR stays 1.5x below it.

The estimates that agree locate ``descent_end``, where the loss stops falling. That is not yet the top
of 1cycle: on real data the loss then lies on a floor for one to two decades before it blows up, and
1cycle trains best well onto that floor (the large LRs regularise; the ramp gives the net time to
adapt). The top is ``floor_middle``, the middle of the floor on the log scale, sqrt(descent_end x
divergence). Measured by ``benchmarks/lr_rule.py`` on real CIFAR-10 against a 1cycle grid at the
final run's length: the end of the descent read 2-8x too low on simple3 and a no-BN net, the floor's
middle was the grid's best (``benchmarks/results/lr-rule-*.json``). Without a blow-up in the range
the end of the descent is used, as a lower bound (the reading asks for a longer range).

numpy only: importable without torch, testable on recorded curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tuneassist.advisor.numfmt import floor_sig, fmt_num, round_sig

# Estimates agree when they lie within this factor of each other.
AGREE_FACTOR = 3.0
# The max LR stays this factor below the divergence point.
DIVERGENCE_MARGIN = 1.5
# Smoothing time constant as a fraction of the log-LR span covered.
SPAN_FRACTION = 0.04
MIN_POINTS = 8
# Step-to-step noise above this fraction of the total fall makes the reading "noisy".
NOISY_RATIO = 0.35
# The validation loss has blown up (the divergence point) when it stays above this many times its best.
VAL_BLOWUP = 10.0

FAILURES = ("flat", "no_divergence", "diverged_immediately", "noisy", "too_short")


def smooth_log(log_lr: np.ndarray, y: np.ndarray, span: float) -> np.ndarray:
    """Debiased EMA on the log-LR axis, run forward then backward.

    The decay per point depends on the log-LR distance, so linear and exponential range tests are
    smoothed alike. The backward pass cancels the forward pass's lag (a one-way EMA shifts the curve
    to larger LRs by about its span, which would bias every estimate upward).
    """
    if len(y) == 0:
        return y.copy()

    def one_way(x: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.empty_like(v)
        s = w = 0.0
        prev = x[0]
        for i in range(len(v)):
            a = math.exp(-abs(x[i] - prev) / span) if i else 0.0
            s = a * s + (1 - a) * v[i]
            w = a * w + (1 - a)
            out[i] = s / w
            prev = x[i]
        return out

    fwd = one_way(log_lr, y)
    return one_way(log_lr[::-1], fwd[::-1])[::-1]


def robust_sigma(r: np.ndarray) -> float:
    """Standard deviation estimated from the median absolute deviation (outliers do not count)."""
    if len(r) < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


@dataclass
class LRSuggestion:
    """The reading of one range test: the 1cycle LR range, how sure, and why."""

    max_lr: float | None
    min_lr: float | None
    confidence: str  # 'high' | 'medium' | 'low'
    estimates: dict[str, float | None]
    failure: str | None
    advice: str | None
    explanation: str
    agreement: tuple[int, int] = (0, 0)  # (estimates that agree, estimates available)
    agreeing: list[str] = field(default_factory=list)  # names of the estimates that were combined
    # A range to re-run the test with, when the curve asks for it (failures).
    retry_range: tuple[float, float] | None = None
    evidence: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["agreement"] = list(self.agreement)
        d["retry_range"] = list(self.retry_range) if self.retry_range else None
        return d


def _times(r: float) -> str:
    """A safety factor for a sentence: '1.5x', '12x'."""
    return f"{r:.1f}x" if r < 3 else f"{r:.0f}x"


def _valid_prefix(lrs: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Keep the points before the first NaN/inf loss; return the LR where that happened."""
    bad = ~np.isfinite(losses) | ~np.isfinite(lrs)
    if bad.any():
        k = int(np.argmax(bad))
        return lrs[:k], losses[:k], float(lrs[k]) if np.isfinite(lrs[k]) else None
    return lrs, losses, None


def _check_inputs(lrs: Sequence[float], losses: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(lrs, dtype=float).ravel()
    y = np.asarray(losses, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{what}: {len(x)} LRs but {len(y)} losses")
    if np.any(x[np.isfinite(x)] <= 0):
        raise ValueError(f"{what}: LRs must be positive")
    fx = x[np.isfinite(x)]
    if len(fx) > 1 and np.any(np.diff(fx) < 0):
        raise ValueError(f"{what}: LRs must not decrease (a range test raises the LR every step)")
    return x, y


def _val_blowup(vx: np.ndarray, vy: np.ndarray) -> int | None:
    """Index of the evaluation from which the validation loss has blown up for good, if it did.

    Blown up: above VAL_BLOWUP times the best validation loss recorded before it, and so on to the
    end of the test. A single spike that comes back down (BatchNorm's running statistics lag a fast
    LR ramp) is not a blow-up; a loss that only gets worse as the LR keeps rising is. Only a finite
    loss is judged here (a NaN/inf already cut the curve).
    """
    if len(vy) < 2:
        return None
    best_before = np.minimum.accumulate(vy)[:-1]
    blown = np.concatenate([[False], vy[1:] > VAL_BLOWUP * np.maximum(best_before, 1e-12)])
    if not blown[-1]:
        return None
    j = len(vy) - 1
    while blown[j - 1]:  # blown[0] is False
        j -= 1
    return j


def _val_minimum(val_lrs: Sequence[float], val_losses: Sequence[float]) -> tuple[float | None, float | None]:
    """LR of the lowest (clipped, median-filtered, lightly smoothed) val loss, and where it blew up.

    The validation curve of a range test is sparse and spiky, and its end can be orders of magnitude
    above its start (3e4 from 2.7 in a recorded ResNet test): smoothed as it is, the blow-up leaks
    back over the whole curve and moves its minimum to the first points. So the curve is cut where it
    blew up (see `_val_blowup`, the divergence point), clipped like the training loss, and passed
    through a 3-point running median before it is smoothed.
    """
    vx, vy = _check_inputs(val_lrs, val_losses, "validation curve")
    vx, vy, v_bad = _valid_prefix(vx, vy)
    j = _val_blowup(vx, vy)
    if j is not None:
        lr_blown = float(vx[j])
        v_bad = lr_blown if v_bad is None else min(v_bad, lr_blown)
        vx, vy = vx[:j], vy[:j]
    if len(vy) < 5:
        return None, v_bad
    lx = np.log10(vx)
    gaps = np.diff(lx)
    step = float(np.median(gaps[gaps > 0])) if np.any(gaps > 0) else 1.0
    head = max(2, len(vy) // 5)
    base = float(np.median(vy[:head]))
    ceiling = base + 2.0 * max(base - float(np.min(vy)), 0.25 * abs(base))
    # A 3-point running median first: a lone spike (or a lone lucky point) between evaluations is
    # dropped instead of being spread over its neighbours by the EMA.
    vm = np.minimum(vy, ceiling)
    vm = np.array([np.median(vm[i - 1 : i + 2]) if 0 < i < len(vm) - 1 else vm[i] for i in range(len(vm))])
    vs = smooth_log(lx, vm, 0.75 * step)
    i = int(np.argmin(vs))
    level = float(np.median(vs[:head]))
    fall = float(np.max(vs[: i + 1]) - vs[i])
    if fall < 0.02 * max(abs(level), 1e-12):
        return None, v_bad  # the validation loss never fell: it says nothing about the top
    return float(vx[i]), v_bad


def _cluster(values: dict[str, float], prefer: Sequence[str]) -> list[str]:
    """The largest group of estimates within AGREE_FACTOR of each other.

    Ties go to the group holding the earliest name in `prefer` (the paper's own readings first),
    then to the lower group (the safer LR).
    """
    names = sorted(values, key=lambda n: values[n])
    logs = [math.log10(values[n]) for n in names]
    width = math.log10(AGREE_FACTOR) + 1e-9
    groups: list[list[str]] = []
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and logs[j + 1] - logs[i] <= width:
            j += 1
        groups.append(names[i : j + 1])

    def key(g: list[str]) -> tuple[int, int]:
        rank = min((prefer.index(n) for n in g if n in prefer), default=len(prefer))
        return (-len(g), rank)

    best = min(groups, key=key)  # min() keeps the first (lowest) group among equals
    return best


def _dedupe(lx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average points that share an LR (a warm-up at constant LR) so slopes stay finite."""
    ux, inv = np.unique(lx, return_inverse=True)
    if len(ux) == len(lx):
        return lx, y
    sums = np.bincount(inv, weights=y)
    counts = np.bincount(inv)
    return ux, sums / counts


@dataclass
class _Reading:
    """What is known about a range test while it is read: the estimates so far, the numbers behind
    them, and the divergence point (which later steps may move lower)."""

    estimates: dict[str, float | None]
    evidence: dict[str, float | None]
    lr_start: float | None  # the first LR of the test, before any cut
    div_lr: float | None
    val_min: float | None
    val_div: bool  # the divergence point is where the validation loss blew up

    def fail(self, kind: str, sentence: str, advice: str, retry: tuple[float, float] | None) -> LRSuggestion:
        """No LR range: the curve cannot be read; `advice` says how to re-run it."""
        return LRSuggestion(
            max_lr=None,
            min_lr=None,
            confidence="low",
            estimates=self.estimates,
            failure=kind,
            advice=advice,
            explanation=f"No LR range suggested: {sentence} {advice}",
            retry_range=retry,
            evidence=self.evidence,
        )

    def start_lower(self, sentence: str) -> LRSuggestion:
        """The loss blew up before it could fall: re-run from two decades below the start."""
        assert self.div_lr is not None
        lo = (self.lr_start or self.div_lr / 10) / 100
        return self.fail(
            "diverged_immediately",
            sentence,
            f"Start lower: re-run the range test from {fmt_num(lo)} to {fmt_num(self.div_lr)}.",
            (lo, self.div_lr),
        )


@dataclass
class _Curve:
    """The training loss on the log-LR axis, smoothed and cut at the blow-up."""

    lx: np.ndarray  # log10 LR
    x: np.ndarray  # LR
    y: np.ndarray  # the raw loss
    ys: np.ndarray  # the smoothed loss
    level: float  # where the smoothed loss started (the first tenth of the span)
    scale: float
    fall: float  # how far the smoothed loss fell to its minimum
    sigma: float  # step-to-step noise of the raw loss around the smoothed one
    sigma_s: float  # that noise left in the smoothed curve


def _read_inputs(
    lrs: Sequence[float],
    losses: Sequence[float],
    val_lrs: Sequence[float] | None,
    val_losses: Sequence[float] | None,
    diverged_at_lr: float | None,
) -> tuple[np.ndarray, np.ndarray, _Reading]:
    """The finite part of the curve, and the divergence point from the engine, a NaN or the val loss."""
    x, y = _check_inputs(lrs, losses, "range test")
    lr_start = float(x[0]) if len(x) and math.isfinite(x[0]) else None
    x, y, nan_lr = _valid_prefix(x, y)
    div_lr = min((v for v in (diverged_at_lr, nan_lr) if v is not None), default=None)

    val_min: float | None = None
    val_div = False
    if val_lrs is not None and val_losses is not None and len(val_lrs):
        val_min, v_bad = _val_minimum(val_lrs, val_losses)
        if v_bad is not None and (div_lr is None or v_bad < div_lr):
            div_lr, val_div = v_bad, True

    estimates: dict[str, float | None] = {
        "steepest": None,
        "valley": None,
        "min_div10": None,
        "divergence": div_lr,
        "val_min": val_min,
        "descent_end": None,
        "floor_middle": None,
    }
    return x, y, _Reading(estimates, {}, lr_start, div_lr, val_min, val_div)


def _skip_warmup(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the warm-up, on the log-LR axis: the first steps move the loss for reasons unrelated to the
    LR (batch-norm statistics settling, the first updates away from the initialisation).

    In a linear test the first steps already span decades, so only what lies in the first tenth of the
    log-LR span is skipped."""
    n_all = len(y)
    skip = 0
    if n_all >= 2 * MIN_POINTS:
        lx_all = np.log10(x)
        early = int(np.sum(lx_all < lx_all[0] + 0.1 * (lx_all[-1] - lx_all[0])))
        skip = min(max(3, round(0.05 * n_all)), early, n_all // 4)
    return _dedupe(np.log10(x[skip:]), y[skip:])


def _smoothed_curve(lx: np.ndarray, y: np.ndarray, r: _Reading) -> _Curve:
    """Smooth the loss, find the blow-up inside the recorded curve, cut it there, and measure the noise."""
    gaps = np.diff(lx)
    step = float(np.median(gaps))
    span = max(SPAN_FRACTION * float(lx[-1] - lx[0]), 2.0 * step)
    # Clip the blow-up before smoothing: one loss of 200 at the end would otherwise leak into the
    # smoothed curve half a decade back and fake an early divergence.
    head = max(2, int(np.sum(lx < lx[0] + 0.1 * (lx[-1] - lx[0]))))  # the first tenth of the span
    base = float(np.median(y[:head]))
    low = float(np.percentile(y, 5))
    ceiling = base + 2.0 * max(base - low, 0.25 * abs(base))
    ys = smooth_log(lx, np.minimum(y, ceiling), span)

    level = float(np.median(ys[:head]))
    scale = max(abs(level), 1e-12)

    # Divergence inside the recorded curve (when the engine did not flag it): the smoothed loss
    # climbs past 4x its minimum or clearly above where it started. Points after it are noise.
    i_min = int(np.argmin(ys))
    y_min = float(ys[i_min])
    fall = float(np.max(ys[: i_min + 1]) - y_min)
    thresh = level + max(fall, 0.1 * scale)
    if y_min > 0:
        thresh = min(thresh, 4.0 * y_min)
    above = np.nonzero((ys[i_min:] > thresh) | (y[i_min:] >= ceiling))[0]
    if len(above):
        j = i_min + int(above[0])
        seen = float(10 ** lx[j])
        if r.div_lr is None or seen < r.div_lr:
            r.div_lr, r.val_div = seen, False
            r.estimates["divergence"] = r.div_lr
        lx, y, ys = lx[: max(j, 1)], y[: max(j, 1)], ys[: max(j, 1)]
    x = 10**lx

    sigma = robust_sigma(y - ys)
    sigma_s = sigma / math.sqrt(3.0 * max(span / step, 1.0))
    r.evidence.update(
        start_loss=level,
        min_loss=y_min,
        fall=fall,
        noise=sigma,
        lr_first=float(x[0]),
        lr_last=float(x[-1]),
        smoothing_span_decades=span,
    )
    return _Curve(lx, x, y, ys, level, scale, fall, sigma, sigma_s)


def _flat_failure(c: _Curve, r: _Reading) -> LRSuggestion | None:
    """No answer when the loss did not fall by more than its noise (and 3% of its level)."""
    if c.fall >= max(0.03 * c.scale, 4.0 * c.sigma_s):
        return None
    x, div_lr = c.x, r.div_lr
    if div_lr is not None and r.lr_start is not None and div_lr < 10 * r.lr_start:
        return r.start_lower(f"the loss did not fall before it blew up at LR {fmt_num(div_lr)}.")
    if div_lr is not None:
        return r.fail(
            "flat",
            f"the loss did not fall between LR {fmt_num(float(x[0]))} and {fmt_num(div_lr)}, "
            "where it blew up.",
            "The model is not learning: check the labels, the input normalisation and the model, "
            "then re-run the range test with more steps.",
            None,
        )
    return r.fail(
        "flat",
        f"the loss did not fall between LR {fmt_num(float(x[0]))} and {fmt_num(float(x[-1]))} "
        f"(it moved {c.fall:.2g} from {c.level:.3g}).",
        f"The range is too low or the model is not learning: re-run up to {fmt_num(float(x[-1]) * 100)}, "
        "and check the labels, the input normalisation and the model.",
        (float(x[0]), float(x[-1]) * 100),
    )


def _descent_estimates(c: _Curve, estimates: dict[str, float | None]) -> int:
    """The steepest, valley and min/10 estimates on the smoothed curve before its minimum; returns the
    index of that minimum."""
    grad = np.gradient(c.ys, c.lx)
    i_min = int(np.argmin(c.ys))
    g = grad[: i_min + 1]
    i_steep = int(np.argmin(g))
    if g[i_steep] < 0:
        estimates["steepest"] = float(c.x[i_steep])
        still = np.nonzero(g[i_steep:] <= 0.1 * g[i_steep])[0]
        estimates["valley"] = float(c.x[i_steep + int(still[-1])])
    estimates["min_div10"] = float(c.x[i_min]) / 10
    return i_min


def _agreement(estimates: dict[str, float | None], lr_min_loss: float) -> tuple[list[str], int, float]:
    """The estimates that agree, how many voted, and the end of the descent they locate (their median
    on the log scale). min/10 votes as the minimum itself (see the module notes)."""
    votes = {n: v for n in ("valley", "steepest", "val_min") if (v := estimates[n]) is not None}
    votes["min_div10"] = lr_min_loss
    group = _cluster(votes, prefer=("val_min", "valley", "min_div10", "steepest"))
    logs = sorted(math.log10(votes[n]) for n in group)
    mid = len(logs) // 2
    centre = 10 ** (logs[mid] if len(logs) % 2 else 0.5 * (logs[mid - 1] + logs[mid]))
    return group, len(votes), centre


def _floor_middle(
    centre: float, div_lr: float | None, estimates: dict[str, float | None]
) -> tuple[float, bool]:
    """The top of 1cycle: midway (on the log scale) across the floor between the end of the descent and
    the blow-up (see the module notes), kept DIVERGENCE_MARGIN below the blow-up. Without a blow-up the
    end of the descent is a lower bound. Returns the max LR, rounded, and whether the margin capped it."""
    cap = div_lr / DIVERGENCE_MARGIN if div_lr is not None else math.inf
    top = math.sqrt(centre * div_lr) if div_lr is not None and div_lr > centre else centre
    estimates["floor_middle"] = top if div_lr is not None and div_lr > centre else None
    raw_max = min(top, cap)
    max_lr = round_sig(raw_max)
    if max_lr > cap:
        max_lr = floor_sig(raw_max)
    return max_lr, top > cap


def _min_lr(c: _Curve, i_min: int, max_lr: float, evidence: dict[str, float | None]) -> tuple[float, str]:
    """Min LR: a tenth of the top, unless the loss had not started to fall there yet (then where it
    started, with the sentence that says so)."""
    min_lr = round_sig(max_lr / 10)
    min_note = ""
    started = np.nonzero(c.ys[: i_min + 1] <= c.level - 0.1 * c.fall)[0]
    if len(started):
        start_lr = float(c.x[int(started[0])])
        evidence["fall_starts"] = start_lr
        seen_before = np.nonzero(c.x[: int(started[0])] >= max_lr / 10)[0]
        if start_lr > 2 * max_lr / 10 and len(seen_before):
            min_lr = round_sig(min(start_lr, max_lr / 3))
            min_note = f" Min LR {fmt_num(min_lr)}, not max/10: below it the loss had not started to fall."
    return min_lr, min_note


def _failure_advice(
    c: _Curve, i_min: int, max_lr: float, div_lr: float | None
) -> tuple[str | None, str | None, tuple[float, float] | None]:
    """Failures that still leave a usable, uncertain answer: a noisy curve, or one still falling at the
    end of the range. Returns (failure, advice, the range to re-run)."""
    x, sigma, fall = c.x, c.sigma, c.fall
    # Did the loss turn up by the end? Read the raw tail: the smoothed edge lags by the span.
    k_tail = max(5, len(c.y) // 50)
    end_rise = float(np.median(c.y[-k_tail:]) - c.ys[i_min])
    if sigma > NOISY_RATIO * fall:
        advice = (
            f"The curve is noisy (step-to-step noise {sigma:.2g} against a fall of {fall:.2g}): re-run with "
            "a larger batch or more steps, or repeat with another seed and report the spread."
        )
        return "noisy", advice, (float(x[0]), float(x[-1]))
    if div_lr is None and end_rise < max(0.03 * fall, 3.0 * sigma / math.sqrt(k_tail)):
        advice = (
            f"The loss was still falling at the end of the range (LR {fmt_num(float(x[-1]))}): extend the "
            f"range, re-run up to {fmt_num(float(x[-1]) * 10)}; treat {fmt_num(max_lr)} as a lower bound."
        )
        return "no_divergence", advice, (float(x[0]), float(x[-1]) * 10)
    return None, None, None


def _lr_sentence(
    r: _Reading, lr_last: float, min_lr: float, max_lr: float, agreement: tuple[int, int], centre: float
) -> str:
    """'Use 1cycle LR 0.02 → 0.2. Valley …; val loss lowest at …, diverges at …. Agreement: fair (2 of 4).'
    and, when the top sits on the floor, why it is there."""
    est, div_lr, val_min = r.estimates, r.div_lr, r.val_min
    k, n = agreement
    word = "good" if k >= 3 else "fair" if k == 2 else "poor"
    parts = [
        f"{label} {fmt_num(est[name])}"
        for name, label in (("valley", "Valley"), ("steepest", "steepest"), ("min_div10", "min/10"))
        if est[name] is not None
    ]
    if div_lr is None:
        div_txt = f"no divergence up to {fmt_num(lr_last)}"
    elif r.val_div:
        div_txt = f"{'' if val_min is not None else 'val loss '}blows up at {fmt_num(div_lr)}"
    else:
        div_txt = f"diverges at {fmt_num(div_lr)}"
    val_txt = "no validation curve to read"
    if val_min is not None:
        val_txt = f"val loss lowest at {fmt_num(val_min)}"
    tail = f"{val_txt} and {div_txt}" if r.val_div and val_min is not None else f"{val_txt}, {div_txt}"
    text = (
        f"Use 1cycle LR {fmt_num(min_lr)} → {fmt_num(max_lr)}. {', '.join(parts)}; {tail}. "
        f"Agreement: {word} ({k} of {n})."
    )
    if est["floor_middle"] is not None:
        assert div_lr is not None
        text += (
            f" The top sits midway (log scale) between the end of the descent, {fmt_num(centre)}, and the "
            f"blow-up: large LRs regularise, and it stays {_times(div_lr / max_lr)} below the blow-up."
        )
    return text


def suggest_lr(
    lrs: Sequence[float],
    losses: Sequence[float],
    val_lrs: Sequence[float] | None = None,
    val_losses: Sequence[float] | None = None,
    *,
    diverged_at_lr: float | None = None,
) -> LRSuggestion:
    """Read a range test (train loss per step, optional validation loss at some LRs) into a 1cycle range.

    `diverged_at_lr` is the LR at which the engine stopped the test for divergence, if it did.
    """
    x, y, r = _read_inputs(lrs, losses, val_lrs, val_losses, diverged_at_lr)
    lx, y = _skip_warmup(x, y)
    if len(y) < MIN_POINTS:
        if r.div_lr is not None:
            return r.start_lower(f"the loss blew up at LR {fmt_num(r.div_lr)}, after only {len(x)} steps.")
        return r.fail(
            "too_short",
            f"only {len(x)} steps were recorded.",
            "Run the range test longer (a few hundred steps) so the curve can be read.",
            None,
        )
    c = _smoothed_curve(lx, y, r)
    flat = _flat_failure(c, r)
    if flat is not None:
        return flat

    i_min = _descent_estimates(c, r.estimates)
    group, n_votes, centre = _agreement(r.estimates, float(c.x[i_min]))
    r.estimates["descent_end"] = centre
    max_lr, capped = _floor_middle(centre, r.div_lr, r.estimates)
    min_lr, min_note = _min_lr(c, i_min, max_lr, r.evidence)
    failure, advice, retry = _failure_advice(c, i_min, max_lr, r.div_lr)

    k = len(group)
    confidence = "low" if failure else "high" if k >= 3 else "medium" if k == 2 else "low"
    explanation = _lr_sentence(r, float(c.x[-1]), min_lr, max_lr, (k, n_votes), centre)
    if capped:
        explanation += f" Kept {DIVERGENCE_MARGIN:g}x below the divergence point."
    explanation += min_note
    if advice:
        explanation += f" Caution: {advice}"
    return LRSuggestion(
        max_lr=max_lr,
        min_lr=min_lr,
        confidence=confidence,
        estimates=r.estimates,
        failure=failure,
        advice=advice,
        explanation=explanation,
        agreement=(k, n_votes),
        agreeing=sorted(group),
        retry_range=retry,
        evidence=r.evidence,
    )
