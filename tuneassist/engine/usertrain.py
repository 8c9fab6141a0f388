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
from typing import Any

import torch

from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.engine.schedules import Schedule, build_schedule
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

EventSink = Callable[[dict[str, Any]], None]


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
        self.device = _device(spec.device)
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
        return done >= total or (bool(every) and done % every == 0) or (not every and done % spe == 0)


def _device(name: str) -> torch.device:
    from tuneassist.engine.train import resolve_device

    return resolve_device(name)


def train_user(
    spec: RunSpec,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: Any = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run `spec.train_fn` as a run: reports become step/eval events, the divergence rule and cancel
    stop it, and the end event says how it ended. No checkpoint: a resumed run starts again from step 0."""
    from tuneassist.engine.train import DivergenceMonitor

    emit: EventSink = on_event or (lambda e: None)
    stop = should_stop or (lambda: False)
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    torch.manual_seed(spec.seed)
    fn = load_train_fn(spec)
    hp = Hyper(spec, emit)
    monitor = DivergenceMonitor(spec.divergence_factor, strict=spec.is_range_test)
    t0 = time.perf_counter()
    state: dict[str, Any] = {"outcome": "finished", "reason": "reached the last step", "step": 0}
    last_val: list[float | None] = [None, None]
    tick = [time.perf_counter(), 0]
    trained = [0]

    def report(
        step: int,
        *,
        train_loss: float | None = None,
        val_loss: float | None = None,
        val_acc: float | None = None,
        test_loss: float | None = None,
        test_acc: float | None = None,
        images: int | None = None,
    ) -> bool:
        if hp.total_steps is None:
            raise UserError("call hp.plan(len(train_loader)) before report(): it fixes the run's length")
        if state["outcome"] != "finished":
            return False
        spe = hp.steps_per_epoch or 1
        if train_loss is not None:
            loss = float(train_loss)
            now = time.perf_counter()
            n = images if images is not None else spec.batch_size
            trained[0] += n
            ips = n * max(1, step + 1 - tick[1]) / max(now - tick[0], 1e-9)
            tick[0], tick[1] = now, step + 1
            emit(
                {
                    "type": "step",
                    "step": step,
                    "epoch": step / spe,
                    "lr": hp.lr(step),
                    "momentum": hp.momentum(step),
                    "train_loss": loss if math.isfinite(loss) else None,
                    "images_per_s": ips,
                }
            )
            state["step"] = step + 1
            if monitor.update(loss):
                state.update(
                    outcome="diverged",
                    reason=f"training loss blew up at step {step} (LR {hp.lr(step):.3g})",
                    diverged_at=step,
                    diverged_lr=hp.lr(step),
                )
                return False
        if val_loss is not None or val_acc is not None:
            last_val[0] = None if val_loss is None else float(val_loss)
            last_val[1] = None if val_acc is None else float(val_acc)
            emit({"type": "eval", "step": step + 1, "epoch": (step + 1) / spe, "val_loss": last_val[0],
                  "val_acc": last_val[1]})  # fmt: skip
        if test_loss is not None or test_acc is not None:
            state.update(test_loss=test_loss, test_acc=test_acc)
        if stop():
            state.update(outcome="cancelled", reason=f"cancelled at step {step + 1}")
            return False
        return step + 1 < hp.total_steps

    fn(hp, report)
    if hp.total_steps is None:
        raise UserError(f"--train {spec.train_fn} returned without calling hp.plan() and report(); see "
                        "examples/cifar_style.py for the shape of a training function")  # fmt: skip
    elapsed = time.perf_counter() - t0
    spe = hp.steps_per_epoch or 1
    end = {
        "type": "end",
        "outcome": state["outcome"],
        "step": state["step"],
        "epoch": state["step"] / spe,
        "diverged_at_step": state.get("diverged_at"),
        "diverged_lr": state.get("diverged_lr"),
        "val_loss": last_val[0],
        "val_acc": last_val[1],
        "test_loss": None if state.get("test_loss") is None else float(state["test_loss"]),
        "test_acc": None if state.get("test_acc") is None else float(state["test_acc"]),
        "wall_time": elapsed,
        "images_per_s": trained[0] / elapsed if elapsed > 0 else 0.0,
        "reason": state["reason"],
    }
    emit(end)
    return end
