"""Wall time of a sweep: candidates one after another vs packed several per device.

Both phases go through the real scheduler (launch_run -> store queue -> detached workers), each in a
fresh temporary workspace: sequential with TUNEASSIST_MAX_PER_DEVICE=1, packed with
TUNEASSIST_MAX_PER_DEVICE=PACK. On the CPU the cores are split: one-after-another runs get all of
them, packed runs cores // PACK each. A candidate differs from the next only in its peak LR, as in
the checklist's sweeps; on a GPU machine they all go to one GPU (cuda:0 unless --device names
another). The time is from the first launch to the last run's end, so the per-run
start-up (a fresh Python process importing torch, loading the data) counts, as it does for users.

    python benchmarks/parallel_sweep.py                        # 4 simple3 candidates on this machine
    python benchmarks/parallel_sweep.py --model resnet20 --pack 4 --data synthetic:5000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tuneassist.runs.launch import detect_gpus, launch_run
from tuneassist.runs.store import Store
from tuneassist.spec import RunSpec

LRS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


def run_sweep(
    specs: list[RunSpec], per_device: int, timeout: float = 1800.0, workspace: Path | None = None
) -> dict[str, Any]:
    """Launch `specs` through the scheduler with at most `per_device` runs per device; wait for all.

    Returns the wall time, the runs' own durations and statuses, and the most that ran at once.
    """
    old = os.environ.get("TUNEASSIST_MAX_PER_DEVICE")
    os.environ["TUNEASSIST_MAX_PER_DEVICE"] = str(per_device)  # the workers inherit it
    with tempfile.TemporaryDirectory(prefix="tuneassist-sweep-") as tmp:
        store = Store(workspace or tmp)
        try:
            t0 = time.time()
            ids = [launch_run(store, spec, kind=f"bench:{i}") for i, spec in enumerate(specs)]
            most = 0
            while True:
                runs = [store.get_run(i) for i in ids]
                most = max(most, sum(r.status == "running" for r in runs))
                if all(r.status not in ("queued", "running") for r in runs):
                    break
                if time.time() - t0 > timeout:
                    raise TimeoutError(f"sweep not done after {timeout:.0f} s; see {store.workspace}")
                time.sleep(0.1)
            wall = max(r.ended for r in runs) - t0
            return {
                "per_device": per_device,
                "wall_s": wall,
                "run_s": [r.ended - r.started for r in runs],
                "images_per_s": [r.images_per_s for r in runs],
                "statuses": [r.status for r in runs],
                "errors": [r.error for r in runs if r.error],
                "most_at_once": most,
            }
        finally:
            store.close()
            if old is None:
                os.environ.pop("TUNEASSIST_MAX_PER_DEVICE", None)
            else:
                os.environ["TUNEASSIST_MAX_PER_DEVICE"] = old


def candidates(
    n: int, model: str, data: str, epochs: float, batch: int, device: str, threads: int | None
) -> list[RunSpec]:
    """n short one-cycle runs that differ only in peak LR (a sweep's candidates)."""
    return [
        RunSpec(data=data, model=model, epochs=epochs, batch_size=batch, device=device, num_threads=threads,
                lr_min=LRS[i % len(LRS)] / 10, lr_max=LRS[i % len(LRS)], test=False).validate()
        for i in range(n)
    ]  # fmt: skip


def compare(
    n: int, pack: int, model: str, data: str, epochs: float, batch: int, device: str
) -> dict[str, Any]:
    """The sweep once sequentially and once packed; on the CPU the cores are split between packed runs."""
    on_gpu = device != "cpu" and bool(detect_gpus())
    if on_gpu and device in ("auto", "cuda"):
        device = "cuda:0"  # one GPU: with several, max 1 per device would spread the runs over them
    cores = os.cpu_count() or 1
    seq_threads = None if on_gpu else cores
    packed_threads = None if on_gpu else max(1, cores // pack)
    seq = run_sweep(candidates(n, model, data, epochs, batch, device, seq_threads), per_device=1)
    packed = run_sweep(candidates(n, model, data, epochs, batch, device, packed_threads), per_device=pack)
    return {
        "device": "cuda" if on_gpu else "cpu",
        "cores": cores,
        "candidates": n,
        "model": model,
        "data": data,
        "epochs": epochs,
        "batch_size": batch,
        "sequential": {**seq, "threads_per_run": seq_threads},
        "packed": {**packed, "threads_per_run": packed_threads},
        "speedup": seq["wall_s"] / packed["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--pack", type=int, default=2, help="runs per device when packed (default 2)")
    p.add_argument("--model", default="simple3")
    p.add_argument("--data", default="synthetic:2000")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (GPU 0 when there is one), cpu or cuda:N")
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = p.parse_args(argv)
    r = compare(a.candidates, a.pack, a.model, a.data, a.epochs, a.batch_size, a.device)
    for phase in ("sequential", "packed"):
        x = r[phase]
        bad = [s for s in x["statuses"] if s != "finished"]
        if bad:
            print(f"{phase}: runs ended {bad}: {x['errors']}", file=sys.stderr)
            return 1
    threads = lambda t: "" if t is None else f", {t} thread(s) each"  # noqa: E731
    print(f"{r['candidates']} x {r['model']} on {r['data']}, {r['epochs']:g} epochs at batch "
          f"{r['batch_size']}, {r['device']} ({r['cores']} cores)")  # fmt: skip
    for phase in ("sequential", "packed"):
        x = r[phase]
        runs = ", ".join(f"{s:.1f}" for s in x["run_s"])
        print(f"  {phase:10s} max {x['per_device']}/device{threads(x['threads_per_run'])}: "
              f"{x['wall_s']:6.1f} s wall (runs {runs} s; at most {x['most_at_once']} at once)")  # fmt: skip
    print(f"  packed / sequential speed-up: {r['speedup']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
