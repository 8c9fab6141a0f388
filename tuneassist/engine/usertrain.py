"""The checklist on your own training function: `--train module:function --allow-import`.

`function(hp, report)` trains your model on your data, the way your script already does, with the
hyperparameters the checklist is trying: `hp.make_optimizer(model)` builds the run's optimiser (SGD,
Adam or AdamW with its weight decay), `hp.plan(len(train_loader))` fixes the run's length and schedule,
`hp.set_hyper(optimizer, step)` sets the LR and momentum of each step (the range test's, 1cycle's ...),
and `report(step, train_loss=..., val_loss=..., val_acc=...)` hands each step's numbers back; when it
returns False the run must stop (cancelled, diverged, or its last step was reported). The engine turns
the reports into the same events as its own loop, so the run store, plots, sweeps, diagnosis, profiles and
resume-by-restart treat the run like any other. See examples/cifar_style.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneassist.engine.device import resolve_device
from tuneassist.engine.divergence import DivergenceMonitor
from tuneassist.engine.events import EventSink, end_event, sink, stopper
from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.engine.schedules import Schedule, build_schedule
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec


def load_train_fn(spec: RunSpec) -> Callable[..., Any]:
    """The user's `module:function`, imported from the folder recorded at launch (consent checked there)."""
    from tuneassist.engine.models import _import_user_module

    assert spec.train_fn is not None
    module, _, name = spec.train_fn.partition(":")
    mod = _import_user_module(module, spec.train_fn, spec.model_dir)
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise UserError(
            f"--train {spec.train_fn}: module {module!r} has no function {name!r}; give "
            "module:function, a function(hp, report) that trains your model"
        )
    return fn


class Hyper:
    """What your training function is given: the run's hyperparameters and the schedule's values."""

    def __init__(self, spec: RunSpec, emit: EventSink) -> None:
        self.spec = spec
        self._emit = emit
        self.batch_size = spec.batch_size
        self.lr_min, self.lr_max = spec.lr_min, spec.lr_max
        self.momentum_max, self.momentum_min = spec.momentum_max, spec.momentum_min
        self.weight_decay = spec.weight_decay
        self.optimizer_name = spec.optimizer
        self.schedule_name = spec.schedule
        self.epochs = spec.epochs
        self.seed = spec.seed
        self.data = spec.data
        self.data_dir = spec.data_dir
        self.image_size = spec.image_size
        self.is_range_test = spec.is_range_test
        self.test = spec.test  # measure your test split after the last step: report(test_loss=, test_acc=)
        self.device = resolve_device(spec.device)
        self.total_steps: int | None = None
        self.steps_per_epoch: int | None = None
        self._schedule: Schedule | None = None

    def plan(self, steps_per_epoch: int, **info: Any) -> int:
        """Fix the run's length from your loader (`len(train_loader)`): returns the steps to train.

        `info` (train_size=, val_size=, num_classes=, ...) shows in the run's progress line."""
        if not (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
            raise UserError(f"hp.plan({steps_per_epoch!r}): give the batches per epoch, len(train_loader)")
        spec = self.spec
        total = spec.steps if spec.steps is not None else max(1, round(spec.epochs * steps_per_epoch))
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total
        self._schedule = build_schedule(spec, total)
        self._emit(
            {
                "type": "start",
                "total_steps": total,
                "steps_per_epoch": steps_per_epoch,
                "epochs": total / steps_per_epoch,
                "device": str(self.device),
                "devices": 1,
                "num_classes": info.get("num_classes", 0),
                "train_size": info.get("train_size", 0),
                "val_size": info.get("val_size", 0),
                "test_size": info.get("test_size", 0),
                "start_step": 0,
                "user_train": spec.train_fn,
            }
        )
        return total

    def _sched(self) -> Schedule:
        if self._schedule is None:
            raise UserError("call hp.plan(len(train_loader)) before the first step: it fixes the schedule")
        return self._schedule

    def lr(self, step: int) -> float:
        return self._sched().lr(step)

    def momentum(self, step: int) -> float:
        return self._sched().momentum(step)

    def make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The run's optimiser for `model` (its parameters on their device): SGD/Adam/AdamW with WD."""
        return build_optimizer(model, self.spec)

    def set_hyper(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, float]:
        """Set this step's LR and momentum (Adam: beta1) on `optimizer`; returns them."""
        lr, mom = self.lr(step), self.momentum(step)
        set_hyper(optimizer, lr, mom)
        return lr, mom

    def should_eval(self, step: int) -> bool:
        """Whether to measure the validation loss after step `step` (every eval_every steps, else each
        epoch's end, and after the last step)."""
        total, spe = self.total_steps or 0, self.steps_per_epoch or 1
        every = self.spec.eval_every
        done = step + 1
        return done >= total or bool(every and done % every == 0) or (not every and done % spe == 0)


@dataclass
class _Reports:
    """What the user's reports have told so far: how the run goes, its last readings, its pace."""

    spec: RunSpec
    hp: Hyper
    emit: EventSink
    stop: Callable[[], bool]
    monitor: DivergenceMonitor
    outcome: str = "finished"
    reason: str = "reached the last step"
    step: int = 0  # steps reported so far
    diverged_at: int | None = None
    diverged_lr: float | None = None
    last_val: tuple[float | None, float | None] = (None, None)
    test: tuple[Any, Any] = (None, None)
    trained: int = 0
    tick: tuple[float, int] = field(default_factory=lambda: (time.perf_counter(), 0))  # last step report

    def __call__(
        self,
        step: int,
        *,
        train_loss: float | None = None,
        val_loss: float | None = None,
        val_acc: float | None = None,
        test_loss: float | None = None,
        test_acc: float | None = None,
        images: int | None = None,
    ) -> bool:
        """The `report` your function calls: False when the run must stop."""
        if self.hp.total_steps is None:
            raise UserError("call hp.plan(len(train_loader)) before report(): it fixes the run's length")
        if self.outcome != "finished":
            return False
        if train_loss is not None and self._train_loss(step, float(train_loss), images):
            return False
        if val_loss is not None or val_acc is not None:
            self._val(step, val_loss, val_acc)
        if test_loss is not None or test_acc is not None:
            self.test = (test_loss, test_acc)
        if self.stop():
            self.outcome, self.reason = "cancelled", f"cancelled at step {step + 1}"
            return False
        return step + 1 < self.hp.total_steps

    def _train_loss(self, step: int, loss: float, images: int | None) -> bool:
        """A step event for `step`: True when the loss says the run diverged."""
        now = time.perf_counter()
        n = images if images is not None else self.spec.batch_size
        self.trained += n
        ips = n * max(1, step + 1 - self.tick[1]) / max(now - self.tick[0], 1e-9)
        self.tick = (now, step + 1)
        lr = self.hp.lr(step)
        self.emit({"type": "step", "step": step, "epoch": step / (self.hp.steps_per_epoch or 1), "lr": lr,
                   "momentum": self.hp.momentum(step), "train_loss": loss if math.isfinite(loss) else None,
                   "images_per_s": ips})  # fmt: skip
        self.step = step + 1
        if not self.monitor.update(loss):
            return False
        self.outcome, self.reason = "diverged", f"training loss blew up at step {step} (LR {lr:.3g})"
        self.diverged_at, self.diverged_lr = step, lr
        return True

    def _val(self, step: int, val_loss: float | None, val_acc: float | None) -> None:
        self.last_val = (
            None if val_loss is None else float(val_loss),
            None if val_acc is None else float(val_acc),
        )
        spe = self.hp.steps_per_epoch or 1
        self.emit({"type": "eval", "step": step + 1, "epoch": (step + 1) / spe, "val_loss": self.last_val[0],
                   "val_acc": self.last_val[1]})  # fmt: skip


def train_user(
    spec: RunSpec,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: Any = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run `spec.train_fn` as a run: reports become step/eval events, the divergence rule and cancel
    stop it, and the end event says how it ended. No checkpoint: a resumed run starts again from step 0."""
    emit = sink(on_event)
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    torch.manual_seed(spec.seed)
    fn = load_train_fn(spec)
    hp = Hyper(spec, emit)
    monitor = DivergenceMonitor(spec.divergence_factor, strict=spec.is_range_test)
    t0 = time.perf_counter()
    reports = _Reports(spec, hp, emit, stopper(should_stop), monitor)
    fn(hp, reports)
    if hp.total_steps is None:
        raise UserError(f"--train {spec.train_fn} returned without calling hp.plan() and report(); see "
                        "examples/cifar_style.py for the shape of a training function")  # fmt: skip
    elapsed = time.perf_counter() - t0
    r = reports
    test_loss, test_acc = (None if v is None else float(v) for v in r.test)
    end = end_event(
        r.outcome, r.reason, r.step, hp.steps_per_epoch or 1,
        diverged_at=r.diverged_at, diverged_lr=r.diverged_lr, val=r.last_val, test=(test_loss, test_acc),
        wall_time=elapsed, images=r.trained, train_time=elapsed,
    )  # fmt: skip
    emit(end)
    return end
