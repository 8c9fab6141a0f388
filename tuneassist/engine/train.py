"""The training loop: one function that runs a RunSpec and reports what happens as events.

Events (plain dicts, JSON-serialisable) are the only output, so the same loop serves the headless
CLI, the background worker (which stores them) and tests. The hot path never syncs with the host
except every `spec.sync_every` steps, when the buffered losses are read back at once.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuneassist.engine.data import Dataset, load_dataset
from tuneassist.engine.loader import DeviceLoader
from tuneassist.engine.models import build_model
from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.engine.schedules import build_schedule
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

EventSink = Callable[[dict[str, Any]], None]
CHECKPOINT_VERSION = 1
SMOOTH_BETA = 0.98


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an unavailable CUDA request is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return dev


class DivergenceMonitor:
    """Debiased EMA of the training loss; flags NaN/inf or a blow-up past `factor` x its best.

    Range tests stop on the plain rule (as fastai's lr_find does). Training runs also require the
    smoothed loss to exceed its starting value, so a run whose loss fell to 0.05 is not called
    diverged when it wobbles back to 0.2.
    """

    def __init__(self, factor: float, strict: bool) -> None:
        self.factor = factor
        self.strict = strict
        self.avg = 0.0
        self.n = 0
        self.best = math.inf
        self.first: float | None = None

    def update(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        self.n += 1
        self.avg = SMOOTH_BETA * self.avg + (1 - SMOOTH_BETA) * loss
        smooth = self.avg / (1 - SMOOTH_BETA**self.n)
        if self.first is None:
            self.first = smooth
        self.best = min(self.best, smooth)
        if self.n < 10:
            return False
        blown = smooth > self.factor * self.best
        if not self.strict:
            blown = blown and smooth > self.first
        return blown

    def state(self) -> dict[str, float]:
        return {"avg": self.avg, "n": self.n, "best": self.best, "first": self.first or 0.0}

    def load(self, s: dict[str, float]) -> None:
        self.avg, self.n, self.best = float(s["avg"]), int(s["n"]), float(s["best"])
        self.first = float(s["first"]) if self.n else None


def _evaluate(model: nn.Module, loader: DeviceLoader, amp: Any) -> tuple[float, float]:
    """Mean loss and accuracy over a loader, with a single host sync at the end."""
    model.eval()
    total = torch.zeros((), device=loader.device, dtype=torch.float64)
    correct = torch.zeros((), device=loader.device, dtype=torch.int64)
    n = 0
    with torch.no_grad(), amp():
        for x, y in loader:
            out = model(x)
            total += F.cross_entropy(out.float(), y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            n += y.numel()
    model.train()
    if n == 0:
        return math.nan, math.nan
    return float(total.item() / n), float(correct.item() / n)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write-temp, fsync, rename: a crash mid-write never leaves a half checkpoint under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only, never pickled code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise UserError(f"no checkpoint at {path}; the run cannot resume, start it again") from exc
    except Exception as exc:  # unpickling refused or file damaged
        raise UserError(
            f"checkpoint {path} is damaged or holds pickled objects ({type(exc).__name__}); "
            "it was not loaded; start the run again"
        ) from exc


def _prepare(spec: RunSpec) -> tuple[Dataset, int]:
    ds = load_dataset(spec.data, data_dir=spec.data_dir, val_fraction=spec.val_fraction, seed=spec.seed)
    n_train = int(ds.train_y.numel())
    if spec.batch_size > n_train:
        raise UserError(
            f"batch size {spec.batch_size} is larger than the training split ({n_train} images); "
            f"use --batch-size {2 ** int(math.log2(max(1, n_train)))} or less"
        )
    return ds, n_train // spec.batch_size


def train(
    spec: RunSpec,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run `spec` to the end (finished, diverged or cancelled) and return the end event."""
    spec.validate()
    emit: EventSink = on_event or (lambda e: None)
    stop = should_stop or (lambda: False)
    ckpt_path = Path(checkpoint_path) if checkpoint_path else None

    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    # Denormal floats (weights decaying towards zero, a diverging range test) make CPU kernels
    # 10-20x slower; flushing them to zero costs nothing measurable in accuracy.
    torch.set_flush_denormal(True)
    device = resolve_device(spec.device)
    cuda = device.type == "cuda"
    torch.manual_seed(spec.seed)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ds, steps_per_epoch = _prepare(spec)
    total_steps = spec.steps if spec.steps is not None else max(1, round(spec.epochs * steps_per_epoch))
    channels_last = spec.channels_last  # faster on CUDA and, with oneDNN, on the CPU too

    model = build_model(spec.model, ds.num_classes, allow_import=spec.allow_import).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, spec)
    schedule = build_schedule(spec, total_steps)
    run_model: nn.Module = torch.compile(model) if spec.compile else model  # type: ignore[assignment]

    use_bf16 = cuda and spec.bf16

    def amp() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    loader_kw = dict(device=device, mean=ds.mean, std=ds.std, channels_last=channels_last)
    train_loader = DeviceLoader(
        ds.train_x, ds.train_y, spec.batch_size, train=True, augment=spec.augment, seed=spec.seed, **loader_kw
    )
    eval_bs = max(spec.batch_size, 256)
    val_loader = DeviceLoader(ds.val_x, ds.val_y, eval_bs, train=False, **loader_kw)
    if spec.eval_subset and spec.eval_subset < ds.val_y.numel():
        k = spec.eval_subset
        quick_val = DeviceLoader(ds.val_x[:k], ds.val_y[:k], eval_bs, train=False, **loader_kw)
    else:
        quick_val = val_loader

    monitor = DivergenceMonitor(spec.divergence_factor, strict=spec.is_range_test)
    start_step = 0
    if resume:
        if ckpt_path is None:
            raise UserError("resume needs a checkpoint path; the run has none, start it again")
        state = load_checkpoint(ckpt_path)
        if state.get("version") != CHECKPOINT_VERSION:
            raise UserError(f"checkpoint {ckpt_path} has an unknown format version; start the run again")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if cuda and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        monitor.load(json.loads(state["monitor"]))
        start_step = int(state["step"])

    emit(
        {
            "type": "start",
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "epochs": total_steps / steps_per_epoch,
            "device": str(device),
            "num_classes": ds.num_classes,
            "train_size": int(ds.train_y.numel()),
            "val_size": int(ds.val_y.numel()),
            "test_size": int(ds.test_y.numel()),
            "start_step": start_step,
        }
    )

    def checkpoint(step: int) -> None:
        if ckpt_path is None:
            return
        payload: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "rng_cpu": torch.get_rng_state(),
            "monitor": json.dumps(monitor.state()),
            "spec": json.dumps(spec.to_dict()),
        }
        if cuda:
            payload["rng_cuda"] = torch.cuda.get_rng_state()
        _save_checkpoint(ckpt_path, payload)
        emit({"type": "checkpoint", "step": step, "epoch": step / steps_per_epoch, "path": str(ckpt_path)})

    eval_every = spec.eval_every
    last_val: tuple[float, float] = (math.nan, math.nan)

    def do_eval(step: int, loader: DeviceLoader) -> None:
        nonlocal last_val
        last_val = _evaluate(run_model, loader, amp)
        emit(
            {
                "type": "eval",
                "step": step,
                "epoch": step / steps_per_epoch,
                "val_loss": last_val[0],
                "val_acc": last_val[1],
            }
        )

    t_start = time.perf_counter()
    train_time = 0.0
    trained_images = 0
    pending: list[tuple[int, float, float, torch.Tensor]] = []
    window_start = time.perf_counter()
    outcome, reason = "finished", "reached the last step"
    diverged_at: int | None = None
    diverged_lr: float | None = None
    step = start_step
    run_model.train()

    def flush() -> bool:
        """Read buffered losses back, emit step events; True when the run diverged."""
        nonlocal window_start, train_time, diverged_at, diverged_lr
        if not pending:
            return False
        losses = torch.stack([p[3] for p in pending]).float().tolist()
        now = time.perf_counter()
        elapsed = now - window_start
        train_time += elapsed
        ips = len(pending) * spec.batch_size / elapsed if elapsed > 0 else 0.0
        blown = False
        for (s, lr, mom, _), loss in zip(pending, losses, strict=True):
            emit(
                {
                    "type": "step",
                    "step": s,
                    "epoch": s / steps_per_epoch,
                    "lr": lr,
                    "momentum": mom,
                    "train_loss": loss if math.isfinite(loss) else None,
                    "images_per_s": ips,
                }
            )
            if monitor.update(loss):
                diverged_at, diverged_lr, blown = s, lr, True
                break
        pending.clear()
        window_start = time.perf_counter()
        return blown

    epoch = start_step // steps_per_epoch
    skip = start_step - epoch * steps_per_epoch
    while step < total_steps and outcome == "finished":
        train_loader.set_epoch(epoch, start_batch=skip)
        skip = 0
        for x, y in train_loader:
            lr, mom = schedule.lr(step), schedule.momentum(step)
            set_hyper(optimizer, lr, mom)
            with amp():
                out = run_model(x)
                loss = F.cross_entropy(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            pending.append((step, lr, mom, loss.detach()))
            step += 1
            trained_images += spec.batch_size
            at_epoch_end = step % steps_per_epoch == 0
            want_eval = (eval_every and step % eval_every == 0) or (not eval_every and at_epoch_end)
            if len(pending) >= spec.sync_every or want_eval or step >= total_steps or at_epoch_end:
                if flush():
                    outcome = "diverged"
                    reason = f"training loss blew up at step {diverged_at} (LR {diverged_lr:.3g})"
                    break
                if want_eval and step < total_steps:
                    do_eval(step, quick_val if eval_every else val_loader)
                    window_start = time.perf_counter()
                if stop():
                    outcome, reason = "cancelled", f"cancelled at step {step}"
                    break
            if step >= total_steps:
                break
        else:  # the epoch ran out before the run did
            epoch += 1
            if spec.checkpoint_every and epoch % spec.checkpoint_every == 0:
                checkpoint(step)

    flush()
    if diverged_at is not None:  # steps after the blow-up, before the read-back, do not count
        step = diverged_at + 1
    if outcome == "cancelled":
        checkpoint(step)
    test_loss = test_acc = None
    if outcome != "diverged":
        do_eval(step, quick_val if spec.is_range_test else val_loader)
        if spec.test and outcome == "finished" and not spec.is_range_test:
            test_loader = DeviceLoader(ds.test_x, ds.test_y, eval_bs, train=False, **loader_kw)
            test_loss, test_acc = _evaluate(run_model, test_loader, amp)
        if outcome == "finished":
            checkpoint(step)
    end = {
        "type": "end",
        "outcome": outcome,
        "step": step,
        "epoch": step / steps_per_epoch,
        "diverged_at_step": diverged_at,
        "diverged_lr": diverged_lr,
        "val_loss": None if math.isnan(last_val[0]) else last_val[0],
        "val_acc": None if math.isnan(last_val[1]) else last_val[1],
        "test_loss": test_loss,
        "test_acc": test_acc,
        "wall_time": time.perf_counter() - t_start,
        "images_per_s": trained_images / train_time if train_time > 0 else 0.0,
        "reason": reason,
    }
    emit(end)
    return end
