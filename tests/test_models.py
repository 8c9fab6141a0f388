"""Model shapes, parameter counts against the literature, and user models given as module:function."""

from __future__ import annotations

import itertools
import sys
import textwrap

import pytest
import torch

from tuneassist.engine.models import MODEL_NAMES, build_model, count_parameters
from tuneassist.engine.models.densenet import DenseBlock
from tuneassist.errors import UserError
from tuneassist.spec import BUILTIN_MODELS

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _one_thread():
    """Batch-2 passes gain nothing from threads, and on a shared 2-core box OpenMP threads that
    spin against other jobs make them 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_names_match_spec() -> None:
    assert set(MODEL_NAMES) == set(BUILTIN_MODELS)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [32, 40])
def test_forward_shapes_channels_last(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, 7).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["simple3", "resnet20", "densenet40"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_reaches_every_parameter(name: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    model = build_model(name, 5)
    x = torch.randn(2, 3, 32, 32)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model(x).logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [
        # He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M, 1.7M.
        ("resnet20", 0.265e6, 0.275e6),
        ("resnet32", 0.455e6, 0.465e6),
        ("resnet56", 0.845e6, 0.855e6),
        ("resnet110", 1.70e6, 1.75e6),
        # Huang et al. 2017, Table 2: DenseNet (L=40, k=12) 1.0M.
        ("densenet40", 0.95e6, 1.1e6),
        # Caffe's cifar10_quick has 145,578; BN adds 256, dropping conv biases removes 128.
        ("simple3", 145_706, 145_706),
    ],
)
def test_parameter_counts(name: str, lo: float, hi: float) -> None:
    n = count_parameters(build_model(name, 10))
    assert lo <= n <= hi, n


def test_resnet_option_a_shortcut_has_no_parameters() -> None:
    model = build_model("resnet20", 10)
    assert not any("shortcut" in name for name, _ in model.named_parameters())
    assert count_parameters(model) == 269_722  # the figure every option-A reimplementation quotes


def test_densenet_buffer_matches_concatenation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The preallocated feature buffer gives the same outputs and gradients as torch.cat."""
    torch.manual_seed(0)
    block = DenseBlock(5, 3, 4).double()
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, block.out_channels, 6, 6, dtype=torch.float64)
    assert DenseBlock._use_buffer(x)

    def run() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        x.grad = None
        block.zero_grad()
        y = block(x)
        (y * weights).sum().backward()
        return y.detach().clone(), x.grad.clone(), [p.grad.clone() for p in block.parameters()]

    y_buf, gx_buf, gp_buf = run()
    monkeypatch.setattr(DenseBlock, "_use_buffer", staticmethod(lambda x: False))
    y_cat, gx_cat, gp_cat = run()
    torch.testing.assert_close(y_buf, y_cat, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_buf, gx_cat, rtol=1e-12, atol=1e-12)
    for a, b in zip(gp_buf, gp_cat, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["densenet40", "resnet20"])
def test_eval_mode_is_deterministic(name: str) -> None:
    """In eval mode BatchNorm uses its running statistics: an image's output does not depend on the
    rest of its batch, and a forward pass leaves the statistics as they were. In train mode both fail
    (checked too, so the test could tell the two modes apart)."""
    import copy

    torch.manual_seed(0)
    model = build_model(name, 10)
    x = torch.randn(4, 3, 32, 32) * 2 + 1  # far from the initial running stats (mean 0, var 1)
    with torch.no_grad():
        model.train()(x)  # move the running stats away from their initial values
        trained = copy.deepcopy(model)
        buffers = [b.clone() for b in model.buffers()]
        model.eval()
        torch.testing.assert_close(model(x), model(x))
        together, alone = model(x)[:1], model(x[:1])
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
        for b, before in zip(model.buffers(), buffers, strict=True):
            torch.testing.assert_close(b, before, rtol=0, atol=0)
        t_together, t_alone = trained(x)[:1], trained(x[:2])[:1]
        assert not torch.allclose(t_together, t_alone, rtol=1e-4, atol=1e-5)
        assert any(not torch.equal(b, before) for b, before in zip(trained.buffers(), buffers, strict=True))


def test_unknown_model_lists_names() -> None:
    with pytest.raises(UserError, match="unknown model 'resnet18'.*resnet56.*densenet40"):
        build_model("resnet18", 10)


def test_bad_num_classes() -> None:
    with pytest.raises(UserError, match="classes"):
        build_model("simple3", 0)


# --- user models -------------------------------------------------------------------------------


def _user_module(tmp_path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    name = f"user_nets_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


GOOD = """
    from torch import nn

    def build(num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    def broken(num_classes):
        raise RuntimeError("no weights here\\nsecond line")

    def not_a_model(num_classes):
        return 42

    NOT_CALLABLE = 3
"""


def test_user_model_builds(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _user_module(tmp_path, monkeypatch, GOOD)
    model = build_model(f"{mod}:build", 4, allow_import=True)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_user_model_needs_allow_import(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _user_module(tmp_path, monkeypatch, GOOD)
    with pytest.raises(UserError, match="--allow-import"):
        build_model(f"{mod}:build", 4, allow_import=False)
    assert mod not in sys.modules  # nothing was imported


@pytest.mark.parametrize(
    ("func", "pattern"),
    [
        ("missing", r"has no function 'missing'.*def missing\(num_classes\)"),
        ("NOT_CALLABLE", "not callable"),
        ("broken", r"failed \(RuntimeError: no weights here\)"),
        ("not_a_model", "returned int, not a torch.nn.Module"),
    ],
)
def test_user_model_errors(tmp_path, monkeypatch: pytest.MonkeyPatch, func: str, pattern: str) -> None:
    mod = _user_module(tmp_path, monkeypatch, GOOD)
    with pytest.raises(UserError, match=pattern) as info:
        build_model(f"{mod}:{func}", 4, allow_import=True)
    assert "\n" not in str(info.value) and mod in str(info.value)


def test_user_module_missing(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the lookup may add the cwd; undo that
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="cannot import module 'no_such_nets'.*PYTHONPATH"):
        build_model("no_such_nets:build", 10, allow_import=True)


def test_user_module_syntax_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _user_module(tmp_path, monkeypatch, "def build(num_classes:\n")
    with pytest.raises(UserError, match=f"importing module '{mod}'.*SyntaxError.*fix that module"):
        build_model(f"{mod}:build", 10, allow_import=True)


def test_user_module_missing_dependency(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _user_module(tmp_path, monkeypatch, "import surely_not_installed_pkg\n")
    with pytest.raises(UserError, match="surely_not_installed_pkg.*install what it needs"):
        build_model(f"{mod}:build", 10, allow_import=True)


def test_user_module_found_in_current_directory(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A console script's sys.path lacks the current directory; mynets.py there still imports."""
    name = f"cwd_nets_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert build_model(f"{name}:build", 3, allow_import=True)(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("spec", ["nets:", ":build", "my-nets:build", "nets:build:x", "nets.:build"])
def test_malformed_module_function(spec: str) -> None:
    with pytest.raises(UserError, match="not a valid module:function"):
        build_model(spec, 10)
