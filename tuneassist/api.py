"""The Python API: the checklist's readings for your own model, data and training loop.

People who already have a training script call these from it, as they would fastai's ``lr_find`` or
torch-lr-finder::

    import tuneassist
    result = tuneassist.range_test(model, optimizer, train_loader, val_loader=val_loader)
    print(result.plot())               # the terminal plot `tuneassist lr-find` prints
    print(result.suggestion.explanation)

    with tuneassist.track(name="my-net", hparams={"batch_size": 128}) as run:
        ...
        run.log(step, lr=lr, train_loss=loss)   # shows in `tuneassist runs`, `runs watch`, the TUI

This module imports torch only inside `range_test` (the other functions are numpy and SQLite only),
so `import tuneassist` stays torch-free for the UI, as the layering in DESIGN.md requires.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneassist import _API
from tuneassist.advisor.diagnosis import Diagnosis
from tuneassist.advisor.diagnosis import diagnose as _diagnose
from tuneassist.advisor.lr_range import LRSuggestion, suggest_lr
from tuneassist.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = list(_API)  # one list: what the package re-exports lazily is what this module exports

# The range test's defaults, as `tuneassist lr-find` runs it (about 4 epochs, 100..400 steps).
DEFAULT_LR_RANGE = (1e-5, 10.0)
MIN_STEPS, MAX_STEPS, DEFAULT_STEPS = 100, 400, 200
# Validation readings of a range test: about this many images each, about 25 readings per test.
VAL_IMAGES = 1000
VAL_READINGS = 25
MAX_CURVE_BYTES = 64 << 20


# ----------------------------------------------------------------------------- range_test
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


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _move(batch: Any, device: torch.device) -> Any:
    """The batch with every tensor in it (tuples, lists, dicts, nested) on `device`."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: _move(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(_move(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_move(v, device) for v in batch)
    return batch


def _cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU: the snapshot costs no device memory."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu_copy(v) for v in obj)
    return obj


class _Snapshot:
    """Everything a range test changes, saved before it and put back after it, even on an error:
    weights and buffers (BatchNorm statistics), gradients, train/eval modes, the optimiser's state and
    param groups (lr, momentum/betas, weight decay), and the RNGs (torch CPU and CUDA, numpy, random),
    so the user's training continues exactly as if the test had never run."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        import numpy as np
        import torch

        self.model, self.optimizer = model, optimizer
        self.model_state = _cpu_copy(model.state_dict())
        self.optimizer_state = _cpu_copy(optimizer.state_dict())
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
        self.modes = [m.training for m in model.modules()]
        self.rng_cpu = torch.get_rng_state()
        self.rng_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.rng_numpy = np.random.get_state()
        self.rng_python = random.getstate()

    def restore(self) -> None:
        import numpy as np
        import torch

        with torch.no_grad():
            self.model.load_state_dict(self.model_state)
        self.optimizer.load_state_dict(self.optimizer_state)
        for p, g in zip(self.model.parameters(), self.grads, strict=True):
            p.grad = g
        for m, mode in zip(self.model.modules(), self.modes, strict=True):
            m.training = mode
        torch.set_rng_state(self.rng_cpu)
        if self.rng_cuda is not None:
            torch.cuda.set_rng_state_all(self.rng_cuda)
        np.random.set_state(self.rng_numpy)
        random.setstate(self.rng_python)


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


def _check_positive(name: str, v: Any, integer: bool = False) -> None:
    ok = isinstance(v, int) and not isinstance(v, bool) if integer else isinstance(v, int | float)
    if not ok or not math.isfinite(v) or v <= 0:
        kind = "a positive whole number" if integer else "a positive number"
        raise ValueError(f"{name}={v!r}: it must be {kind}")


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
    import torch

    from tuneassist.engine.optim import set_hyper
    from tuneassist.engine.schedules import RangeTestSchedule
    from tuneassist.engine.train import DivergenceMonitor
    from tuneassist.spec import RunSpec

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; pass your torch.nn.Module")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer is a {type(optimizer).__name__}; pass the torch.optim optimiser built on the model"
        )
    _check_positive("start_lr", start_lr)
    _check_positive("end_lr", end_lr)
    if start_lr >= end_lr:
        raise ValueError(f"start_lr {start_lr:g} must be below end_lr {end_lr:g}, e.g. 1e-5 and 10")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode={mode!r}: use 'exp' (LR evenly spaced in log) or 'linear'")
    _check_positive("accumulation_steps", accumulation_steps, integer=True)
    if steps is not None:
        _check_positive("steps", steps, integer=True)
    if val_every is not None:
        _check_positive("val_every", val_every, integer=True)
    if val_batches is not None:
        _check_positive("val_batches", val_batches, integer=True)
    if momentum is not None:
        hi, lo = momentum
        if not (0 <= lo <= hi < 1):
            raise ValueError(f"momentum={momentum!r}: give (high, low) in [0, 1), e.g. (0.95, 0.85)")
    if amp not in (None, False, True, "bf16", "fp16"):
        raise ValueError(f"amp={amp!r}: use None (as the model is), True or 'bf16', or 'fp16'")
    factor = RunSpec().divergence_factor if divergence_factor is None else divergence_factor
    _check_positive("divergence_factor", factor)

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
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    use_amp = amp not in (None, False)
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=dtype) if use_amp else contextlib.nullcontext()

    def batch_loss(batch: Any) -> torch.Tensor:
        batch = _move(batch, dev)
        if step_fn is not None:
            loss = step_fn(model, batch)
        else:
            if not (isinstance(batch, list | tuple) and len(batch) >= 2):
                raise TypeError(
                    f"the loader gives {type(batch).__name__} batches, not (inputs, targets); pass "
                    "step_fn=lambda model, batch: loss to say how a batch becomes a loss"
                )
            out = model(batch[0])
            fn = loss_fn or torch.nn.functional.cross_entropy
            loss = fn(out.float() if loss_fn is None else out, batch[1])
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = type(loss).__name__ if not isinstance(loss, torch.Tensor) else f"a tensor of {loss.numel()}"
            raise TypeError(f"the loss is {got}; the step must return one scalar loss tensor")
        return loss.reshape(())

    def batches(loader: Iterable[Any]) -> Iterable[Any]:
        """The loader's batches, epoch after epoch."""
        while True:
            empty = True
            for b in loader:
                empty = False
                yield b
            if empty:
                raise ValueError("the training loader gave no batch; check its dataset and batch size")

    def validate() -> float:
        assert val_loader is not None
        total, n = 0.0, 0
        model.eval()
        try:
            with torch.no_grad(), autocast():
                for i, b in enumerate(val_loader):
                    if i >= n_val:
                        break
                    total += float(batch_loss(b).float())
                    n += 1
        finally:
            for m, mode_ in zip(model.modules(), train_modes, strict=True):
                m.training = mode_
        return total / n if n else math.nan

    lrs: list[float] = []
    moms: list[float] = []
    losses: list[float] = []
    val_lrs: list[float] = []
    val_losses: list[float] = []
    monitor = DivergenceMonitor(factor, strict=True)
    diverged_lr: float | None = None
    stopped = f"reached end_lr {end_lr:g} after {n_steps} steps"
    t0 = time.perf_counter()
    snap = _Snapshot(model, optimizer)
    try:
        if not model.training:
            model.train()
        train_modes = [m.training for m in model.modules()]
        source = iter(batches(train_loader))
        for step in range(n_steps):
            lr = schedule.lr(step)
            mom = schedule.momentum(step)
            if momentum is not None:
                set_hyper(optimizer, lr, mom)
            else:
                for g in optimizer.param_groups:
                    g["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(accumulation_steps):
                with autocast():
                    loss = batch_loss(next(source))
                part = loss.float() / accumulation_steps
                (scaler.scale(part) if scaler is not None else part).backward()
                total += float(loss.detach().float())
            mean = total / accumulation_steps
            lrs.append(lr)
            moms.append(mom if momentum is not None else math.nan)
            losses.append(mean)
            if not math.isfinite(mean) or monitor.update(mean):
                diverged_lr = lr
                stopped = f"diverged at step {step} (LR {lr:.3g}): the loss blew up"
                break
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if val_loader is not None and ((step + 1) % every == 0 or step + 1 == n_steps):
                val_lrs.append(lr)
                val_losses.append(validate())
    finally:
        snap.restore()
    suggestion = suggest_lr(lrs, losses, val_lrs or None, val_losses or None, diverged_at_lr=diverged_lr)
    curve: dict[str, list[float | None]] = {
        "lr": list(lrs),
        "momentum": [_finite_or_none(m) for m in moms],
        "train_loss": [_finite_or_none(v) for v in losses],
        "val_lr": list(val_lrs),
        "val_loss": [_finite_or_none(v) for v in val_losses],
    }
    return RangeTestResult(
        suggestion=suggestion,
        curve=curve,
        steps=len(lrs),
        stopped=stopped,
        diverged_lr=diverged_lr,
        seconds=time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------- curves from other tools
def _read_text(path: Path) -> str:
    """A curve file's text, from a regular file of at most MAX_CURVE_BYTES; UserError naming the fix."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give the CSV or JSON file of a range test") from None
    except OSError as e:
        raise UserError(
            f"{path}: cannot open it ({e.strerror}); check the path and its permissions"
        ) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{path} is a folder; give the CSV or JSON file of a range test")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path} is not a regular file; save the curve to a CSV or JSON file first")
        if st.st_size > MAX_CURVE_BYTES:
            raise UserError(
                f"{path} is larger than {MAX_CURVE_BYTES >> 20} MiB, too large for a range test's curve; "
                "give the file of one range test"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_CURVE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); give a CSV or JSON text file") from None


_LOSS_KEYS = ("loss", "train_loss", "losses")
_LR_KEYS = ("lr", "lrs", "learning_rate")
FORMAT_HINT = (
    'give a JSON {"lr": [...], "loss": [...]} (torch-lr-finder\'s history, Lightning\'s lr_finder.results), '
    "a CSV with lr,loss[,val_loss] columns, or tuneassist's lr-find --json"
)


def _pick(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _numbers(values: Any, what: str, where: str) -> list[float]:
    if not isinstance(values, list | tuple):
        raise UserError(f"{where}: {what!r} is not a list of numbers; {FORMAT_HINT}")
    out = []
    for v in values:
        if v is None or v == "":
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise UserError(f"{where}: {what!r} holds {str(v)[:40]!r}, not a number; {FORMAT_HINT}") from None
    return out


def _curve_from_mapping(d: Mapping[str, Any], where: str) -> dict[str, list[float]]:
    if isinstance(d.get("curve"), Mapping):  # tuneassist's lr-find --json or RangeTestResult.to_dict()
        d = d["curve"]
    elif isinstance(d.get("history"), Mapping):  # a saved LRFinder.__dict__ or {"history": ...}
        d = d["history"]
    elif isinstance(d.get("results"), Mapping):  # {"results": lr_finder.results}
        d = d["results"]
    lrs, losses = _pick(d, _LR_KEYS), _pick(d, _LOSS_KEYS)
    if lrs is None or losses is None:
        keys = ", ".join(sorted(map(str, d))[:8]) or "none"
        raise UserError(f"{where}: no 'lr' and 'loss' lists (keys: {keys}); {FORMAT_HINT}")
    curve = {"lr": _numbers(lrs, "lr", where), "train_loss": _numbers(losses, "loss", where)}
    val = d.get("val_loss")
    if val is not None:
        vl = _numbers(val, "val_loss", where)
        vlr = _numbers(d["val_lr"], "val_lr", where) if d.get("val_lr") is not None else curve["lr"]
        pairs = [(a, b) for a, b in zip(vlr, vl, strict=False) if math.isfinite(b)]
        curve["val_lr"], curve["val_loss"] = [p[0] for p in pairs], [p[1] for p in pairs]
    return curve


def _curve_from_rows(rows: list[Mapping[str, Any]], where: str) -> dict[str, list[float]]:
    if not rows:
        raise UserError(f"{where}: no rows; {FORMAT_HINT}")
    keys = {k.strip().lower() if isinstance(k, str) else k: k for k in rows[0]}
    lr_key = next((keys[k] for k in _LR_KEYS if k in keys), None)
    loss_key = next((keys[k] for k in _LOSS_KEYS if k in keys), None)
    if lr_key is None or loss_key is None:
        cols = ", ".join(str(k) for k in rows[0] if k is not None)[:80] or "none"
        raise UserError(f"{where}: no lr and loss columns (found: {cols}); {FORMAT_HINT}")
    val_key = keys.get("val_loss")
    lrs, losses, val_lrs, val_losses = [], [], [], []
    for i, r in enumerate(rows):
        try:
            lr = float(r[lr_key])
        except (TypeError, ValueError):
            raise UserError(
                f"{where}: row {i + 1} has lr {r.get(lr_key)!r}, not a number; {FORMAT_HINT}"
            ) from None
        raw = r.get(loss_key)
        if raw not in (None, ""):
            try:
                losses.append(float(raw))
            except (TypeError, ValueError):
                raise UserError(
                    f"{where}: row {i + 1} has loss {raw!r}, not a number; {FORMAT_HINT}"
                ) from None
            lrs.append(lr)
        if val_key is not None and r.get(val_key) not in (None, ""):
            try:
                val_losses.append(float(r[val_key]))
            except (TypeError, ValueError):
                raise UserError(f"{where}: row {i + 1} has val_loss {r[val_key]!r}, not a number") from None
            val_lrs.append(lr)
    curve = {"lr": lrs, "train_loss": losses}
    if val_losses:
        curve["val_lr"], curve["val_loss"] = val_lrs, val_losses
    return curve


def read_curve(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """A range test's curve from a file any tool wrote: {"lr", "train_loss"[, "val_lr", "val_loss"]}.

    Reads JSON ({"lr": [...], "loss": [...]}: torch-lr-finder's `history`, Lightning's
    `lr_finder.results`; tuneassist's `lr-find --json`), JSON lines (`runs export --format jsonl`) and
    CSV with lr and loss (or train_loss) columns and an optional val_loss column (`runs export`).
    Raises UserError naming the problem and the format it expects.
    """
    p = Path(path)
    text = _read_text(p)
    where = str(p)
    stripped = text.lstrip()
    if not stripped:
        raise UserError(f"{where} is empty; {FORMAT_HINT}")
    if stripped[0] in "{[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            try:  # JSON lines: one row per line
                data = [json.loads(ln) for ln in lines]
            except json.JSONDecodeError:
                raise UserError(
                    f"{where}: not valid JSON ({e.msg} at line {e.lineno}); {FORMAT_HINT}"
                ) from None
        if isinstance(data, Mapping):
            curve = _curve_from_mapping(data, where)
        elif isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
            curve = _curve_from_rows(data, where)
        else:
            raise UserError(f"{where}: JSON of the wrong shape; {FORMAT_HINT}")
    else:
        try:
            dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
        curve = _curve_from_rows(rows, where)
    if len(curve["lr"]) != len(curve["train_loss"]):
        raise UserError(
            f"{where}: {len(curve['lr'])} LRs but {len(curve['train_loss'])} losses; each LR needs its loss"
        )
    if not curve["lr"]:
        raise UserError(f"{where}: the curve has no points; {FORMAT_HINT}")
    return curve


def read_range_test(path: str | os.PathLike[str]) -> RangeTestResult:
    """`read_curve` and the advisor's reading of it, as `range_test` returns it (what `lr-read` prints)."""
    curve = read_curve(path)
    try:
        suggestion = suggest_lr(
            curve["lr"], curve["train_loss"], curve.get("val_lr") or None, curve.get("val_loss") or None
        )
    except ValueError as e:  # LRs that fall, or are not positive: not a range test
        raise UserError(f"{path}: {e}; give the curve of one range test, LR rising") from None
    lossy: dict[str, list[float | None]] = {
        "lr": list(curve["lr"]),
        "train_loss": [_finite_or_none(v) for v in curve["train_loss"]],
        "val_lr": list(curve.get("val_lr", [])),
        "val_loss": [_finite_or_none(v) for v in curve.get("val_loss", [])],
    }
    return RangeTestResult(
        suggestion=suggestion, curve=lossy, steps=len(curve["lr"]), stopped="read from file"
    )


# ----------------------------------------------------------------------------- diagnose
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


# ----------------------------------------------------------------------------- track
def _number_or_none(name: str, v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}={v!r} is not a number") from None
    return f if math.isfinite(f) else None


@dataclass
class TrackedRun:
    """A run of your own loop in the workspace's run store; `log()` one step at a time.

    Made by `track()`; ends when its `with` block does: finished, failed (an exception: re-raised),
    cancelled (Ctrl-C, or `should_stop` honoured after `tuneassist runs cancel ID`), or diverged (a
    NaN/inf training loss was logged).
    """

    run_id: int
    workspace: Path
    steps_per_epoch: float | None
    batch_size: int | None
    _store: Any = field(repr=False)
    _writer: Any = field(repr=False)
    _last: dict[str, Any] = field(default_factory=dict, repr=False)
    _nonfinite_at: int | None = field(default=None, repr=False)
    _t0: float = field(default_factory=time.monotonic, repr=False)
    _tick: tuple[int, float] | None = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    rows: int = 0

    @property
    def should_stop(self) -> bool:
        """True once `tuneassist runs cancel ID` (or the TUI) asked this run to stop: break your loop."""
        return self._cancel.is_set()

    def log(
        self,
        step: int,
        *,
        lr: float | None = None,
        momentum: float | None = None,
        train_loss: float | None = None,
        val_loss: float | None = None,
        val_acc: float | None = None,
        epoch: float | None = None,
        images_per_s: float | None = None,
    ) -> None:
        """Record step `step` (0, 1, 2 ...: optimiser steps): any of its values, a training step's, an
        evaluation's or both. Costs about a microsecond: rows are committed by a background thread."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise TypeError(f"step={step!r}: give the optimiser step as a whole number from 0")
        tl = _number_or_none("train_loss", train_loss)
        if train_loss is not None and tl is None and self._nonfinite_at is None:
            self._nonfinite_at = step  # NaN/inf: stored as NULL, and the run ends diverged
        if epoch is None and self.steps_per_epoch:
            epoch = step / self.steps_per_epoch
        ep = _number_or_none("epoch", epoch)
        now = time.monotonic()
        ips = _number_or_none("images_per_s", images_per_s)
        if ips is None and self.batch_size and self._tick is not None and step > self._tick[0]:
            ips = (step - self._tick[0]) * self.batch_size / max(now - self._tick[1], 1e-9)
        wall = now - self._t0
        lr_, mom = _number_or_none("lr", lr), _number_or_none("momentum", momentum)
        if any(v is not None for v in (lr_, mom, tl)) or (train_loss is not None):
            self._writer.add_train(step, ep, lr_, mom, tl, ips, wall)
            self._tick = (step, now)
        vl, va = _number_or_none("val_loss", val_loss), _number_or_none("val_acc", val_acc)
        if vl is not None or va is not None:
            self._writer.add_eval(step, val_loss=vl, val_acc=va, epoch=ep, wall=wall)
            if vl is not None:
                self._last["val_loss"] = vl
            if va is not None:
                self._last["val_acc"] = va
        self._last["step"] = max(step, self._last.get("step", -1))
        if ep is not None:
            self._last["epoch"] = ep
        self.rows += 1


class _TrackHeartbeat(threading.Thread):
    """Keeps a tracked run alive in the store (its liveness is its heartbeat) and hears cancel requests."""

    def __init__(self, store: Any, run: TrackedRun) -> None:
        super().__init__(name=f"track-heartbeat-{run.run_id}", daemon=True)
        from tuneassist.runs.store import heartbeat_interval

        self.store, self.run_ = store, run
        self.interval = heartbeat_interval()
        self.done = threading.Event()

    def run(self) -> None:
        owner = {"status": "running", "attempt": 1}
        while not self.done.wait(self.interval):
            with contextlib.suppress(Exception):  # a busy store must not stop the user's training
                self.store.update_run(self.run_.run_id, _only_if=owner, heartbeat=time.time())
                if self.store.get_run(self.run_.run_id, refresh=False)["cancel_requested"]:
                    self.run_._cancel.set()

    def finish(self) -> None:
        self.done.set()
        self.join()


@contextlib.contextmanager
def track(
    name: str | None = None,
    *,
    hparams: Mapping[str, Any] | None = None,
    model: str | None = None,
    data: str | None = None,
    total_steps: int | None = None,
    steps_per_epoch: float | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> Any:
    """Record a run of your own training loop in the workspace's run store, live.

    ``with tuneassist.track(...) as run:`` then ``run.log(step, lr=..., train_loss=..., val_loss=...)``
    in the loop; the run shows in `tuneassist runs`, `tuneassist runs watch ID` and the TUI's runs
    screen while it trains, with the advisor's diagnosis of its curves. `hparams` (lr_max, lr_min,
    momentum_max, weight_decay, batch_size, epochs, schedule, optimizer ...) are shown beside it and
    turn the diagnosis's remedy into values; `steps_per_epoch` (len(train_loader)) puts the curves on
    an epoch axis, `total_steps` gives the progress and ETA. The workspace is `--workspace`'s
    ($TUNEASSIST_HOME, default the user data dir). No torch needed: log plain floats.
    """
    from tuneassist.runs.store import MetricWriter, Store

    hp = dict(hparams or {})
    for k, v in hp.items():
        if not isinstance(k, str):
            raise TypeError(f"hparams key {k!r} is not a string")
        if not (v is None or isinstance(v, str | bool | int | float)):
            raise TypeError(f"hparams[{k!r}] is a {type(v).__name__}; give numbers, strings or booleans")
    if total_steps is not None:
        _check_positive("total_steps", total_steps, integer=True)
    if steps_per_epoch is not None:
        _check_positive("steps_per_epoch", steps_per_epoch)
    spec: dict[str, Any] = {
        "schedule": "user",
        **hp,
        "model": model or hp.get("model") or "your model",
        "data": data or hp.get("data") or "your data",
        "tracked": True,
    }
    if name is not None:
        spec["name"] = str(name)
    if total_steps is not None:
        spec.setdefault("steps", total_steps)
    bs = hp.get("batch_size")
    info: dict[str, Any] = {
        "tracked": True,
        "pid": os.getpid(),
        "script": " ".join(sys.argv)[:300],
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "epochs": total_steps / steps_per_epoch if total_steps and steps_per_epoch else None,
    }
    store = Store(workspace)
    try:
        run_id = store.add_tracked_run(spec, info)
        writer = MetricWriter(store, run_id, attempt=1)
        run = TrackedRun(
            run_id=run_id,
            workspace=store.workspace,
            steps_per_epoch=steps_per_epoch,
            batch_size=bs if isinstance(bs, int) and not isinstance(bs, bool) and bs > 0 else None,
            _store=store,
            _writer=writer,
        )
        heartbeat = _TrackHeartbeat(store, run)
        heartbeat.start()
    except BaseException:
        store.close()
        raise
    status, error = "finished", None
    try:
        yield run
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e} (raised in your script)"
        raise
    finally:
        heartbeat.finish()
        try:
            writer.close()
        finally:
            if status == "finished" and run._nonfinite_at is not None:
                status = "diverged"
            elif status == "finished" and run.should_stop:
                status = "cancelled"
            last = run._last
            end_step = last.get("step", -1) + 1
            reasons = {
                "finished": "your training loop ended",
                "diverged": f"a NaN/inf training loss was logged at step {run._nonfinite_at}",
                "cancelled": "stopped on request",
                "failed": error,
            }
            outcome = {
                "outcome": status,
                "step": end_step,
                "epoch": last.get("epoch"),
                "val_loss": last.get("val_loss"),
                "val_acc": last.get("val_acc"),
                "wall_time": time.monotonic() - run._t0,
                "reason": reasons[status],
            }
            if writer.lost_ownership:  # declared lost meanwhile (the process was stopped): leave it so
                pass
            else:
                store.update_run(
                    run_id,
                    _only_if={"status": "running", "attempt": 1},
                    status=status,
                    ended=time.time(),
                    outcome=outcome,
                    error=error,
                )
            store.close()
