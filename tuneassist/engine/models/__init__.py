"""Models by name: the paper's CIFAR nets, plus users' own nets given as ``module:function``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from torch import nn

from tuneassist.engine.models.densenet import densenet40
from tuneassist.engine.models.resnet import resnet20, resnet32, resnet56, resnet110
from tuneassist.engine.models.simple import simple3
from tuneassist.errors import UserError

_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "simple3": simple3,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "densenet40": densenet40,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

__all__ = ["MODEL_NAMES", "build_model", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared ones once), the figure the literature quotes."""
    return sum(p.numel() for p in model.parameters())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _import_user_module(module: str, spec: str) -> object:
    """Import ``module``; the current directory is tried too, since a console script's
    sys.path[0] is its bin directory, not where the user keeps ``mynets.py``."""
    cwd = os.getcwd()
    for attempt in range(2):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (module == missing or module.startswith(missing + ".")):
                # The module exists but imports something that does not.
                raise UserError(
                    f"importing module {module!r} for --model {spec} failed ({_one_line(exc)}); "
                    "install what it needs or fix that module"
                ) from exc
            if attempt == 0 and cwd not in sys.path and "" not in sys.path:
                sys.path.append(cwd)
                importlib.invalidate_caches()
                continue
            raise UserError(
                f"cannot import module {module!r} for --model {spec} ({_one_line(exc)}); put {module}.py "
                "in the current directory or add its folder to PYTHONPATH"
            ) from exc
        except Exception as exc:  # e.g. a SyntaxError in the user's file: theirs to fix, not a traceback
            raise UserError(
                f"importing module {module!r} for --model {spec} failed ({_one_line(exc)}); fix that module"
            ) from exc
    raise AssertionError("unreachable")


def _build_user_model(spec: str, num_classes: int, allow_import: bool) -> nn.Module:
    module, _, func = spec.partition(":")
    valid = bool(module) and all(p.isidentifier() for p in module.split(".")) and func.isidentifier()
    if not valid:
        raise UserError(
            f"model {spec!r} is not a valid module:function; use e.g. --model mynets:build "
            "(a function taking num_classes and returning an nn.Module)"
        )
    if not allow_import:
        raise UserError(f"model {spec!r} runs code from module {module!r}; pass --allow-import to allow it")
    mod = _import_user_module(module, spec)
    fn = getattr(mod, func, None)
    if fn is None:
        raise UserError(
            f"module {module!r} has no function {func!r} for --model {spec}; define "
            f"def {func}(num_classes): ... returning an nn.Module"
        )
    if not callable(fn):
        raise UserError(f"{spec} is not callable; {func} must be a function taking num_classes")
    try:
        model = fn(num_classes)
    except Exception as exc:  # any failure in user code is reported, not traced
        raise UserError(
            f"{spec}({num_classes}) failed ({_one_line(exc)}); "
            "it must take num_classes and return an nn.Module"
        ) from exc
    if not isinstance(model, nn.Module):
        raise UserError(
            f"{spec}({num_classes}) returned {type(model).__name__}, not a torch.nn.Module; return the model"
        )
    return model


def build_model(name: str, num_classes: int, allow_import: bool = True) -> nn.Module:
    """Build a fresh, initialised model with ``num_classes`` outputs.

    ``name`` is one of MODEL_NAMES or ``module:function``, a user callable taking num_classes and
    returning an nn.Module (only when ``allow_import``, because it runs the user's code).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"number of classes {num_classes!r} must be a positive integer")
    if ":" in name:
        return _build_user_model(name, num_classes, allow_import)
    builder = _BUILDERS.get(name)
    if builder is None:
        raise UserError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)} or module:function")
    return builder(num_classes)
