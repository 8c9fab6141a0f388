"""Profile files: reading one safely, saving one atomically, finding them by name in folders.

Reading never runs code from a file and refuses anything but a small regular file, so a profile
path from anywhere (a download, a shared folder) cannot block, stream forever or exhaust memory.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tuneassist.errors import UserError
from tuneassist.profiles.schema import Profile, safe_filename
from tuneassist.profiles.validate import loads_profile

MAX_PROFILE_BYTES = 1 << 20  # 1 MiB: a profile is a few hundred bytes, a provenance a few KiB


def read_profile_text(path: str | os.PathLike[str]) -> str:
    """A profile file's text: only from a regular file (never a device, FIFO or socket, which could
    block or stream forever) and at most MAX_PROFILE_BYTES. Raises OSError/UnicodeDecodeError/UserError."""
    p = Path(path)
    # O_NONBLOCK: opening a FIFO for reading does not wait for a writer; it is refused just below.
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(p))
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            raise UserError(f"profile {p} is {kind}, not a regular file; give a .toml file")
        chunks, size = [], 0
        while size <= MAX_PROFILE_BYTES:
            chunk = os.read(fd, min(1 << 16, MAX_PROFILE_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_PROFILE_BYTES:
            raise UserError(
                f"profile {p} is larger than {MAX_PROFILE_BYTES >> 20} MiB, too large to be a profile; "
                "give the .toml file tuneassist saved"
            )
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile file. Reading never runs code from it."""
    p = Path(path)
    try:
        text = read_profile_text(p)
    except FileNotFoundError as exc:
        raise UserError(
            f"profile file {p} not found; check the path or run `tuneassist profile list`"
        ) from exc
    except IsADirectoryError as exc:
        raise UserError(f"profile path {p} is a folder; give a .toml file") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"profile {p}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"profile {p} cannot be read ({exc.strerror}); check its permissions") from exc
    prof = loads_profile(text, where=f"profile {p}")
    prof.path = p
    return prof


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> Path:
    """Write `profile` as TOML (atomically); a folder path gets `<name>.toml`. Returns the file path."""
    p = Path(path)
    if p.is_dir():
        p = p / f"{safe_filename(profile.name)}.toml"
    text = profile.to_toml()
    loads_profile(text, where=f"profile {profile.name!r}")  # never write a file that would not load back
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    profile.path = p
    return p


# ---------------------------------------------------------------------------------------------
# Finding profiles


_SHIPPED_COPY: Path | None = None  # where profiles shipped inside a zip were copied, once per process


def shipped_profiles_dir() -> Path | None:
    """The paper's profiles, shipped as package data (`tuneassist/profiles/builtin/*.toml`).

    Read through importlib.resources so that a wheel, an editable install and a checkout find the
    same files; a package imported from a zip gets them copied to a private temporary folder once,
    because the loader reads profiles as regular files.
    """
    global _SHIPPED_COPY
    from importlib.resources import files

    res = files("tuneassist.profiles").joinpath("builtin")
    if isinstance(res, Path):
        return res if res.is_dir() else None
    if _SHIPPED_COPY is None:
        if not res.is_dir():
            return None
        tmp = Path(tempfile.mkdtemp(prefix="tuneassist-profiles-"))
        for item in res.iterdir():
            if item.name.endswith(".toml"):
                (tmp / item.name).write_bytes(item.read_bytes())
        _SHIPPED_COPY = tmp
    return _SHIPPED_COPY


@dataclass
class ProfileEntry:
    name: str
    path: Path
    profile: Profile | None
    error: str | None = None  # why it did not load
    shadowed: bool = False  # a profile of the same name in an earlier folder wins


def list_profiles(dirs: Iterable[str | os.PathLike[str] | None]) -> list[ProfileEntry]:
    """Every *.toml in `dirs`, in order (missing folders skipped); broken files come with their error."""
    out: list[ProfileEntry] = []
    seen: set[str] = set()
    for d in dirs:
        if d is None:
            continue
        folder = Path(d)
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.toml")):
            try:
                prof = load_profile(f)
                entry = ProfileEntry(prof.name, f, prof)
            except UserError as exc:
                entry = ProfileEntry(f.stem, f, None, str(exc))
            entry.shadowed = entry.name in seen
            seen.add(entry.name)
            out.append(entry)
    return out


def find_profile(name_or_path: str, dirs: Iterable[str | os.PathLike[str] | None]) -> Profile:
    """A profile by file path, or by name (or file stem) in `dirs`, first folder first."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path or p.is_file():
        return load_profile(p)
    entries = list_profiles(dirs)
    for e in entries:
        if e.name == name_or_path or e.path.stem == name_or_path:
            if e.profile is None:
                raise UserError(e.error or f"profile {name_or_path!r} does not load")
            return e.profile
    names = sorted({e.name for e in entries})
    raise UserError(
        f"no profile named {name_or_path!r}; available: {', '.join(names) if names else 'none'} "
        "(or give a path to a .toml file)"
    )
