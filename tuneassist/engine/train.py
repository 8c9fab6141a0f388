"""The training loop: one function that runs a RunSpec and reports what happens as events.

Events (plain dicts, JSON-serialisable) are the only output, so the same loop serves the headless
CLI, the background worker (which stores them) and tests. The hot path never syncs with the host
except every `spec.sync_every` steps, when the buffered losses are read back at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuneassist.engine.data import Dataset, load_for_run
from tuneassist.engine.distributed import (
    any_rank,
    broadcast_buffers,
    mean_over_ranks,
    rank_world,
    sum_over_ranks,
    wrap_model,
)
from tuneassist.engine.loader import DeviceLoader
from tuneassist.engine.models import build_model
from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.engine.schedules import build_schedule
from tuneassist.errors import UserError
from tuneassist.fsafe import open_new
from tuneassist.hardware import cpu_has_bf16, cuda_build_problem
from tuneassist.spec import RunSpec, splits_over

EventSink = Callable[[dict[str, Any]], None]
CHECKPOINT_VERSION = 1
SMOOTH_BETA = 0.98
FAKE_OOM_ENV = "TUNEASSIST_FAKE_OOM_ABOVE"  # test hook shared with the probe: a device that fits N
_OOM_MARKERS = ("out of memory", "can't allocate memory", "CUDA error: out of memory")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an unavailable CUDA request is a user error, not a crash.

    'auto' on a machine whose driver shows GPUs that this torch build cannot use stops too, naming both
    versions: quietly training on the CPU there would look like a hang.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        problem = cuda_build_problem(torch.__version__, torch.version.cuda)
        if problem:
            raise UserError(f"--device auto: {problem}")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        problem = cuda_build_problem(torch.__version__, torch.version.cuda)
        raise UserError(
            f"--device {name}: {problem}"
            if problem
            else f"device {name!r} asked for but CUDA is not available here; use --device cpu"
        )
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
    # Multi-device: every rank holds a shard; sum losses and counts over ranks (not a mean of means).
    sums = sum_over_ranks(torch.stack([total, correct.double(), total.new_tensor(float(n))]))
    total_sum, correct_sum, n_all = sums.tolist()
    if n_all == 0:
        return math.nan, math.nan
    return total_sum / n_all, correct_sum / n_all


class _WriteErrors:
    """A file wrapper that keeps the OSError (ENOSPC, EROFS ...) torch's zip writer turns into an
    opaque RuntimeError, so the user hears "No space left on device" rather than "unexpected pos"."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _private_parents(folder: Path, levels: int) -> None:
    """Create `folder` and up to `levels` - 1 missing folders above it, private (0700, whatever the umask),
    as the store makes them; a folder missing further up (the workspace itself) is left missing."""
    missing: list[Path] = []
    while not folder.exists() and len(missing) < levels:
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        with contextlib.suppress(OSError):
            d.chmod(0o700)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write-temp, fsync, rename: a crash mid-write never leaves a half checkpoint under `path`.

    A full disk or a read-only folder is a UserError naming the file and the fix; the temp file is
    removed and the previous checkpoint stays intact.
    """
    tmp = path.with_name(path.name + ".tmp")
    sink: _WriteErrors | None = None
    try:
        _private_parents(path.parent, levels=2)  # runs/ and runs/N removed during the run come back 0700
        # A fresh private file, never a planted symlink: O_EXCL does not follow one (a leftover is removed).
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with os.fdopen(open_new(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as f:
            sink = _WriteErrors(f)
            torch.save(payload, sink)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        err = exc if isinstance(exc, OSError) else (sink.error if sink else None)
        if err is None:
            raise
        with contextlib.suppress(OSError):
            tmp.unlink()
        fix = (
            "free some disk space there"
            if err.errno in (28, 27, 122)  # ENOSPC, EFBIG, EDQUOT
            else f"make {path.parent} writable"
        )
        raise UserError(
            f"cannot write checkpoint {path} ({err.strerror or err}); the run stopped: {fix}, then start "
            "it again"
        ) from None


def _fake_oom_above() -> int | None:
    """The test hook's N: training steps at a batch above N raise torch.OutOfMemoryError."""
    raw = os.environ.get(FAKE_OOM_ENV, "").strip()
    if not raw:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        msg = f"{FAKE_OOM_ENV}={raw!r} must be an integer batch size (test hook); unset it"
        raise UserError(msg) from None


@contextlib.contextmanager
def _oom_guard(spec: RunSpec, device: torch.device, world: int = 1) -> Iterator[None]:
    """Turn an out-of-memory error into a UserError naming the batch size and a smaller one to try."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and not any(m in str(exc) for m in _OOM_MARKERS):
            raise
        sim = f" (simulated by {FAKE_OOM_ENV})" if str(exc).startswith("simulated") else ""
        if spec.batch_size == 1:
            fix = f"{spec.model} does not fit even one image: free the device or use a smaller model"
        else:
            smaller = 1 << ((spec.batch_size // 2).bit_length() - 1)  # a power of two <= half
            fix = (
                f"use --batch-size {smaller} or less (the largest that fits: python -m "
                f"tuneassist.engine.probe --model {spec.model} --data {spec.data} --device {device.type})"
            )
        per = f" ({spec.batch_size // world} per device)" if world > 1 else ""
        msg = f"out of memory on {device} at batch size {spec.batch_size}{per}{sim}; {fix}"
        raise UserError(msg) from None


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


def eval_subset_indices(n: int, k: int) -> torch.Tensor:
    """k of n validation images, evenly spaced: the validation split keeps the data's order, and an
    image folder is ordered by class, so its first k images would be one or two classes only (every
    quick evaluation of a sweep on real CIFAR-10 read airplanes and cars)."""
    return torch.linspace(0, n - 1, k).round().long().unique()


def _prepare(spec: RunSpec) -> tuple[Dataset, int]:
    ds = load_for_run(spec)  # held on the device, or streamed when it does not fit (engine/data.py)
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
    if spec.train_fn is not None:  # the user's own training function (--train module:function)
        from tuneassist.engine.usertrain import train_user

        return train_user(spec, on_event, should_stop, checkpoint_path, resume)
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
    rank, world = rank_world()  # (0, 1) unless started as a rank of a multi-device run
    if world > 1:
        if not splits_over(spec.batch_size, world):
            raise UserError(f"batch size {spec.batch_size} does not split evenly over {world} devices")
        if cuda and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        raw_stop = stop
        stop = lambda: any_rank(raw_stop(), device)  # noqa: E731 - every rank stops after the same step
    torch.manual_seed(spec.seed)
    if cuda:
        if device.index is not None:  # kernels, cuDNN handles and the context on this GPU, not GPU 0
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ds, steps_per_epoch = _prepare(spec)
    total_steps = spec.steps if spec.steps is not None else max(1, round(spec.epochs * steps_per_epoch))
    channels_last = spec.channels_last  # faster on CUDA and, with oneDNN, on the CPU too

    model = build_model(spec.model, ds.num_classes, allow_import=spec.allow_import, model_dir=spec.model_dir)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, spec)
    schedule = build_schedule(spec, total_steps)
    train_module = wrap_model(model, device) if world > 1 else model
    run_model: nn.Module = torch.compile(train_module) if spec.compile else train_module  # type: ignore[assignment]
    # Ranks evaluate their shard with the bare model: no DDP collectives in a loop of uneven length.
    eval_model: nn.Module = run_model if world == 1 else (torch.compile(model) if spec.compile else model)  # type: ignore[assignment]

    # bf16 autocast on CUDA, and on a CPU with native bf16 (1.6-2.5x faster than fp32 there).
    use_bf16 = spec.bf16 and (cuda or (device.type == "cpu" and cpu_has_bf16()))

    def amp() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    loader_kw = dict(
        device=device, mean=ds.mean, std=ds.std, channels_last=channels_last, rank=rank, world_size=world
    )
    train_loader = DeviceLoader(  # spec.batch_size is the total over all ranks
        ds.train_x, ds.train_y, spec.batch_size // world, train=True, augment=spec.augment, seed=spec.seed,
        **loader_kw,
    )  # fmt: skip
    eval_bs = max(spec.batch_size, 256)
    val_loader = DeviceLoader(ds.val_x, ds.val_y, eval_bs, train=False, **loader_kw)
    if spec.eval_subset and spec.eval_subset < ds.val_y.numel():
        pick = eval_subset_indices(ds.val_y.numel(), spec.eval_subset)
        quick_val = DeviceLoader(
            ds.val_x.index_select(0, pick), ds.val_y[pick], eval_bs, train=False, **loader_kw
        )
    else:
        quick_val = val_loader

    monitor = DivergenceMonitor(spec.divergence_factor, strict=spec.is_range_test)
    fake_oom = _fake_oom_above()
    oom_guard = lambda: _oom_guard(spec, device, world)  # noqa: E731
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
            "devices": world,
            "num_classes": ds.num_classes,
            "image_size": int(ds.train_x.shape[-1]),
            "train_size": int(ds.train_y.numel()),
            "val_size": int(ds.val_y.numel()),
            "test_size": int(ds.test_y.numel()),
            "start_step": start_step,
            "data_note": ds.note,
        }
    )

    def checkpoint(step: int) -> None:
        if ckpt_path is None or rank != 0:  # one writer; every rank loads it on resume
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
        with oom_guard():
            broadcast_buffers(model)
            last_val = _evaluate(eval_model, loader, amp)
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
        # Multi-device: the mean over ranks (the whole batch's loss), the same numbers on every rank.
        losses = mean_over_ranks(torch.stack([p[3] for p in pending]).float()).tolist()
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
            with oom_guard():
                with amp():
                    out = run_model(x)
                    loss = F.cross_entropy(out.float(), y)
                if fake_oom is not None and len(y) > fake_oom:  # this device's batch; activations alive
                    raise torch.OutOfMemoryError(f"simulated: batch {len(y)} > {FAKE_OOM_ENV}")
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
            test_loss, test_acc = _evaluate(eval_model, test_loader, amp)
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
