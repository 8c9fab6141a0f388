"""Helpers of the reliability suite: subprocess environments, waiting, in-process CLI calls.

Every test here causes its fault for real (a killed process, a full or read-only file system, a NaN,
an injected out-of-memory exception where CUDA would raise it, a crafted pickle) and checks what the
user sees: a status in the store, one line of error, exit code 2, nothing executed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuneassist.runs.store import Store
from tuneassist.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
SPE = 8  # steps per epoch of synthetic:300 at batch 32 (270 train images after the 10% hold-out)


def tiny_spec(**over: Any) -> dict[str, Any]:
    """A run of a few seconds on one CPU thread."""
    kw: dict[str, Any] = dict(
        data="synthetic:300", model="simple3", batch_size=32, epochs=2, device="cpu", num_threads=1,
        schedule="onecycle", lr_min=0.005, lr_max=0.05, checkpoint_every=1, sync_every=4,
    )  # fmt: skip
    kw.update(over)
    return RunSpec(**kw).validate().to_dict()


def kill_workers(path: Path) -> None:
    db = path / "tuneassist.db"
    if not db.exists():
        return
    with contextlib.suppress(Exception), Store(path) as store:
        for run in store.list_runs(status="running", refresh=False):
            if run["pid"]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(run["pid"], signal.SIGKILL)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("TUNEASSIST_DEBUG", None)
    env.update(extra)
    return env


def wait_for(cond: Callable[[], Any], timeout: float, what: str, store: Store | None = None) -> Any:
    """Poll cond until it is truthy; on timeout fail with the workers' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    logs = ""
    if store is not None:
        for log in sorted((store.workspace / "runs").glob("*/worker.log")):
            logs += f"\n--- {log}\n{log.read_text()[-3000:]}"
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{logs}")


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


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`tuneassist ARGV` in this process: (exit code, stdout, stderr)."""
    from tuneassist.cli.main import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors and --help
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    out, err = capsys.readouterr()
    return code, out, err


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
