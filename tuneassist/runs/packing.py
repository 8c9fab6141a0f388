"""Which runs may share a GPU: each GPU's runs must fit in its memory together, judged per GPU.

Torch-free (the scheduler runs in the UI process). A run's need is a fixed part per process (CUDA
context, cuDNN workspaces, the data set held on the GPU) plus its per-device batch times the model's
training memory per image. That per-image figure is measured, not guessed: SAVED_MIB_PER_IMAGE holds
the activations autograd keeps for backward, measured by `tuneassist.engine.memory.saved_mib_per_image`
(a test re-measures every entry), and PEAK_FACTOR leaves room for the gradients in flight during
backward and the allocator's slack. `benchmarks/cuda_check.sh` compares the result with CUDA's real
peak on a GPU.

Models not in the table (your own) and multi-GPU runs always get their GPUs alone; so does every run on
the CPU, where runs sharing the cores gain nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A slot ('cpu', 'cuda:<id>'), the specs of the runs already on it, the spec that wants to join.
Fits = Callable[[str, list[dict[str, Any]], dict[str, Any]], bool]

PACK_MAX = 4  # runs sharing one GPU at most when packing on its own
MEMORY_SHARE = 0.8  # of the GPU's memory that packed runs may plan to use together
RUN_BASE_MIB = 2048  # per process: CUDA context, cuDNN workspaces, the data set held on the GPU
PEAK_FACTOR = 2.0  # peak training memory / saved activations, with room to spare
# MiB per image kept for backward: (bf16 autocast + channels_last, fp32), batch 8, CPU-measured, at
# MEASURED_SIDE x MEASURED_SIDE; a run's image_size scales it by the pixels.
MEASURED_SIDE = 32
SAVED_MIB_PER_IMAGE: dict[str, tuple[float, float]] = {
    "simple3": (0.297, 0.461),
    "resnet20": (0.790, 1.451),
    "resnet32": (1.275, 2.327),
    "resnet56": (2.244, 4.078),
    "resnet110": (4.424, 8.020),
    "densenet40": (9.331, 10.884),
}


def need_mib(spec: dict[str, Any]) -> float | None:
    """Planned GPU memory of a one-GPU run of a built-in model; None when it must have its GPU alone."""
    saved = SAVED_MIB_PER_IMAGE.get(str(spec.get("model")))
    if saved is None or int(spec.get("devices") or 1) > 1:
        return None
    per_image = saved[0] if spec.get("bf16", True) else saved[1]
    side = int(spec.get("image_size") or MEASURED_SIDE)  # activations grow with the pixels
    per_image *= (side / MEASURED_SIDE) ** 2
    return RUN_BASE_MIB + PEAK_FACTOR * per_image * int(spec.get("batch_size") or 128)


def fits_by_memory(slot: str, on_slot: list[dict[str, Any]], spec: dict[str, Any], gpu_mib: int) -> bool:
    """May `spec` join the runs on `slot`? Alone: always. Beside others: only on a GPU of known memory
    (gpu_mib > 0), at most PACK_MAX runs, every one packable, their needs within MEMORY_SHARE of it."""
    if not on_slot:
        return True
    if not slot.startswith("cuda") or gpu_mib <= 0 or len(on_slot) + 1 > PACK_MAX:
        return False
    needs = [need_mib(s) for s in [*on_slot, spec]]
    return all(n is not None for n in needs) and sum(n or 0.0 for n in needs) <= MEMORY_SHARE * gpu_mib


def count_limit(limit: int) -> Fits:
    """The rule for a limit set by hand: at most `limit` runs per device, whatever they are."""
    return lambda slot, on_slot, spec: len(on_slot) < limit
