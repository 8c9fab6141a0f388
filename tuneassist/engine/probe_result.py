"""What the memory probe answers, whichever way it measured: the largest per-device batch and the
numbers behind it (see `tuneassist.engine.probe`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

IMAGE_SIZE = 32  # every built-in data source is 32x32; an image folder trains at its own size
ROUND_TO = 8
GIB = 1024**3
MIB = 1024**2


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


def size_text(n: float) -> str:
    """A memory size for sentences: GiB from 1 GiB up, MiB below."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


@dataclass(frozen=True)
class ProbeAsk:
    """What the probe was asked: the model, the safety margin, the cap and the data the run holds."""

    model: str
    safety: float
    limit: int
    data_bytes: int

    def answer(
        self,
        max_batch: int,
        device: str,
        method: str,
        explanation: str,
        *,
        memory: tuple[int | None, int | None],
        bytes_per_sample: float | None,
        **details: Any,
    ) -> ProbeResult:
        """The result of a measurement: its answer, the device's (total, available) memory and the
        method's own details, with what was asked."""
        total, available = memory
        return ProbeResult(
            max_batch=max_batch, device=device, method=method, bytes_per_sample=bytes_per_sample,
            total_memory=total, available_memory=available, explanation=explanation, model=self.model,
            safety=self.safety, limit=self.limit, data_bytes=self.data_bytes, **details,
        )  # fmt: skip
