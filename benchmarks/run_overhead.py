"""Per-run start-up with and without the standby worker: a sweep's candidates one after another.

Each run is a fresh process: Python, torch, the engine and torch._dynamo (which torch.optim loads on
first use) take seconds before the first step, on every run of the checklist. The standby worker loads
all that while the previous run trains and is handed the next run when a slot frees up. Both phases go
through the real scheduler (launch_run -> queue -> workers), one run at a time, in fresh workspaces;
the time is from the first launch to the last run's end. The gain needs a spare core for the standby to
load on: on a GPU machine training leaves most cores idle; on a CPU, use --threads below the core count.

    python benchmarks/run_overhead.py                      # 4 x simple3, 1 training thread
    python benchmarks/run_overhead.py --device cuda:0 --model resnet20 --data synthetic:10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parallel_sweep import candidates, run_sweep  # noqa: E402

from tuneassist.runs.launch import STANDBY_ENV  # noqa: E402


def phase(standby: bool, specs: list[Any]) -> dict[str, Any]:
    old = os.environ.get(STANDBY_ENV)
    os.environ[STANDBY_ENV] = "1" if standby else "0"
    try:
        return run_sweep(specs, per_device=1)
    finally:
        if old is None:
            os.environ.pop(STANDBY_ENV, None)
        else:
            os.environ[STANDBY_ENV] = old


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--model", default="simple3")
    p.add_argument("--data", default="synthetic:1000")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu or cuda:N")
    p.add_argument("--threads", type=int, default=1, help="training threads per run (CPU; default 1)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = p.parse_args(argv)
    threads = a.threads if a.device == "cpu" else None
    specs = candidates(a.candidates, a.model, a.data, a.epochs, a.batch_size, a.device, threads)
    r: dict[str, Any] = {"candidates": a.candidates, "model": a.model, "data": a.data, "device": a.device,
                         "threads": threads, "cores": os.cpu_count()}  # fmt: skip
    for name, on in (("fresh workers", False), ("standby", True)):
        x = phase(on, specs)
        bad = [s for s in x["statuses"] if s != "finished"]
        if bad:
            print(f"{name}: runs ended {bad}: {x['errors']}", file=sys.stderr)
            return 1
        r[name] = x
        runs = ", ".join(f"{s:.1f}" for s in x["run_s"])
        print(f"  {name:13s} {x['wall_s']:6.1f} s wall (runs {runs} s)")
    r["speedup"] = r["fresh workers"]["wall_s"] / r["standby"]["wall_s"]
    print(f"{a.candidates} x {a.model} on {a.data}, {a.epochs:g} epoch(s), one at a time on {a.device}: "
          f"standby / fresh workers speed-up {r['speedup']:.2f}x")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
