"""Image-folder data sets: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``val/``), or a
single root of class folders, ``PATH/<class>/*``, whose test split is a seeded share of each class
(``dataref.FOLDER_TEST_FRACTION``, the same for every run and every tool, said in one warning).

Why a cache: decoding tens of thousands of small files costs far more than a training epoch of a small
net, and the checklist trains many short runs on the same data. The folder is decoded once, in parallel
worker processes, to NxN RGB uint8 tensors and stored as a ``.pt`` file under the cache directory. The
cache key hashes the absolute path, the size asked for and every file's name, size and mtime, so any
added, removed or edited file makes the next load re-read the folder.

The size: ``--image-size N``, or by default the folder's most common size (its shorter side when that
is not square), so a 64x64 folder trains at 64x64 and CIFAR's JPEGs at 32x32; an LR tuned on thumbnails
would not carry over to the full images. Images in any format PIL reads are converted to RGB (grayscale
is replicated, alpha is dropped, palette images go through RGBA); an image of another size is resized
to NxN (stretched: the aspect ratio is not kept), with one warning that counts them and names the
majority size and an image that differs from it (a stray full-size photo among thumbnails is then easy
to find). Unreadable files are skipped and reported in one warning that counts them and names the first.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import signal
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneassist.dataref import (
    FOLDER_TEST_FRACTION,
    check_image_size,
    common_side,
    folder_test_count,
    scan_sizes,
)
from tuneassist.engine.decode import SIZE, DataWarning, decode_one
from tuneassist.errors import UserError
from tuneassist.hardware import cpu_cores

# 2: the cache also holds the image sizes seen (for the resize warning); 3: any size, single-root folders
_CACHE_VERSION = 3
_CHUNK = 256  # files per worker task: large enough to amortise IPC, small enough to balance load
_POOL_MIN_FILES = 1024  # below this, decoding in-process beats starting workers


def _listing(split_dir: Path, classes: list[str]) -> list[list[tuple[str, int, int]]]:
    """Per class: sorted (file name, size, mtime_ns) of the regular, non-hidden files."""
    out = []
    skipped: list[tuple[Path, OSError]] = []
    for cls in classes:
        d = split_dir / cls
        files = []
        with os.scandir(d) as it:
            for e in it:
                try:  # a self-looping or dangling link, an unreadable entry: skipped like a bad image
                    if e.name.startswith(".") or not e.is_file():
                        continue
                    st = e.stat()
                except OSError as exc:
                    skipped.append((d / e.name, exc))
                    continue
                files.append((e.name, st.st_size, st.st_mtime_ns))
        files.sort()
        out.append(files)
    if skipped:
        first, err = skipped[0]
        warnings.warn(
            f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of {split_dir} that cannot be "
            f"read (first: {first}: {err.strerror or err}); delete or fix them to silence this",
            DataWarning,
            stacklevel=4,
        )
    return out


def _subdirs(d: Path) -> list[str]:
    def is_dir(e: os.DirEntry[str]) -> bool:
        try:
            return e.is_dir()
        except OSError:  # a self-looping link: not a class
            return False

    with os.scandir(d) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and is_dir(e))


class _Chunk(list):
    """Paths to decode together, with the side to decode them to (travels to the worker processes)."""

    def __init__(self, paths: list[str], side: int) -> None:
        super().__init__(paths)
        self.side = side


Sizes = dict[tuple[int, int], list]  # (width, height) -> [count, first file of that size]


def _decode_chunk(paths: list[str]) -> tuple[np.ndarray, np.ndarray, Sizes, tuple[str, str] | None]:
    """Decode files: (images k,N,N,3, ok mask, original sizes seen, first failure (path, reason))."""
    side = getattr(paths, "side", SIZE)
    out = np.zeros((len(paths), side, side, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    sizes: Sizes = {}
    first_bad = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's per-file warnings (EXIF, bombs) would flood the terminal
        for i, p in enumerate(paths):
            try:
                out[i], size = decode_one(p, side)
            except Exception as e:  # any decoder failure means "unreadable": count it, keep going
                if first_bad is None:
                    first_bad = (p, f"{type(e).__name__}: {e}".splitlines()[0])
                continue
            ok[i] = True
            sizes.setdefault(size, [0, p])[0] += 1
    return out, ok, sizes, first_bad


_decode_progress: Callable[[int, int], None] | None = None


def set_decode_progress(fn: Callable[[int, int], None] | None) -> None:
    """Have decoding call `fn(images done, images in all)` after each chunk: a foreground command's
    status line (the first decode of CIFAR-10's 60,000 JPEGs takes a minute or more on 2 cores)."""
    global _decode_progress
    _decode_progress = fn


def _report(done: int, total: int) -> None:
    if _decode_progress is not None:
        try:
            _decode_progress(done, total)
        except Exception:  # noqa: BLE001 - a progress display must never stop the decode
            pass


def _pool_child_init() -> None:
    """A forked decoder must die on the pool's SIGTERM: it inherits the worker's handler, which only sets
    a stop flag (cancel a run gracefully), so the pool's exit waited on it for ever (a `tune` on a new
    image folder hung in its range test). Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_in_pool(chunks: Sequence[list[str]], procs: int) -> list | None:
    """Decode chunks in `procs` worker processes; None if workers cannot be started here."""
    methods = multiprocessing.get_all_start_methods()
    # fork: workers start instantly and need no re-import (torch's DataLoader does the same on Linux).
    # The workers only run PIL and numpy, so forking a process that has torch threads is safe.
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*multi-threaded.*fork", category=DeprecationWarning)
            pool = ctx.Pool(procs, initializer=_pool_child_init)
    except (OSError, AssertionError, ValueError):  # e.g. inside a daemonic process, or out of processes
        return None
    total, done, results = sum(len(c) for c in chunks), 0, []
    with pool:
        for chunk, res in zip(chunks, pool.imap(_decode_chunk, chunks, chunksize=1), strict=True):
            results.append(res)
            done += len(chunk)
            _report(done, total)
    return results


def _decode_all(
    paths: list[str], processes: int | None, pool_min_files: int, side: int = SIZE
) -> tuple[np.ndarray, np.ndarray, Sizes, int, tuple[str, str] | None]:
    """Decode every file, in worker processes when there are many: (images, ok, sizes, bad, first_bad)."""
    chunks = [_Chunk(paths[i : i + _CHUNK], side) for i in range(0, len(paths), _CHUNK)]
    procs = processes if processes is not None else min(cpu_cores(), 16)
    results = None
    if procs >= 2 and len(paths) >= pool_min_files and len(chunks) >= 2:
        results = _decode_in_pool(chunks, min(procs, len(chunks)))
    if results is None:
        results = []
        for c in chunks:
            results.append(_decode_chunk(c))
            _report(sum(len(x[1]) for x in results), len(paths))
    images = np.concatenate([r[0] for r in results]) if results else np.zeros((0, side, side, 3), np.uint8)
    ok = np.concatenate([r[1] for r in results]) if results else np.zeros(0, bool)
    first_bad = next((r[3] for r in results if r[3] is not None), None)
    sizes: Sizes = {}
    for r in results:  # chunks are in file order, so the first file of each size stays the first
        for size, (n, first) in r[2].items():
            sizes.setdefault(size, [0, first])[0] += n
    return images, ok, sizes, int((~ok).sum()), first_bad


def _cache_name(root: Path, key: str) -> tuple[str, str]:
    """(prefix shared by every cache of this folder, full file name for this content key)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name)[:40] or "folder"
    prefix = f"{slug}-{hashlib.sha256(str(root).encode()).hexdigest()[:10]}-"
    return prefix, f"{prefix}{key[:20]}.pt"


def _size_note(sizes: list[list]) -> str:
    """'; all were 48x48' or '; sizes differ: most are 32x32, but e.g. FILE is 500x375'."""
    if not sizes:
        return ""
    fmt = lambda w, h: f"{w}x{h}"  # noqa: E731
    if len(sizes) == 1:
        return f"; all were {fmt(sizes[0][0], sizes[0][1])}"
    major = max(sizes, key=lambda s: s[2])
    odd = next(s for s in sizes if s is not major)  # sizes are sorted by their first file
    return (
        f"; sizes differ: most are {fmt(major[0], major[1])}, but e.g. {odd[3]} is {fmt(odd[0], odd[1])} "
        "(check that such files belong to the data set)"
    )


def _warn(
    root: Path,
    resized: int,
    bad: int,
    first_bad: str | None,
    first_reason: str | None,
    sizes: list[list],
    side: int = SIZE,
    asked: bool = False,
) -> None:
    if bad:
        warnings.warn(
            f"skipped {bad} unreadable image file(s) in {root} (first: {first_bad}: {first_reason}); "
            "delete or replace them to silence this",
            DataWarning,
            stacklevel=4,
        )
    if resized:
        why = "--image-size" if asked else "the folder's most common size; --image-size N sets another"
        warnings.warn(
            f"resized {resized} image(s) in {root} that were not {side}x{side} to {side}x{side} ({why}; "
            f"stretched, the aspect ratio is not kept){_size_note(sizes)}",
            DataWarning,
            stacklevel=4,
        )


def _split_dirs(root: Path, fix: str) -> tuple[Path, Path] | None:
    """(train dir, test dir) of a train/ + test/ (or val/) folder; None for a single root of class
    folders; UserError for a folder that is neither."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        names = _subdirs(root)
        split_like = [n for n in names if n.lower() in ("test", "val", "valid", "validation")]
        if split_like or not names:
            raise UserError(
                f"image folder {root} has no train/ directory; {fix}, or PATH/<class>/*.jpg alone"
            )
        return None
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    if not test_dir.is_dir():
        raise UserError(f"image folder {root} has no test/ or val/ directory; {fix}")
    if test_dir.name == "test" and (root / "val").is_dir():
        warnings.warn(
            f"{root} has both test/ and val/: test/ is the test split and val/ is not used (tuning holds "
            "its own validation images out of train/); move val/'s images into train/ to use them, or "
            "remove val/",
            DataWarning,
            stacklevel=4,
        )
    return train_dir, test_dir


StreamIf = Callable[[int, int], bool]  # (images in all, side) -> stream them rather than decode them all


def load_folder(
    path: str | os.PathLike[str],
    cache_root: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    processes: int | None = None,
    pool_min_files: int = _POOL_MIN_FILES,
    stream_if: StreamIf | None = None,
) -> tuple[list[str], Any, torch.Tensor, Any, torch.Tensor]:
    """Return (classes, train_x, train_y, test_x, test_y) of an image folder, via the decode cache.

    Classes are the sorted sub-directories of ``train/``; ``test/`` (or ``val/``) must have the same ones.
    A folder without ``train/`` is a single root of class folders: a seeded share of each class is its
    test split. Images come out `image_size` square, by default the folder's most common size.

    `stream_if(images, side)` True: the folder is not decoded (nor cached); train_x and test_x are
    FolderImages (engine/items.py), whose files the streamed loader decodes per item. The default side
    then comes from the headers of up to 2,000 files, evenly spread (dataref.folder_side's way).
    """
    fix = "expected PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg (or val/ instead of test/)"
    check_image_size(image_size)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist or is not a directory; {fix}")
    root = root.resolve()
    try:
        dirs = _split_dirs(root, fix)
        cache = Path(cache_root).expanduser()
        return _load_folder(root, dirs, cache, image_size, processes, pool_min_files, stream_if)
    except OSError as e:  # permissions, vanished files, I/O errors while listing
        raise UserError(f"cannot read image folder {root}: {e}; check that the files are readable") from e


Listing = list[list[tuple[str, int, int]]]  # per class: (file name, size, mtime_ns), sorted


def _single_root_split(classes: list[str], per_class: Listing) -> tuple[Listing, Listing]:
    """(train, test) of a single-root folder: `folder_test_count` images of each class, drawn by a seed
    made from the class name alone, so adding a class or a run's --seed never moves a test image."""
    train: Listing = []
    test: Listing = []
    for cls, files in zip(classes, per_class, strict=True):
        seed = int.from_bytes(hashlib.sha256(cls.encode()).digest()[:8], "little")
        order = np.random.default_rng(seed).permutation(len(files))
        pick = set(order[: folder_test_count(len(files))].tolist())
        test.append([f for i, f in enumerate(files) if i in pick])
        train.append([f for i, f in enumerate(files) if i not in pick])
    return train, test


def _load_folder(
    root: Path,
    dirs: tuple[Path, Path] | None,
    cache_root: Path,
    image_size: int | None,
    processes: int | None,
    pool_min_files: int,
    stream_if: StreamIf | None = None,
) -> tuple[list[str], Any, torch.Tensor, Any, torch.Tensor]:
    train_dir, test_dir = dirs if dirs is not None else (root, root)
    classes = _subdirs(train_dir)
    if not classes:
        raise UserError(
            f"{train_dir} has no class sub-directories; put each class's images in {train_dir}/<class>/"
        )
    if len(classes) < 2:
        raise UserError(
            f"{train_dir} has only one class ({classes[0]}); a classifier needs at least two class "
            "sub-directories"
        )
    if dirs is None:
        train_files, test_files = _single_root_split(classes, _listing(root, classes))
    else:
        test_classes = _subdirs(test_dir)
        if test_classes != classes:
            missing = sorted(set(classes) - set(test_classes))
            extra = sorted(set(test_classes) - set(classes))
            raise UserError(
                f"class directories of {test_dir} do not match {train_dir} (missing: "
                f"{', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'}); "
                "give both the same class sub-directories"
            )
        train_files, test_files = _listing(train_dir, classes), _listing(test_dir, classes)
    for cls, files in zip(classes, train_files, strict=True):
        if not files:
            raise UserError(
                f"class {cls!r} has no images in {train_dir / cls}; add images or remove the directory"
            )
    if not any(test_files):
        raise UserError(f"{test_dir} has no images; put test images in {test_dir}/<class>/")
    if dirs is None:
        warnings.warn(
            f"{root} has no train/ and test/: its test split is {FOLDER_TEST_FRACTION:.0%} of each class's "
            f"images ({sum(map(len, test_files))} of {sum(map(len, test_files)) + sum(map(len, train_files))}"
            "), drawn by a fixed seed, the same for every run; make PATH/train/<class> and PATH/test/<class> "
            "to choose them yourself",
            DataWarning,
            stacklevel=3,
        )
    # (split, folder) of every listed file: train and test may share one folder (a single root)
    listings = {("train", train_dir): train_files, ("test", test_dir): test_files}
    if stream_if is not None:
        paths, labels, splits = _flat(classes, listings)
        side = image_size or common_side(scan_sizes(paths[:: max(1, len(paths) // 2000)][:2000]))
        if stream_if(len(paths), side):
            return _streamed(classes, paths, labels, splits, side)

    asked = "auto" if image_size is None else str(image_size)
    layout = "single" if dirs is None else test_dir.name
    h = hashlib.sha256(f"v{_CACHE_VERSION}\n{root}\n{asked}\n{layout}\n".encode())
    for (split, _), per_class in listings.items():
        for cls, files in zip(classes, per_class, strict=True):
            for name, size, mtime in files:
                h.update(f"{split}/{cls}/{name}\t{size}\t{mtime}\n".encode())
    key = h.hexdigest()
    cache_dir = cache_root / "folders"
    prefix, fname = _cache_name(root, key)
    cache_file = cache_dir / fname

    cached = _load_cache(cache_file, key)
    if cached is None:
        cached = _decode_folder(classes, listings, image_size, processes, pool_min_files)
        cached["key"] = key
        _save_cache(cache_dir, cache_file, prefix, cached)
    c = cached
    side = int(c["image_size"])
    asked_size = image_size is not None
    _warn(root, c["resized"], c["bad"], c["first_bad"], c["first_reason"], c["sizes"], side, asked_size)
    counts = torch.bincount(cached["train_y"], minlength=len(classes)).tolist()
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise UserError(
            f"class {empty[0]!r} has no readable images in {train_dir / empty[0]}; replace the unreadable "
            "files or remove the directory"
        )
    if len(cached["test_y"]) == 0:
        raise UserError(f"{test_dir} has no readable images; put test images in {test_dir}/<class>/")
    return list(cached["classes"]), cached["train_x"], cached["train_y"], cached["test_x"], cached["test_y"]


def _decode_folder(
    classes: list[str],
    listings: dict[tuple[str, Path], Listing],
    image_size: int | None,
    processes: int | None,
    pool_min_files: int,
) -> dict:
    paths, labels, splits = _flat(classes, listings)
    side = image_size if image_size is not None else common_side(scan_sizes(paths))
    images, ok, sizes, bad, first_bad = _decode_all(paths, processes, pool_min_files, side)
    lab = np.asarray(labels, dtype=np.int64)
    spl = np.asarray(splits, dtype=np.int64)
    out: dict = {"version": _CACHE_VERSION, "classes": list(classes), "image_size": int(side)}
    for s, name in enumerate(("train", "test")):
        keep = ok & (spl == s)
        out[f"{name}_x"] = torch.from_numpy(images[keep]).permute(0, 3, 1, 2).contiguous()
        out[f"{name}_y"] = torch.from_numpy(lab[keep])
    out["resized"] = int(sum(n for size, (n, _) in sizes.items() if size != (side, side)))
    # [width, height, count, first file] by first file: plain lists, so the cache loads weights_only
    out["sizes"] = sorted(([w, h, n, first] for (w, h), (n, first) in sizes.items()), key=lambda s: s[3])
    out["bad"] = int(bad)
    out["first_bad"] = first_bad[0] if first_bad else None
    out["first_reason"] = first_bad[1] if first_bad else None
    return out


def _flat(
    classes: list[str], listings: dict[tuple[str, Path], Listing]
) -> tuple[list[str], list[int], list[int]]:
    """Every listed file's path, label and split (0 train, 1 test), in listing order."""
    paths: list[str] = []
    labels: list[int] = []
    splits: list[int] = []
    for s, ((_, split_dir), per_class) in enumerate(listings.items()):
        for k, (cls, files) in enumerate(zip(classes, per_class, strict=True)):
            d = split_dir / cls
            paths.extend(str(d / name) for name, _, _ in files)
            labels.extend([k] * len(files))
            splits.extend([s] * len(files))
    return paths, labels, splits


def _streamed(
    classes: list[str], paths: list[str], labels: list[int], splits: list[int], side: int
) -> tuple[list[str], Any, torch.Tensor, Any, torch.Tensor]:
    """The folder as FolderImages splits, decoded per item by the streamed loader (nothing cached)."""
    from tuneassist.engine.items import FolderImages

    lab = torch.tensor(labels, dtype=torch.int64)
    spl = np.asarray(splits)
    train, test = np.flatnonzero(spl == 0), np.flatnonzero(spl == 1)
    images = FolderImages(paths, side)
    return (
        list(classes),
        images.index_select(0, torch.from_numpy(train)),
        lab[torch.from_numpy(train)],
        images.index_select(0, torch.from_numpy(test)),
        lab[torch.from_numpy(test)],
    )


def _load_cache(cache_file: Path, key: str) -> dict | None:
    """The cached arrays if the file exists, loads and matches `key`; otherwise None (re-decode)."""
    if not cache_file.is_file():
        return None
    try:
        data = torch.load(cache_file, weights_only=True)
    except Exception:
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("version") != _CACHE_VERSION:
        return None
    return data


def _save_cache(cache_dir: Path, cache_file: Path, prefix: str, data: dict) -> None:
    """Atomically write the cache and drop stale caches of the same folder; failure only warns."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(data, f)
            os.replace(tmp, cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for old in cache_dir.glob(f"{_glob_escape(prefix)}*.pt"):
            if old != cache_file:
                old.unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(
            f"could not write the decoded-image cache in {cache_dir} ({e}); the folder will be decoded "
            "again next time (pass --data-dir to a writable directory to fix)",
            DataWarning,
            stacklevel=4,
        )


def _glob_escape(s: str) -> str:
    """Escape glob metacharacters in a literal prefix."""
    return re.sub(r"([*?\[])", r"[\1]", s)
