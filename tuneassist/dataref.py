"""Data references (`synthetic`, `synthetic:N`, `cifar10`, `cifar100`, `folder:PATH`, `module:function`) and
the facts of the built-in data sets: one parser and one table for the spec, the profiles, the advisor, the CLI
and the engine.

`module:function` is the user's own data: a function of no arguments returning (train, test) torch Datasets
of (CHW float image tensor, int label). It is named here, never imported: importing it runs the user's
code, which only the engine does, after the user's consent (--allow-import, tuneassist.usercode).

Pure Python (no torch): the UI process sizes runs from these facts without loading any data.
"""

from __future__ import annotations

import collections
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from tuneassist.errors import UserError

USAGE = "synthetic, synthetic:N, cifar10, cifar100, folder:PATH or module:function (your Datasets)"
RESERVED = ("synthetic", "folder", "cifar10", "cifar100")  # kinds a module of that name would shadow


@dataclass(frozen=True)
class DataFacts:
    """What a built-in data set holds: classes, and images in its train and test splits."""

    classes: int
    train: int  # before the validation hold-out
    test: int


# synthetic: the engine's default size (engine/synthetic.py generates it; its test split is a fifth).
BUILTIN: dict[str, DataFacts] = {
    "synthetic": DataFacts(classes=10, train=10_000, test=2_000),
    "cifar10": DataFacts(classes=10, train=50_000, test=10_000),
    "cifar100": DataFacts(classes=100, train=50_000, test=10_000),
}
DEFAULT_VAL_FRACTION = 0.1


def is_data_module(ref: str) -> bool:
    """Whether a data reference is `module:function` (the user's Datasets; never imported here)."""
    mod, sep, fn = ref.strip().partition(":")
    return (
        bool(sep and mod and fn)
        and mod.split(".")[0] not in RESERVED
        and all(p.isidentifier() for p in mod.split("."))
        and fn.isidentifier()
    )


def parse_data(ref: str) -> tuple[str, str | None]:
    """Split a data reference into (kind, argument), e.g. ``folder:/d`` -> ("folder", "/d"),
    ``cifar10`` -> ("cifar10", None), ``mydata:datasets`` -> ("module", "mydata:datasets"); UserError
    naming the forms for anything else."""
    ref = ref.strip()
    kind, sep, arg = ref.partition(":")
    if kind in ("synthetic", "folder") and sep:
        if not arg:
            what = "a path, e.g. folder:~/imgs" if kind == "folder" else "a train size, e.g. synthetic:2000"
            raise UserError(f"data set {ref!r} is missing {what}")
        return kind, arg
    if ref in BUILTIN:
        return ref, None
    if is_data_module(ref):
        return "module", ref
    raise UserError(f"unknown data set {ref!r}; use {USAGE}")


def after_holdout(n: int, val_fraction: float = DEFAULT_VAL_FRACTION) -> int:
    """Training images left once the validation split is held out (the engine rounds the same way)."""
    return max(1, n - round(n * val_fraction))


def builtin_train_size(data: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> int | None:
    """Training images of a built-in data set after the hold-out; None for any other reference."""
    facts = BUILTIN.get(data)
    return None if facts is None else after_holdout(facts.train, val_fraction)


# An image folder without train/ and test/ (PATH/<class>/*): this share of each class's images, chosen
# by a fixed seed (the same for every run and every tool), is its test split.
FOLDER_TEST_FRACTION = 0.2


def folder_test_count(n: int) -> int:
    """Test images held out of a class of `n` images in a single-root folder (one at least, when it has
    two or more; a class of one image trains)."""
    return 0 if n < 2 else min(n - 1, max(1, round(n * FOLDER_TEST_FRACTION)))


# An image folder's side (its images are resized to side x side): --image-size, or by default its most
# common size. Built-in data sets are 32x32.
DEFAULT_SIDE = 32
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024


def valid_image_size(size: object) -> bool:
    """The one rule for a side in pixels: a whole number from MIN_IMAGE_SIZE to MAX_IMAGE_SIZE."""
    return isinstance(size, int) and not isinstance(size, bool) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE


def check_image_size(size: object) -> None:
    """`valid_image_size`, or the one-line error that names the range and the flag."""
    if size is not None and not valid_image_size(size):
        raise UserError(
            f"image size {size!r} must be a whole number of pixels from {MIN_IMAGE_SIZE} to "
            f"{MAX_IMAGE_SIZE}, e.g. --image-size 64"
        )


def scan_sizes(paths: list[str]) -> collections.Counter[tuple[int, int]]:
    """(width, height) of every readable image from its header alone (no pixels decoded): what the
    default side is chosen from. Unreadable files are left to the decode, which reports them."""
    from PIL import Image

    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            try:
                with Image.open(p) as im:
                    seen[(int(im.size[0]), int(im.size[1]))] += 1
            except Exception:  # noqa: BLE001 - unreadable: the decode skips and counts it
                continue
    return seen


def common_side(sizes: collections.Counter[tuple[int, int]] | dict[tuple[int, int], int]) -> int:
    """The default side: the most common size's (its shorter side when it is not square), ties to the
    smaller one, within MIN_IMAGE_SIZE..MAX_IMAGE_SIZE; DEFAULT_SIDE when nothing could be read."""
    if not sizes:
        return DEFAULT_SIDE
    (w, h), _ = min(sizes.items(), key=lambda kv: (-kv[1], min(kv[0])))
    return min(max(min(w, h), MIN_IMAGE_SIZE), MAX_IMAGE_SIZE)


def folder_side(path: str | os.PathLike[str], sample: int = 2000) -> int | None:
    """The side a folder's images train at by default, from the headers of up to `sample` of its files,
    evenly spread (no decode): for the launcher, which records it in the run's spec (so packing on a GPU
    and the memory probe plan for it), before any run has decoded the folder. None when it cannot tell."""
    root = Path(path).expanduser()
    base = root / "train" if (root / "train").is_dir() else root
    try:
        files = sorted(str(f) for f in base.glob("*/*") if not f.name.startswith(".") and f.is_file())
    except OSError:
        return None
    step = max(1, len(files) // sample)
    seen = scan_sizes(files[::step][:sample])
    return common_side(seen) if seen else None
