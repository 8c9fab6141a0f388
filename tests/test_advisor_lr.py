"""Rules of the LR range-test reading, on synthetic curves whose answer is known by construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tuneassist.advisor.lr_range import fmt_num, round_sig, smooth_log, suggest_lr


def range_curve(
    lo: float = -4.0,
    hi: float = 1.0,
    n: int = 300,
    m: float = 0.0,
    d: float = math.log10(3),
    noise: float = 0.03,
    seed: int = 0,
    linear: bool = False,
    start: float = 2.3,
    floor: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """A range test whose loss falls (sigmoid in log LR) until LR 10**m, then climbs to 4x at 10**d.

    Like the engine, the curve stops at the divergence point and reports its LR.
    """
    lx = np.linspace(lo, hi, n) if not linear else np.log10(np.linspace(10**lo, 10**hi, n))
    c = m - 1.2
    y = start - (start - floor) / (1 + np.exp(-(lx - c) / 0.3))
    y_m = start - (start - floor) / (1 + np.exp(-(m - c) / 0.3))
    y = np.where(lx <= m, y, y_m * (1 + 3 * ((lx - m) / (d - m)) ** 2))
    y = y + noise * np.random.default_rng(seed).standard_normal(n)
    past = np.nonzero(lx > d)[0]
    if len(past):
        k = int(past[0])
        return 10 ** lx[:k], y[:k], float(10 ** lx[k])
    return 10**lx, y, None


def test_falls_until_1_diverges_at_3_suggests_near_1() -> None:
    lrs, losses, div = range_curve()
    s = suggest_lr(lrs, losses, diverged_at_lr=div)
    assert s.failure is None
    assert 0.4 <= s.max_lr <= 1.5
    assert s.min_lr == pytest.approx(s.max_lr / 10, rel=0.35)
    assert s.estimates["divergence"] == pytest.approx(div)
    assert s.estimates["min_div10"] == pytest.approx(0.1, rel=0.6)
    assert s.estimates["steepest"] < s.estimates["valley"] <= 1.0
    assert s.max_lr < div / 1.5
    assert s.confidence in ("medium", "high")
    assert s.explanation.startswith(f"Use 1cycle LR {fmt_num(s.min_lr)} → {fmt_num(s.max_lr)}.")
    assert "diverges at 3.0" in s.explanation and "Agreement:" in s.explanation


def test_validation_curve_is_read_and_raises_agreement() -> None:
    lrs, losses, div = range_curve()
    val_lrs, val_losses = lrs[::15], losses[::15] + 0.1
    s = suggest_lr(lrs, losses, val_lrs, val_losses, diverged_at_lr=div)
    assert s.estimates["val_min"] is not None and 0.2 <= s.estimates["val_min"] <= 1.5
    assert s.agreement[1] == 4 and s.agreement[0] >= 3
    assert s.confidence == "high"
    assert "val loss lowest at" in s.explanation and "good (" in s.explanation


def _turning_curve() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train loss lowest near LR 1 that turns up without diverging (as BatchNorm keeps a ResNet's
    training loss in range), and its validation curve every 15 steps."""
    lrs, losses, div = range_curve(d=2.0)
    assert div is None
    return lrs, losses, lrs[::15], losses[::15] + 0.1


def test_validation_blowup_is_the_divergence_point() -> None:
    """A val loss that leaves 10x its best for good is divergence, though it stays finite; its
    minimum is still read from the points before (the blow-up clipped, not smeared over them)."""
    lrs, losses, vx, vy = _turning_curve()
    vy[-2:] = [1e3, 1e5]
    s = suggest_lr(lrs, losses, vx, vy)
    assert s.estimates["divergence"] == pytest.approx(vx[-2])
    assert s.estimates["val_min"] is not None and 0.4 <= s.estimates["val_min"] <= 2.0
    assert s.max_lr is not None and s.max_lr <= vx[-2] / 1.5
    assert s.failure is None  # not "no divergence": the val curve showed it
    assert "blows up at 3.3" in s.explanation and "no divergence" not in s.explanation


def test_a_lone_validation_spike_is_neither_divergence_nor_a_shifted_minimum() -> None:
    """BatchNorm's running statistics can give one wild evaluation at a large LR; the next is back."""
    lrs, losses, vx, vy = _turning_curve()
    clean = suggest_lr(lrs, losses, vx, vy)
    vy[13] = 15 * vy.min()
    s = suggest_lr(lrs, losses, vx, vy)
    assert s.estimates["divergence"] is None and "no divergence up to 10" in s.explanation
    assert s.estimates["val_min"] == pytest.approx(clean.estimates["val_min"])
    assert s.max_lr == clean.max_lr


def test_answer_moves_with_the_curve() -> None:
    """The same shape two decades lower gives an answer two decades lower (a shallow net's ~0.01)."""
    lrs, losses, div = range_curve(m=-2.0, d=-2 + math.log10(3))
    s = suggest_lr(lrs, losses, diverged_at_lr=div)
    assert 0.004 <= s.max_lr <= 0.015


def test_linear_range_test_reads_like_exponential() -> None:
    lrs, losses, div = range_curve(lo=-3, linear=True)
    s = suggest_lr(lrs, losses, diverged_at_lr=div)
    assert s.failure is None
    assert 0.3 <= s.max_lr <= 1.5


def test_truncates_at_first_nan() -> None:
    lrs, losses, div = range_curve()
    lrs2 = np.r_[lrs, [div, div * 1.02, div * 1.04]]
    losses2 = np.r_[losses, [np.nan, np.inf, 1e9]]
    s = suggest_lr(lrs2, losses2)
    assert s.estimates["divergence"] == pytest.approx(div)
    assert s.max_lr == suggest_lr(lrs, losses, diverged_at_lr=div).max_lr


def test_divergence_found_inside_an_unflagged_curve() -> None:
    """A curve that blows up but was not stopped: the blow-up is found and the max stays below it."""
    lx = np.linspace(-4, 1, 300)
    y = np.where(lx <= 0, 2.3 - 1.8 / (1 + np.exp(-(lx + 1.2) / 0.3)), 0.53 * (1 + 40 * lx**2))
    s = suggest_lr(10**lx, y)
    assert s.estimates["divergence"] is not None and 1.0 < s.estimates["divergence"] < 3.0
    assert s.max_lr < s.estimates["divergence"]


def test_robust_to_noise_across_seeds() -> None:
    answers = [suggest_lr(*range_curve(noise=0.3, seed=k)[:2], diverged_at_lr=3.0).max_lr for k in range(8)]
    assert max(answers) / min(answers) <= 3.0
    # Between the end of the descent (LR 1 by construction) read low by the noise, and the margin.
    assert all(0.3 <= a <= 3.0 / 1.5 for a in answers)


def test_the_top_sits_midway_across_the_floor_before_the_blow_up() -> None:
    """A loss that lies flat from LR 0.01 to 1 before it blows up at 1.5 (as simple3's on real CIFAR-10):
    the top is the floor's middle on the log scale, not where the descent ends; and the nearer the
    blow-up, the lower the top (the same descent, a floor one decade shorter, a top half a decade down)."""

    def floored(blowup: float) -> tuple[np.ndarray, np.ndarray, float]:
        lx = np.linspace(-4, 1, 300)
        y = 2.3 - 0.7 / (1 + np.exp(-(lx + 2.6) / 0.25))
        y = y + 0.01 * np.random.default_rng(0).standard_normal(len(lx))
        k = int(np.argmax(lx > math.log10(blowup)))
        return 10 ** lx[:k], y[:k], float(10 ** lx[k])

    s = suggest_lr(*floored(1.5)[:2], diverged_at_lr=floored(1.5)[2])
    end = s.estimates["descent_end"]
    assert end is not None and 0.005 <= end <= 0.05
    assert s.estimates["floor_middle"] == pytest.approx(math.sqrt(end * s.estimates["divergence"]))
    assert s.max_lr == round_sig(s.estimates["floor_middle"])
    assert "midway (log scale) between the end of the descent" in s.explanation
    shorter = suggest_lr(*floored(0.15)[:2], diverged_at_lr=floored(0.15)[2])
    assert shorter.estimates["descent_end"] == pytest.approx(end, rel=0.3)
    assert s.max_lr / shorter.max_lr == pytest.approx(math.sqrt(10), rel=0.6)
    # Without a blow-up in the range there is no floor to cross: the end of the descent, a lower bound.
    lx = np.linspace(-4, 1, 300)
    flat = suggest_lr(10**lx, 2.3 - 0.7 / (1 + np.exp(-(lx + 2.6) / 0.25)))
    assert flat.estimates["floor_middle"] is None and flat.failure == "no_divergence"
    assert flat.max_lr == pytest.approx(round_sig(flat.estimates["descent_end"]))


def test_flat_curve() -> None:
    lx = np.linspace(-5, -2, 200)
    y = 2.3 + 0.02 * np.random.default_rng(1).standard_normal(200)
    s = suggest_lr(10**lx, y)
    assert s.failure == "flat" and s.max_lr is None and s.confidence == "low"
    assert "too low" in s.advice and "not learning" in s.advice
    assert s.retry_range is not None and s.retry_range[1] > 10 ** lx[-1] * 10


def test_flat_then_blow_up_says_not_learning() -> None:
    lx = np.linspace(-5, 0, 200)
    y = 2.3 + 0.02 * np.random.default_rng(2).standard_normal(200)
    s = suggest_lr(10**lx, y, diverged_at_lr=1.0)
    assert s.failure == "flat" and s.retry_range is None
    assert "not learning" in s.advice


def test_diverged_immediately() -> None:
    lr = 10 ** np.linspace(-1, 1, 300)
    y = 2.3 * np.exp(np.arange(12) * 0.2)
    s = suggest_lr(lr[:12], y, diverged_at_lr=float(lr[12]))
    assert s.failure == "diverged_immediately" and s.max_lr is None
    assert "Start lower" in s.advice
    assert s.retry_range[0] < lr[0] / 10 and lr[0] < s.retry_range[1] <= lr[12]


def test_rising_from_the_start_then_nan_is_diverged_immediately() -> None:
    lr = 10 ** np.linspace(-1, 1, 300)[:40]
    y = 2.3 + 0.3 * np.arange(40) ** 1.5 / 40
    s = suggest_lr(lr, np.r_[y[:-1], np.nan])
    assert s.failure == "diverged_immediately"


def test_noisy_curve() -> None:
    lrs, losses, div = range_curve(noise=1.5, seed=3)
    s = suggest_lr(lrs, losses, diverged_at_lr=div)
    assert s.failure == "noisy" and s.confidence == "low"
    assert s.max_lr is not None
    assert "larger batch" in s.advice and "another seed" in s.advice


def test_no_divergence_asks_to_extend_the_range() -> None:
    lrs, losses, div = range_curve(hi=-0.5)
    assert div is None
    s = suggest_lr(lrs, losses)
    assert s.failure == "no_divergence" and s.confidence == "low"
    assert s.retry_range[1] == pytest.approx(lrs[-1] * 10)
    assert "extend the range" in s.advice and "lower bound" in s.advice


def test_turned_up_without_diverging_is_fine() -> None:
    lrs, losses, div = range_curve(m=0.5, d=2.0)
    assert div is None
    s = suggest_lr(lrs, losses)
    assert s.failure is None and s.estimates["divergence"] is None
    assert "no divergence up to 10" in s.explanation


def test_too_short() -> None:
    s = suggest_lr([1e-3, 1e-2, 1e-1], [2.3, 2.0, 1.9])
    assert s.failure == "too_short" and s.max_lr is None


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        suggest_lr([1e-3, 1e-2], [1.0])
    with pytest.raises(ValueError):
        suggest_lr([1e-2, 1e-3, 1e-1], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        suggest_lr([0.0, 1e-3], [1.0, 1.0])


def test_to_dict_is_json() -> None:
    lrs, losses, div = range_curve()
    d = suggest_lr(lrs, losses, lrs[::15], losses[::15], diverged_at_lr=div).to_dict()
    assert json.loads(json.dumps(d))["max_lr"] == d["max_lr"]


def test_two_way_smoothing_does_not_shift_the_minimum() -> None:
    """A one-way EMA drags a valley to larger LRs; the forward-backward pass keeps it in place."""
    lx = np.linspace(-3, 1, 400)
    y = (lx + 1.0) ** 2
    ys = smooth_log(lx, y, 0.2)
    assert abs(lx[np.argmin(ys)] - (-1.0)) < 0.03


def test_number_formatting() -> None:
    assert [fmt_num(x) for x in (3.0, 4.1, 0.3, 0.35, 1e-4, 3e-5, 0.0, 12.0)] == [
        "3.0",
        "4.1",
        "0.3",
        "0.35",
        "1e-4",
        "3e-5",
        "0",
        "12",
    ]
    assert [round_sig(x) for x in (2.6, 0.84, 0.0316)] == [3, 0.8, 0.03]
