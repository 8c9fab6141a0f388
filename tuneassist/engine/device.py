"""The device a run trains on, the backend settings it trains with, and out-of-memory errors.

One home for what the training loop and the memory probe must do the same way: the probe's answer is
only worth trusting if it ran the step the loop runs, on the same kernels, and both must recognise an
out-of-memory error alike (torch raises some as a plain RuntimeError).

Test hook: with ``TUNEASSIST_FAKE_OOM_ABOVE=N`` in the environment a training step (the loop's and the
probe's) at a batch above N raises ``torch.OutOfMemoryError`` after its forward pass, so the back-off
and clean-up code runs on a CPU.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from tuneassist.errors import UserError
from tuneassist.hardware import cpu_has_bf16, cuda_build_problem

FAKE_OOM_ENV = "TUNEASSIST_FAKE_OOM_ABOVE"
# Messages of allocation failures that torch raises as a plain RuntimeError (the CPU allocator, cuDNN,
# cuBLAS, a CUDA error) rather than as torch.OutOfMemoryError.
OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
)


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


def use_cuda_kernels_of_a_run() -> None:
    """cuDNN autotuning and TF32 matmuls, as every run trains: the kernels (and workspaces) measured."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def bf16_applies(wanted: bool, device: torch.device) -> bool:
    """bf16 autocast on CUDA, and on a CPU with native bf16 (1.6-2.5x faster than fp32 there)."""
    return wanted and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()))


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager[Any]:
    """bf16 autocast on `device` when `bf16`, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` says the device (or the host) ran out of memory."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MARKERS)


def fake_oom_above() -> int | None:
    """The test hook's N (see the module notes), or None when it is not set."""
    raw = os.environ.get(FAKE_OOM_ENV, "").strip()
    if not raw:
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


def raise_fake_oom(batch: int, above: int | None) -> None:
    """The test hook's out-of-memory for a step at `batch` (call it while the activations are alive)."""
    if above is not None and batch > above:
        raise torch.OutOfMemoryError(f"simulated out of memory at batch {batch} ({FAKE_OOM_ENV}={above})")


def is_simulated(exc: BaseException) -> bool:
    """Whether an out-of-memory error came from the test hook."""
    return str(exc).startswith("simulated")
