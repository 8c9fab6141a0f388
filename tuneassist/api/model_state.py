"""What a range test touches on the user's model and optimiser, moved and saved without torch at import.

torch is imported inside each function, so importing this module (and `tuneassist.api`) stays torch-free.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def move_batch(batch: Any, device: torch.device) -> Any:
    """The batch with every tensor in it (tuples, lists, dicts, nested) on `device`."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_batch(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(move_batch(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_batch(v, device) for v in batch)
    return batch


def cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU: the snapshot costs no device memory."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(cpu_copy(v) for v in obj)
    return obj


class Snapshot:
    """Everything a range test changes, saved before it and put back after it, even on an error:
    weights and buffers (BatchNorm statistics), gradients, train/eval modes, the optimiser's state and
    param groups (lr, momentum/betas, weight decay), and the RNGs (torch CPU and CUDA, numpy, random),
    so the user's training continues exactly as if the test had never run."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        import numpy as np
        import torch

        self.model, self.optimizer = model, optimizer
        self.model_state = cpu_copy(model.state_dict())
        self.optimizer_state = cpu_copy(optimizer.state_dict())
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
        self.modes = [m.training for m in model.modules()]
        self.rng_cpu = torch.get_rng_state()
        self.rng_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.rng_numpy = np.random.get_state()
        self.rng_python = random.getstate()

    def restore(self) -> None:
        import numpy as np
        import torch

        with torch.no_grad():
            self.model.load_state_dict(self.model_state)
        self.optimizer.load_state_dict(self.optimizer_state)
        for p, g in zip(self.model.parameters(), self.grads, strict=True):
            p.grad = g
        for m, mode in zip(self.model.modules(), self.modes, strict=True):
            m.training = mode
        torch.set_rng_state(self.rng_cpu)
        if self.rng_cuda is not None:
            torch.cuda.set_rng_state_all(self.rng_cuda)
        np.random.set_state(self.rng_numpy)
        random.setstate(self.rng_python)
