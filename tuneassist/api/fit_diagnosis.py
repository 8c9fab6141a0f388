"""`diagnose`: the advisor's under-/over-fitting reading of curves a user logged themselves."""

from __future__ import annotations

from collections.abc import Sequence

from tuneassist.advisor.diagnosis import Diagnosis
from tuneassist.advisor.diagnosis import diagnose as _diagnose


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
    num_classes: int | None = None,
    model: str | None = None,
) -> Diagnosis:
    """Under-/over-fitting diagnosis of your own logged curves (the paper's step 5).

    `steps`/`train_loss` per training step, `val_steps`/`val_loss` (and `val_acc`) per evaluation, on
    the same step axis. Give the run's `lr_max`, `weight_decay` and `batch_size` and the remedy names
    values ("raise the max LR to 0.2") instead of directions; `num_classes` tells a net still at
    chance from a good fit. Returns the `Diagnosis`: `.kind`, `.explanation`, `.remedy`, `.evidence`.
    """
    current = {
        k: float(v)
        for k, v in (("lr_max", lr_max), ("weight_decay", weight_decay), ("batch_size", batch_size))
        if v is not None
    }
    try:
        return _diagnose(
            steps, train_loss, val_steps, val_loss, val_acc,
            current=current or None, model=model, num_classes=num_classes,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(
            f"{e}: give one train loss per entry of steps and one val loss per entry of val_steps"
        ) from None
