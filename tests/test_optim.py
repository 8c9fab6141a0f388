"""The optimiser: SGD/Adam from a RunSpec, BN/bias weight-decay exclusion, and set_hyper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuneassist.engine.optim import build_optimizer, param_groups, set_hyper
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def _ids(params: list[torch.Tensor]) -> set[int]:
    return {id(p) for p in params}


def test_one_group_with_weight_decay_by_default() -> None:
    model = _net()
    opt = build_optimizer(model, RunSpec(weight_decay=5e-4, lr_max=0.3, momentum_max=0.9))
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == 5e-4 and group["lr"] == 0.3 and group["momentum"] == 0.9
    assert group["nesterov"] is False
    assert len(group["params"]) == len(list(model.parameters()))


def test_exclude_bn_and_bias_from_weight_decay() -> None:
    model = _net()
    opt = build_optimizer(model, RunSpec(weight_decay=1e-4, wd_exclude_bn_bias=True))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    conv, bn, fc = model[0], model[1], model[4]
    assert _ids(decay["params"]) == _ids([conv.weight, fc.weight])
    assert _ids(no_decay["params"]) == _ids([bn.weight, bn.bias, fc.bias])


def test_excluded_parameters_really_skip_decay() -> None:
    """With zero gradients, one SGD step shrinks only the decayed weights."""
    model = _net()
    opt = build_optimizer(model, RunSpec(weight_decay=0.1, wd_exclude_bn_bias=True, momentum_max=0.0))
    set_hyper(opt, 1.0, 0.0)
    with torch.no_grad():
        model[1].bias.fill_(0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        if p.ndim > 1:
            torch.testing.assert_close(p, before[name] * 0.9)
        else:
            torch.testing.assert_close(p, before[name], rtol=0, atol=0)


def test_frozen_parameters_are_left_out() -> None:
    model = _net()
    model[0].weight.requires_grad_(False)
    opt = build_optimizer(model, RunSpec())
    assert all(p is not model[0].weight for g in opt.param_groups for p in g["params"])


def test_no_trainable_parameters() -> None:
    model = _net().requires_grad_(False)
    with pytest.raises(UserError, match="no trainable parameters"):
        build_optimizer(model, RunSpec())


def test_nesterov() -> None:
    opt = build_optimizer(_net(), RunSpec(nesterov=True, momentum_max=0.95, momentum_min=0.85))
    assert opt.param_groups[0]["nesterov"] is True
    with pytest.raises(UserError, match="Nesterov"):
        build_optimizer(_net(), RunSpec(nesterov=True, momentum_max=0.0, momentum_min=0.0))


def test_adam_beta1_is_momentum() -> None:
    opt = build_optimizer(
        _net(), RunSpec(optimizer="adam", lr_max=0.003, momentum_max=0.9, weight_decay=1e-5)
    )
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["lr"] == 0.003 and group["weight_decay"] == 1e-5


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fused_kernels_on_cpu_when_available(optimizer: str) -> None:
    """The torch we require (>= 2.14) has fused SGD and Adam kernels on CPU: they are chosen there, and
    compute the update of torch's default implementation (judged against an optimiser built without)."""
    spec = RunSpec(optimizer=optimizer, lr_max=0.1, weight_decay=1e-3)
    a, b = _net(), _net()
    fused = build_optimizer(a, spec)
    plain = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.95, weight_decay=1e-3)
    if optimizer == "adam":
        plain = torch.optim.Adam(b.parameters(), lr=0.1, betas=(0.95, 0.999), weight_decay=1e-3)
    assert fused.defaults.get("fused") is True
    assert not plain.defaults.get("fused")
    x = torch.randn(8, 3, 6, 6)
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_parameter_fused_kernels_cannot_take_falls_back_to_the_default(optimizer: str) -> None:
    """Fused kernels refuse a complex parameter (torch's step raises with fused=True): such a model still gets
    an optimiser, unfused, whose steps match torch's default implementation."""
    spec = RunSpec(optimizer=optimizer, lr_max=0.1, weight_decay=1e-3)
    z = nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    z.grad = torch.ones_like(z)
    with pytest.raises(RuntimeError, match="fused"):  # what fused=True would do with it
        torch.optim.SGD([z], lr=0.1, fused=True).step()

    def net() -> nn.ParameterList:
        return nn.ParameterList(
            [nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2, dtype=torch.complex64))]
        )

    a, b = net(), net()
    opt = build_optimizer(a, spec)
    assert not opt.defaults.get("fused")
    plain = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.95, weight_decay=1e-3)
    if optimizer == "adam":
        plain = torch.optim.Adam(b.parameters(), lr=0.1, betas=(0.95, 0.999), weight_decay=1e-3)
    for _ in range(3):
        for model, o in ((a, opt), (b, plain)):
            o.zero_grad()
            (model[0].square().sum() + model[1].abs().square().sum()).backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_fused_kernels_only_for_dense_float_parameters() -> None:
    from tuneassist.engine.optim import _fast_impl

    assert _fast_impl([torch.zeros(3)]) == {"fused": True}
    assert _fast_impl([torch.zeros(3), torch.zeros(3, dtype=torch.complex64)]) == {}
    assert _fast_impl([torch.zeros(3, device="meta")]) == {}
    assert _fast_impl([]) == {}


def test_set_hyper_sgd_drives_the_update() -> None:
    model = _net()
    opt = build_optimizer(model, RunSpec(weight_decay=0.0, wd_exclude_bn_bias=True))
    set_hyper(opt, 0.5, 0.0)
    assert all(g["lr"] == 0.5 and g["momentum"] == 0.0 for g in opt.param_groups)
    before = [p.detach().clone() for p in model.parameters()]
    grads = [torch.randn_like(p) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    opt.step()
    for p, b, g in zip(model.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.5 * g)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_set_hyper_matches_an_optimizer_built_with_those_values(optimizer: str) -> None:
    """Changing momentum/beta1 mid-run behaves as if the optimiser had been built with it."""
    a, b = _net(), _net()
    opt_a = build_optimizer(a, RunSpec(optimizer=optimizer, lr_max=0.1, momentum_max=0.95, momentum_min=0.8))
    opt_b = build_optimizer(b, RunSpec(optimizer=optimizer, lr_max=0.02, momentum_max=0.8, momentum_min=0.8))
    set_hyper(opt_a, 0.02, 0.8)
    key = "betas" if optimizer == "adam" else "momentum"
    assert opt_a.param_groups[0][key] == opt_b.param_groups[0][key]
    torch.manual_seed(1)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a.parameters()]
        for model in (a, b):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_param_groups_helper_drops_empty_group() -> None:
    model = nn.Linear(3, 2, bias=False)
    groups = param_groups(model, 1e-4, exclude_bn_bias=True)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4
