"""The memory probe: the largest per-device batch a model can train at (checklist step 2, TBS).

Why measure instead of estimate: activation memory depends on the model, the kernels cuDNN picks,
bf16 autocast and channels_last, so the only number worth trusting comes from running the very
training step the engine runs.

- CUDA (``method='cuda-oom-search'``): a full training step (forward, backward, the engine's SGD
  step; bf16 autocast and channels_last as the engine uses them; the data set's bytes held on the
  device as the run will hold them) at batches doubling from `start` until one runs out of memory
  or `limit` is reached, then a bisection between the last batch that fit and the first that did
  not. After every out-of-memory the batch, the gradients and the cached blocks are freed and the
  peak statistics reset, so the process stays usable.
- CPU (``method='cpu-ram-bound'``): the peak resident memory of forward + backward (fp32,
  channels_last, as the engine runs on the CPU) at two small batches, measured by the kernel: in
  a separate process, after a warm-up step at batch 1 (torch loads libraries and kernels lazily, a
  few hundred MiB), the high-water mark is reset (``/proc/self/clear_refs``) and VmHWM read after
  each step. glibc is told to mmap every block over 64 KiB there, so freed activations leave the
  RSS at once and each mark is the step's own live peak, not what the allocator kept from the step
  before. (The process-lifetime peak, getrusage's ru_maxrss, is no use: the import of torch can
  peak above a small step.) The slope gives bytes per sample, the intercept the fixed cost (torch,
  model, gradients; the optimiser's momentum buffers, one per parameter and independent of the
  batch, are added by size), plus RUN_OVERHEAD_BYTES for what a real run holds beyond the bare
  step. Checked against the engine's own peak (VmHWM of a `train()` process, 3 steps, synthetic
  data, 1 thread): the slope is close or high (simple3 0.53 here vs 0.40 MiB/image in the engine
  between batch 1024 and 2048; resnet20 1.50 vs 1.40 between 512 and 1024), and the engine held
  230-360 MiB (simple3) and 500-550 MiB (resnet20) more than this reading's line: torch._dynamo
  (imported by the optimiser), the data pipeline, evaluation and allocator retention. With the
  allowance the predicted need was 10-26% above the engine's real peak at those four points (the
  safe side). The bound is
  available RAM (MemAvailable, or the cgroup limit when lower) x `safety`, less the data set and
  the fixed cost, divided by bytes per sample, capped at `limit`. Needs Linux.

The answer (`max_batch`) keeps the safety margin and is rounded down to a multiple of 8 (tensor
cores work in 8s, and it splits evenly over 2, 4 or 8 devices); the checklist takes the powers of
two below it.

Test hook: with ``TUNEASSIST_FAKE_OOM_ABOVE=N`` in the environment the probe runs the CUDA search
on whatever device it has and the training step raises ``torch.cuda.OutOfMemoryError`` for every
batch above N, after the forward pass has allocated its activations, so the same back-off and
clean-up code runs on a CPU; the search must then report N.

Subprocess entry (used by the torch-free UI through ``tuneassist.runs.probe_client``)::

    python -m tuneassist.engine.probe --model resnet56 --data cifar10 --device auto --json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tuneassist.dataref import BUILTIN, parse_data
from tuneassist.engine.models import _CONSENTED, allow_user_model, build_model
from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.engine.train import resolve_device
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

FAKE_OOM_ENV = "TUNEASSIST_FAKE_OOM_ABOVE"
IMAGE_SIZE = 32  # every built-in data source is 32x32; an image folder trains at its own size
MEASURE_BATCHES = (16, 64)  # the CPU probe's two batches (the second is capped at `limit`)
MEASURE_TIMEOUT_S = 90.0
ROUND_TO = 8
RUN_OVERHEAD_BYTES = 768 * 1024**2  # a real run's memory beyond the bare step (see the notes)
# Messages of allocation failures that torch raises as a plain RuntimeError (cuDNN / cuBLAS).
_OOM_MARKERS = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED")
_GIB = 1024**3
_MIB = 1024**2


@dataclass
class ProbeResult:
    """The largest per-device batch that fits, how it was found, and the numbers behind it."""

    max_batch: int  # after the safety margin, rounded down to a multiple of 8
    device: str
    method: str  # 'cuda-oom-search' | 'cpu-ram-bound'
    bytes_per_sample: float | None  # extra memory per image in the batch
    total_memory: int | None  # bytes on the device (CUDA) or RAM (CPU; the cgroup limit when lower)
    available_memory: int | None  # free bytes before the probe
    explanation: str
    model: str = ""
    safety: float = 0.9
    limit: int = 4096
    largest_fit: int | None = None  # CUDA: largest batch that ran; CPU: the unrounded RAM bound
    first_oom: int | None = None  # CUDA: smallest batch that ran out of memory (None: none did)
    fixed_bytes: float | None = None  # memory independent of the batch (CPU: torch + model + optimiser)
    data_bytes: int = 0  # the data set's bytes, reserved as the run holds them
    tries: list[list[int]] = field(default_factory=list)  # [batch, 1 fit / 0 out of memory] in order
    simulated: bool = False  # out-of-memory injected by TUNEASSIST_FAKE_OOM_ABOVE
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_batch(n: float) -> int:
    """Round down to a multiple of 8 (below 8: down to an integer, at least 1)."""
    k = int(math.floor(n))
    if k >= ROUND_TO:
        return k - k % ROUND_TO
    return max(1, k)


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


def _fake_oom_above() -> int | None:
    raw = os.environ.get(FAKE_OOM_ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        raise UserError(
            f"{FAKE_OOM_ENV}={raw!r} must be an integer batch size (test hook); unset it"
        ) from None
    if n < 0:
        raise UserError(f"{FAKE_OOM_ENV}={raw!r} must be 0 or more; unset it")
    return n


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MARKERS)


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

    def _amp(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _step(self, b: int) -> None:
        x = torch.randn(b, 3, self.image_size, self.image_size, device=self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, self.num_classes, (b,), device=self.device)
        with self._amp():
            out = self.model(x)
            loss = F.cross_entropy(out.float(), y)
        if self.fake_above is not None and b > self.fake_above:
            # The activations of this batch are alive here, as in a real OOM during backward.
            raise torch.cuda.OutOfMemoryError(
                f"simulated out of memory at batch {b} ({FAKE_OOM_ENV}={self.fake_above})"
            )
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
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
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


def _gib(n: float) -> str:
    """A memory size for sentences: GiB from 1 GiB up, MiB below."""
    return f"{n / _GIB:.1f} GiB" if n >= _GIB else f"{n / _MIB:.0f} MiB"


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


def _search_probe(
    model_name: str,
    num_classes: int,
    image_size: int,
    device: torch.device,
    *,
    start: int,
    limit: int,
    safety: float,
    bf16: bool,
    channels_last: bool,
    data_bytes: int,
    fake_above: int | None,
) -> ProbeResult:
    cuda = device.type == "cuda"
    total = avail = None
    name = str(device)
    if cuda:
        torch.backends.cudnn.benchmark = True  # as the engine: the algorithms (and workspaces) it will use
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        gc.collect()
        torch.cuda.empty_cache()
        avail, total = (int(v) for v in torch.cuda.mem_get_info(device))
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    try:
        stepper = _Stepper(
            model_name,
            num_classes,
            image_size,
            device,
            bf16=bf16,
            channels_last=channels_last,
            data_bytes=data_bytes,
            fake_above=fake_above,
        )
    except torch.cuda.OutOfMemoryError:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        raise UserError(
            f"{model_name} and the data set ({_gib(data_bytes)}) do not fit on {name} "
            f"({_gib(avail or 0)} free); free the device or use a smaller model"
        ) from None
    try:
        largest, first_fail = search_largest(stepper.fits, start, limit)
        tries, bps = stepper.tries, _per_sample(stepper.peaks)
    finally:
        stepper.close()
    sim = f" (out-of-memory simulated above {fake_above} by {FAKE_OOM_ENV})" if fake_above is not None else ""
    what = (
        f"a full training step of {model_name} ({'bf16 autocast' if bf16 and cuda else 'fp32'}"
        f"{', channels_last' if channels_last else ''}) on {name}"
    )
    if largest == 0:
        raise UserError(
            f"{what} ran out of memory even at batch 1{sim}; free the device or use a smaller model"
        )
    if first_fail is None:
        max_batch = round_batch(largest)
        how = f"fit at every batch up to the limit {limit}, so the per-device batch is capped at {max_batch}"
    else:
        max_batch = round_batch(min(limit, largest * safety))
        how = (
            f"fit at batch {largest} and ran out of memory at {first_fail}; keeping a "
            f"{100 * (1 - safety):.0f}% safety margin, the largest per-device batch is {max_batch}"
        )
    mem = f" ({_gib(total)}, {_gib(avail or 0)} free)" if total else ""
    per = f"; about {bps / _MIB:.2f} MiB per sample" if bps else ""
    data_txt = f", with the data set's {_gib(data_bytes)} held on the device" if data_bytes else ""
    explanation = (
        f"{what[0].upper()}{what[1:]}{mem}{data_txt}{',' if data_txt else ''} {how} (rounded down to a "
        f"multiple of {ROUND_TO}){per}{sim}."
    )
    return ProbeResult(
        max_batch=max_batch,
        device=str(device),
        method="cuda-oom-search",
        bytes_per_sample=bps,
        total_memory=total,
        available_memory=avail,
        explanation=explanation,
        model=model_name,
        safety=safety,
        limit=limit,
        largest_fit=largest,
        first_oom=first_fail,
        data_bytes=data_bytes,
        tries=tries,
        simulated=fake_above is not None,
    )


# ---------------------------------------------------------------------------------------------
# CPU: RAM bound from measured peak RSS


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(":")
            parts = v.split()
            if parts and parts[0].isdigit():
                out[k.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def ram_info() -> tuple[int, int, str]:
    """(total, available) RAM bytes for a new process and where they came from.

    MemAvailable from /proc/meminfo, lowered to the cgroup's limit minus its usage when the process
    runs in a container with a smaller memory limit.
    """
    info = _read_kv(Path("/proc/meminfo"))
    if "MemTotal" in info and "MemAvailable" in info:
        total, avail, src = info["MemTotal"], info["MemAvailable"], "MemAvailable in /proc/meminfo"
    else:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = page * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            raise UserError(
                "cannot read the machine's memory size here; pass --device cuda, or set the batch size "
                "by hand"
            ) from None
        avail, src = total // 2, "half the physical RAM (no /proc/meminfo to read MemAvailable)"
    cg = Path("/sys/fs/cgroup")
    for limit_f, usage_f in (
        (cg / "memory.max", cg / "memory.current"),
        (cg / "memory" / "memory.limit_in_bytes", cg / "memory" / "memory.usage_in_bytes"),
    ):
        lim, used = _read_int(limit_f), _read_int(usage_f)
        if lim is not None and used is not None and lim < total:
            total = lim
            if lim - used < avail:
                avail, src = max(0, lim - used), f"the cgroup limit {limit_f} less its usage"
            break
    return total, avail, src


def _proc_status(key: str) -> int:
    """A byte count from /proc/self/status (VmRSS, VmHWM)."""
    return _read_kv(Path("/proc/self/status"))[key]


def _reset_hwm() -> None:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _consent_args(model_name: str) -> list[str]:
    """The measuring child's --allow-import/--model-dir: the consent this process was given, passed on."""
    if model_name not in _CONSENTED:
        return []
    folder = _CONSENTED[model_name]
    return ["--allow-import", *(["--model-dir", folder] if folder else [])]


def _measure_child(
    model_name: str, num_classes: int, image_size: int, batches: list[int], channels_last: bool
) -> dict[str, Any]:
    """Runs in the measuring process: the peak RSS of forward + backward at each batch (see the notes).

    No optimiser here: its state (one momentum buffer per parameter) does not depend on the batch, so
    it is added by size (`param_bytes`), and building one would import torch._dynamo (seconds).
    """
    model = build_model(model_name, num_classes).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def step(b: int) -> None:
        x = torch.randn(b, 3, image_size, image_size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (b,))
        loss = F.cross_entropy(model(x).float(), y)
        model.zero_grad(set_to_none=False)
        loss.backward()

    step(1)  # warm-up: lazily loaded libraries, thread pools, kernels and the gradients themselves
    peaks: dict[str, int] = {}
    for b in batches:
        gc.collect()
        _reset_hwm()
        step(b)
        peaks[str(b)] = _proc_status("VmHWM")
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"peaks": peaks, "param_bytes": param_bytes, "rss_after": _proc_status("VmRSS")}


def _measure_peaks(
    model_name: str, num_classes: int, image_size: int, batches: list[int], channels_last: bool = True
) -> tuple[dict[int, int], int]:
    """Peak RSS of one training step at each batch, measured in a separate process (see the notes),
    and the bytes of the optimiser's state (one momentum buffer per parameter)."""
    if not Path("/proc/self/clear_refs").exists() or not _read_kv(Path("/proc/self/status")).get("VmHWM"):
        raise UserError(
            "the CPU memory probe needs Linux (/proc/self/clear_refs and VmHWM); set the batch size by hand"
        )
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # large blocks via mmap: freed memory leaves the RSS at once
    env.pop(FAKE_OOM_ENV, None)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    cmd = [
        sys.executable,
        "-m",
        "tuneassist.engine.probe",
        "--measure-step",
        ",".join(str(b) for b in batches),
        "--model",
        model_name,
        "--num-classes",
        str(num_classes),
        "--image-size",
        str(image_size),
        *([] if channels_last else ["--no-channels-last"]),
        *_consent_args(model_name),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"measuring training steps of {model_name} took over {MEASURE_TIMEOUT_S:.0f} s; the machine "
            "is too busy, set the batch size by hand"
        ) from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if tail.startswith("error: "):
            raise UserError(tail[len("error: ") :])
        raise UserError(f"measuring the memory of a training step of {model_name} failed ({tail})")
    out = json.loads(lines[-1])
    return {int(b): int(v) for b, v in out["peaks"].items()}, int(out["param_bytes"])


def _ram_probe(
    model_name: str,
    num_classes: int,
    image_size: int,
    *,
    limit: int,
    safety: float,
    data_bytes: int,
    channels_last: bool,
) -> ProbeResult:
    b2 = min(MEASURE_BATCHES[1], limit)
    b1 = min(MEASURE_BATCHES[0], max(1, b2 // 4))
    total, avail, src = ram_info()
    if b1 >= b2:  # limit 1: nothing to compare
        peaks, state = _measure_peaks(model_name, num_classes, image_size, [b2], channels_last)
        bps, fixed = float(peaks[b2] + state), float(RUN_OVERHEAD_BYTES)
    else:
        peaks, state = _measure_peaks(model_name, num_classes, image_size, [b1, b2], channels_last)
        bps = (peaks[b2] - peaks[b1]) / (b2 - b1)
        if bps <= 0:
            raise UserError(
                f"the peak memory of {model_name} did not grow from batch {b1} to {b2} "
                f"({peaks[b1] / _MIB:.0f} -> {peaks[b2] / _MIB:.0f} MiB); the measurement is unusable, "
                "set the batch size by hand"
            )
        fixed = peaks[b1] - bps * b1 + state + RUN_OVERHEAD_BYTES
    usable = avail * safety - data_bytes - fixed
    bound = usable / bps
    measured = (
        f"forward + backward of {model_name} in fp32{' channels_last' if channels_last else ''} peaked at "
        + " and ".join(f"{peaks[b] / _MIB:.0f} MiB at batch {b}" for b in sorted(peaks))
        + f" (VmHWM): {bps / _MIB:.2f} MiB per sample on top of "
        f"{max(fixed, 0) / _MIB:.0f} MiB for torch, the model, the optimiser and the training loop"
    )
    if bound < 1:
        raise UserError(
            f"not enough free RAM to train {model_name}: {measured}, but only {_gib(avail)} is available "
            f"({src}){' and the data set needs ' + _gib(data_bytes) if data_bytes else ''}; free memory "
            "or use a smaller model"
        )
    max_batch = round_batch(min(limit, bound))
    data_txt = f", less the data set's {_gib(data_bytes)}" if data_bytes else ""
    cap = (
        f"capped at the limit {limit}"
        if bound >= limit
        else f"rounded down to a multiple of {ROUND_TO}: {max_batch}"
    )
    explanation = (
        f"On the CPU {measured}; {100 * safety:.0f}% of the {_gib(avail)} available ({src}){data_txt} "
        f"allows batch {int(bound)}, {cap}."
    )
    return ProbeResult(
        max_batch=max_batch,
        device="cpu",
        method="cpu-ram-bound",
        bytes_per_sample=bps,
        total_memory=total,
        available_memory=avail,
        explanation=explanation,
        model=model_name,
        safety=safety,
        limit=limit,
        largest_fit=int(bound),
        fixed_bytes=fixed,
        data_bytes=data_bytes,
    )


# ---------------------------------------------------------------------------------------------
# Entry points


def probe_max_batch(
    model_name: str,
    num_classes: int = 10,
    image_size: int = IMAGE_SIZE,
    device: str = "auto",
    *,
    start: int = 64,
    limit: int = 4096,
    safety: float = 0.9,
    bf16: bool = True,
    channels_last: bool = True,
    data_bytes: int = 0,
) -> ProbeResult:
    """The largest per-device batch at which `model_name` trains on `device` (see the module notes).

    `data_bytes`: the data set's size, held in memory by the run (DeviceLoader) and so reserved here.
    Raises UserError when nothing fits or the device cannot be measured.
    """
    if not (0 < safety <= 1):
        raise UserError(f"safety {safety} must be in (0, 1], e.g. 0.9 (keep 10% free)")
    if start < 1 or limit < 1:
        raise UserError(f"start {start} and limit {limit} must be positive batch sizes")
    if num_classes < 1 or image_size < 8:
        raise UserError(f"{num_classes} classes of {image_size}px images: need at least 1 class and 8 px")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    fake = _fake_oom_above()
    if dev.type == "cuda" or fake is not None:
        res = _search_probe(
            model_name,
            num_classes,
            image_size,
            dev,
            start=start,
            limit=limit,
            safety=safety,
            bf16=bf16,
            channels_last=channels_last,
            data_bytes=data_bytes,
            fake_above=fake,
        )
    else:
        build_model(model_name, num_classes)  # a bad name is a UserError here, not in a subprocess
        res = _ram_probe(
            model_name,
            num_classes,
            image_size,
            limit=limit,
            safety=safety,
            data_bytes=data_bytes,
            channels_last=channels_last,
        )
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def data_facts(data: str) -> tuple[int, int]:
    """(number of classes, images the run holds in memory) of a data spec, without decoding it.

    Images count train + validation + test; each is 3 x side x side uint8 in memory (`data_side`).
    """
    kind, arg = parse_data(data)
    if kind == "synthetic":
        from tuneassist.engine import synthetic

        n = synthetic.DEFAULT_TRAIN
        if arg:
            try:
                n = int(arg)
            except ValueError:
                raise UserError(f"synthetic size {arg!r} must be an integer, e.g. synthetic:2000") from None
        return len(synthetic.CLASSES), n + synthetic.default_test_size(n)
    if kind in BUILTIN:
        return BUILTIN[kind].classes, BUILTIN[kind].train + BUILTIN[kind].test
    if kind == "module":  # the user's Datasets: never imported to probe memory (streamed if they are big)
        return 10, 0
    root = Path(str(arg)).expanduser()  # folder:PATH (parse_data refuses any other form)
    train = root / "train"
    single = not train.is_dir()  # a single root of class folders (PATH/<class>/*.jpg)
    if single and not root.is_dir():
        raise UserError(f"{root} is not a folder; expected PATH/train/<class>/*.jpg or PATH/<class>/*.jpg")
    classes = [d for d in (root if single else train).iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not classes:
        raise UserError(
            f"{root} has no class folders; expected PATH/train/<class>/*.jpg or PATH/<class>/*.jpg"
        )
    if single:
        n = sum(1 for _ in root.glob("*/*"))
    else:
        n = sum(1 for split in ("train", "test", "val") for _ in (root / split).glob("*/*"))
    return len(classes), n


def data_side(data: str | None) -> int:
    """The side a data spec's runs train at: a folder's own (see dataref.folder_side), else 32."""
    if data is None or not data.startswith("folder:"):
        return IMAGE_SIZE
    from tuneassist.dataref import folder_side

    return folder_side(data.partition(":")[2]) or IMAGE_SIZE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tuneassist.engine.probe",
        description="Largest per-device training batch that fits in memory (the checklist's TBS step).",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=None, help="data spec: sets the classes and reserves its memory")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-classes", type=int, default=None, help="when no --data is given (default 10)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side of the test images (default: a folder:PATH's own, as its runs train; 32 otherwise)",
    )
    p.add_argument("--start", type=int, default=64)
    p.add_argument("--limit", type=int, default=4096)
    p.add_argument("--safety", type=float, default=0.9)
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--measure-step", default=None, help=argparse.SUPPRESS)  # batches, e.g. 16,64
    p.add_argument("--allow-import", action="store_true", help="allow a module:function model to import")
    p.add_argument("--model-dir", default=None, help="import a module:function model's module from here")
    args = p.parse_args(argv)
    if args.allow_import:
        allow_user_model(args.model, args.model_dir)
    try:
        if args.measure_step is not None:  # internal: the CPU probe's measuring process
            batches = [int(b) for b in args.measure_step.split(",")]
            out = _measure_child(
                args.model,
                args.num_classes or 10,
                args.image_size or IMAGE_SIZE,
                batches,
                not args.no_channels_last,
            )
            print(json.dumps(out), flush=True)
            return 0
        classes, images = (10, 0) if args.data is None else data_facts(args.data)
        side = args.image_size or data_side(args.data)
        res = probe_max_batch(
            args.model,
            args.num_classes or classes,
            side,
            args.device,
            start=args.start,
            limit=args.limit,
            safety=args.safety,
            bf16=not args.no_bf16,
            channels_last=not args.no_channels_last,
            data_bytes=images * 3 * side * side,
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # one line for the caller, never a traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: the memory probe failed ({type(exc).__name__}: {first})", file=sys.stderr, flush=True)
        return 1
    if args.json:
        print(json.dumps(res.to_dict()), flush=True)
    else:
        print(f"max per-device batch: {res.max_batch}\n{res.explanation}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
