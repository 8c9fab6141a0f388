"""Device-resident batches: the whole split lives on the training device as uint8.

Why: the checklist is many short runs, so per-step input cost matters. A DataLoader decodes, crops and
flips one sample at a time in Python worker processes; here the split is copied to the device once and
every batch is one permutation slice, one gather and one fused normalisation, all on the device and
with no host synchronisation.

Augmentation (train mode, ``augment=True``): random crop with ``padding`` pixels of *black* padding (the
uint8 images are zero-padded once, exactly like torchvision's ``RandomCrop(32, padding=4)``; after
normalisation a padded pixel is ``-mean/std``) and a horizontal flip with probability 1/2. The padded
split is stored twice, as is and mirrored (3.1x the raw uint8 size: 480 MB for CIFAR's 50,000 images),
so that a crop, flipped or not, is a set of contiguous image rows: a batch is one ``index_select`` of
rows from an overlapping-window view of that storage (no per-element index, no flip pass), then one
fused multiply-add that converts to float and normalises.

Randomness: every epoch draws its permutation, crop offsets and flips from a generator on the device
seeded with a mix of ``(seed, epoch)``, so a given seed and epoch always give the same batches (on the same
device type) and a run can resume mid-epoch with ``set_epoch(e, start_batch=k)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import torch

from tuneassist.errors import UserError


@dataclass(frozen=True)
class LoaderSettings:
    """A loader's knobs, written once: DeviceLoader and engine.stream.StreamLoader take one as their
    argument after the split and check it alike (``dataclasses.replace`` derives one from another)."""

    batch_size: int
    device: str | torch.device
    mean: Sequence[float]
    std: Sequence[float]
    _: KW_ONLY
    train: bool
    augment: bool = True
    seed: int = 0
    channels_last: bool = False
    drop_last: bool | None = None
    padding: int = 4
    rank: int = 0
    world_size: int = 1


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed per (seed, epoch) so that seed s epoch e+1 never equals seed s+1 epoch e."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & (2**64 - 1)
    z ^= z >> 31
    z = (z * 0xD6E8FEB86659FD93) & (2**64 - 1)
    z ^= z >> 32
    return z & (2**63 - 1)


def normaliser(
    mean: Sequence[float], std: Sequence[float], dtype: torch.dtype, view: tuple[int, ...], device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) that fold (x/255 - mean) / std into one multiply-add on the 0..255 values (float
    images: (x - mean) / std), shaped `view` to broadcast over a batch."""
    unit = 255.0 if dtype == torch.uint8 else 1.0
    std_t = torch.tensor([float(v) for v in std], dtype=torch.float32)
    mean_t = torch.tensor([float(v) for v in mean], dtype=torch.float32)
    return (1.0 / (unit * std_t)).view(view).to(device), (-mean_t / std_t).view(view).to(device)


class DeviceLoader:
    """Yields ``(x float32 normalised, y int64)`` batches from a uint8 (or float32) split held on ``device``.

    A split held as items (engine/items.py: one that does not fit on the device, or `--stream`) goes
    to engine.stream.StreamLoader instead: the same interface and batches, read by DataLoader workers;
    engine.stream.open_loader picks the one that fits the split. Float32 images (a user's Datasets)
    are normalised as they are (no /255).

    Train mode: a fresh on-device permutation every epoch, crop+flip augmentation (if ``augment``), and
    the last partial batch dropped so every step has the same shape (``drop_last`` defaults to ``train``).
    Eval mode: samples in order, no augmentation, last partial batch kept.

    Each ``iter()`` uses the epoch given to :meth:`set_epoch`, or the one after the previous iteration's.
    With ``world_size > 1`` (DDP) every rank draws the same permutation and takes every
    ``world_size``-th sample from position ``rank``, so the ranks' samples are disjoint.
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, settings: LoaderSettings) -> None:
        """`settings`: the batch size, device, mean/std, mode and augmentation (see LoaderSettings)."""
        if x_uint8.dtype not in (torch.uint8, torch.float32) or x_uint8.dim() != 4:
            raise ValueError(f"expected uint8 images N,C,H,W, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        n, c, h, w = x_uint8.shape
        self._configure((n, c, h, w), y, settings)

        x = x_uint8.to(self.device)
        if self.augment:
            # Black (zero) padding, like RandomCrop(padding=4), plus mirrored copies (a flipped crop is a
            # crop of those), written straight into storage in the output memory order.
            p = self.padding
            hp, wp = h + 2 * p, w + 2 * p
            if self.channels_last:
                store = torch.zeros((2 * n, hp, wp, c), dtype=x.dtype, device=self.device)
                view4 = store.permute(0, 3, 1, 2)  # NCHW indexing over NHWC memory
            else:
                store = view4 = torch.zeros((2 * n, c, hp, wp), dtype=x.dtype, device=self.device)
            view4[:n, :, p : p + h, p : p + w] = x
            view4[n:, :, p : p + h, p : p + w] = x.flip(3)
            self._src = store
        else:
            # Store in the output memory order so that batches come out in it without a copy.
            self._src = x.permute(0, 2, 3, 1).contiguous() if self.channels_last else x.contiguous()
        self.y = y.to(self.device, dtype=torch.int64)
        if not self.train and self.world_size > 1:
            self._src = self._src[self.rank :: self.world_size].contiguous()
            self.y = self.y[self.rank :: self.world_size].contiguous()

        view = (c,) if self.channels_last else (c, 1, 1)
        self._scale, self._shift = normaliser(settings.mean, settings.std, x_uint8.dtype, view, self.device)

        if self.augment:
            self._build_rows()

    def _configure(self, shape: tuple[int, int, int, int], y: torch.Tensor, s: LoaderSettings) -> None:
        """Check and keep the settings of a split of `shape` (N,C,H,W): the part every loader shares
        (engine.stream.StreamLoader too), whatever holds the images."""
        n, c, h, w = shape
        if y.dim() != 1 or len(y) != n:
            raise ValueError(f"labels {tuple(y.shape)} do not match {n} images")
        if len(s.mean) != c or len(s.std) != c:
            raise ValueError(f"mean/std need {c} values, got {len(s.mean)}/{len(s.std)}")
        if not (0 <= s.rank < s.world_size):
            raise ValueError(f"rank {s.rank} outside world size {s.world_size}")
        if s.batch_size < 1:
            raise UserError(f"batch size {s.batch_size} must be a positive integer, e.g. --batch-size 128")
        self.device = torch.device(s.device)
        self.batch_size = int(s.batch_size)
        self.train = bool(s.train)
        self.augment = bool(s.augment) and self.train and s.padding > 0
        self.seed = int(s.seed)
        self.channels_last = bool(s.channels_last)
        self.drop_last = self.train if s.drop_last is None else bool(s.drop_last)
        self.padding = int(s.padding)
        self.rank, self.world_size = int(s.rank), int(s.world_size)
        self.shape = (c, h, w)
        self.num_samples = n // s.world_size if self.train else len(range(s.rank, n, s.world_size))
        if self.drop_last and self.num_samples < self.batch_size:
            raise UserError(
                f"batch size {self.batch_size} is larger than the {self.num_samples} training images "
                f"per device; use --batch-size {max(1, self.num_samples)} or less"
            )
        self._epoch = 0
        self._start_batch = 0

    def _build_rows(self) -> None:
        """Row-start offsets of a crop at offset (0, 0) and the overlapping-window view they index.

        A crop row is W pixels (NCHW: W bytes of one channel) or W*C bytes (NHWC), contiguous in the
        padded storage, so any crop of any sample is ``rows[start]`` for a few start offsets.
        """
        c, h, w = self.shape
        src = self._src
        if self.channels_last:  # N,Hp,Wp,C: one row per image row, all channels interleaved
            s_n, s_h, s_w = src.stride(0), src.stride(1), src.stride(2)
            self._row_grid = torch.arange(h, device=self.device) * s_h
            row_len = w * c
        else:  # N,C,Hp,Wp: one row per (channel, image row)
            s_n, s_c, s_h, s_w = src.stride()
            ci = torch.arange(c, device=self.device) * s_c
            hi = torch.arange(h, device=self.device) * s_h
            self._row_grid = (ci[:, None] + hi[None, :]).reshape(-1)
            row_len = w
        flat = src.view(-1)
        self._rows = flat.as_strided((flat.numel() - row_len + 1, row_len), (1, 1))
        self._s_n, self._s_h, self._s_w = s_n, s_h, s_w
        self._n_stored = len(self.y)  # mirrored copy of sample k is stored at k + n_stored

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch `epoch`, starting at batch `start_batch` (for resuming)."""
        self._epoch = int(epoch)
        self._start_batch = int(start_batch)

    def _normalise(self, u8: torch.Tensor) -> torch.Tensor:
        """uint8 batch in storage order -> float32 normalised, NCHW shape (channels_last strides if set)."""
        # float images: a copy first (an evaluation batch is a view of the stored split)
        out = u8.to(torch.float32) if u8.dtype != torch.float32 else u8.clone()
        out = out.mul_(self._scale).add_(self._shift)
        return out.permute(0, 3, 1, 2) if self.channels_last else out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self._epoch, self._start_batch
        self._epoch, self._start_batch = epoch + 1, 0
        if self.train:
            return self._iter_train(epoch, start)
        return self._iter_eval(start)

    def _iter_eval(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch_size
        for i in range(start, len(self)):
            sl = slice(i * b, (i + 1) * b)
            yield self._normalise(self._src[sl]), self.y[sl]

    def _epoch_draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's sample order for `epoch` and, when augmenting, each sample's crop start offset."""
        dev = self.device
        g = torch.Generator(device=dev)
        g.manual_seed(_epoch_seed(self.seed, epoch))
        n_all = len(self.y)
        perm = torch.randperm(n_all, generator=g, device=dev)
        if not self.augment:
            return perm[self.rank :: self.world_size][: self.num_samples], None
        span = 2 * self.padding + 1
        dy = torch.randint(0, span, (n_all,), generator=g, device=dev)
        dx = torch.randint(0, span, (n_all,), generator=g, device=dev)
        flip = torch.randint(0, 2, (n_all,), generator=g, device=dev)
        # Start of each sample's crop in the padded storage; flipped samples read the mirrored copy.
        offset = (perm + flip * self._n_stored) * self._s_n + dy * self._s_h + dx * self._s_w
        mine = slice(self.rank, None, self.world_size)
        k = self.num_samples
        return perm[mine][:k], offset[mine][:k]

    def _iter_train(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm, offset = self._epoch_draws(epoch)
        b = self.batch_size
        c, h, w = self.shape
        for i in range(start, len(self)):
            sl = slice(i * b, (i + 1) * b)
            idx = perm[sl]
            yb = self.y.index_select(0, idx)
            if offset is None:
                xb = self._src.index_select(0, idx)
            else:
                starts = offset[sl][:, None] + self._row_grid[None, :]
                xb = self._rows.index_select(0, starts.view(-1))
                xb = xb.view(len(idx), h, w, c) if self.channels_last else xb.view(len(idx), c, h, w)
            yield self._normalise(xb), yb
