"""The training loop: one function that runs a RunSpec and reports what happens as events.

Events (plain dicts, JSON-serialisable) are the only output, so the same loop serves the headless
CLI, the background worker (which stores them) and tests. The hot path never syncs with the host
except every `spec.sync_every` steps, when the buffered losses are read back at once.

Read top to bottom, `train` is the whole story: set the process up (`_Run.build`: device, data,
model, optimiser, schedule, loaders), resume from a checkpoint, announce the run, train epoch after
epoch (`_train_epochs`, one `_step` at a time, a `_read_back` of the buffered losses now and then),
and end it (`_finish`: the last evaluation, the test split, the last checkpoint, the end event).
The loop's changing numbers live in one `_Progress`; what does not change during the run in `_Run`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuneassist.engine.checkpoint import (
    CHECKPOINT_VERSION,
    load_checkpoint,
    load_run_checkpoint,
    save_checkpoint,
)
from tuneassist.engine.collectives import (
    any_rank,
    broadcast_buffers,
    mean_over_ranks,
    rank_world,
    wrap_model,
)
from tuneassist.engine.data import Dataset, load_for_run
from tuneassist.engine.device import (
    FAKE_OOM_ENV,
    autocast,
    bf16_applies,
    fake_oom_above,
    is_oom,
    is_simulated,
    raise_fake_oom,
    resolve_device,
    use_cuda_kernels_of_a_run,
)
from tuneassist.engine.divergence import DivergenceMonitor
from tuneassist.engine.evaluate import eval_subset_indices, evaluate
from tuneassist.engine.events import EventSink, end_event, sink, stopper
from tuneassist.engine.loader import DeviceLoader, LoaderSettings
from tuneassist.engine.models import build_model
from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.engine.schedules import Schedule, build_schedule
from tuneassist.engine.stream import open_loader
from tuneassist.engine.usertrain import train_user
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec, splits_over

__all__ = [
    "CHECKPOINT_VERSION",
    "FAKE_OOM_ENV",
    "DivergenceMonitor",
    "EventSink",
    "eval_subset_indices",
    "load_checkpoint",
    "resolve_device",
    "train",
]


def train(
    spec: RunSpec,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run `spec` to the end (finished, diverged or cancelled) and return the end event.

    `on_event` gets every event; `should_stop` is asked at each loss read-back; the checkpoint is
    written at `checkpoint_path` (every `spec.checkpoint_every` epochs, on cancel and at the end) and
    read back from there with `resume`.
    """
    spec.validate()
    if spec.train_fn is not None:  # the user's own training function (--train module:function)
        return train_user(spec, on_event, should_stop, checkpoint_path, resume)
    run = _Run.build(
        spec, sink(on_event), stopper(should_stop), Path(checkpoint_path) if checkpoint_path else None
    )
    start_step = run.restore() if resume else 0
    run.emit(run.start_event(start_step))
    progress = _Progress(step=start_step)
    run.run_model.train()
    _train_epochs(run, progress)
    end = _finish(run, progress)
    run.emit(end)
    return end


# ----------------------------------------------------------------------------- setting the run up
def _configure_process(spec: RunSpec) -> tuple[torch.device, int, int]:
    """Threads, float handling, the device and the seed of this process: (device, rank, world size)."""
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    # Denormal floats (weights decaying towards zero, a diverging range test) make CPU kernels
    # 10-20x slower; flushing them to zero costs nothing measurable in accuracy.
    torch.set_flush_denormal(True)
    device = resolve_device(spec.device)
    rank, world = rank_world()  # (0, 1) unless started as a rank of a multi-device run
    if world > 1:
        if not splits_over(spec.batch_size, world):
            raise UserError(f"batch size {spec.batch_size} does not split evenly over {world} devices")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(spec.seed)
    if device.type == "cuda":
        if device.index is not None:  # kernels, cuDNN handles and the context on this GPU, not GPU 0
            torch.cuda.set_device(device)
        use_cuda_kernels_of_a_run()
    return device, rank, world


def _prepare(spec: RunSpec) -> tuple[Dataset, int]:
    """The data set and the steps in one epoch (a batch larger than the training split is refused)."""
    ds = load_for_run(spec)  # held on the device, or streamed when it does not fit (engine/data.py)
    n_train = len(ds.train)
    if spec.batch_size > n_train:
        raise UserError(
            f"batch size {spec.batch_size} is larger than the training split ({n_train} images); "
            f"use --batch-size {2 ** int(math.log2(max(1, n_train)))} or less"
        )
    return ds, n_train // spec.batch_size


def _build_models(
    spec: RunSpec, num_classes: int, device: torch.device, world: int
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(the bare model, the one that trains, the one that evaluates): compiled when asked, under DDP
    on a multi-device run; ranks evaluate their shard with the bare model (no DDP collectives in a
    loop of uneven length)."""
    model = build_model(spec.model, num_classes, allow_import=spec.allow_import, model_dir=spec.model_dir)
    model = model.to(device)
    if spec.channels_last:  # faster on CUDA and, with oneDNN, on the CPU too
        model = model.to(memory_format=torch.channels_last)
    train_module = wrap_model(model, device) if world > 1 else model
    run_model: nn.Module = torch.compile(train_module) if spec.compile else train_module  # type: ignore[assignment]
    eval_model: nn.Module = run_model if world == 1 else (torch.compile(model) if spec.compile else model)  # type: ignore[assignment]
    return model, run_model, eval_model


@dataclass
class _Loaders:
    """The run's batches on its device: training (this rank's share), validation, the quick
    validation subset, and how to make one for the test split (with the validation's settings)."""

    train: DeviceLoader
    val: DeviceLoader
    quick_val: DeviceLoader
    evaluation: LoaderSettings

    @classmethod
    def build(cls, spec: RunSpec, ds: Dataset, device: torch.device, rank: int, world: int) -> _Loaders:
        evaluation = LoaderSettings(
            max(spec.batch_size, 256),
            device,
            ds.mean,
            ds.std,
            train=False,
            channels_last=spec.channels_last,
            rank=rank,
            world_size=world,
        )
        training = replace(  # spec.batch_size is the total over all ranks
            evaluation, batch_size=spec.batch_size // world, train=True, augment=spec.augment, seed=spec.seed
        )
        train = open_loader(ds.train.x, ds.train.y, training)
        val = open_loader(ds.val.x, ds.val.y, evaluation)
        quick_val = val
        if spec.eval_subset and spec.eval_subset < len(ds.val):
            few = ds.val.subset(eval_subset_indices(len(ds.val), spec.eval_subset))
            quick_val = open_loader(few.x, few.y, evaluation)
        return cls(train, val, quick_val, evaluation)

    def test(self, ds: Dataset) -> DeviceLoader:
        return open_loader(ds.test.x, ds.test.y, self.evaluation)


@dataclass
class _Run:
    """What stays fixed while the run trains, and the run's own actions: evaluate, checkpoint, resume."""

    spec: RunSpec
    emit: EventSink
    stop: Callable[[], bool]
    ckpt_path: Path | None
    device: torch.device
    rank: int
    world: int
    ds: Dataset
    steps_per_epoch: int
    total_steps: int
    model: nn.Module
    run_model: nn.Module
    eval_model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    loaders: _Loaders
    bf16: bool
    monitor: DivergenceMonitor
    fake_oom: int | None

    @classmethod
    def build(cls, spec: RunSpec, emit: EventSink, stop: Callable[[], bool], ckpt_path: Path | None) -> _Run:
        device, rank, world = _configure_process(spec)
        if world > 1:  # every rank stops after the same step
            raw_stop = stop
            stop = lambda: any_rank(raw_stop(), device)  # noqa: E731
        ds, steps_per_epoch = _prepare(spec)
        total = spec.steps if spec.steps is not None else max(1, round(spec.epochs * steps_per_epoch))
        model, run_model, eval_model = _build_models(spec, ds.num_classes, device, world)
        return cls(
            spec, emit, stop, ckpt_path, device, rank, world, ds, steps_per_epoch, total,
            model, run_model, eval_model,
            optimizer=build_optimizer(model, spec),
            schedule=build_schedule(spec, total),
            loaders=_Loaders.build(spec, ds, device, rank, world),
            bf16=bf16_applies(spec.bf16, device),
            monitor=DivergenceMonitor(spec.divergence_factor, strict=spec.is_range_test),
            fake_oom=fake_oom_above(),
        )  # fmt: skip

    def amp(self) -> AbstractContextManager[Any]:
        return autocast(self.device, self.bf16)

    def epoch(self, step: int) -> float:
        return step / self.steps_per_epoch

    @contextlib.contextmanager
    def oom_guard(self) -> Iterator[None]:
        """Turn an out-of-memory error into a UserError naming the batch size and a smaller one to try."""
        try:
            yield
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            raise UserError(_oom_message(self.spec, self.device, self.world, is_simulated(exc))) from None

    def start_event(self, start_step: int) -> dict[str, Any]:
        ds = self.ds
        return {
            "type": "start",
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.total_steps / self.steps_per_epoch,
            "device": str(self.device),
            "devices": self.world,
            "num_classes": ds.num_classes,
            "image_size": int(ds.train.x.shape[-1]),
            "train_size": len(ds.train),
            "val_size": len(ds.val),
            "test_size": len(ds.test),
            "start_step": start_step,
            "streamed": ds.streamed,  # the fact `data_note` says in words: streamed, or held on the device
            "data_note": ds.note,
        }

    def evaluate(self, step: int, loader: DeviceLoader) -> tuple[float, float]:
        """(loss, accuracy) on `loader`, with rank 0's BN statistics, announced as an eval event."""
        with self.oom_guard():
            broadcast_buffers(self.model)
            val = evaluate(self.eval_model, loader, self.amp)
        self.emit(
            {"type": "eval", "step": step, "epoch": self.epoch(step), "val_loss": val[0], "val_acc": val[1]}
        )
        return val

    def checkpoint(self, step: int) -> None:
        """Save everything a resume needs after `step` (rank 0 only: one writer, every rank loads it)."""
        if self.ckpt_path is None or self.rank != 0:
            return
        payload: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": step,
            "rng_cpu": torch.get_rng_state(),
            "monitor": json.dumps(self.monitor.state()),
            "spec": json.dumps(self.spec.to_dict()),
        }
        if self.device.type == "cuda":
            payload["rng_cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(self.ckpt_path, payload)
        self.emit(
            {"type": "checkpoint", "step": step, "epoch": self.epoch(step), "path": str(self.ckpt_path)}
        )

    def restore(self) -> int:
        """Load the checkpoint into the model, optimiser, RNGs and divergence monitor: its step."""
        state = load_run_checkpoint(self.ckpt_path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        self.monitor.load(json.loads(state["monitor"]))
        return int(state["step"])


def _oom_message(spec: RunSpec, device: torch.device, world: int, simulated: bool) -> str:
    """What ran out of memory, and the batch size to try instead (or why none would fit)."""
    sim = f" (simulated by {FAKE_OOM_ENV})" if simulated else ""
    if spec.batch_size == 1:
        fix = f"{spec.model} does not fit even one image: free the device or use a smaller model"
    else:
        smaller = 1 << ((spec.batch_size // 2).bit_length() - 1)  # a power of two <= half
        fix = (
            f"use --batch-size {smaller} or less (the largest that fits: python -m "
            f"tuneassist.engine.probe --model {spec.model} --data {spec.data} --device {device.type})"
        )
    per = f" ({spec.batch_size // world} per device)" if world > 1 else ""
    return f"out of memory on {device} at batch size {spec.batch_size}{per}{sim}; {fix}"


# ----------------------------------------------------------------------------- the loop
@dataclass
class _Progress:
    """The loop's changing numbers: where it is, how it is going, what it has measured."""

    step: int
    outcome: str = "finished"
    reason: str = "reached the last step"
    diverged_at: int | None = None
    diverged_lr: float | None = None
    last_val: tuple[float, float] = (math.nan, math.nan)
    trained_images: int = 0
    train_time: float = 0.0  # seconds spent in training steps (evaluations left out)
    t_start: float = field(default_factory=time.perf_counter)
    window_start: float = field(default_factory=time.perf_counter)
    pending: list[tuple[int, float, float, torch.Tensor]] = field(default_factory=list)  # losses on device

    @property
    def running(self) -> bool:
        return self.outcome == "finished"


def _train_epochs(run: _Run, p: _Progress) -> None:
    """Train until the last step, a divergence or a cancel; a resumed run starts mid-epoch."""
    epoch = p.step // run.steps_per_epoch
    skip = p.step - epoch * run.steps_per_epoch
    while p.step < run.total_steps and p.running:
        run.loaders.train.set_epoch(epoch, start_batch=skip)
        skip = 0
        for x, y in run.loaders.train:
            _step(run, p, x, y)
            if _at_sync_point(run, p) and not _after_read_back(run, p):
                break
            if p.step >= run.total_steps:
                break
        else:  # the epoch ran out before the run did
            epoch += 1
            if run.spec.checkpoint_every and epoch % run.spec.checkpoint_every == 0:
                run.checkpoint(p.step)


def _step(run: _Run, p: _Progress, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step at the schedule's LR and momentum; its loss stays on the device."""
    lr, mom = run.schedule.lr(p.step), run.schedule.momentum(p.step)
    set_hyper(run.optimizer, lr, mom)
    with run.oom_guard():
        with run.amp():
            out = run.run_model(x)
            loss = F.cross_entropy(out.float(), y)
        raise_fake_oom(len(y), run.fake_oom)  # this device's batch; activations alive
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
    p.pending.append((p.step, lr, mom, loss.detach()))
    p.step += 1
    p.trained_images += run.spec.batch_size


def _wants_eval(run: _Run, step: int) -> bool:
    """Whether to evaluate after `step` steps: every eval_every steps, else at each epoch's end."""
    every = run.spec.eval_every
    return bool(every and step % every == 0) or (not every and step % run.steps_per_epoch == 0)


def _at_sync_point(run: _Run, p: _Progress) -> bool:
    """Whether to read the losses back now: the buffer is full, an evaluation is due, the epoch or the
    run has ended."""
    at_epoch_end = p.step % run.steps_per_epoch == 0
    return (
        len(p.pending) >= run.spec.sync_every
        or _wants_eval(run, p.step)
        or p.step >= run.total_steps
        or at_epoch_end
    )


def _after_read_back(run: _Run, p: _Progress) -> bool:
    """Read the losses back, then evaluate if due and ask whether to stop: False when the run ends."""
    if _read_back(run, p):
        p.outcome = "diverged"
        p.reason = f"training loss blew up at step {p.diverged_at} (LR {p.diverged_lr:.3g})"
        return False
    if _wants_eval(run, p.step) and p.step < run.total_steps:
        p.last_val = run.evaluate(p.step, run.loaders.quick_val if run.spec.eval_every else run.loaders.val)
        p.window_start = time.perf_counter()
    if run.stop():
        p.outcome, p.reason = "cancelled", f"cancelled at step {p.step}"
        return False
    return True


def _read_back(run: _Run, p: _Progress) -> bool:
    """Read the buffered losses back (one host sync), emit their step events: True when the run diverged."""
    if not p.pending:
        return False
    # Multi-device: the mean over ranks (the whole batch's loss), the same numbers on every rank.
    losses = mean_over_ranks(torch.stack([q[3] for q in p.pending]).float()).tolist()
    elapsed = time.perf_counter() - p.window_start
    p.train_time += elapsed
    ips = len(p.pending) * run.spec.batch_size / elapsed if elapsed > 0 else 0.0
    blown = False
    for (s, lr, mom, _), loss in zip(p.pending, losses, strict=True):
        run.emit({"type": "step", "step": s, "epoch": run.epoch(s), "lr": lr, "momentum": mom,
                  "train_loss": loss if math.isfinite(loss) else None, "images_per_s": ips})  # fmt: skip
        if run.monitor.update(loss):
            p.diverged_at, p.diverged_lr, blown = s, lr, True
            break
    p.pending.clear()
    p.window_start = time.perf_counter()
    return blown


# ----------------------------------------------------------------------------- the end
def _finish(run: _Run, p: _Progress) -> dict[str, Any]:
    """The last read-back, evaluation, test reading and checkpoint of how the run ended: its end event."""
    _read_back(run, p)
    if p.diverged_at is not None:  # steps after the blow-up, before the read-back, do not count
        p.step = p.diverged_at + 1
    if p.outcome == "cancelled":
        run.checkpoint(p.step)
    test: tuple[float | None, float | None] = (None, None)
    if p.outcome != "diverged":
        p.last_val = run.evaluate(
            p.step, run.loaders.quick_val if run.spec.is_range_test else run.loaders.val
        )
        if run.spec.test and p.outcome == "finished" and not run.spec.is_range_test:
            test = evaluate(run.eval_model, run.loaders.test(run.ds), run.amp)
        if p.outcome == "finished":
            run.checkpoint(p.step)
    val_loss, val_acc = (None if math.isnan(v) else v for v in p.last_val)
    return end_event(
        p.outcome, p.reason, p.step, run.steps_per_epoch,
        diverged_at=p.diverged_at, diverged_lr=p.diverged_lr, val=(val_loss, val_acc), test=test,
        wall_time=time.perf_counter() - p.t_start, images=p.trained_images, train_time=p.train_time,
    )  # fmt: skip
