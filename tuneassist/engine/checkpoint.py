"""Checkpoints: written so that a crash or a full disk never leaves a half one, loaded so that a
damaged or hostile file is refused rather than executed."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any, cast

import torch

from tuneassist.errors import UserError
from tuneassist.fsafe import open_new

CHECKPOINT_VERSION = 1


class _WriteErrors:
    """A file wrapper that keeps the OSError (ENOSPC, EROFS ...) torch's zip writer turns into an
    opaque RuntimeError, so the user hears "No space left on device" rather than "unexpected pos"."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _private_parents(folder: Path, levels: int) -> None:
    """Create `folder` and up to `levels` - 1 missing folders above it, private (0700, whatever the umask),
    as the store makes them; a folder missing further up (the workspace itself) is left missing."""
    missing: list[Path] = []
    while not folder.exists() and len(missing) < levels:
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        with contextlib.suppress(OSError):
            d.chmod(0o700)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write-temp, fsync, rename: a crash mid-write never leaves a half checkpoint under `path`.

    A full disk or a read-only folder is a UserError naming the file and the fix; the temp file is
    removed and the previous checkpoint stays intact.
    """
    tmp = path.with_name(path.name + ".tmp")
    sink: _WriteErrors | None = None
    try:
        _private_parents(path.parent, levels=2)  # runs/ and runs/N removed during the run come back 0700
        # A fresh private file, never a planted symlink: O_EXCL does not follow one (a leftover is removed).
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with os.fdopen(open_new(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as f:
            sink = _WriteErrors(f)
            torch.save(payload, cast(IO[bytes], sink))  # it has what torch's writer uses
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        err = exc if isinstance(exc, OSError) else (sink.error if sink else None)
        if err is None:
            raise
        with contextlib.suppress(OSError):
            tmp.unlink()
        fix = (
            "free some disk space there"
            if err.errno in (28, 27, 122)  # ENOSPC, EFBIG, EDQUOT
            else f"make {path.parent} writable"
        )
        raise UserError(
            f"cannot write checkpoint {path} ({err.strerror or err}); the run stopped: {fix}, then start "
            "it again"
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only, never pickled code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise UserError(f"no checkpoint at {path}; the run cannot resume, start it again") from exc
    except Exception as exc:  # unpickling refused or file damaged
        raise UserError(
            f"checkpoint {path} is damaged or holds pickled objects ({type(exc).__name__}); "
            "it was not loaded; start the run again"
        ) from exc


def load_run_checkpoint(path: Path | None) -> dict[str, Any]:
    """The checkpoint a run resumes from, its format version checked."""
    if path is None:
        raise UserError("resume needs a checkpoint path; the run has none, start it again")
    state = load_checkpoint(path)
    if state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has an unknown format version; start the run again")
    return state
