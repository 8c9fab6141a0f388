"""Helpers of the reliability suite: subprocess environments, waiting, in-process CLI calls.

Every test here causes its fault for real (a killed process, a full or read-only file system, a NaN,
an injected out-of-memory exception where CUDA would raise it, a crafted pickle) and checks what the
user sees: a status in the store, one line of error, exit code 2, nothing executed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from testkit import ROOT, SPE, kill_workers, run_main, tiny_spec, wait_for  # noqa: F401 - shared (tests/testkit.py)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("TUNEASSIST_DEBUG", None)
    env.update(extra)
    return env


def cli(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real `tuneassist` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", *argv],
        capture_output=True,
        text=True,
        env=env or subprocess_env(),
        timeout=timeout,
    )


def one_line_error(code: int, err: str, *needles: str, progress: bool = False) -> str:
    """Exit 2 and one stderr line `error: ...` holding every needle (after progress lines, when the
    command got as far as training); returns the line."""
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    if progress:
        assert not any(line.startswith("error") for line in lines[:-1]), err
        lines = lines[-1:]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


_UNSHARE: list[bool] = []


def can_unshare_mounts(scratch: Path) -> bool:
    """Whether this process may mount in a private mount namespace (root with CAP_SYS_ADMIN, util-linux):
    then a tiny tmpfs gives a real ENOSPC and a read-only bind mount a real EROFS, even for root."""
    if not _UNSHARE:
        ok = False
        if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("mount"):
            scratch.mkdir(parents=True, exist_ok=True)
            probe = subprocess.run(
                ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1"', "sh", str(scratch)],
                capture_output=True,
                timeout=30,
            )
            ok = probe.returncode == 0
        _UNSHARE.append(ok)
    return _UNSHARE[0]
