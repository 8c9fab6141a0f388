"""Schedules: 1cycle equals torch's OneCycleLR step for step; range tests, step and constant."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tuneassist.engine.schedules import (
    ConstantSchedule,
    OneCycleSchedule,
    RangeTestSchedule,
    StepSchedule,
    build_schedule,
)
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec


def _torch_onecycle(spec: RunSpec, total_steps: int, adam: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """LR and momentum that a real OneCycleLR gives at every step of a run."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0) if adam else torch.optim.SGD([param], lr=1.0, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=spec.lr_max,
        total_steps=total_steps,
        pct_start=spec.rise_fraction,
        anneal_strategy="linear",
        cycle_momentum=True,
        base_momentum=spec.momentum_min,
        max_momentum=spec.momentum_max,
        div_factor=spec.lr_max / spec.lr_min,
        final_div_factor=spec.final_div,
        three_phase=True,
    )
    lrs, moms = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(total_steps):
            group = opt.param_groups[0]
            lrs.append(group["lr"])
            moms.append(group["betas"][0] if adam else group["momentum"])
            if step < total_steps - 1:
                opt.step()
                sched.step()
    return np.array(lrs), np.array(moms)


@pytest.mark.parametrize("total_steps", [1000, 97, 20, 5])
@pytest.mark.parametrize(
    ("lr_min", "lr_max", "m_max", "m_min", "rise", "final_div"),
    [
        (0.1, 1.0, 0.95, 0.85, 0.45, 100.0),
        (0.08, 0.8, 0.95, 0.8, 0.3, 1e4),
        (0.1, 4.0, 0.9, 0.85, 0.5, 10.0),
        (0.01, 0.01, 0.9, 0.9, 0.45, 1.0),  # flat LR and constant momentum
    ],
)
def test_onecycle_equals_torch(total_steps, lr_min, lr_max, m_max, m_min, rise, final_div) -> None:
    spec = RunSpec(
        schedule="onecycle",
        lr_min=lr_min,
        lr_max=lr_max,
        momentum_max=m_max,
        momentum_min=m_min,
        rise_fraction=rise,
        final_div=final_div,
    ).validate()
    sched = build_schedule(spec, total_steps)
    assert isinstance(sched, OneCycleSchedule)
    lr, mom = sched.arrays()
    ref_lr, ref_mom = _torch_onecycle(spec, total_steps)
    np.testing.assert_allclose(lr, ref_lr, rtol=1e-9, atol=0)
    np.testing.assert_allclose(mom, ref_mom, rtol=1e-9, atol=0)


def test_onecycle_equals_torch_adam_beta1() -> None:
    spec = RunSpec(lr_min=0.001, lr_max=0.01, momentum_max=0.95, momentum_min=0.85)
    _, mom = build_schedule(spec, 200).arrays()
    _, ref_mom = _torch_onecycle(spec, 200, adam=True)
    np.testing.assert_allclose(mom, ref_mom, rtol=1e-9, atol=0)


def test_onecycle_shape() -> None:
    spec = RunSpec(lr_min=0.1, lr_max=1.0, momentum_max=0.95, momentum_min=0.85, rise_fraction=0.45)
    lr, mom = build_schedule(spec, 1000).arrays()
    peak = int(np.argmax(lr))
    assert lr[0] == pytest.approx(0.1, rel=1e-12) and lr[peak] == pytest.approx(1.0, rel=1e-12)
    assert 440 <= peak <= 450
    assert np.all(np.diff(lr[: peak + 1]) > 0) and np.all(np.diff(lr[peak:]) < 0)
    assert (
        mom[peak] == pytest.approx(0.85) and mom[0] == pytest.approx(0.95) and mom[-1] == pytest.approx(0.95)
    )
    assert lr[-1] == pytest.approx(0.1 / 100, rel=1e-12)
    # Back at lr_min at about 90% of the run, then the anneal below it.
    back = int(np.argmax(lr[peak:] <= 0.1 + 1e-12)) + peak
    assert 885 <= back <= 900
    assert np.all(np.diff(lr[back:]) < 0) and np.all(mom[back:] == pytest.approx(0.95))


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4])
def test_onecycle_tiny_runs_stay_in_range(total_steps: int) -> None:
    """Runs too short for a rise (OneCycleLR divides by zero at some of these) still give sane values."""
    spec = RunSpec(lr_min=0.1, lr_max=1.0, rise_fraction=0.5, final_div=100.0)
    lr, mom = build_schedule(spec, total_steps).arrays()
    assert np.all((lr >= 0.001 - 1e-15) & (lr <= 1.0 + 1e-15)) and np.all(np.isfinite(lr))
    assert np.all((mom >= 0.85 - 1e-15) & (mom <= 0.95 + 1e-15))


@pytest.mark.parametrize("exponential", [True, False])
@pytest.mark.parametrize("total_steps", [2, 7, 500])
def test_range_test_endpoints_and_monotone(exponential: bool, total_steps: int) -> None:
    spec = RunSpec(
        schedule="range_exp" if exponential else "range_linear",
        lr_min=1e-5,
        lr_max=10.0,
        momentum_max=0.95,
        momentum_min=0.85,
    )
    sched = build_schedule(spec, total_steps)
    assert isinstance(sched, RangeTestSchedule) and sched.exponential == exponential
    lr, mom = sched.arrays()
    assert lr[0] == 1e-5 and lr[-1] == 10.0  # exact endpoints
    assert mom[0] == 0.95 and mom[-1] == 0.85
    assert np.all(np.diff(lr) > 0) and np.all(np.diff(mom) < 0)
    # Evenly spaced in log (exponential) or linearly; momentum linear in the step either way.
    spacing = np.diff(np.log(lr)) if exponential else np.diff(lr)
    np.testing.assert_allclose(spacing, spacing[0], rtol=1e-6)
    np.testing.assert_allclose(np.diff(mom), np.diff(mom)[0], rtol=1e-9, atol=1e-15)


def test_range_test_halfway() -> None:
    exp = RangeTestSchedule(101, 1e-4, 1.0, 0.95, 0.85, exponential=True)
    lin = RangeTestSchedule(101, 1e-4, 1.0, 0.95, 0.85, exponential=False)
    assert exp.lr(50) == pytest.approx(1e-2, rel=1e-12)
    assert lin.lr(50) == pytest.approx((1e-4 + 1.0) / 2, rel=1e-12)
    assert exp.momentum(50) == pytest.approx(0.90, rel=1e-12)


def test_range_test_single_step_and_clamping() -> None:
    one = RangeTestSchedule(1, 1e-3, 1.0, 0.95, 0.85)
    assert one.lr(0) == 1e-3 and one.momentum(0) == 0.95
    s = RangeTestSchedule(10, 1e-3, 1.0, 0.95, 0.85)
    assert s.lr(10_000) == 1.0 and s.lr(-3) == 1e-3


def test_constant_momentum_when_equal() -> None:
    spec = RunSpec(schedule="range_exp", lr_min=1e-4, lr_max=1.0, momentum_max=0.9, momentum_min=0.9)
    _, mom = build_schedule(spec, 50).arrays()
    assert np.all(mom == 0.9)


def test_step_milestones() -> None:
    spec = RunSpec(
        schedule="step", lr_max=0.1, momentum_max=0.9, momentum_min=0.85, step_milestones=[0.75, 0.5]
    )
    sched = build_schedule(spec, 100)
    assert isinstance(sched, StepSchedule) and sched.milestone_steps == [50, 75]
    lr, mom = sched.arrays()
    np.testing.assert_allclose(lr[:50], 0.1)
    np.testing.assert_allclose(lr[50:75], 0.01)
    np.testing.assert_allclose(lr[75:], 0.001)
    assert np.all(mom == 0.9)


@pytest.mark.parametrize(("milestones", "gamma"), [([0.0], 0.1), ([1.0], 0.1), ([0.5], 0.0), ([0.5], -1.0)])
def test_step_rejects_bad_settings(milestones: list[float], gamma: float) -> None:
    spec = RunSpec(schedule="step", step_milestones=milestones, step_gamma=gamma)
    with pytest.raises(UserError):
        build_schedule(spec, 100)


def test_constant() -> None:
    spec = RunSpec(schedule="constant", lr_min=0.001, lr_max=0.01, momentum_max=0.9, momentum_min=0.8)
    sched = build_schedule(spec, 30)
    assert isinstance(sched, ConstantSchedule)
    lr, mom = sched.arrays()
    assert np.all(lr == 0.01) and np.all(mom == 0.9)


@pytest.mark.parametrize("kind", ["onecycle", "constant", "step", "range_exp", "range_linear"])
def test_every_kind_builds_and_arrays_match_calls(kind: str) -> None:
    sched = build_schedule(RunSpec(schedule=kind), 37)
    assert sched.total_steps == 37
    lr, mom = sched.arrays()
    assert lr.shape == mom.shape == (37,) and lr.dtype == np.float64
    assert [sched.lr(i) for i in range(37)] == lr.tolist()
    assert [sched.momentum(i) for i in range(37)] == mom.tolist()


@pytest.mark.parametrize("total_steps", [0, -5])
def test_no_steps_is_a_user_error(total_steps: int) -> None:
    with pytest.raises(UserError, match="at least 1 step"):
        build_schedule(RunSpec(), total_steps)


def test_unknown_kind() -> None:
    spec = RunSpec()
    spec.schedule = "cosine"
    with pytest.raises(UserError, match="unknown schedule 'cosine'"):
        build_schedule(spec, 10)
