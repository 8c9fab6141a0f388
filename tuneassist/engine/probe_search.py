"""The memory probe on a GPU (``method='cuda-oom-search'``): run the very training step the engine runs
at growing batches until one runs out of memory.

A full training step (forward, backward, the engine's SGD step; bf16 autocast and channels_last as the
engine uses them; the data set's bytes held on the device as the run will hold them) at batches
doubling from `start` until one runs out of memory or `limit` is reached, then a bisection between
the last batch that fit and the first that did not. After every out-of-memory the batch, the
gradients and the cached blocks are freed and the peak statistics reset, so the process stays usable.
With the fake-OOM test hook (`tuneassist.engine.device`) the same search runs on a CPU.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tuneassist.engine.device import (
    FAKE_OOM_ENV,
    autocast,
    is_oom,
    raise_fake_oom,
    use_cuda_kernels_of_a_run,
)
from tuneassist.engine.models import build_model
from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.engine.probe_result import MIB, ROUND_TO, ProbeAsk, ProbeResult, round_batch, size_text
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec


def search_largest(fits: Callable[[int], bool], start: int, limit: int) -> tuple[int, int | None]:
    """Largest batch in [1, limit] for which `fits` is true, assuming fitting is monotone.

    Doubles from `start` until a failure or `limit`, halves when `start` itself fails, then bisects
    between the last fit and the first failure. Returns (largest fit or 0, smallest failure or None).
    """
    if start < 1 or limit < 1:
        raise ValueError("start and limit must be at least 1")
    lo, hi = 0, None  # largest known fit, smallest known failure
    b = min(start, limit)
    while True:
        if fits(b):
            lo = b
            if b >= limit:
                break
            b = min(2 * b, limit)
        else:
            hi = b
            break
    if lo == 0:  # even `start` failed: halve until something fits
        assert hi is not None
        b = hi // 2
        while b >= 1:
            if fits(b):
                lo = b
                break
            hi = b
            b //= 2
        if lo == 0:
            return 0, hi
    if hi is None:
        return lo, None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def _probe_spec(model_name: str, bf16: bool, channels_last: bool) -> RunSpec:
    """The optimiser settings of a real run (SGD, momentum buffers, weight decay) for the engine's builder."""
    return RunSpec(model=model_name, weight_decay=5e-4, bf16=bf16, channels_last=channels_last)


class _Stepper:
    """One model and optimiser on the device; `fits(b)` runs a training step at batch b."""

    def __init__(
        self,
        model_name: str,
        num_classes: int,
        image_size: int,
        device: torch.device,
        *,
        bf16: bool,
        channels_last: bool,
        data_bytes: int,
        fake_above: int | None,
    ) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.num_classes = num_classes
        self.image_size = image_size
        self.channels_last = channels_last  # as the engine: on CUDA and on the CPU (oneDNN)
        self.bf16 = bf16 and self.cuda
        self.fake_above = fake_above
        spec = _probe_spec(model_name, bf16, channels_last)
        model = build_model(model_name, num_classes).to(device)  # a user model: only with allow_user_model
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.optimizer = build_optimizer(model, spec)
        set_hyper(self.optimizer, 0.0, 0.9)  # LR 0: the weights stay put, the buffers are real
        # The run keeps its data set on the device (DeviceLoader): hold the same bytes.
        self.data = torch.empty(data_bytes, dtype=torch.uint8, device=device) if data_bytes else None
        self.tries: list[list[int]] = []
        self.peaks: dict[int, int] = {}
        self.releases = 0

    def _step(self, b: int) -> None:
        x = torch.randn(b, 3, self.image_size, self.image_size, device=self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, self.num_classes, (b,), device=self.device)
        with autocast(self.device, self.bf16):
            out = self.model(x)
            loss = F.cross_entropy(out.float(), y)
        raise_fake_oom(b, self.fake_above)  # the batch's activations are alive, as in a real OOM
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def fits(self, b: int) -> bool:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        oom = False
        try:
            self._step(b)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            oom = True
        # Out of the except block: the traceback, and with it the frame holding x/out/loss, is gone.
        if oom:
            self.release()
        elif self.cuda:
            self.peaks[b] = int(torch.cuda.max_memory_allocated(self.device))
        self.tries.append([b, 0 if oom else 1])
        return not oom

    def release(self) -> None:
        """Free what a failed step left: gradients, unreachable tensors, the allocator's cache."""
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        self.releases += 1

    def close(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        del self.model, self.optimizer, self.data
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def _per_sample(peaks: dict[int, int]) -> float | None:
    """Bytes per sample: the peak difference between the smallest and largest batches that fit (far
    apart, so the allocator's block rounding does not swamp it)."""
    if not peaks:
        return None
    bs = sorted(peaks)
    if len(bs) == 1:
        return peaks[bs[0]] / bs[0]
    b1, b2 = bs[0], bs[-1]
    return max(0.0, (peaks[b2] - peaks[b1]) / (b2 - b1))


def _device_memory(device: torch.device) -> tuple[int | None, int | None, str]:
    """(total, free) bytes of a CUDA device after freeing the cache, and its name for sentences; the
    backend set as a run sets it (its algorithms and workspaces are the ones measured)."""
    if device.type != "cuda":
        return None, None, str(device)
    use_cuda_kernels_of_a_run()
    gc.collect()
    torch.cuda.empty_cache()
    avail, total = (int(v) for v in torch.cuda.mem_get_info(device))
    return total, avail, f"{device} ({torch.cuda.get_device_name(device)})"


def _search(
    stepper: _Stepper, start: int, limit: int
) -> tuple[int, int | None, list[list[int]], float | None]:
    """(largest fit, first failure, the tries, bytes per sample) of the search; the stepper is closed."""
    try:
        largest, first_fail = search_largest(stepper.fits, start, limit)
        return largest, first_fail, stepper.tries, _per_sample(stepper.peaks)
    finally:
        stepper.close()


def search_probe(
    ask: ProbeAsk,
    num_classes: int,
    image_size: int,
    device: torch.device,
    *,
    start: int,
    bf16: bool,
    channels_last: bool,
    fake_above: int | None,
) -> ProbeResult:
    """The largest batch a training step of `ask.model` fits at on `device`, less the safety margin."""
    cuda = device.type == "cuda"
    total, avail, name = _device_memory(device)
    try:
        stepper = _Stepper(
            ask.model, num_classes, image_size, device, bf16=bf16, channels_last=channels_last,
            data_bytes=ask.data_bytes, fake_above=fake_above,
        )  # fmt: skip
    except torch.OutOfMemoryError:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        raise UserError(
            f"{ask.model} and the data set ({size_text(ask.data_bytes)}) do not fit on {name} "
            f"({size_text(avail or 0)} free); free the device or use a smaller model"
        ) from None
    largest, first_fail, tries, bps = _search(stepper, start, ask.limit)
    sim = f" (out-of-memory simulated above {fake_above} by {FAKE_OOM_ENV})" if fake_above is not None else ""
    what = (
        f"a full training step of {ask.model} ({'bf16 autocast' if bf16 and cuda else 'fp32'}"
        f"{', channels_last' if channels_last else ''}) on {name}"
    )
    if largest == 0:
        raise UserError(
            f"{what} ran out of memory even at batch 1{sim}; free the device or use a smaller model"
        )
    max_batch, how = _verdict(largest, first_fail, ask)
    mem = f" ({size_text(total)}, {size_text(avail or 0)} free)" if total else ""
    per = f"; about {bps / MIB:.2f} MiB per sample" if bps else ""
    data_txt = (
        f", with the data set's {size_text(ask.data_bytes)} held on the device" if ask.data_bytes else ""
    )
    explanation = (
        f"{what[0].upper()}{what[1:]}{mem}{data_txt}{',' if data_txt else ''} {how} (rounded down to a "
        f"multiple of {ROUND_TO}){per}{sim}."
    )
    return ask.answer(
        max_batch, str(device), "cuda-oom-search", explanation, memory=(total, avail), bytes_per_sample=bps,
        largest_fit=largest, first_oom=first_fail, tries=tries, simulated=fake_above is not None,
    )  # fmt: skip


def _verdict(largest: int, first_fail: int | None, ask: ProbeAsk) -> tuple[int, str]:
    """The answer from the search's bounds, and how it was reached in words."""
    if first_fail is None:
        max_batch = round_batch(largest)
        return (
            max_batch,
            f"fit at every batch up to the limit {ask.limit}, so the per-device batch is capped at "
            f"{max_batch}",
        )
    max_batch = round_batch(min(ask.limit, largest * ask.safety))
    return max_batch, (
        f"fit at batch {largest} and ran out of memory at {first_fail}; keeping a "
        f"{100 * (1 - ask.safety):.0f}% safety margin, the largest per-device batch is {max_batch}"
    )
