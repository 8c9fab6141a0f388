"""The optimiser of the paper: SGD with momentum and L2 weight decay (or Adam, or AdamW with
decoupled weight decay), driven per step by a schedule through ``set_hyper``."""

from __future__ import annotations

import torch
from torch import nn

from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

__all__ = ["build_optimizer", "param_groups", "set_hyper"]


def param_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    """Trainable parameters in one group, or, with ``exclude_bn_bias``, the tensors with ndim <= 1
    (BN scales and shifts, every bias) in a second group without weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("the model has no trainable parameters; check that its layers require grad")
    if not exclude_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _fast_impl(params: list[torch.Tensor]) -> dict[str, bool]:
    """``fused=True`` when every parameter is a dense float tensor on a device with fused kernels
    (CUDA and, in recent torch, CPU); otherwise let torch pick (foreach on CUDA)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        fused_devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # private helper moved: fall back to torch's own choice
        return {}
    if params and all(
        p.device.type in fused_devices and p.is_floating_point() and not p.is_sparse for p in params
    ):
        return {"fused": True}
    return {}


def build_optimizer(model: nn.Module, spec: RunSpec) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov, L2 weight decay as SGD's ``weight_decay``, as in the
    paper), Adam (beta1 = momentum, L2 weight decay) or AdamW (beta1 = momentum, weight decay decoupled
    from the gradient, as Loshchilov & Hutter: each step shrinks the weights by lr x WD, so its WD values
    are larger than SGD's, e.g. 1e-2). Starts at ``spec.lr_max`` and
    ``spec.momentum_max``; the training loop sets both every step with ``set_hyper``.
    Build it after moving the model to its device, so that the fused kernels are chosen."""
    groups = param_groups(model, spec.weight_decay, spec.wd_exclude_bn_bias)
    impl = _fast_impl([p for g in groups for p in g["params"]])
    if spec.optimizer == "sgd":
        if spec.nesterov and spec.momentum_max <= 0:
            raise UserError("Nesterov momentum needs a momentum above 0; use e.g. --momentum 0.95:0.85")
        return torch.optim.SGD(
            groups, lr=spec.lr_max, momentum=spec.momentum_max, nesterov=spec.nesterov, **impl
        )
    if spec.optimizer == "adam":
        return torch.optim.Adam(groups, lr=spec.lr_max, betas=(spec.momentum_max, 0.999), **impl)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr_max, betas=(spec.momentum_max, 0.999), **impl)
    raise UserError(f"unknown optimizer {spec.optimizer!r}; use sgd, adam or adamw")


def set_hyper(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    """Set the LR and the momentum (SGD ``momentum``, or Adam-style ``betas[0]``) of every group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            group["betas"] = (momentum, *group["betas"][1:])
        elif "momentum" in group:
            group["momentum"] = momentum
