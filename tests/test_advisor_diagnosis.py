"""Under-/over-fitting diagnosis on synthetic curves whose kind is known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneassist.advisor.diagnosis import diagnose

STEPS = np.arange(0, 1000, 10)
VSTEPS = np.arange(50, 1001, 50)
CURRENT = {"lr_max": 0.4, "weight_decay": 1e-4, "batch_size": 128}


def train_curve(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 2.3 * np.exp(-STEPS / 300) + 0.3 + 0.05 * rng.standard_normal(len(STEPS))


def jitter(scale: float, seed: int = 1) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal(len(VSTEPS))


def test_underfitting_when_val_loss_still_falls() -> None:
    val = 2.3 * np.exp(-VSTEPS / 600) + 0.5 + jitter(0.005)
    d = diagnose(STEPS, train_curve(), VSTEPS, val, **CURRENT)
    assert d.kind == "underfitting"
    assert d.evidence["val_change_rel"] < -0.02
    assert "raise the max LR to 0.8 (from 0.4)" in d.remedy and "lower WD to 3e-5 (from 1e-4)" in d.remedy
    assert d.window == (700, 1000)
    # The numbers quote the fitted line's two ends, in the loss's own units: "val loss -99.2% over
    # steps …" (the change over the window's mean) read as a 99% fall.
    window = val[VSTEPS >= 700]
    first, last = (float(x) for x in d.explanation.split("val loss ")[-1].split(" on a line")[0].split(" → "))
    assert last < first and abs((last - first) - d.evidence["val_change"]) < 0.006  # 3 significant digits
    assert window.min() - 0.02 < last and first < window.max() + 0.02
    assert "%" not in d.explanation.split("val loss ")[-1]


def test_overfitting_when_val_rises_while_train_falls() -> None:
    val = np.where(VSTEPS <= 400, 2.3 * np.exp(-VSTEPS / 100) + 1.0, 1.0 + 0.5 * ((VSTEPS - 400) / 600) ** 2)
    d = diagnose(STEPS, train_curve(), VSTEPS, val + jitter(0.005), **CURRENT)
    assert d.kind == "overfitting"
    assert d.evidence["val_change_rel"] > 0.02 and d.evidence["train_change_rel"] < 0
    assert "raise WD to 3e-4 (from 1e-4)" in d.remedy and d.change == {"weight_decay": 3.0}
    assert "Overfitting" in d.explanation and "train/val gap" in d.explanation


def _overfit_val() -> np.ndarray:
    val = np.where(VSTEPS <= 400, 2.3 * np.exp(-VSTEPS / 100) + 1.0, 1.0 + 0.5 * ((VSTEPS - 400) / 600) ** 2)
    return val + jitter(0.005)


@pytest.mark.parametrize(
    ("model", "first"),
    [
        ("simple3", "add WD (1e-4, the low end of the shallow-net grid)"),
        ("resnet20", "add WD (1e-6, the low end of the deep-net grid)"),
        (None, "add WD (1e-5)"),
    ],
)
def test_overfitting_without_wd_adds_the_grids_first_value(model: str | None, first: str) -> None:
    """From WD 0 there is no multiple to raise: start where the WD step's grid for the net starts."""
    d = diagnose(
        STEPS, train_curve(), VSTEPS, _overfit_val(), **{**CURRENT, "weight_decay": 0.0}, model=model
    )
    assert d.kind == "overfitting" and d.remedy.startswith(first)


def test_best_val_loss_is_quoted_as_recorded() -> None:
    """The best is read on a 3-point running median (one lucky evaluation is not the best) but quoted
    as a value the run recorded, at the step that recorded it."""
    val = _overfit_val()
    val[7] = 0.5  # one lucky evaluation (step 400): skipped
    d = diagnose(STEPS, train_curve(), VSTEPS, val, **CURRENT)
    assert d.kind == "overfitting"
    i = int(np.nonzero(VSTEPS == d.evidence["val_min_step"])[0][0])
    assert d.evidence["val_min"] == val[i] and d.evidence["val_min"] > 0.5
    assert f"its best {val[i]:.3g} at step {VSTEPS[i]}" in d.explanation


def test_blow_up_quotes_the_first_evaluation_as_its_best() -> None:
    """At the ends the running median would average two points into a loss never recorded."""
    d = diagnose(STEPS, train_curve(), VSTEPS[:5], [2.3, 15.7, 194.0, 485.0, 5448.0])
    assert d.kind == "diverged" and d.evidence["val_min"] == 2.3 and d.evidence["val_min_step"] == 50
    assert "its best 2.3 (step 50)" in d.explanation


def test_good_fit_when_val_flattens() -> None:
    val = 0.8 + 1.5 * np.exp(-VSTEPS / 100) + jitter(0.005)
    d = diagnose(STEPS, train_curve(), VSTEPS, val)
    assert d.kind == "good_fit" and d.remedy == "Keep these values."
    assert abs(d.evidence["val_change_rel"]) < 0.02


def test_too_noisy_to_tell() -> None:
    val = 0.8 + 1.5 * np.exp(-VSTEPS / 100) + jitter(0.15, seed=3)
    d = diagnose(STEPS, train_curve(), VSTEPS, val, **CURRENT)
    assert d.kind == "too_noisy"
    assert "raise TBS to 256 (from 128)" in d.remedy
    assert d.change == {}  # nothing the refinement can apply alone: a TBS change needs the LR range rescaled


def test_nan_is_diverged_with_the_step() -> None:
    t = train_curve()
    t[50:] = np.nan
    d = diagnose(STEPS, t, VSTEPS, 0.8 + 1.5 * np.exp(-VSTEPS / 100), **CURRENT)
    assert d.kind == "diverged" and d.evidence["diverged_at_step"] == 500
    assert "lower the max LR to 0.1 (from 0.4)" in d.remedy and d.change == {"lr_max": pytest.approx(1 / 3)}


def test_none_losses_count_as_blown_up() -> None:
    val = list(0.8 + 1.5 * np.exp(-VSTEPS / 100))
    val[-1] = None
    d = diagnose(STEPS, train_curve(), VSTEPS, val)
    assert d.kind == "diverged" and d.evidence["diverged_at_step"] == 1000


def test_blow_up_without_nan_is_diverged() -> None:
    val = np.where(VSTEPS < 600, 2.0 - VSTEPS / 600, 1.0 + (VSTEPS - 600) / 40.0)
    d = diagnose(STEPS, train_curve(), VSTEPS, val)
    assert d.kind == "diverged"


def test_both_rising_is_unstable() -> None:
    train = np.where(STEPS < 600, 2.0 - STEPS / 600, 1.0 + (STEPS - 600) / 400)
    val = np.where(VSTEPS < 600, 2.1 - VSTEPS / 600, 1.1 + (VSTEPS - 600) / 400)
    d = diagnose(STEPS, train, VSTEPS, val)
    assert d.kind == "diverged" and d.evidence.get("unstable")


def test_too_short() -> None:
    d = diagnose(STEPS, train_curve(), VSTEPS[:3], [2.0, 1.5, 1.2])
    assert d.kind == "too_short"


def test_without_train_curve_and_without_current_values() -> None:
    val = 2.3 * np.exp(-VSTEPS / 600) + 0.5
    d = diagnose([], [], VSTEPS, val, val_acc=np.linspace(0.3, 0.7, len(VSTEPS)))
    assert d.kind == "underfitting"
    assert "raise the max LR (x2.0)" in d.remedy and d.change == {"lr_max": 2.0}
    assert d.evidence["gap"] is None and d.evidence["val_acc_last"] == pytest.approx(0.7)
    assert json.loads(json.dumps(d.to_dict()))["kind"] == "underfitting"


def test_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        diagnose([1, 2], [1.0], [1, 2, 3, 4], [1.0, 1.0, 1.0, 1.0])


def test_a_run_near_chance_is_not_learning_never_a_good_fit() -> None:
    """The TUI's case: 12.2% val accuracy on 10 classes (val loss 2.21 near ln 10) read as good_fit."""
    val = 2.21 + jitter(0.003)
    acc = 0.122 + jitter(0.002)
    flat_train = 2.2 + 0.01 * np.random.default_rng(3).standard_normal(len(STEPS))
    d = diagnose(STEPS, flat_train, VSTEPS, val, acc, num_classes=10)
    assert d.kind == "not_learning" and "near chance" in d.explanation and not d.change
    assert diagnose(STEPS, flat_train, VSTEPS, val, acc).kind != "not_learning"  # without the class count
    # No accuracy: a val loss at ln(classes) says the same.
    assert diagnose(STEPS, flat_train, VSTEPS, 2.30 + jitter(0.003), num_classes=10).kind == "not_learning"
    # Well above chance, the usual reading applies.
    assert diagnose(STEPS, flat_train, VSTEPS, val, acc + 0.5, num_classes=10).kind != "not_learning"


def test_the_remedy_comes_with_its_change_for_a_refinement_run() -> None:
    val = 2.3 * np.exp(-VSTEPS / 600) + 0.5 + jitter(0.005)
    assert diagnose(STEPS, train_curve(), VSTEPS, val, **CURRENT).change == {"lr_max": 2.0}
    over = np.where(VSTEPS <= 400, 2.3 * np.exp(-VSTEPS / 100) + 1.0, 1.0 + 0.5 * ((VSTEPS - 400) / 600) ** 2)
    d = diagnose(STEPS, train_curve(), VSTEPS, over + jitter(0.005), **{**CURRENT, "weight_decay": 0})
    assert d.kind == "overfitting" and d.change == {"weight_decay": 1e-5}  # from 0: the value to add
