"""Splits read one image at a time: what a streamed run holds instead of a whole uint8 tensor.

A split that does not fit in the device's memory is never decoded whole: it is a list of items (image
files, rows of a host tensor, or items of the user's own Dataset) plus the indices of the split's
images. It answers what the data layer asks of a resident split (`shape`, `len`, `index_select` for
the seeded validation split and the quick-evaluation subset), so both kinds of split go through the
same code; only the loader (engine/stream.py) reads the pixels, in DataLoader worker processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tuneassist.engine.decode import DataWarning, decode_one
from tuneassist.errors import UserError


class ItemImages:
    """`len(indices)` images of `shape[1:]`, read one by one with :meth:`read` (CHW, `dtype`)."""

    def __init__(self, indices: np.ndarray, item_shape: tuple[int, int, int], dtype: torch.dtype) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.item_shape = tuple(int(v) for v in item_shape)
        self.dtype = dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.indices), *self.item_shape)

    def __len__(self) -> int:
        return len(self.indices)

    def item_bytes(self) -> int:
        c, h, w = self.item_shape
        return c * h * w * torch.empty((), dtype=self.dtype).element_size()

    @property
    def nbytes(self) -> int:
        return len(self) * self.item_bytes()

    def index_select(self, dim: int, idx: torch.Tensor) -> ItemImages:
        """The images at `idx` (a split of this one), like Tensor.index_select(0, idx)."""
        if dim != 0:
            raise ValueError("streamed splits select images only (dim 0)")
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.indices = self.indices[np.asarray(idx, dtype=np.int64)]
        return out

    def read(self, i: int) -> torch.Tensor:
        """Image `i` of this split as a CHW tensor of `dtype` and `item_shape`."""
        return self._read(int(self.indices[i]))

    def _read(self, source_index: int) -> torch.Tensor:
        raise NotImplementedError


class FolderImages(ItemImages):
    """Image files decoded (and resized to side x side) per item, with PIL, as the folder cache would.

    A file that fails to decode gives a black image and one warning per worker process: the split's
    length (and so every run's batches per epoch) must not depend on which files a worker reached.
    """

    def __init__(self, paths: Sequence[str], side: int) -> None:
        super().__init__(np.arange(len(paths)), (3, side, side), torch.uint8)
        self.paths = list(paths)
        self.side = int(side)
        self._warned = False

    def _read(self, source_index: int) -> torch.Tensor:
        path = self.paths[source_index]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's per-file warnings (EXIF, bombs)
                arr, _ = decode_one(path, self.side)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"cannot read {path} ({type(e).__name__}: {e}); it trains as a black image (and so may "
                    "others this process reads); delete or replace such files",
                    DataWarning,
                    stacklevel=2,
                )
            return torch.zeros(self.item_shape, dtype=torch.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class TensorImages(ItemImages):
    """Rows of a host (CPU) tensor N,C,H,W: a split that fits in host memory, streamed (`--stream`)."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__(np.arange(len(x)), tuple(x.shape[1:]), x.dtype)  # type: ignore[arg-type]
        self.x = x

    def _read(self, source_index: int) -> torch.Tensor:
        return self.x[source_index]


class UserImages(ItemImages):
    """Items of the user's own torch Dataset (`--data module:function`): `dataset[i][0]`, a CHW tensor."""

    def __init__(self, dataset: Any, item_shape: tuple[int, int, int], name: str) -> None:
        super().__init__(np.arange(len(dataset)), item_shape, torch.float32)
        self.dataset = dataset
        self.name = name

    def _read(self, source_index: int) -> torch.Tensor:
        return as_image(self.dataset[source_index], self.item_shape, self.name, source_index)


def as_image(item: Any, shape: tuple[int, ...] | None, name: str, index: int) -> torch.Tensor:
    """The image of one Dataset item `(image, label)` as float32 CHW; UserError naming the fix."""
    if not (isinstance(item, tuple | list) and len(item) >= 2):
        raise UserError(
            f"{name}: item {index} is {type(item).__name__}, not an (image, label) pair; return "
            "(CHW float tensor, int label) from __getitem__"
        )
    x = item[0]
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        what = f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserError(
            f"{name}: the image of item {index} is {what}, not a CHW tensor; return e.g. "
            "transforms.ToTensor()(img), of shape (3, H, W)"
        )
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise UserError(
            f"{name}: item {index} is {tuple(x.shape)}, but item 0 is {tuple(shape)}; every image must "
            "have the same size (resize them in your Dataset, e.g. transforms.Resize((64, 64)))"
        )
    return x.detach().to(torch.float32)


def as_label(item: Any, name: str, index: int) -> int:
    """The label of one Dataset item as an int; UserError naming the fix."""
    y = item[1] if isinstance(item, tuple | list) and len(item) >= 2 else None
    if isinstance(y, torch.Tensor) and y.numel() == 1:
        y = y.item()
    if isinstance(y, bool) or not isinstance(y, int | np.integer) or y < 0:
        raise UserError(
            f"{name}: the label of item {index} is {y!r}; labels must be class indices 0, 1, 2, ... (ints)"
        )
    return int(y)
