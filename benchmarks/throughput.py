"""Training throughput of the engine vs the usual PyTorch recipe, on the same model, data and batch.

The baseline is what a tutorial would write: a torchvision-style Dataset returning PIL images,
RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize transforms, a DataLoader
with worker processes, and the plain SGD loop. Both run in this process, one after the other, on
the same synthetic CIFAR-shaped data; the ratio is engine images/s over baseline images/s.

    python benchmarks/throughput.py                      # simple3 and resnet20 on the CPU
    python benchmarks/throughput.py --models resnet56 --steps 200 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision import transforms

from tuneassist.engine.data import load_dataset
from tuneassist.engine.models import build_model
from tuneassist.engine.train import train
from tuneassist.spec import RunSpec


class PILDataset(TorchDataset):
    """uint8 NCHW tensors served one PIL image at a time, as torchvision's CIFAR10 does."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: transforms.Compose) -> None:
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def baseline_images_per_s(
    model_name: str, data: str, batch: int, steps: int, device: str, workers: int
) -> float:
    ds = load_dataset(data)
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(ds.mean, ds.std),
        ]
    )
    loader = DataLoader(
        PILDataset(ds.train.x, ds.train.y, tf),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        pin_memory=device.startswith("cuda"),
    )
    torch.manual_seed(0)
    model = build_model(model_name, ds.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    done, warm = 0, max(3, steps // 10)
    t0 = 0.0
    while done < steps + warm:
        for x, y in loader:
            if done == warm:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the usual per-step read-back for logging
            done += 1
            if done >= steps + warm:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def engine_images_per_s(
    model_name: str, data: str, batch: int, steps: int, device: str, fast: bool = False
) -> float:
    """`fast`: the engine's defaults (bf16 autocast where the device has it, channels_last); else fp32."""
    warm = max(3, steps // 10)
    spec = RunSpec(
        data=data,
        model=model_name,
        schedule="constant",
        lr_min=0.05,
        lr_max=0.05,
        momentum_max=0.9,
        momentum_min=0.9,
        batch_size=batch,
        steps=steps + warm,
        eval_every=10**9,
        test=False,
        device=device,
        bf16=fast,
        channels_last=fast,
    )
    marks: list[tuple[int, float]] = []

    def on_event(e: dict) -> None:
        if e["type"] == "step":
            marks.append((e["step"], time.perf_counter()))

    train(spec, on_event=on_event)
    # images/s between the read-back after warm-up and the last one, like the baseline's window
    first = next(i for i, (s, _) in enumerate(marks) if s >= warm)
    s0, t0 = marks[first - 1] if first else marks[0]
    s1, t1 = marks[-1]
    return (s1 - s0) * batch / (t1 - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="simple3,resnet20")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="DataLoader workers of the baseline (default: the usual 2)",
    )
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"batch {args.batch_size}, {args.steps} timed steps, baseline DataLoader workers {args.workers}"
    )
    from tuneassist.hardware import cpu_has_bf16

    bf16 = args.device != "cpu" or cpu_has_bf16()
    mode = "bf16 autocast" if bf16 else "fp32 (no bf16 here)"
    print(f"engine fp32: no autocast, NCHW; engine default: {mode}, channels_last")
    cols = ("baseline img/s", "engine fp32", "ratio", "engine default", "ratio")
    print(f"{'model':<10} {cols[0]:>15} {cols[1]:>12} {cols[2]:>6} {cols[3]:>15} {cols[4]:>6}")
    for name in args.models.split(","):
        base = baseline_images_per_s(name, args.data, args.batch_size, args.steps, args.device, args.workers)
        fp32 = engine_images_per_s(name, args.data, args.batch_size, args.steps, args.device)
        fast = engine_images_per_s(name, args.data, args.batch_size, args.steps, args.device, fast=True)
        row = f"{base:>15,.0f} {fp32:>12,.0f} {fp32 / base:>5.2f}x {fast:>15,.0f} {fast / base:>5.2f}x"
        print(f"{name:<10} {row}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
