"""`range_test`: the LR range test on the user's own model, optimiser and data, read into a 1cycle range.

torch is imported only when `range_test` is called, so importing this module stays torch-free.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuneassist.advisor.lr_range import LRSuggestion, suggest_lr
from tuneassist.api.checks import check_positive, finite_or_none
from tuneassist.api.model_state import Snapshot, move_batch

if TYPE_CHECKING:
    import torch
    from torch import nn

# The range test's defaults, as `tuneassist lr-find` runs it (about 4 epochs, 100..400 steps).
DEFAULT_LR_RANGE = (1e-5, 10.0)
MIN_STEPS, MAX_STEPS, DEFAULT_STEPS = 100, 400, 200
# Validation readings of a range test: about this many images each, about 25 readings per test.
VAL_IMAGES = 1000
VAL_READINGS = 25


@dataclass
class RangeTestResult:
    """A range test's reading (`suggestion`), the curve it was read from, and how the test ended."""

    suggestion: LRSuggestion
    # lr, momentum and train_loss per step (None where the loss was NaN/inf); val_lr and val_loss per
    # validation reading.
    curve: dict[str, list[float | None]]
    steps: int
    stopped: str  # why the test ended: "reached end_lr" or "diverged at step N (LR x)"
    diverged_lr: float | None = None
    seconds: float = 0.0

    @property
    def max_lr(self) -> float | None:
        """1cycle's top LR (None when the curve gave no range: see `suggestion.advice`)."""
        return self.suggestion.max_lr

    @property
    def min_lr(self) -> float | None:
        return self.suggestion.min_lr

    def plot(self, *, color: bool | None = None, width: int | None = None, height: int | None = None) -> str:
        """The loss-vs-LR plot with the suggested range, the reading and its confidence, as text
        (`print(result.plot())`): the same plot as `tuneassist lr-find`."""
        from tuneassist.cli.termplot import range_test_lines

        if color is None:
            color = sys.stdout.isatty()
        lines = range_test_lines(
            self.curve, self.suggestion.to_dict(), color=color, width=width, height=height
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the suggestion, the curve and how the test ended (what `lr-read` reads back)."""
        return {
            "suggestion": self.suggestion.to_dict(),
            "curve": {k: list(v) for k, v in self.curve.items()},
            "steps": self.steps,
            "stopped": self.stopped,
            "diverged_lr": self.diverged_lr,
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        return self.suggestion.explanation



def _default_steps(loader: Any, accumulation_steps: int) -> int:
    """About four epochs of the loader, 100 to 400 steps (what `lr-find` runs); 200 without a len()."""
    try:
        per_epoch = max(1, len(loader) // accumulation_steps)
    except TypeError:
        return DEFAULT_STEPS
    return int(min(MAX_STEPS, max(MIN_STEPS, 4 * per_epoch)))


def _default_val_batches(loader: Any) -> int:
    """Batches of about VAL_IMAGES images: the paper's cheap validation loss, not a full evaluation."""
    bs = getattr(loader, "batch_size", None)
    n = math.ceil(VAL_IMAGES / bs) if isinstance(bs, int) and bs > 0 else 8
    with contextlib.suppress(TypeError):
        n = min(n, len(loader))
    return max(1, n)


def range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable[Any],
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    val_loader: Iterable[Any] | None = None,
    start_lr: float = DEFAULT_LR_RANGE[0],
    end_lr: float = DEFAULT_LR_RANGE[1],
    steps: int | None = None,
    mode: str = "exp",
    momentum: tuple[float, float] | None = (0.95, 0.85),
    val_every: int | None = None,
    val_batches: int | None = None,
    step_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    amp: bool | str | None = None,
    accumulation_steps: int = 1,
    divergence_factor: float | None = None,
) -> RangeTestResult:
    """Run an LR range test on your own model, optimiser and data, and read it into a 1cycle range.

    The LR grows from `start_lr` to `end_lr` over `steps` optimiser steps (`mode` "exp" or "linear"),
    momentum (SGD's, or Adam's beta1) falls from `momentum[0]` to `momentum[1]` as the paper runs it
    (None leaves it alone); the test stops when the loss blows up (the engine's divergence rule). With
    a `val_loader`, the loss on `val_batches` of its batches every `val_every` steps joins the reading
    (the paper's cheap validation loss; use an unshuffled loader). The model and the optimiser are left
    exactly as found: weights, BatchNorm statistics, optimiser state, LR and momentum, RNG state.

    Batches are `(inputs, targets)` read with `loss_fn(model(inputs), targets)` (cross-entropy by
    default); any other task passes `step_fn(model, batch) -> loss` instead (detection, segmentation,
    a custom loss). Tensors in a batch are moved to `device` (default: the model's). `amp`: True or
    "bf16" for bf16 autocast, "fp16" for fp16 with a gradient scaler; None trains as the model is.
    `accumulation_steps` micro-batches make one optimiser step.
    """
    from tuneassist.engine.schedules import RangeTestSchedule

    factor = _check_arguments(
        model, optimizer, start_lr, end_lr, mode, steps, momentum, val_every, val_batches, amp,
        accumulation_steps, divergence_factor,
    )  # fmt: skip
    dev = _device(model, device)
    n_steps = steps or _default_steps(train_loader, accumulation_steps)
    every = val_every or max(1, n_steps // VAL_READINGS)
    n_val = val_batches or (_default_val_batches(val_loader) if val_loader is not None else 0)
    schedule = RangeTestSchedule(
        max(2, n_steps),
        start_lr,
        end_lr,
        momentum[0] if momentum is not None else 0.0,
        momentum[1] if momentum is not None else 0.0,
        exponential=mode == "exp",
    )
    work = _Batches(model, dev, amp, loss_fn, step_fn)
    trace = _Trace(stopped=f"reached end_lr {end_lr:g} after {n_steps} steps")
    t0 = time.perf_counter()
    snap = Snapshot(model, optimizer)
    try:
        _run(
            trace, work, optimizer, train_loader, val_loader, schedule,
            n_steps=n_steps,
            every=every,
            n_val=n_val,
            set_momentum=momentum is not None,
            accumulation_steps=accumulation_steps,
            factor=factor,
        )  # fmt: skip
    finally:
        snap.restore()
    suggestion = suggest_lr(
        trace.lrs, trace.losses, trace.val_lrs or None, trace.val_losses or None,
        diverged_at_lr=trace.diverged_lr,
    )  # fmt: skip
    curve: dict[str, list[float | None]] = {
        "lr": list(trace.lrs),
        "momentum": [finite_or_none(m) for m in trace.moms],
        "train_loss": [finite_or_none(v) for v in trace.losses],
        "val_lr": list(trace.val_lrs),
        "val_loss": [finite_or_none(v) for v in trace.val_losses],
    }
    return RangeTestResult(
        suggestion=suggestion,
        curve=curve,
        steps=len(trace.lrs),
        stopped=trace.stopped,
        diverged_lr=trace.diverged_lr,
        seconds=time.perf_counter() - t0,
    )


def _check_arguments(
    model: Any,
    optimizer: Any,
    start_lr: float,
    end_lr: float,
    mode: str,
    steps: int | None,
    momentum: tuple[float, float] | None,
    val_every: int | None,
    val_batches: int | None,
    amp: bool | str | None,
    accumulation_steps: int,
    divergence_factor: float | None,
) -> float:
    """TypeError/ValueError naming the first bad argument; the divergence factor to use."""
    import torch

    from tuneassist.spec import RunSpec

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; pass your torch.nn.Module")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer is a {type(optimizer).__name__}; pass the torch.optim optimiser built on the model"
        )
    check_positive("start_lr", start_lr)
    check_positive("end_lr", end_lr)
    if start_lr >= end_lr:
        raise ValueError(f"start_lr {start_lr:g} must be below end_lr {end_lr:g}, e.g. 1e-5 and 10")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode={mode!r}: use 'exp' (LR evenly spaced in log) or 'linear'")
    check_positive("accumulation_steps", accumulation_steps, integer=True)
    if steps is not None:
        check_positive("steps", steps, integer=True)
    if val_every is not None:
        check_positive("val_every", val_every, integer=True)
    if val_batches is not None:
        check_positive("val_batches", val_batches, integer=True)
    if momentum is not None:
        hi, lo = momentum
        if not (0 <= lo <= hi < 1):
            raise ValueError(f"momentum={momentum!r}: give (high, low) in [0, 1), e.g. (0.95, 0.85)")
    if amp not in (None, False, True, "bf16", "fp16"):
        raise ValueError(f"amp={amp!r}: use None (as the model is), True or 'bf16', or 'fp16'")
    factor = RunSpec().divergence_factor if divergence_factor is None else divergence_factor
    check_positive("divergence_factor", factor)
    return factor


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where batches go: `device`, which must be the model's own (default: the model's)."""
    import torch

    params = list(model.parameters())
    if not params:
        raise ValueError("the model has no parameters; a range test needs something to train")
    model_device = params[0].device
    dev = torch.device(device) if device is not None else model_device
    if dev.type != model_device.type or (
        dev.index is not None and model_device.index not in (None, dev.index)
    ):
        raise ValueError(
            f"the model is on {model_device} but device={str(dev)!r}; move it first (model.to(device)) and "
            "build the optimiser after that"
        )
    return dev


class _Batches:
    """How one batch becomes a loss on the user's model: moved to the device, under autocast when
    `amp` asks, through `step_fn` or `loss_fn(model(inputs), targets)`; and the validation loss."""

    def __init__(
        self,
        model: nn.Module,
        dev: torch.device,
        amp: bool | str | None,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
        step_fn: Callable[[nn.Module, Any], torch.Tensor] | None,
    ) -> None:
        import torch

        self.model, self.dev, self.loss_fn, self.step_fn = model, dev, loss_fn, step_fn
        self.dtype = torch.float16 if amp == "fp16" else torch.bfloat16
        self.use_amp = amp not in (None, False)
        self.scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.dev.type, dtype=self.dtype) if self.use_amp else contextlib.nullcontext()

    def loss(self, batch: Any) -> torch.Tensor:
        import torch

        batch = move_batch(batch, self.dev)
        if self.step_fn is not None:
            loss = self.step_fn(self.model, batch)
        else:
            if not (isinstance(batch, list | tuple) and len(batch) >= 2):
                raise TypeError(
                    f"the loader gives {type(batch).__name__} batches, not (inputs, targets); pass "
                    "step_fn=lambda model, batch: loss to say how a batch becomes a loss"
                )
            out = self.model(batch[0])
            fn = self.loss_fn or torch.nn.functional.cross_entropy
            loss = fn(out.float() if self.loss_fn is None else out, batch[1])
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = type(loss).__name__ if not isinstance(loss, torch.Tensor) else f"a tensor of {loss.numel()}"
            raise TypeError(f"the loss is {got}; the step must return one scalar loss tensor")
        return loss.reshape(())

    def val_loss(self, val_loader: Iterable[Any], n_val: int, train_modes: list[bool]) -> float:
        """The mean loss of the first `n_val` validation batches, in eval mode; train modes put back."""
        import torch

        total, n = 0.0, 0
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast():
                for i, b in enumerate(val_loader):
                    if i >= n_val:
                        break
                    total += float(self.loss(b).float())
                    n += 1
        finally:
            for m, mode_ in zip(self.model.modules(), train_modes, strict=True):
                m.training = mode_
        return total / n if n else math.nan


def _batches(loader: Iterable[Any]) -> Iterable[Any]:
    """The loader's batches, epoch after epoch."""
    while True:
        empty = True
        for b in loader:
            empty = False
            yield b
        if empty:
            raise ValueError("the training loader gave no batch; check its dataset and batch size")


@dataclass
class _Trace:
    """What the test recorded per step and per validation reading, and how it ended."""

    stopped: str
    lrs: list[float] = field(default_factory=list)
    moms: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_lrs: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    diverged_lr: float | None = None


def _run(
    trace: _Trace,
    work: _Batches,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None,
    schedule: Any,
    *,
    n_steps: int,
    every: int,
    n_val: int,
    set_momentum: bool,
    accumulation_steps: int,
    factor: float,
) -> None:
    """The test's steps, into `trace`: the LR (and momentum) set, the loss accumulated and stepped,
    stopped at the first blown-up loss; the caller restores the model and optimiser afterwards."""
    from tuneassist.engine.divergence import DivergenceMonitor
    from tuneassist.engine.optim import set_hyper

    model, scaler = work.model, work.scaler
    monitor = DivergenceMonitor(factor, strict=True)
    if not model.training:
        model.train()
    train_modes = [m.training for m in model.modules()]
    source = iter(_batches(train_loader))
    for step in range(n_steps):
        lr = schedule.lr(step)
        mom = schedule.momentum(step)
        if set_momentum:
            set_hyper(optimizer, lr, mom)
        else:
            for g in optimizer.param_groups:
                g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accumulation_steps):
            with work.autocast():
                loss = work.loss(next(source))
            part = loss.float() / accumulation_steps
            (scaler.scale(part) if scaler is not None else part).backward()
            total += float(loss.detach().float())
        mean = total / accumulation_steps
        trace.lrs.append(lr)
        trace.moms.append(mom if set_momentum else math.nan)
        trace.losses.append(mean)
        if not math.isfinite(mean) or monitor.update(mean):
            trace.diverged_lr = lr
            trace.stopped = f"diverged at step {step} (LR {lr:.3g}): the loss blew up"
            break
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if val_loader is not None and ((step + 1) % every == 0 or step + 1 == n_steps):
            trace.val_lrs.append(lr)
            trace.val_losses.append(work.val_loss(val_loader, n_val, train_modes))
