"""Training memory a model needs per image, measured: the tensors autograd keeps for the backward pass.

The scheduler packs several candidates onto one GPU only when their memory fits, and it must decide
that without importing torch or touching the GPU. So the per-image figures it uses
(`tuneassist.runs.packing.SAVED_MIB_PER_IMAGE`) are measured here, once per built-in model, and a test
re-measures them. The measurement is device-independent: every tensor saved for backward during one
forward pass is seen through `saved_tensors_hooks` and counted once per storage (a ReLU output that
the next convolution also saves counts once); parameters are left out (they are per run, not per
image). On CUDA, `cuda_peak_mib_per_image` gives the allocator's real peak for comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneassist.engine.device import autocast
from tuneassist.engine.models import build_model


def _batch(
    model: torch.nn.Module, batch: int, channels_last: bool, device: torch.device, side: int = 32
) -> torch.Tensor:
    x = torch.randn(batch, 3, side, side, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def saved_mib_per_image(
    model_name: str, bf16: bool = True, channels_last: bool = True, batch: int = 8, side: int = 32
) -> float:
    """MiB per image of the activations kept for backward: bf16 autocast (+ channels_last) or fp32.

    Measured on the CPU with CPU autocast, which keeps the same tensors in the same dtypes as CUDA
    autocast does for these layers (convolutions and linear layers in bf16, the rest as they come).
    """
    torch.manual_seed(0)
    model = build_model(model_name, 10, allow_import=False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            sizes[storage.data_ptr()] = max(sizes.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    x = _batch(model, batch, channels_last, torch.device("cpu"), side)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(x.device, bf16):
        out = model(x)
        F.cross_entropy(out.float(), torch.zeros(batch, dtype=torch.long))
    return sum(sizes.values()) / batch / 2**20


def cuda_peak_mib_per_image(
    model_name: str, batch: int, bf16: bool = True, channels_last: bool = True
) -> float:
    """The CUDA allocator's peak over one training step, less what the model and data held before, per
    image: what packing must leave room for (the CUDA context and cuDNN workspaces come on top)."""
    device = torch.device("cuda")
    model = build_model(model_name, 10, allow_import=False).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = _batch(model, batch, channels_last, device)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        with autocast(device, bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # momentum buffers and cuDNN's algorithm choice exist from here on, as in a real run
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / batch / 2**20
