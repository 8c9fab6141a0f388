"""CIFAR-10 / CIFAR-100 from the original "python version" pickles, downloaded once by torchvision.

Why read the pickles here rather than through ``torchvision.datasets.CIFAR10``: torchvision md5-checks
every batch file on each load, which rejects any file that is not byte-identical to the published one
(so tests cannot write tiny files in the same format), and it builds Python lists per sample. Here the
batches are unpickled and stacked as whole arrays. torchvision still does what it is good at: the URL,
the archive checksum, the download and the extraction (and it reuses an archive already in the directory
without touching the network).
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tuneassist.errors import UserError


@dataclass(frozen=True)
class _Info:
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    labels_key: str
    num_classes: int


_INFO = {
    "cifar10": _Info(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        names_key="label_names",
        labels_key="labels",
        num_classes=10,
    ),
    "cifar100": _Info(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train=("train",),
        test=("test",),
        meta="meta",
        names_key="fine_label_names",
        labels_key="fine_labels",
        num_classes=100,
    ),
}
_DOWNLOAD_TIMEOUT_S = 30.0


def _base_dir(info: _Info, root: Path) -> Path:
    """The extracted folder; also accept --data-dir pointing straight at it."""
    if root.name == info.folder and (root / info.meta).is_file():
        return root
    return root / info.folder


def _present(info: _Info, base: Path) -> bool:
    return all((base / f).is_file() for f in (*info.train, *info.test, info.meta))


def _download(name: str, root: Path) -> None:
    """Fetch and extract the archive with torchvision (uses an archive already in `root` if it verifies).

    torchvision prints progress to stdout; it goes to stderr so that `--json` output stays clean.
    """
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    finally:
        socket.setdefaulttimeout(old_timeout)


def _unpickle(path: Path) -> dict[str, object]:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError(f"expected a dict, found {type(entry).__name__}")
    # The published files have str keys once read with latin1; files written from Python 3 may use bytes.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_batches(info: _Info, base: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    datas, labels = [], []
    for name in files:
        entry = _unpickle(base / name)
        data = np.asarray(entry["data"], dtype=np.uint8)
        lab = np.asarray(entry[info.labels_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(lab) != len(data):
            raise ValueError(f"{name}: data {data.shape} and {len(lab)} labels are not N x 3072 and N")
        if len(lab) and (lab.min() < 0 or lab.max() >= info.num_classes):
            raise ValueError(f"{name}: labels outside 0..{info.num_classes - 1}")
        datas.append(data)
        labels.append(lab)
    x = np.concatenate(datas).reshape(-1, 3, 32, 32)  # rows are R(1024) G(1024) B(1024): already N,C,H,W
    return torch.from_numpy(x), torch.from_numpy(np.concatenate(labels))


def load_cifar(
    name: str, root: str | Path
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (classes, train_x, train_y, test_x, test_y) of `name` ("cifar10"/"cifar100") kept in `root`.

    Downloads only when the extracted files are absent; offline, raises a UserError naming the
    directory to put the archive in.
    """
    info = _INFO[name]
    root = Path(root).expanduser().resolve()
    base = _base_dir(info, root)
    if not _present(info, base):
        try:
            _download(name, root)
        except Exception as e:  # network, checksum or extraction failure: all fixable by the user
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"{name} is not in {root} and could not be downloaded ({reason}); put {info.archive} "
                f"into {root} (or pass --data-dir DIR holding it) and run again"
            ) from e
        base = root / info.folder
        if not _present(info, base):
            raise UserError(
                f"{name}: extracted {info.archive} but {base} lacks the expected batch files; "
                f"delete {base} and put a fresh {info.archive} into {root}"
            )
    try:
        meta = _unpickle(base / info.meta)
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[info.names_key]]  # type: ignore[attr-defined]
        train_x, train_y = _read_batches(info, base, info.train)
        test_x, test_y = _read_batches(info, base, info.test)
    except Exception as e:
        raise UserError(
            f"{name} files in {base} are unreadable ({type(e).__name__}: {e}); delete {base} and put a "
            f"fresh {info.archive} into {root}"
        ) from e
    if len(classes) != info.num_classes:
        raise UserError(
            f"{name} metadata in {base / info.meta} lists {len(classes)} classes, expected "
            f"{info.num_classes}; delete {base} and put a fresh {info.archive} into {root}"
        )
    return classes, train_x, train_y, test_x, test_y
