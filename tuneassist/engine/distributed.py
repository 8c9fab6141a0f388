"""Multi-device training with PyTorch's own stack: torchrun starts one process per device and each runs
`train()` with the model under DistributedDataParallel (NCCL on CUDA, one GPU per rank; gloo on CPU).

What a multi-device run means (the same on one node or many):

- ``spec.batch_size`` is the TOTAL batch, the paper's TBS; each of the N ranks takes batch_size / N
  (it must divide evenly). A profile's batch size therefore means the same at any device count.
- Every rank draws the same per-epoch permutation (same seed, same epoch) and takes every N-th
  sample from position ``rank``: the ranks' samples are disjoint, re-shuffled every epoch, and together
  they are exactly the batch a one-device run with the same seed trains on at that step.
- Gradients are averaged by DDP. BatchNorm is plain per-rank BN, normalising by the statistics of the
  rank's own batch_size / N images, as the paper's multi-GPU runs (and DDP by default) did; its
  running statistics are rank 0's (DDP broadcasts buffers) and are broadcast again before every
  evaluation, so all ranks evaluate the model that rank 0 checkpoints.
- The train loss of a step is the mean over ranks (the loss of the whole batch); validation and test
  sum the losses and counts of every rank's shard (not a mean of means).
- Decisions: that loss all_reduce gives every rank the same numbers, so the divergence check decides
  the same everywhere; a stop request (cancel) reaches rank 0 only and is agreed by an all_reduce(MAX)
  of a flag at each loss read-back, so all ranks stop after the same step and none hangs in a
  collective.
- Events and checkpoints come from rank 0 only; every rank loads the checkpoint on resume.

This module is the rank's entry point; the collectives the loop uses are in
`tuneassist.engine.collectives` (so the loop never imports its own caller).

Rank entry (torchrun runs it; `tuneassist.engine.ddp_launch` builds this command for one node)::

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m tuneassist.engine.distributed \
        --spec spec.json [--events FIFO --stop-file F --error-dir D --parent-pid P --checkpoint C --resume]

For a multi-node run, start `tuneassist train` itself under torchrun on every node (it notices
torchrun's environment and trains as one rank; see `tuneassist.cli.train_cmd`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Unpack

import torch
import torch.distributed as dist

from tuneassist.engine.device import resolve_device
from tuneassist.engine.events import RunHooks
from tuneassist.engine.train import train
from tuneassist.errors import UserError
from tuneassist.hardware import process_alive
from tuneassist.spec import RunSpec, splits_over


# ----------------------------------------------------------------------------- one rank
def run_rank(spec: RunSpec, **hooks: Unpack[RunHooks]) -> dict[str, Any]:
    """Join the process group torchrun set up, train `spec` as this rank, leave the group.

    Only rank 0 should pass `on_event`/`should_stop`; the others' are ignored by the caller's design.
    """
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not splits_over(spec.batch_size, world):
        raise UserError(
            f"batch size {spec.batch_size} (the total over all devices) does not split evenly over "
            f"{world} devices; use a multiple of {world}, e.g. --batch-size "
            f"{world * max(1, spec.batch_size // world)}"
        )
    spec.devices = world
    device = resolve_device(spec.device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"rank {local_rank} of this node needs GPU {local_rank} but only "
                f"{torch.cuda.device_count()} are visible; use --devices {torch.cuda.device_count()} or fewer"
            )
        # The spec keeps "cuda" (a GPU index with devices > 1 is refused by validate()); train() takes
        # the current device, this rank's own.
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    end = train(spec, **hooks)
    # Only after a clean end: leaving the group while a failed peer's collective is pending can hang,
    # and a rank that raised exits (and torchrun stops the others) anyway.
    dist.destroy_process_group()
    return end


class FifoSink:
    """Rank 0's events, one JSON line each, into the FIFO the parent reads (see ddp_launch)."""

    def __init__(self, path: str | Path) -> None:
        try:  # non-blocking open fails at once when nobody reads (the parent is gone) instead of waiting
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise RuntimeError(f"the process that owns this run is gone ({path}: {e.strerror})") from None
        os.set_blocking(fd, True)  # then block when the pipe is full: the reader sets the pace
        self.fd = fd

    def __call__(self, ev: dict[str, Any]) -> None:
        view = memoryview((json.dumps(ev) + "\n").encode())
        while view:
            view = view[os.write(self.fd, view) :]


def watch_parent(pid: int, interval: float = 0.5) -> None:
    """Exit at once, writing nothing, when the run's owner dies or is frozen: the run may be resumed
    elsewhere, and only the owner's ranks may write its checkpoint. A stopped owner (SIGSTOP) counts as
    gone: its heartbeat stops too, so the run will be declared lost and may be resumed elsewhere, and
    ranks that trained on could overwrite that attempt's checkpoint."""

    def loop() -> None:
        while process_alive(pid, stopped_is_dead=True):
            time.sleep(interval)
        print(
            f"tuneassist rank: owner process {pid} is gone or stopped; exiting", file=sys.stderr, flush=True
        )
        os._exit(1)

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def _report(err_dir: str | None, rank: int, user: bool, message: str) -> None:
    if not err_dir:
        return
    try:
        path = Path(err_dir) / f"rank{rank}.txt"
        path.write_text(json.dumps({"rank": rank, "user": user, "message": message}))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description="one rank of a run")
    parser.add_argument("--spec", required=True, help="JSON file holding the RunSpec")
    parser.add_argument("--events", default=None, help="FIFO that rank 0 writes events to")
    parser.add_argument("--stop-file", default=None, help="rank 0 stops the run when this file exists")
    parser.add_argument("--error-dir", default=None, help="where a failing rank writes its error line")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--checkpoint", default=None, help="checkpoint path (rank 0 writes it)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        if args.parent_pid:
            watch_parent(args.parent_pid)
        spec = RunSpec.from_dict(json.loads(Path(args.spec).read_text()))
        sink = FifoSink(args.events) if rank == 0 and args.events else None
        stop_file = Path(args.stop_file) if rank == 0 and args.stop_file else None
        run_rank(
            spec,
            on_event=sink,
            should_stop=stop_file.exists if stop_file else None,
            checkpoint_path=args.checkpoint,
            resume=args.resume,
        )
    except UserError as e:
        _report(args.error_dir, rank, True, str(e))
        print(f"rank {rank}: error: {e}", file=sys.stderr, flush=True)
        return 2
    except BaseException as e:  # noqa: BLE001 - reported to the parent, the traceback to the log
        _report(args.error_dir, rank, False, f"rank {rank}: {type(e).__name__}: {e}")
        traceback.print_exc()
        return 1
    return 0


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown. Gloo's worker threads can still hold tensors then, and
    destroying those aborts the process (SIGABRT, "terminate called without an active exception"),
    after a run that ended well: torchrun would then report the whole run failed. Everything a rank
    writes (events through the FIFO, the checkpoint, its error file) is written and closed by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
