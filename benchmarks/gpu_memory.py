"""Is the scheduler's memory plan for packed runs (tuneassist/runs/packing.py) right on a real GPU?

Per built-in model: the table's saved activations per image, re-measured here (CPU, no GPU needed);
with CUDA also the allocator's real peak per image over one training step at --batch-size, and the
ratio plan / real (above 1: the plan leaves room, below 1: packed runs could run out of memory). Then
the fixed part per process the plan assumes (RUN_BASE_MIB), against what the CUDA context, cuDNN and
the allocator's cache really took (device memory in use after a step, less the step's own tensors).

    python benchmarks/gpu_memory.py                 # on a GPU machine: about a minute
    python benchmarks/gpu_memory.py --device cpu    # the table re-measured only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from tuneassist.engine.memory import cuda_peak_mib_per_image, saved_mib_per_image
from tuneassist.runs.packing import PEAK_FACTOR, RUN_BASE_MIB, SAVED_MIB_PER_IMAGE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto or cpu (the table only)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", default=None, help="write the results to this file")
    a = p.parse_args(argv)
    cuda = a.device != "cpu" and torch.cuda.is_available()
    if a.device != "cpu" and not cuda:
        print("no CUDA here: measuring the table only (as with --device cpu)")
    rows: list[dict[str, Any]] = []
    heads = ("saved bf16", "table", "plan/img", "cuda/img", "plan/cuda")
    print(f"{'model':10s}  " + "  ".join(f"{h:>10s}" for h in heads))
    for model, (table_bf16, _) in SAVED_MIB_PER_IMAGE.items():
        saved = saved_mib_per_image(model, bf16=True)
        plan = PEAK_FACTOR * table_bf16
        row: dict[str, Any] = {"model": model, "saved_bf16": saved, "table_bf16": table_bf16, "plan": plan}
        if cuda:
            row["cuda_peak"] = cuda_peak_mib_per_image(model, a.batch_size)
            row["plan_over_cuda"] = plan / row["cuda_peak"]
            torch.cuda.empty_cache()
        rows.append(row)
        real = (
            f"{row['cuda_peak']:10.2f}  {row['plan_over_cuda']:10.2f}" if cuda else f"{'-':>10s}  {'-':>10s}"
        )
        print(f"{model:10s}  {saved:10.3f}  {table_bf16:10.3f}  {plan:10.2f}  {real}")
    result: dict[str, Any] = {"batch_size": a.batch_size, "models": rows}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        used = (total - free) / 2**20
        base = used - torch.cuda.memory_reserved() / 2**20  # context + cuDNN/cuBLAS handles and workspaces
        result |= {
            "device": torch.cuda.get_device_name(),
            "process_base_mib": base,
            "plan_base_mib": RUN_BASE_MIB,
        }
        print(f"{torch.cuda.get_device_name()}: CUDA context + libraries {base:.0f} MiB; the plan allows "
              f"{RUN_BASE_MIB} MiB per run for them and the data set")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
