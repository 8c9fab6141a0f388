"""GPU speed of the engine: ResNet-56 and DenseNet-40 on CIFAR-shaped data at a total batch of 512.

What it measures, with the engine's own parts (build_model, DeviceLoader, build_optimizer/set_hyper,
the same training step, autocast and backend flags as tuneassist.engine.train):

- per model, three settings: eager fp32 (convolutions in TF32, as the engine sets), bf16 autocast +
  channels_last (the engine's default on CUDA), and that plus torch.compile (mode default); for each,
  the time of a few warm-up steps (compilation included) and then of whole timed epochs (the device
  synchronised before and after), images/s and the share of the GPU's bf16 dense peak that
  images/s x training FLOPs per image reaches. FLOPs per image are counted, not assumed: torch's
  FlopCounterMode over one forward + backward (2 FLOPs per multiply-add);
- the data pipeline alone: one DeviceLoader epoch (crop + flip + normalise on the device), no model;
- a sweep of 4 short candidates (resnet20, different peak LRs) through the real scheduler, one after
  another vs 4 worker processes sharing the GPU at once (separate processes, time-sliced by the
  driver; no MPS, no CUDA streams), the same code as benchmarks/parallel_sweep.py.

The data are 50,000 random 3x32x32 uint8 images made on the GPU (no network, no decoding). Without
CUDA the script prints one line and exits 0; `--device cpu --quick` runs every code path at tiny sizes
(simple3, 128 images; torch.compile with the "eager" backend: Inductor takes minutes on a CPU) as a
smoke test.

Order: the pipeline, the eager settings of every model, the sweep, then the compiled settings (a cold
Inductor cache compiles for a minute or more per model); nothing new starts after --budget-s (390 s),
so the whole script stays under 8 minutes on one H100.

    python benchmarks/gpu.py --json gpu.json          # about 5-7 minutes on one H100
    python benchmarks/gpu.py --device cpu --quick      # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tuneassist.engine.loader import DeviceLoader, LoaderSettings
from tuneassist.engine.models import build_model
from tuneassist.engine.optim import build_optimizer, set_hyper
from tuneassist.spec import RunSpec

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, by name.
PEAKS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0))
MODES = {  # name: (bf16 autocast, channels_last, compile)
    "eager fp32": (False, False, False),
    "bf16 + CL": (True, True, False),
    "bf16 + CL + compile": (True, True, True),
}


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    """(device name, bf16 dense peak TFLOP/s or None when the device is not in PEAKS)."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAKS:
        if key in name:
            return name, peak
    return name, None


def make_data(n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random CIFAR-shaped uint8 images and labels, generated where they will be used."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, device=device, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g, device=device)
    return x, y


def train_flops_per_image(model_name: str, device: torch.device) -> float:
    """FLOPs of one forward + backward per image, counted by torch (fp32, batch 4)."""
    model = build_model(model_name, 10).to(device)
    x = torch.randn(4, 3, 32, 32, device=device)
    y = torch.zeros(4, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / 4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pipeline(x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device) -> dict[str, float]:
    """One DeviceLoader epoch (augmented, channels_last, normalised) after a warm-up epoch."""
    settings = LoaderSettings(
        batch, device, CIFAR_MEAN, CIFAR_STD, train=True, augment=True, channels_last=True
    )
    loader = DeviceLoader(x, y, settings)
    for _ in loader:  # warm-up: kernels loaded, memory cached
        pass
    _sync(device)
    t = time.perf_counter()
    n = 0
    for xb, _ in loader:
        n += len(xb)
    _sync(device)
    dt = time.perf_counter() - t
    return {"epoch_s": dt, "images_per_s": n / dt}


def time_training(
    model_name: str,
    mode: str,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    device: torch.device,
    warmup: int,
    epochs: int,
    compile_backend: str = "inductor",
) -> dict[str, Any]:
    """Warm-up steps (compilation included), then `epochs` timed epochs of the engine's training step."""
    bf16, cl, compiled = MODES[mode]
    cuda = device.type == "cuda"
    if cuda:  # as train() sets them
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    spec = RunSpec(model=model_name, batch_size=batch, lr_max=0.05, momentum_max=0.9, weight_decay=5e-4)
    model = build_model(model_name, 10).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, spec)
    set_hyper(optimizer, 0.05, 0.9)
    run_model: Callable[[torch.Tensor], torch.Tensor] = (
        torch.compile(model, backend=compile_backend) if compiled else model
    )
    use_bf16 = cuda and bf16
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext
    settings = LoaderSettings(
        batch, device, CIFAR_MEAN, CIFAR_STD, train=True, augment=True, seed=0, channels_last=cl
    )
    loader = DeviceLoader(x, y, settings)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with amp():
            out = run_model(xb)
            loss = F.cross_entropy(out.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    model.train()
    _sync(device)
    t = time.perf_counter()
    loader.set_epoch(0)
    for i, (xb, yb) in enumerate(loader):
        if i >= warmup:
            break
        step(xb, yb)
    _sync(device)
    warm_s = time.perf_counter() - t
    epoch_s = []
    losses = []
    for e in range(1, epochs + 1):
        loader.set_epoch(e)
        _sync(device)
        t = time.perf_counter()
        for xb, yb in loader:
            losses.append(step(xb, yb))
        _sync(device)
        epoch_s.append(time.perf_counter() - t)
    images = len(loader) * batch
    best = min(epoch_s)
    final = float(torch.stack(losses).float().mean()) if losses else float("nan")
    return {
        "model": model_name,
        "mode": mode,
        "warmup_steps": warmup,
        "warmup_s": warm_s,
        "epoch_s": epoch_s,
        "images_per_s": images / best,
        "mean_loss": final,
    }


def sweep(quick: bool, device: str) -> dict[str, Any]:
    """4 candidates one after another vs 4 worker processes on the device (benchmarks/parallel_sweep)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from parallel_sweep import candidates, run_sweep

    if quick:
        specs = candidates(2, "simple3", "synthetic:200", 1.0, 32, device, 1)
    else:  # cuda:0: with max 1 per device the scheduler would otherwise spread them over several GPUs
        specs = candidates(4, "resnet20", "synthetic:10000", 3.0, 512, "cuda:0", None)
    seq = run_sweep(specs, per_device=1)
    packed = run_sweep(specs, per_device=len(specs))
    return {
        "candidates": len(specs),
        "model": specs[0].model,
        "data": specs[0].data,
        "sequential_s": seq["wall_s"],
        "packed_s": packed["wall_s"],
        "speedup": seq["wall_s"] / packed["wall_s"],
        "statuses": seq["statuses"] + packed["statuses"],
        "errors": seq["errors"] + packed["errors"],
        "how": f"{len(specs)} worker processes sharing one device (scheduler, max {len(specs)} per device)",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto or cuda (a GPU); cpu only with --quick")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every code path")
    p.add_argument("--models", default=None, help="default resnet56,densenet40 (quick: simple3)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps before timing (default 15)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per setting (default 2)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile setting")
    p.add_argument("--no-sweep", action="store_true", help="skip the 4-candidate sweep")
    p.add_argument(
        "--budget-s", type=float, default=390.0, help="start no new measurement after this many seconds"
    )
    p.add_argument("--json", default=None, help="write the results to this file")
    a = p.parse_args(argv)
    if a.device == "cpu" and not a.quick:
        print("gpu benchmark: --device cpu is only a smoke test; add --quick", file=sys.stderr)
        return 2
    if a.device != "cpu" and not torch.cuda.is_available():
        print("gpu benchmark skipped: CUDA is not available here (--device cpu --quick runs a smoke test)")
        return 0
    device = torch.device("cpu" if a.device == "cpu" else "cuda")
    n, batch = (128, 32) if a.quick else (50_000, a.batch_size)
    models = a.models or ("simple3" if a.quick else "resnet56,densenet40")
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 15)
    epochs = a.epochs if a.epochs is not None else (1 if a.quick else 2)
    backend = "eager" if device.type == "cpu" else "inductor"
    name, peak = peak_tflops(device)
    x, y = make_data(n, device)
    t0 = time.perf_counter()
    results: dict[str, Any] = {"device": name, "peak_bf16_tflops": peak, "images": n, "batch_size": batch}
    results["pipeline"] = time_pipeline(x, y, batch, device)
    names = [m.strip() for m in models.split(",") if m.strip()]
    flops = {m: train_flops_per_image(m, device) for m in names}
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []

    def measure(model_name: str, mode: str) -> None:
        if time.perf_counter() - t0 > a.budget_s:
            skipped.append(f"{model_name} {mode}")
            return
        r = time_training(model_name, mode, x, y, batch, device, warmup, epochs, backend)
        r["train_gflops_per_image"] = flops[model_name] / 1e9
        r["tflops"] = r["images_per_s"] * flops[model_name] / 1e12
        r["peak_pct"] = None if peak is None else 100 * r["tflops"] / peak
        rows.append(r)
        print(f"  {model_name:10s} {mode:20s} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    # Cheap and certain first; compilation (minutes for DenseNet-40 on a cold cache) last, within budget.
    for model_name in names:
        for mode in ("eager fp32", "bf16 + CL"):
            measure(model_name, mode)
    if not a.no_sweep:
        if time.perf_counter() - t0 > a.budget_s:
            skipped.append("sweep")
        else:
            if device.type == "cuda":
                torch.cuda.empty_cache()  # leave the GPU's memory to the sweep's worker processes
            results["sweep"] = sweep(a.quick, device.type)
    if not a.no_compile:
        for model_name in names:
            measure(model_name, "bf16 + CL + compile")
    rows.sort(key=lambda r: (names.index(r["model"]), list(MODES).index(r["mode"])))
    results["training"] = rows
    results["skipped_for_time"] = skipped
    results["total_s"] = time.perf_counter() - t0

    print(f"device: {name}; bf16 dense peak: {'unknown' if peak is None else f'{peak:g} TFLOP/s'}; "
          f"{n} images 3x32x32, batch {batch}")  # fmt: skip
    pl = results["pipeline"]
    print(f"data pipeline alone (DeviceLoader, crop+flip+normalise): {pl['epoch_s'] * 1e3:.1f} ms/epoch, "
          f"{pl['images_per_s']:,.0f} images/s")  # fmt: skip
    print(f"{'model':10s}  {'setting':20s}  {'warm-up s':>9s}  {'epoch s':>8s}  {'images/s':>10s}  "
          f"{'GFLOP/img':>9s}  {'TFLOP/s':>8s}  {'% peak':>7s}")  # fmt: skip
    for r in rows:
        pct = "unknown" if r["peak_pct"] is None else f"{r['peak_pct']:.1f}"
        print(f"{r['model']:10s}  {r['mode']:20s}  {r['warmup_s']:9.1f}  {min(r['epoch_s']):8.2f}  "
              f"{r['images_per_s']:10,.0f}  {r['train_gflops_per_image']:9.3f}  {r['tflops']:8.2f}  "
              f"{pct:>7s}")  # fmt: skip
    if "sweep" in results:
        s = results["sweep"]
        print(f"sweep of {s['candidates']} x {s['model']} on {s['data']} ({s['how']}): "
              f"one after another {s['sequential_s']:.1f} s, packed {s['packed_s']:.1f} s, "
              f"{s['speedup']:.2f}x")  # fmt: skip
        if s["errors"]:
            print(f"sweep errors: {s['errors']}", file=sys.stderr)
    if skipped:
        print(f"skipped to stay within --budget-s {a.budget_s:g}: {', '.join(skipped)}")
    print(f"total {results['total_s']:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if not results.get("sweep", {}).get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
