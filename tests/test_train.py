"""The training loop on tiny synthetic data: learning, divergence, range tests, resume, determinism."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tuneassist.engine.train import DivergenceMonitor, load_checkpoint, train
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

torch.set_num_threads(2)


def _run(spec: RunSpec, **kw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    end = train(spec, on_event=events.append, **kw)
    return end, events


def test_learns_synthetic_well_above_chance() -> None:
    spec = RunSpec(
        data="synthetic:3000",
        model="simple3",
        schedule="onecycle",
        lr_min=0.02,
        lr_max=0.2,
        epochs=4,
        batch_size=64,
        weight_decay=5e-4,
        seed=0,
    )
    end, events = _run(spec)
    assert end["outcome"] == "finished"
    assert end["test_acc"] > 0.2, end  # chance is 0.1
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [42, 84, 126, 168]  # one per epoch; the last is the final one
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(len(steps)))
    assert steps[0]["lr"] == pytest.approx(0.02)
    assert max(e["lr"] for e in steps) == pytest.approx(0.2, rel=0.05)
    assert all(e["images_per_s"] > 0 for e in steps)


def test_huge_lr_diverges_without_exception() -> None:
    spec = RunSpec(
        data="synthetic:600",
        model="simple3",
        schedule="constant",
        lr_min=50.0,
        lr_max=50.0,
        momentum_max=0.9,
        momentum_min=0.9,
        epochs=3,
        batch_size=32,
    )
    end, events = _run(spec)
    assert end["outcome"] == "diverged"
    assert end["diverged_at_step"] is not None and end["diverged_lr"] == pytest.approx(50.0)
    assert end["test_acc"] is None
    last = [e for e in events if e["type"] == "step"][-1]
    assert last["step"] == end["diverged_at_step"] == end["step"] - 1


def test_range_test_stops_at_divergence_and_records_val_loss() -> None:
    spec = RunSpec(
        data="synthetic:1000",
        model="simple3",
        schedule="range_exp",
        lr_min=1e-4,
        lr_max=100.0,
        steps=60,
        batch_size=32,
        eval_every=5,
        eval_subset=64,
        test=False,
    )
    end, events = _run(spec)
    steps = [e for e in events if e["type"] == "step"]
    lrs = [e["lr"] for e in steps]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-4)
    assert end["outcome"] == "diverged", "LR up to 100 must blow the loss up"
    assert end["diverged_lr"] > 0.1
    assert len([e for e in events if e["type"] == "eval"]) >= 3


def test_monitor_rules() -> None:
    strict = DivergenceMonitor(4.0, strict=True)
    assert not any(strict.update(2.0 - 0.01 * i) for i in range(50))
    assert strict.update(math.nan)
    lax = DivergenceMonitor(4.0, strict=False)
    for _ in range(200):
        lax.update(0.05)
    assert not lax.update(0.3), "a wobble below the starting loss is not divergence for a training run"


def test_same_seed_same_curve_on_cpu() -> None:
    spec = RunSpec(data="synthetic:600", model="simple3", epochs=1, batch_size=32, seed=3)
    a = [e["train_loss"] for e in _run(spec)[1] if e["type"] == "step"]
    b = [e["train_loss"] for e in _run(spec)[1] if e["type"] == "step"]
    assert a == b


def test_cancel_checkpoint_and_resume_continue_the_curve(tmp_path: Path) -> None:
    spec = RunSpec(data="synthetic:400", model="simple3", epochs=2, batch_size=32, seed=1, sync_every=4)
    full_end, full = _run(spec)
    ckpt = tmp_path / "ck.pt"
    polls = {"n": 0}

    def stop() -> bool:
        polls["n"] += 1
        return polls["n"] >= 5

    end1, ev1 = _run(spec, should_stop=stop, checkpoint_path=ckpt)
    assert end1["outcome"] == "cancelled" and 0 < end1["step"] < full_end["step"]
    state = load_checkpoint(ckpt)
    assert state["step"] == end1["step"]
    end2, ev2 = _run(spec, checkpoint_path=ckpt, resume=True)
    assert end2["outcome"] == "finished"
    assert ev2[0]["type"] == "start" and ev2[0]["start_step"] == end1["step"]
    steps1 = [e["step"] for e in ev1 if e["type"] == "step"]
    steps2 = [e["step"] for e in ev2 if e["type"] == "step"]
    assert steps1 + steps2 == list(range(full_end["step"])), "the resumed curve continues where it stopped"
    # same schedule position: the LR at each step equals the uninterrupted run's
    lr_full = {e["step"]: e["lr"] for e in full if e["type"] == "step"}
    assert all(e["lr"] == pytest.approx(lr_full[e["step"]]) for e in ev2 if e["type"] == "step")


def test_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pt"
    torch.save({"obj": Path("/etc/passwd")}, bad)  # a pickled non-tensor object
    with pytest.raises(UserError, match="pickled"):
        load_checkpoint(bad)


def test_batch_larger_than_split_is_a_user_error() -> None:
    with pytest.raises(UserError, match="larger than the training split"):
        train(RunSpec(data="synthetic:100", model="simple3", batch_size=512))


def test_quick_evaluations_read_every_class_of_a_class_ordered_split() -> None:
    """An image folder's validation split is ordered by class: the quick evaluations' subset must be
    spread over it, not its first images (which on CIFAR-10 were airplanes and cars only)."""
    import torch

    from tuneassist.engine.data import Split, split_validation
    from tuneassist.engine.train import eval_subset_indices

    y = torch.arange(10).repeat_interleave(450)  # as load_folder returns it: class by class
    x = torch.zeros(len(y), 3, 2, 2, dtype=torch.uint8)
    val_y = split_validation(Split(x, y), 0.1, seed=0)[1].y
    assert torch.equal(val_y, val_y.sort().values)  # the split keeps the order: the trap
    counts = torch.bincount(val_y[eval_subset_indices(len(val_y), 100)], minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11
    assert len(eval_subset_indices(450, 100)) == 100 and eval_subset_indices(450, 100).max() == 449
