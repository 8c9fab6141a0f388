"""Careful file access for a shared server (stdlib only; the engine, the store and the CLI use it).

- `open_new` opens a file the tool writes into (a log, a checkpoint's temp file) without following a
  symlink planted where the file should be: a planted link can never redirect a write outside.
- `untrusted_dir` says why a folder the tool keeps runs in is not safe to use: owned by someone else,
  or writable by others (who could plant such links, or swap files between our checks and writes).
- `write_file` writes an export through a temporary file in the target's folder and a rename, and
  refuses a target that is one of `protected` (the live store, its WAL files, a run's files), by path
  and by inode, so a hard link or a symlink to the database is refused too.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from tuneassist.errors import UserError

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_new(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """os.open(path, flags) that refuses (ELOOP) to follow a symlink at `path`; private by default."""
    return os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)


def untrusted_dir(path: str | os.PathLike[str]) -> str | None:
    """Why the folder at `path` (followed, if a link) may not be trusted with runs; None when it may."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing: whoever creates it makes it private
    if st.st_uid != os.geteuid():
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_not_protected(
    target: Path, protected_files: Iterable[Path], protected_dirs: Iterable[Path], why: str
) -> None:
    """UserError when `target` (resolved) is one of `protected_files`, lies in `protected_dirs`, or is
    the same file (a hard link) as one of them."""
    real = Path(os.path.realpath(target))
    try:
        st: os.stat_result | None = os.stat(real)
    except OSError:
        st = None
    files = list(protected_files)
    dirs = [Path(os.path.realpath(d)) for d in protected_dirs]
    for d in dirs:
        if real == d or real.is_relative_to(d):
            raise UserError(f"{target} is inside {d}, {why}; choose an --output path outside it")
        if st is not None and os.path.isdir(d):
            for root, _, names in os.walk(d):
                files.extend(Path(root) / n for n in names)
    for f in files:
        if Path(os.path.realpath(f)) == real:
            raise UserError(f"{target} is {f}, {why}; choose another --output path")
        if st is not None:
            with contextlib.suppress(OSError):
                if _same_file(st, os.stat(f)):
                    raise UserError(
                        f"{target} is the same file as {f} (a hard link), {why}; choose another --output path"
                    )


def write_file(target: str | os.PathLike[str], write: Callable[[TextIO], object]) -> None:
    """Write text to `target` through a temporary file next to it and a rename: a failed write never
    leaves a half file, and a symlink at the target is replaced, not written through. A target that is
    not a regular file (/dev/null, /dev/stdout, a FIFO) is written directly. OSError is the caller's."""
    path = Path(target)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        with open(path, "w", newline="", encoding="utf-8") as f:
            write(f)
        return
    real = Path(os.path.realpath(path))
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)
    else:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
