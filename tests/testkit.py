"""Helpers every test folder shares: a tiny run, waiting on workers, `tuneassist` in-process, cleanup.

Plain functions, imported by name (`from testkit import wait_for`): tests/conftest.py puts this folder
on sys.path, and holds the `ws` fixture built on `kill_workers`. They are not in conftest.py itself
because pytest drops a `conftest` module between folders, so it cannot be imported by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuneassist.runs.store import Run, Store
from tuneassist.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
SPE = 8  # steps per epoch of synthetic:300 at batch 32 (270 train images after the 10% hold-out)


def tiny_spec(**over: Any) -> dict[str, Any]:
    """A run of a few seconds on one CPU thread (two epochs of `SPE` steps unless told otherwise)."""
    kw: dict[str, Any] = dict(
        data="synthetic:300", model="simple3", batch_size=32, epochs=2, device="cpu", num_threads=1,
        schedule="onecycle", lr_min=0.005, lr_max=0.05, checkpoint_every=1, sync_every=4,
    )  # fmt: skip
    kw.update(over)
    return RunSpec(**kw).validate().to_dict()


def make_run(**cols: Any) -> Run:
    """A stored run's `Run` without a store, built as the store builds it (`Run.from_columns`): what a
    screen or the curves get, for tests of those alone. Columns not given are those of a queued run."""
    return Run.from_columns({"id": 1, "kind": "train", "status": "queued", "spec": {}, **cols})


def worker_logs(store: Store | None, tail: int = 4000) -> str:
    """The end of every worker log of the store's runs: what a timed-out wait shows to explain itself."""
    if store is None:
        return ""
    return "".join(
        f"\n--- {log}\n{log.read_text()[-tail:]}"
        for log in sorted((store.workspace / "runs").glob("*/worker.log"))
    )


def wait_for(
    cond: Callable[[], Any], timeout: float, what: str, store: Store | None = None, every: float = 0.05
) -> Any:
    """Poll `cond` until it is truthy and return its value; on timeout fail with the workers' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{worker_logs(store)}")


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`tuneassist ARGV` in this process: (exit code, stdout, stderr)."""
    from tuneassist.cli.main import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors and --help
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    out, err = capsys.readouterr()
    return code, out, err


def ddp_pids(worker_pid: int | None) -> list[int]:
    """Live torchrun and rank processes started for the worker `worker_pid` (they carry --parent-pid)."""
    if not worker_pid:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"tuneassist.engine.distributed" in cmd and str(worker_pid).encode() in cmd and state != "Z":
            found.append(int(proc.name))
    return found


def kill_workers(path: Path) -> None:
    """Kill every worker the workspace's store says is running (their DDP ranks and the standby too):
    a failed test must not leave training going on in a deleted folder."""
    if not (path / "tuneassist.db").exists():
        return
    with contextlib.suppress(Exception), Store(path) as store:
        pids = [r.pid for r in store.list_runs(status="running", refresh=False) if r.pid]
        pids += [p for pid in pids for p in ddp_pids(pid)]
        standby = store.get_setting("standby")
        if standby:
            pids.append(int(standby.rpartition(":")[2]))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def banded_folder(
    root: Path, classes: tuple[str, ...], per_class: int, test_per_class: int, side: int
) -> Path:
    """A learnable image folder, train/ and test/: `side` x `side` PNGs, each class a bright band."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    k_all = len(classes)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (rng.random((side, side, 3)) * 80).astype(np.uint8)
                img[k * side // k_all : (k + 1) * side // k_all] = 220
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root
