"""Streamed batches: a split that does not fit on the device comes through DataLoader worker processes.

`StreamLoader` is the `DeviceLoader` of a split held as items (engine/items.py): the same constructor
(the split, its labels, an engine.loader.LoaderSettings), `len`, `set_epoch(e, start_batch=k)`, `epoch`
and `(x float32 normalised, y int64)` batches on the device, so the training loop cannot tell them apart
(`open_loader(...)` returns one when given items).

Same batches: each epoch's permutation, crop offsets and flips are drawn exactly as `DeviceLoader`
draws them (the same generator, seed and order, on the CPU), and each item is padded with black,
mirrored and cropped the same way, so on the CPU a streamed epoch is the resident epoch, batch for batch.
The workers decode, crop and flip one item at a time; the main process moves each uint8 batch to the
device and normalises it there with the same multiply-add.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from tuneassist.engine.items import ItemImages
from tuneassist.engine.loader import DeviceLoader, LoaderSettings, _epoch_seed, normaliser
from tuneassist.errors import UserError
from tuneassist.hardware import cpu_cores

WORKERS_ENV = "TUNEASSIST_STREAM_WORKERS"  # DataLoader workers per streamed split (default: cores - 1, <= 8)


def stream_workers() -> int:
    """DataLoader worker processes for a streamed split: $TUNEASSIST_STREAM_WORKERS, else one per core
    but one (the training process needs its own), at most 8; 0 reads in the training process."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            raise UserError(
                f"{WORKERS_ENV}={env!r} must be a whole number of worker processes, e.g. 4"
            ) from None
    return min(8, max(1, cpu_cores() - 1))


def own_rng() -> torch.Generator:
    """A DataLoader's own generator (for its workers' seeds): iterating one must not draw from torch's
    global RNG, or reading the data would change the model's initialisation (train() seeds it first)."""
    return torch.Generator().manual_seed(0)


def _worker_init(_: int) -> None:
    """A worker must die on its DataLoader's SIGTERM (a run worker's own handler only sets a stop flag,
    as in engine/folder.py's decode pool); Ctrl-C is the training process's to handle. One torch thread:
    the workers are many processes already."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


class _Items(Dataset):
    """Item `(i, dy, dx, flip)` of a split: its image padded with `padding` black pixels, mirrored when
    `flip`, cropped at (dy, dx) back to its size (DeviceLoader's augmentation), and its label."""

    def __init__(self, images: ItemImages, y: torch.Tensor, padding: int) -> None:
        self.images, self.y, self.padding = images, y, padding

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, dy, dx, flip = key
        x = self.images.read(i)
        if dy >= 0:  # augmenting: crop a padded (and maybe mirrored) copy
            p = self.padding
            _, h, w = x.shape
            x = F.pad(x, (p, p, p, p))
            if flip:
                x = x.flip(-1)
            x = x[:, dy : dy + h, dx : dx + w]
        return x.contiguous(), self.y[i]


def read_sample(images: ItemImages, k: int) -> torch.Tensor:
    """Up to `k` images of a streamed split, evenly strided, read by DataLoader workers (N,C,H,W): what
    its channel statistics are measured on (a split of `k` or fewer images is read whole: exact)."""
    n = len(images)
    idx = torch.arange(0, n, max(1, -(-n // k)))
    keys = [(int(i), -1, -1, 0) for i in idx.tolist()]
    workers = stream_workers()
    kw: dict[str, Any] = dict(worker_init_fn=_worker_init) if workers else {}
    chunks = [keys[i : i + 64] for i in range(0, len(keys), 64)]
    items = _Items(images, torch.zeros(n, dtype=torch.int64), 0)
    parts = [
        x
        for x, _ in DataLoader(
            items, batch_sampler=chunks, num_workers=min(workers, len(chunks)), generator=own_rng(), **kw
        )
    ]
    return torch.cat(parts)


class _EpochBatches:
    """The batch sampler: each `iter()` yields the batches of the epoch last drawn, from batch `start`,
    as item keys. It holds no reference to its loader: a cycle would leave the workers' iterator to the
    garbage collector, which may run it in a forked worker of another loader."""

    def __init__(self, batch_size: int, batches: int) -> None:
        self.batch_size, self.batches, self.start = batch_size, batches, 0
        self.draws: tuple[torch.Tensor, Any, Any, Any] = (torch.arange(0), None, None, None)

    def __len__(self) -> int:
        return self.batches - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        order, dy, dx, flip = self.draws
        b = self.batch_size
        for i in range(self.start, self.batches):
            sl = slice(i * b, (i + 1) * b)
            if dy is None:
                yield [(int(k), -1, -1, 0) for k in order[sl].tolist()]
            else:
                rows = zip(
                    order[sl].tolist(), dy[sl].tolist(), dx[sl].tolist(), flip[sl].tolist(), strict=True
                )
                yield [(k, a, c, f) for k, a, c, f in rows]


class StreamLoader(DeviceLoader):
    """`DeviceLoader` for a split held as items: batches read by `workers` DataLoader processes."""

    def __init__(
        self, x_uint8: ItemImages, y: torch.Tensor, settings: LoaderSettings, *, workers: int | None = None
    ) -> None:
        """`settings` as DeviceLoader takes them (engine.loader.LoaderSettings), plus `workers`:
        DataLoader processes (default `stream_workers()`)."""
        images = x_uint8
        n, c, h, w = images.shape
        self._configure((n, c, h, w), y, settings)
        self._n_all = n
        self.y = y.to(torch.int64)
        self.workers = stream_workers() if workers is None else int(workers)
        self._scale, self._shift = normaliser(
            settings.mean, settings.std, images.dtype, (c, 1, 1), self.device
        )
        self._batches = _EpochBatches(self.batch_size, len(self))
        pin = self.device.type == "cuda"
        kw: dict[str, Any] = {}
        if self.workers > 0:
            # Train: the workers live for the run (an epoch start costs no process start); an evaluation
            # starts its own each time, so idle evaluation workers never hold memory between them.
            kw = dict(worker_init_fn=_worker_init, persistent_workers=self.train, prefetch_factor=4)
        self._loader = DataLoader(
            _Items(images, self.y, self.padding),
            batch_sampler=self._batches,
            num_workers=self.workers,
            pin_memory=pin,
            generator=own_rng(),
            **kw,
        )

    def _epoch_order(self, epoch: int) -> tuple[torch.Tensor, Any, Any, Any]:
        """This rank's items for `epoch` and their crops, drawn exactly as DeviceLoader draws them."""
        n_all = self._n_all
        if not self.train:
            return torch.arange(self.rank, n_all, self.world_size), None, None, None
        g = torch.Generator(device="cpu")
        g.manual_seed(_epoch_seed(self.seed, epoch))
        perm = torch.randperm(n_all, generator=g)
        mine = slice(self.rank, None, self.world_size)
        k = self.num_samples
        if not self.augment:
            return perm[mine][:k], None, None, None
        span = 2 * self.padding + 1
        dy = torch.randint(0, span, (n_all,), generator=g)
        dx = torch.randint(0, span, (n_all,), generator=g)
        flip = torch.randint(0, 2, (n_all,), generator=g)
        return perm[mine][:k], dy[mine][:k], dx[mine][:k], flip[mine][:k]  # by position, as DeviceLoader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self._epoch, self._start_batch
        self._epoch, self._start_batch = epoch + 1, 0
        return self._iter(epoch, start)

    def _iter(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._batches.draws = self._epoch_order(epoch)
        self._batches.start = start
        try:
            batches = iter(self._loader)
        except (OSError, AssertionError) as e:  # e.g. a daemonic process, or out of processes
            warnings.warn(f"cannot start DataLoader workers ({e}); reading in this process", stacklevel=2)
            self.workers = 0
            self._loader = DataLoader(
                self._loader.dataset, batch_sampler=self._loader.batch_sampler, generator=own_rng()
            )
            batches = iter(self._loader)
        for xb, yb in batches:
            x = xb.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = x.to(torch.float32) if x.dtype != torch.float32 else x.clone()
            yield out.mul_(self._scale).add_(self._shift), yb.to(self.device, non_blocking=True)


def open_loader(
    x: torch.Tensor | ItemImages, y: torch.Tensor, settings: LoaderSettings, *, workers: int | None = None
) -> DeviceLoader:
    """The loader for a split as `load_dataset` holds it: a `DeviceLoader` for a tensor on the device,
    a `StreamLoader` for items (`workers`: its DataLoader processes; a resident split has none)."""
    if isinstance(x, torch.Tensor):
        return DeviceLoader(x, y, settings)
    return StreamLoader(x, y, settings, workers=workers)
