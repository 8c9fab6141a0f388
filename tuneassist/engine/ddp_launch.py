"""The parent side of a multi-device run: start torchrun, relay rank 0's events, pass on a stop request.

Why a separate, torch-free module: the process that owns a run (the background worker, or the CLI in
the foreground) keeps doing what it does for a one-device run, heartbeat, store writes, progress
lines, and only needs to watch a child. `run_distributed` has the signature and return value of
`tuneassist.engine.train.train`, so callers pick one or the other and nothing else changes.

How it talks to the ranks (all files in a private temporary folder):

- spec.json: the run's spec, read by every rank.
- events (a FIFO): rank 0 writes one JSON event per line, exactly the events `train()` emits; this
  process reads them and calls `on_event`, so the run store has a single writer (this process). The
  FIFO is opened read-write here, so a reader always exists while this process lives; if it dies, rank
  0's next write fails (EPIPE) and torchrun stops the other ranks.
- stop: created when `should_stop()` turns true; rank 0 checks it at each loss read-back and the ranks
  agree on stopping through an all_reduce (see `tuneassist.engine.distributed`).
- errors/rank<N>.txt: a rank that fails writes one line there; the earliest one is the run's error.

torchrun runs in its own process group, killed on the way out whatever happens here (an exception in
`on_event`, Ctrl-C), so no rank outlives the run.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

from tuneassist.engine.events import EventSink, RunHooks, sink, stopper
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

ENTRY = "tuneassist.engine.distributed"
_GRACE_S = 20.0  # after the ranks' exit was asked for: SIGTERM, then this long before SIGKILL


TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """True in a process that torchrun (or a launcher with its environment) started as one rank."""
    return all(k in os.environ for k in TORCHRUN_ENV)


class DistributedRunError(RuntimeError):
    """A rank failed (crash, killed); the message names the rank and its error line."""


def torchrun_command(nproc: int, entry_args: list[str]) -> list[str]:
    """The one-node launch: PyTorch's own torchrun (as a module of this interpreter) on the rank entry."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "--monitor-interval=0.5",
        "-m",
        ENTRY,
        *entry_args,
    ]


def threads_per_rank(spec: RunSpec, nproc: int) -> int:
    """CPU threads per rank: the spec's, else the cores split evenly (torchrun would say 1)."""
    if spec.num_threads:
        return spec.num_threads
    return max(1, (os.cpu_count() or 1) // nproc)


class _Relay:
    """Reads newline-delimited JSON events from the FIFO without ever blocking for long."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        # Read-write: opening never waits for the writer, and this end never sees EOF while it lives.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.buf = b""

    def read(self, timeout: float) -> list[dict[str, Any]]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        chunks = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        self.buf += b"".join(chunks)
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self) -> None:
        os.close(self.fd)


def _first_error(err_dir: Path) -> tuple[bool, str] | None:
    """(is a user error, line) of the rank that failed first (later ones are usually its consequences)."""
    for f in sorted(err_dir.glob("rank*.txt"), key=lambda p: p.stat().st_mtime_ns):
        try:
            rec = json.loads(f.read_text())
            return bool(rec["user"]), str(rec["message"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End torchrun and its ranks (their own process group): SIGTERM, a grace period, SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def run_distributed(spec: RunSpec, **hooks: Unpack[RunHooks]) -> dict[str, Any]:
    """Train `spec` on `spec.devices` ranks of this machine (torchrun + DDP); returns the end event.

    Device pinning is the caller's: on CUDA the ranks use the GPUs in CUDA_VISIBLE_DEVICES, rank r the
    r-th one (the worker sets it from the slots it claimed). On the CPU the ranks use gloo.
    """
    spec.validate()
    if spec.devices < 2:
        raise UserError("a distributed run needs --devices 2 or more; one device trains in-process")
    work = Path(tempfile.mkdtemp(prefix="tuneassist-ddp-"))
    try:
        code, end = _run_ranks(spec, work, hooks)
        if code != 0 or end is None:
            raise _rank_error(work / "errors", code)
        return end
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rank_args(work: Path, hooks: RunHooks) -> list[str]:
    """The rank entry's arguments: the files in `work` it talks through, this process, the checkpoint."""
    args = ["--spec", str(work / "spec.json"), "--events", str(work / "events"),
            "--stop-file", str(work / "stop"), "--error-dir", str(work / "errors"),
            "--parent-pid", str(os.getpid())]  # fmt: skip
    checkpoint_path = hooks.get("checkpoint_path")
    if checkpoint_path is not None:
        args += ["--checkpoint", str(checkpoint_path)]
        if hooks.get("resume"):
            args.append("--resume")
    return args


def _run_ranks(spec: RunSpec, work: Path, hooks: RunHooks) -> tuple[int, dict[str, Any] | None]:
    """Start torchrun on the ranks and relay their events until it exits: (its exit code, the end
    event if rank 0 sent one). torchrun and its ranks are gone when this returns, whatever happened."""
    (work / "spec.json").write_text(json.dumps(spec.to_dict()))
    (work / "errors").mkdir()
    relay = _Relay(work / "events")
    proc: subprocess.Popen[bytes] | None = None
    try:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(threads_per_rank(spec, spec.devices))
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(
            torchrun_command(spec.devices, _rank_args(work, hooks)), env=env, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        end = _relay_until_exit(proc, relay, sink(hooks.get("on_event")), stopper(hooks.get("should_stop")),
                                work / "stop")  # fmt: skip
        return proc.returncode, end
    finally:
        if proc is not None:
            _stop_group(proc)
        relay.close()


def _relay_until_exit(
    proc: subprocess.Popen[bytes], relay: _Relay, emit: EventSink, stop: Callable[[], bool], stop_file: Path
) -> dict[str, Any] | None:
    """Pass rank 0's events on and a stop request down (the stop file) until torchrun exits; the end
    event, if one came."""
    end: dict[str, Any] | None = None
    exited = False
    while True:
        for ev in relay.read(0.2):
            if ev.get("type") == "end":
                end = ev
            emit(ev)
        if stop() and not stop_file.exists():
            stop_file.touch()
        if exited:
            return end
        exited = proc.poll() is not None  # one more read after the exit drains the FIFO


def _rank_error(err_dir: Path, code: int) -> Exception:
    """The error of a run whose ranks failed: the first failing rank's (a UserError when it was one)."""
    first = _first_error(err_dir)
    if first is None:
        return DistributedRunError(
            f"torchrun exited with code {code} and no rank reported an error (killed?)"
        )
    return UserError(first[1]) if first[0] else DistributedRunError(first[1])
