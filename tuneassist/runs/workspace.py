"""Where the workspace is, who may write in it, and the liveness timings read from the environment.

Torch-free and SQLite-free: the CLI resolves a workspace (and checks an export path against it)
before anything opens the store.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuneassist.errors import UserError
from tuneassist.fsafe import untrusted_dir
from tuneassist.runs.schema import DB_NAME


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which a running run counts as lost (env-tunable for tests)."""
    return _env_float("TUNEASSIST_HEARTBEAT_TIMEOUT", 15.0)


def heartbeat_interval() -> float:
    """Seconds between a worker's heartbeats."""
    return _env_float("TUNEASSIST_HEARTBEAT_INTERVAL", 2.0)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(
            f"{name}={raw!r} is not a number; unset it or give seconds, e.g. {default:g}"
        ) from None
    if not value > 0:
        raise UserError(f"{name}={raw!r} must be positive; unset it or give seconds, e.g. {default:g}")
    return value


def resolve_workspace(workspace: str | os.PathLike[str] | None = None) -> Path:
    """Explicit argument, then $TUNEASSIST_HOME, then the platform's user data dir."""
    if workspace:
        return _absolute(workspace, "--workspace")
    env = os.environ.get("TUNEASSIST_HOME")
    if env:
        return _absolute(env, "TUNEASSIST_HOME")
    import platformdirs

    return Path(platformdirs.user_data_dir("tuneassist"))


def check_export_target(workspace: str | os.PathLike[str] | None, target: str | os.PathLike[str]) -> None:
    """Refuse an export path that is the workspace's store (or its -wal/-shm/-journal) or lies in its
    run folders, by resolved path and by inode (a hard link); one UserError naming it."""
    from tuneassist.fsafe import check_not_protected

    ws = resolve_workspace(workspace)
    db = ws / DB_NAME
    files = [db, *(db.with_name(db.name + sfx) for sfx in ("-wal", "-shm", "-journal"))]
    check_not_protected(Path(target), files, [ws / "runs"], "part of the workspace's run store")


def _absolute(raw: str | os.PathLike[str], source: str) -> Path:
    """`~` expanded and made absolute: the same workspace whichever folder a command (or the detached
    worker it starts) runs from."""
    try:
        p = Path(raw).expanduser()
    except RuntimeError:  # ~nosuchuser
        user = str(raw).split(os.sep, 1)[0]
        raise UserError(
            f"{source} {str(raw)!r}: no user {user[1:]!r} to expand {user} for; give a full path"
        ) from None
    return Path(os.path.abspath(p))


def check_trusted(folder: Path, what: str) -> None:
    """Refuse a folder others could plant files or links in: runs would write through them."""
    problem = untrusted_dir(folder)
    if problem is None:
        return
    if problem.startswith("is owned"):
        fix = "use a workspace of your own: pass --workspace DIR or set TUNEASSIST_HOME"
    else:
        fix = f"make it private with: chmod go-w {folder}"
    raise UserError(f"{what} {folder} {problem}, who could plant files or links in it; {fix}")
