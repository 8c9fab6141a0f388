"""The noise estimate and the tie test of a sweep: whether one candidate's curve really trails another's.

The candidates of a sweep share the seed, the data order and the evaluation steps, so much of each
curve's jitter is common to all of them and cancels in the difference at the same step. A gap is
judged on those paired differences around the decision point (the mean against its standard error, a
t-test); curves that do not share evaluation points fall back to each curve's own jitter (second
differences). A paired noise figure larger than the spread of all candidates is a broken estimate and
is mended. See `sweep` for how the ranking uses these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from tuneassist.advisor.lr_range import robust_sigma

# Ties (curves without shared evaluation points): differences below this many standard deviations of
# the difference of two window means.
TIE_SIGMAS = 2.0
# Ties, either way: never finer than this fraction of the leader's value (identical-looking curves).
TIE_FLOOR = 0.005
# Paired comparison: this many evaluations around the decision point (at least `window`).
PAIR_WINDOW = 5
# Two-sided 95% quantiles of Student's t by degrees of freedom (numpy has no t distribution).
_T95 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def jitter(x: np.ndarray, y: np.ndarray, upto: float) -> float | None:
    """Noise of one curve from its second differences (a straight trend cancels out)."""
    ys = y[x <= upto]
    ys = ys[len(ys) // 4 :]  # the first quarter falls fast: curvature, not noise
    if len(ys) < 5:
        return None
    d2 = ys[:-2] - 2 * ys[1:-1] + ys[2:]
    return robust_sigma(d2) / math.sqrt(6.0)


def window_mean(x: np.ndarray, y: np.ndarray, at: float, k: int, upto: float) -> float | None:
    """Mean of the k finite evaluations nearest `at`, at or before `upto` (one evaluation is too noisy)."""
    keep = (x <= upto * (1 + 1e-9)) & np.isfinite(y)
    xs, ys = x[keep], y[keep]
    if len(xs) == 0:
        return None
    idx = np.argsort(np.abs(xs - at), kind="stable")[:k]
    return float(np.mean(ys[idx]))


def t95(df: int) -> float:
    """Two-sided 95% t quantile; past the table, 1.96 + 2.4/df is within 0.01 of the exact value."""
    return _T95[df] if df in _T95 else 1.96 + 2.4 / df


def _window_idx(x: np.ndarray, at: float, k: int, upto: float) -> np.ndarray:
    """Indices of the k evaluations nearest `at`, at or before `upto`, in step order."""
    keep = np.nonzero(x <= upto * (1 + 1e-9))[0]
    near = keep[np.argsort(np.abs(x[keep] - at), kind="stable")[:k]]
    return np.sort(near)


def paired_diffs(
    xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, at: float, k: int, upto: float
) -> np.ndarray | None:
    """ya - yb at the k evaluations of curve a nearest `at` that curve b recorded too (same step or
    epoch); None when the two do not share at least 4 of them."""
    idx = _window_idx(xa, at, k, upto)
    if len(idx) < 4:
        return None
    diffs = []
    for i in idx:
        j = int(np.argmin(np.abs(xb - xa[i]))) if len(xb) else -1
        if j < 0 or not math.isclose(float(xb[j]), float(xa[i]), rel_tol=1e-6, abs_tol=1e-9):
            return None
        diffs.append(float(ya[i]) - float(yb[j]))
    d = np.asarray(diffs)
    return d if np.all(np.isfinite(d)) else None


class Gap(NamedTuple):
    """How far one candidate trails the leader, and the noise that gap must exceed to count."""

    gap: float  # positive: worse than the leader
    thr: float
    paired: int  # evaluations compared pairwise (0: the curves' own jitter was used)
    broken: float | None = None  # the first noise figure, when it exceeded the candidates' spread
    every: float | None = None  # the smallest trail, when it trails at every paired evaluation


def mend_broken(gaps: dict[int, Gap], values: list[float], jitter_thr: Callable[[], float]) -> dict[int, Gap]:
    """Replace paired noise figures larger than the whole spread of three or more candidates.

    Candidates that share seed and data order have their common jitter cancel in paired
    differences, so a paired figure above the spread of all of them comes from one wild curve (its
    own swings), not from noise the others share: it is a broken estimate, and it must not turn a
    gap into a tie. It is replaced by the median of the sound paired figures, else the curves' own
    jitter, else the tie floor.
    """
    spread = max(values) - min(values) if values else 0.0
    if spread <= 0 or len(values) < 3:
        return gaps
    sound = [g.thr for g in gaps.values() if g.paired and g.thr <= spread]
    out = {}
    for i, g in gaps.items():
        if not g.paired or g.thr <= spread:
            out[i] = g
            continue
        thr = float(np.median(sound)) if sound else jitter_thr()
        if thr > spread:
            thr = TIE_FLOOR * max(abs(v) for v in values)
        out[i] = Gap(g.gap, thr, g.paired, broken=g.thr)
    return out


def jitter_threshold(
    xs: list[np.ndarray], series: list[np.ndarray], idx: list[int], upto: float, window: int, ref: float
) -> float:
    """The tie threshold from the curves' own jitter (the median over `idx`), for window means of
    `window` evaluations; never below the tie floor of `ref`."""
    sig = [s for i in idx if (s := jitter(xs[i], series[i], upto)) is not None]
    sigma = float(np.median(sig)) if sig else 0.0
    return max(TIE_SIGMAS * sigma * math.sqrt(2.0 / window), TIE_FLOOR * abs(ref))


def trailing_gaps(
    xs: list[np.ndarray],
    series: list[np.ndarray],
    at_: dict[int, float],
    lead: int,
    idx: list[int],
    *,
    higher: bool,
    at: float,
    k: int,
    upto: float,
    jitter_thr: Callable[[], float],
) -> dict[int, Gap]:
    """How far each candidate in `idx` trails `lead`, judged on paired differences where the curves
    share their evaluation points, else on the window means `at_` against `jitter_thr()` (the curves'
    own jitter). `higher`: a higher value is better (accuracy)."""
    ref = at_[lead]
    out: dict[int, Gap] = {}
    unpaired_thr: float | None = None
    for i in idx:
        if i == lead:
            continue
        d = paired_diffs(xs[i], series[i], xs[lead], series[lead], at, k, upto)
        if d is not None:
            out[i] = _paired_gap(-d if higher else d, TIE_FLOOR * abs(ref))
        else:
            if unpaired_thr is None:
                unpaired_thr = jitter_thr()
            trail = (ref - at_[i]) if higher else (at_[i] - ref)
            out[i] = Gap(trail, unpaired_thr, 0)
    return mend_broken(out, [at_[i] for i in idx], jitter_thr)


def _paired_gap(worse: np.ndarray, floor: float) -> Gap:
    """The paired gap against its t-interval, or against its own smallest trail when the candidate
    trails at every paired evaluation by more than twice the tie floor.

    A candidate whose curve swings wildly (one that is close to diverging) inflates the spread of
    the differences, so the t-interval can call a gap that holds at every evaluation a tie (the
    issue's TBS pair "2.35 vs 31.2, within noise 59"). Trailing at all of 4 or more evaluations is
    itself the evidence (a sign test: under a tie, 1 chance in 16 or fewer), whatever the swings.
    Twice the floor, because neighbouring evaluations are correlated: a tiny steady offset between
    two calm curves is left to the t-interval.
    """
    n = len(worse)
    gap = float(np.mean(worse))
    thr = max(t95(n - 1) * float(np.std(worse, ddof=1)) / math.sqrt(n), floor)
    least = float(np.min(worse))
    if n >= 4 and least > 2 * floor and thr >= gap:
        return Gap(gap, least, n, every=least)
    return Gap(gap, thr, n)


def gap_words(g: Gap, acc: bool) -> str:
    """'the gap is larger than the noise 0.056', saying when it was read on paired differences."""

    def fmt(v: float) -> str:
        return f"{v * 100:.2g} points" if acc else f"{v:.2g}"

    mended = (
        f" (the noise read on paired evaluations, {fmt(g.broken)}, was wider than the whole spread of the "
        "candidates, the mark of one wild curve, so it was set aside)"
        if g.broken is not None
        else ""
    )
    if g.every is not None:
        return (
            f"it trails at every one of {g.paired} paired evaluations, by {fmt(g.every)} at the least "
            f"({fmt(g.gap)} on average): a gap that holds at every evaluation is not noise"
        )
    if g.paired:
        return (
            f"the gap, {fmt(g.gap)} on average over {g.paired} paired evaluations, is larger than the "
            f"noise {fmt(g.thr)}{mended}"
        )
    return f"the gap is larger than the noise {fmt(g.thr)}{mended}"
