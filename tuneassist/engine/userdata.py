"""Your own data: `--data module:function --allow-import`, a function returning (train, test) torch Datasets.

Each item is `(image, label)`: a CHW float tensor (what `transforms.ToTensor()` gives, every image the
same size) and an int class index. The classes are the train Dataset's `classes` when it has them
(torchvision's ImageFolder and CIFAR do), else 0..max label; the size is item 0's. tuneassist then treats
them like any other data: a seeded validation split held out of train, per-channel normalisation measured
on train, and its crop + flip augmentation on train (`--no-augment` when your Dataset augments itself).
The Datasets are streamed through DataLoader workers unless they fit on the device.

Imported only in the engine (a run's worker), only with consent, from the folder recorded at launch
(tuneassist.usercode); the function is called with no arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tuneassist.engine.items import UserImages, as_image, as_label
from tuneassist.errors import UserError


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_datasets(ref: str, module_dir: str | None, allow_import: bool) -> tuple[Any, Any]:
    """Import `module:function` (with consent) and call it: the user's (train, test) Datasets."""
    from tuneassist.engine.models import _import_user_module
    from tuneassist.usercode import consent_error

    if not allow_import:
        raise consent_error(ref, "--data")
    module, _, name = ref.partition(":")
    try:
        mod = _import_user_module(module, ref, module_dir)
    except UserError as exc:  # the importer's messages name --model; here it is --data
        raise UserError(str(exc).replace(f"--model {ref}", f"--data {ref}")) from exc
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise UserError(
            f"--data {ref}: module {module!r} has no function {name!r}; define def {name}(): ... returning "
            "your (train, test) Datasets"
        )
    try:
        out = fn()
    except UserError:
        raise
    except Exception as exc:  # any failure in user code is reported, not traced
        raise UserError(f"--data {ref}: {name}() failed ({_one_line(exc)}); fix that function") from exc
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise UserError(
            f"--data {ref}: {name}() returned {type(out).__name__}; return (train, test), two torch Datasets"
        )
    for split, ds in zip(("train", "test"), out, strict=True):
        try:
            n = len(ds)
        except TypeError:
            raise UserError(
                f"--data {ref}: the {split} Dataset ({type(ds).__name__}) has no len(); return map-style "
                "Datasets (with __len__ and __getitem__)"
            ) from None
        if n < 1:
            raise UserError(f"--data {ref}: the {split} Dataset is empty; it needs images")
    return out[0], out[1]


class _Column(Dataset):
    """One column of the user's items, checked: the label (`what` "label") or the image."""

    def __init__(self, ds: Any, what: str, shape: tuple[int, ...] | None, name: str) -> None:
        self.ds, self.what, self.shape, self.name = ds, what, shape, name

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        item = self.ds[i]
        if self.what == "label":
            return as_label(item, self.name, i)
        return as_image(item, self.shape, self.name, i)


def _read_all(ds: Any, what: str, shape: tuple[int, ...] | None, name: str, workers: int) -> torch.Tensor:
    """Every label (or image) of `ds`, in order, read by `workers` DataLoader processes."""
    from tuneassist.engine.stream import _worker_init, own_rng

    kw: dict[str, Any] = dict(worker_init_fn=_worker_init) if workers else {}
    column = _Column(ds, what, shape, name)
    parts = list(DataLoader(column, batch_size=256, num_workers=workers, generator=own_rng(), **kw))
    return torch.cat(parts) if parts else torch.zeros(0)


def _labels(ds: Any, name: str, workers: int) -> torch.Tensor:
    """The labels: the Dataset's `targets` when it has one of the right length (no image decoded), else
    one pass over its items."""
    targets = getattr(ds, "targets", None)
    if targets is not None:
        try:
            y = torch.as_tensor(np.asarray(targets), dtype=torch.int64).reshape(-1)
            if len(y) == len(ds) and (len(y) == 0 or int(y.min()) >= 0):
                return y
        except (TypeError, ValueError):
            pass
    return _read_all(ds, "label", None, name, workers).to(torch.int64)


def _classes(train: Any, y_train: torch.Tensor, y_test: torch.Tensor, ref: str) -> list[str]:
    top = int(max(int(y_train.max()), int(y_test.max()) if len(y_test) else 0)) + 1
    names = getattr(train, "classes", None)
    if isinstance(names, list | tuple) and len(names) >= top and all(isinstance(c, str) for c in names):
        classes = list(names)
    else:
        classes = [str(k) for k in range(top)]
    if len(classes) < 2:
        raise UserError(f"--data {ref}: every training label is 0; a classifier needs at least two classes")
    return classes


def user_data(
    ref: str, module_dir: str | None, allow_import: bool, workers: int, resident: Callable[[int, tuple], bool]
) -> tuple[list[str], Any, torch.Tensor, Any, torch.Tensor]:
    """(classes, train_x, train_y, test_x, test_y) of `--data module:function`: float32 tensors N,C,H,W
    when `resident(images, item_shape)` says they fit, else UserImages read per item when streamed."""
    train, test = load_datasets(ref, module_dir, allow_import)
    shape = tuple(as_image(train[0], None, f"--data {ref} (train)", 0).shape)
    y_train = _labels(train, f"--data {ref} (train)", workers)
    y_test = _labels(test, f"--data {ref} (test)", workers)
    classes = _classes(train, y_train, y_test, ref)
    if resident(len(train) + len(test), shape):
        x_train = _read_all(train, "image", shape, f"--data {ref} (train)", workers)
        x_test = _read_all(test, "image", shape, f"--data {ref} (test)", workers)
        return classes, x_train, y_train, x_test, y_test
    item_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    return (
        classes,
        UserImages(train, item_shape, f"--data {ref} (train)"),
        y_train,
        UserImages(test, item_shape, f"--data {ref} (test)"),
        y_test,
    )
