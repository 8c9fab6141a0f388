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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tuneassist.errors import UserError
from tuneassist.spec import RunSpec, splits_over

EventSink = Callable[[dict[str, Any]], None]


# ----------------------------------------------------------------------------- helpers for train()
def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model under DDP (gradient all_reduce in buckets during backward)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # Buckets as the gradients' storage: no copy in or out of them, less memory.
    return DDP(model, device_ids=ids, gradient_as_bucket_view=True)


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The element-wise mean over ranks (identical on every rank afterwards)."""
    _, world = rank_world()
    if world > 1:
        dist.all_reduce(t)
        t.div_(world)
    return t


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if rank_world()[1] > 1:
        dist.all_reduce(t)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: a decision all ranks act on at the same step."""
    if rank_world()[1] == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BN running statistics) everywhere, so every rank evaluates the same model."""
    if rank_world()[1] == 1:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)


# ----------------------------------------------------------------------------- one rank
def run_rank(
    spec: RunSpec,
    on_event: EventSink | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Join the process group torchrun set up, train `spec` as this rank, leave the group.

    Only rank 0 should pass `on_event`/`should_stop`; the others' are ignored by the caller's design.
    """
    from tuneassist.engine.train import resolve_device, train

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
    end = train(
        spec, on_event=on_event, should_stop=should_stop, checkpoint_path=checkpoint_path, resume=resume
    )
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


def _alive(pid: int) -> bool:
    """False when `pid` is gone, a zombie (it still answers kill(0)) or stopped (SIGSTOP: its heartbeat
    stops too, so the run will be declared lost and may be resumed elsewhere; ranks that trained on
    could overwrite that attempt's checkpoint)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X", "T")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def watch_parent(pid: int, interval: float = 0.5) -> None:
    """Exit at once, writing nothing, when the run's owner dies or is frozen: the run may be resumed
    elsewhere, and only the owner's ranks may write its checkpoint."""

    def loop() -> None:
        while _alive(pid):
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


if __name__ == "__main__":
    sys.exit(main())
