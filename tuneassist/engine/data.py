"""Data sets by name: ``synthetic[:N]``, ``cifar10``, ``cifar100``, ``folder:PATH``, ``module:function``.

Every source returns whole splits as uint8 CPU tensors (N,3,H,W; a user's Datasets: float32), so the
loader can put a split on the training device in one copy. A data set that does not fit on the device
(engine/residency.py), or any with ``stream``, is held as items instead (engine/items.py) and streamed
through DataLoader workers (engine/stream.py); `Dataset.note` says which. A validation split is held out
of train (seeded, default 10%): tuning decisions read it, while the test split is kept for the final
report.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneassist.dataref import parse_data
from tuneassist.engine.folder import DataWarning
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

__all__ = [
    "DataWarning",
    "Dataset",
    "Split",
    "channel_stats",
    "default_cache_dir",
    "load_dataset",
    "load_for_run",
    "parse_spec",
    "split_validation",
]
_SYNTHETIC_MAX = 500_000  # 1.5 GB of uint8 images; more is surely a typo


def default_cache_dir() -> Path:
    """Where downloads and decoded-folder caches live unless --data-dir says otherwise.

    ``TUNEASSIST_CACHE_DIR`` overrides the platform default (``platformdirs.user_cache_dir``).
    """
    env = os.environ.get("TUNEASSIST_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tuneassist"))


@dataclass(frozen=True)
class Split:
    """One split's images and their labels, held together so no caller pairs them up by name.

    `x` is a uint8 CPU tensor N,3,H,W (a user's Datasets: float32) or, streamed, ItemImages (the same
    `shape`, `len` and `index_select`); `y` is an int64 tensor either way."""

    x: Any
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.numel())

    def subset(self, idx: torch.Tensor) -> Split:
        """The images at `idx`, in that order."""
        return Split(self.x.index_select(0, idx), self.y[idx])


@dataclass
class Dataset:
    """The train/val/test splits plus the train split's channel statistics."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    note: str = ""  # the one line that says whether the splits are held on the device or streamed

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def streamed(self) -> bool:
        return not isinstance(self.train.x, torch.Tensor)

    def summary(self) -> str:
        """One line for logs: name, class count and split sizes."""
        return (
            f"{self.name}: {self.num_classes} classes, {len(self.train)} train / {len(self.val)} val / "
            f"{len(self.test)} test images of {tuple(self.train.x.shape[1:])}"
        )


def channel_stats(x: torch.Tensor, max_images: int = 16384) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale, from 256-bin histograms.

    Histograms avoid a float copy of the split. Beyond `max_images`, an evenly strided subset is used
    (for 45,000 CIFAR images the estimate is within ~0.1% and the load is 0.5 s faster); below, exact.
    """
    if len(x) == 0:
        raise UserError("the training split is empty; the data set needs training images")
    if len(x) > max_images:
        x = x[:: -(-len(x) // max_images)]
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        count = hist.sum()
        mean = (hist * values).sum() / count
        var = (hist * (values - mean) ** 2).sum() / count
        means.append(float(mean))
        stds.append(max(float(var.sqrt()), 1e-3))  # a constant channel must not divide by zero
    return tuple(means), tuple(stds)


def split_validation(data: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out round(val_fraction * N) random images (seeded), stratified by class: each class gives
    its share (largest remainders round, ties broken by the seed), so a rare class is not left out by
    chance and a dominant one does not fill the split alone.

    Returns (train, val).

    Both parts keep the original relative order, so the split is a pure function of (labels, fraction, seed).
    """
    if not (0.0 <= val_fraction < 1.0):
        raise UserError(f"validation fraction {val_fraction} must be in [0, 1), e.g. 0.1")
    y = data.y
    n = len(y)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    if n - n_val < 1:
        raise UserError(
            f"only {n} training images: too few to hold out --val-fraction {val_fraction:g} for validation; "
            "lower --val-fraction or add images"
        )
    g = torch.Generator().manual_seed(int(seed))
    is_val = torch.zeros(n, dtype=torch.bool)
    if n_val:
        labels, counts = torch.unique(y, return_counts=True)
        quota = [int(c) * n_val // n for c in counts.tolist()]
        rem = [int(c) * n_val % n for c in counts.tolist()]
        tie = torch.randperm(len(quota), generator=g).tolist()
        for i in sorted(range(len(quota)), key=lambda i: (-rem[i], tie[i]))[: n_val - sum(quota)]:
            quota[i] += 1
        for label, k in zip(labels.tolist(), quota, strict=True):
            if k:
                idx = (y == label).nonzero().squeeze(1)
                is_val[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    val_idx = is_val.nonzero().squeeze(1)
    train_idx = (~is_val).nonzero().squeeze(1)
    return data.subset(train_idx), data.subset(val_idx)


MIN_VAL_IMAGES = 100  # below this, a validation accuracy moves by a point or more per image


def _warn_weak_validation(name: str, classes: list[str], val_y: torch.Tensor, val_fraction: float) -> None:
    """The tuning decisions read the validation split: say when it cannot support them."""
    if val_fraction <= 0:
        return
    present = set(val_y.tolist())
    missing = [c for i, c in enumerate(classes) if i not in present]
    if missing:
        warnings.warn(
            f"{name}: the validation split ({len(val_y)} images) has no image of {len(missing)} of "
            f"{len(classes)} classes (e.g. {missing[0]!r}), so tuning cannot see how they do; add images of "
            "those classes or raise --val-fraction",
            DataWarning,
            stacklevel=3,
        )
    elif len(val_y) < MIN_VAL_IMAGES:
        warnings.warn(
            f"{name}: the validation split has only {len(val_y)} images, too few for the tuning decisions "
            f"that read it; raise --val-fraction (now {val_fraction:g}) or add images",
            DataWarning,
            stacklevel=3,
        )


def float_stats(x: torch.Tensor, max_images: int = 2048) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of float images (a user's Datasets), from an evenly strided subset."""
    if len(x) == 0:
        raise UserError("the training split is empty; the data set needs training images")
    if len(x) > max_images:
        x = x[:: -(-len(x) // max_images)]
    v = x.to(torch.float64).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(v.mean(1).tolist()), tuple(max(float(s), 1e-3) for s in v.std(1, correction=0).tolist())


def _stats(x: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The train split's channel statistics; a streamed split's from a strided sample of its items."""
    from tuneassist.engine.items import TensorImages

    if isinstance(x, TensorImages):  # in host memory: the same figures as resident
        x = x.x.index_select(0, torch.from_numpy(x.indices))
    elif not isinstance(x, torch.Tensor):
        from tuneassist.engine.stream import read_sample

        x = read_sample(x, 2048)
    return channel_stats(x) if x.dtype == torch.uint8 else float_stats(x)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split a data spec into (kind, argument), e.g. ``folder:/d`` -> ("folder", "/d"): tuneassist.dataref."""
    return parse_data(spec)


def load_for_run(spec: RunSpec) -> Dataset:
    """The data set of a run: its spec's data, split, size, consent, and the resident-or-streamed choice
    for its device."""
    return load_dataset(
        spec.data, data_dir=spec.data_dir, val_fraction=spec.val_fraction, seed=spec.seed,
        image_size=spec.image_size, device=spec.device, stream=spec.stream, augment=spec.augment,
        allow_import=spec.allow_import, module_dir=spec.data_module_dir,
    )  # fmt: skip


def load_dataset(
    spec: str,
    data_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    *,
    device: str | None = None,
    stream: bool = False,
    augment: bool = True,
    allow_import: bool = False,
    module_dir: str | None = None,
) -> Dataset:
    """Load a data set by spec and hold out a seeded validation split from its train split.

    `data_dir` holds downloads (cifar) and decoded-folder caches; default :func:`default_cache_dir`.
    The `seed` only chooses the validation split: the synthetic images are the same for every seed.
    `image_size` is an image folder's side (default: its most common size); the other sets are 32x32.

    `device` (a run's, e.g. "auto"): the splits are held as items and streamed when they do not fit in
    its budget, or always with `stream`; None: held whole, no budget read. `augment` sizes the estimate.
    A `module:function` (the user's Datasets) is imported only with `allow_import`, from `module_dir`.
    """
    kind, arg = parse_spec(spec)
    if kind != "folder" and image_size not in (None, 32):
        size = "gives its own image size (resize in your Datasets)" if kind == "module" else "is 32x32"
        raise UserError(
            f"--image-size {image_size}: {spec.strip()} {size}; the image size applies to folder:PATH data"
        )
    from tuneassist.engine.residency import Chooser

    path = Chooser(device, stream=stream, augment=augment, name=spec.strip())
    root = Path(data_dir).expanduser() if data_dir else default_cache_dir()
    tx: Any  # the train and test images: uint8 tensors, float tensors, or items to stream
    sx: Any
    if kind == "synthetic":
        classes, tx, ty, sx, sy = _synthetic(arg)
    elif kind in ("cifar10", "cifar100"):
        from tuneassist.engine import cifar

        classes, tx, ty, sx, sy = cifar.load_cifar(kind, root)
        path.name = kind
    elif kind == "module":
        from tuneassist.engine.userdata import user_data

        assert arg is not None
        path.name = arg
        classes, tx, ty, sx, sy = user_data(
            arg, module_dir, allow_import, path.workers, lambda n, shape: not path.stream_if(n, shape, 4)
        )
    else:
        from tuneassist.engine import folder

        assert arg is not None  # parse_spec guarantees a path
        path.name = f"folder:{arg}"
        classes, tx, ty, sx, sy = folder.load_folder(
            arg, root, image_size=image_size,
            stream_if=None if path.device is None else lambda n, side: path.stream_if(n, (3, side, side), 1),
        )  # fmt: skip
    if kind in ("synthetic", "cifar10", "cifar100") and path.stream_if(len(tx) + len(sx), tx.shape[1:], 1):
        from tuneassist.engine.items import TensorImages

        tx, sx = TensorImages(tx), TensorImages(sx)  # held in host memory, streamed to the device
    train, val = split_validation(Split(tx, ty), val_fraction, seed)
    if kind != "synthetic":  # synthetic data is for trying things out: small on purpose
        _warn_weak_validation(path.name, list(classes), val.y, val_fraction)
    mean, std = _stats(train.x)
    return Dataset(
        name=path.name,
        classes=list(classes),
        train=train,
        val=val,
        test=Split(sx, sy),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        note=path.note,
    )


def _synthetic(arg: str | None) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`synthetic[:N]`: the generated set with N training images (default synthetic.DEFAULT_TRAIN)."""
    from tuneassist.engine import synthetic

    n_train = synthetic.DEFAULT_TRAIN
    if arg is not None:
        try:
            n_train = int(arg)
        except ValueError:
            n_train = -1
        if not (10 <= n_train <= _SYNTHETIC_MAX):
            raise UserError(
                f"synthetic size {arg!r} must be an integer from 10 to {_SYNTHETIC_MAX}, e.g. synthetic:2000"
            )
    return synthetic.generate(n_train)
