"""Whether a data set is held on the training device or streamed: the memory budget, the estimate of
what the resident loader holds, and the one line that says which path a run takes.

The resident path (engine/loader.py) is the fast one, so it is taken whenever the splits fit in a share
of the device's free memory (the model, its activations and the optimiser need the rest): on a GPU its
free memory, on the CPU the host's available RAM (cgroup limits included, hardware.ram_info). A
data set that does not fit is streamed (engine/stream.py), never decoded whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tuneassist.errors import UserError

BUDGET_ENV = "TUNEASSIST_DATA_BUDGET_MIB"  # the budget in MiB, instead of a share of the free memory
DATA_SHARE = 0.5  # of the device's free memory, the most the resident splits may hold
PADDING = 4  # the augmentation's (DeviceLoader's default)


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def data_device(device: str) -> torch.device:
    """The device a run's data goes to: 'auto' is CUDA when there is one (as engine.train resolves it)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        return torch.device("cpu")  # engine.train reports the unknown device


def data_budget(device: torch.device) -> tuple[int, str]:
    """(bytes the resident splits may hold on `device`, where that figure comes from, for the notice)."""
    env = os.environ.get(BUDGET_ENV, "").strip()
    if env:
        try:
            mib = float(env)
        except ValueError:
            raise UserError(f"{BUDGET_ENV}={env!r} must be a number of MiB, e.g. 1024") from None
        return int(mib * 2**20), f"${BUDGET_ENV}"
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(DATA_SHARE * free), f"half of {device}'s free memory"
    from tuneassist.hardware import ram_info

    _, avail, _ = ram_info()
    return int(DATA_SHARE * avail), "half the host's available RAM"


@dataclass(frozen=True)
class Footprint:
    """A data set's images and the bytes they take decoded and as the resident loader holds them."""

    images: int
    train: int
    item_shape: tuple[int, int, int]
    item_bytes: int
    augment: bool
    on_cpu: bool

    @property
    def decoded(self) -> int:
        return self.images * self.item_bytes

    @property
    def resident(self) -> int:
        """Train padded and mirrored (augmenting), the other splits as they are; on the CPU the decoded
        copy the loader's store is built from comes on top (on a GPU it stays in host memory)."""
        _, h, w = self.item_shape
        grow = 2 * (h + 2 * PADDING) * (w + 2 * PADDING) / (h * w) if self.augment else 1.0
        held = self.train * self.item_bytes * grow + (self.images - self.train) * self.item_bytes
        return int(held + (self.decoded if self.on_cpu else 0))

    def what(self, name: str) -> str:
        _, h, w = self.item_shape
        return (
            f"data: {name}, {self.images:,} images at {w}x{h} ({_size(self.decoded)}; "
            f"{_size(self.resident)} held on the device)"
        )


def choose(fp: Footprint, name: str, device: torch.device, forced: bool, workers: int) -> tuple[bool, str]:
    """(stream it?, the one line that says which path the run takes and why)."""
    via = (
        f"through {workers} DataLoader worker{'s' if workers != 1 else ''}"
        if workers
        else "in the training process"
    )
    if forced:
        return True, f"{fp.what(name)}: streaming {via}, as asked (--stream)"
    budget, source = data_budget(device)
    if fp.resident > budget:
        return True, (f"{fp.what(name)} do not fit in the {_size(budget)} budget ({source}): streaming {via}")
    return False, f"{fp.what(name)} fit in the {_size(budget)} budget ({source}): held on {device}"


class Chooser:
    """The choice for one data set on one device: `stream_if` answers it (once the source knows its
    images' count and shape) and keeps the notice in `note`; with no device, never stream, no notice."""

    def __init__(self, device: str | None, *, stream: bool, augment: bool, name: str) -> None:
        from tuneassist.engine.stream import stream_workers

        self.device = data_device(device) if device is not None else None
        self.workers = stream_workers() if self.device is not None else 0
        self.stream, self.augment, self.name = stream, augment, name
        self.note = ""

    def stream_if(self, images: int, item_shape: Sequence[int], element_bytes: int) -> bool:
        """Whether to stream `images` of `item_shape` (C,H,W; every one counted as train: the estimate
        errs high), each value `element_bytes` (uint8 1, float32 4)."""
        if self.device is None:
            return False
        c, h, w = (int(v) for v in item_shape)
        fp = Footprint(
            images, images, (c, h, w), c * h * w * element_bytes, self.augment, self.device.type == "cpu"
        )
        streamed, self.note = choose(fp, self.name, self.device, self.stream, self.workers)
        return streamed
