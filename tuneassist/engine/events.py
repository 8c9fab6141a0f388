"""What every trainer takes besides its spec and what it reports: one home for the contract that
`train.train`, `usertrain.train_user`, `distributed.run_rank` and `ddp_launch.run_distributed` share,
so that callers pick one of them and nothing else changes. Torch-free: the launcher imports it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

EventSink = Callable[[dict[str, Any]], None]


class RunHooks(TypedDict, total=False):
    """The keyword arguments of every trainer (see `tuneassist.engine.train.train`)."""

    on_event: EventSink | None  # each event as it happens (plain, JSON-serialisable dicts)
    should_stop: Callable[[], bool] | None  # polled at each loss read-back: True cancels the run
    checkpoint_path: str | Path | None  # where the run's checkpoint goes (None: no checkpoint)
    resume: bool  # continue from the checkpoint there


def sink(on_event: EventSink | None) -> EventSink:
    """The event sink to call: `on_event`, or one that drops every event."""
    return on_event or (lambda e: None)


def stopper(should_stop: Callable[[], bool] | None) -> Callable[[], bool]:
    """The stop test to call: `should_stop`, or one that never stops."""
    return should_stop or (lambda: False)


def end_event(
    outcome: str,
    reason: str,
    step: int,
    steps_per_epoch: int,
    *,
    diverged_at: int | None = None,
    diverged_lr: float | None = None,
    val: tuple[float | None, float | None] = (None, None),
    test: tuple[float | None, float | None] = (None, None),
    wall_time: float,
    images: int,
    train_time: float,
) -> dict[str, Any]:
    """The run's last event: how it ended, where, its last validation and test readings (None where
    not measured) and its training throughput."""
    return {
        "type": "end",
        "outcome": outcome,
        "step": step,
        "epoch": step / steps_per_epoch,
        "diverged_at_step": diverged_at,
        "diverged_lr": diverged_lr,
        "val_loss": val[0],
        "val_acc": val[1],
        "test_loss": test[0],
        "test_acc": test[1],
        "wall_time": wall_time,
        "images_per_s": images / train_time if train_time > 0 else 0.0,
        "reason": reason,
    }
