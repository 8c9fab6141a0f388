"""Models by name: the paper's CIFAR nets, plus users' own nets given as ``module:function``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from tuneassist.engine.models.densenet import densenet40
from tuneassist.engine.models.resnet import resnet20, resnet32, resnet56, resnet110
from tuneassist.engine.models.simple import simple3
from tuneassist.errors import UserError
from tuneassist.spec import is_module_function

_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "simple3": simple3,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "densenet40": densenet40,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

__all__ = ["MODEL_NAMES", "allow_user_model", "build_model", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared ones once), the figure the literature quotes."""
    return sum(p.numel() for p in model.parameters())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _import_user_module(module: str, spec: str, model_dir: str | None = None) -> object:
    """Import ``module``, from ``model_dir`` when the launcher recorded one.

    The recorded folder goes first on sys.path, so a worker started from another directory imports the
    same file the launcher found, never a different one of the same name; the module's file is checked
    to lie in it. Without one the current directory is tried too, since a console script's sys.path[0]
    is its bin directory, not where the user keeps ``mynets.py``.
    """
    cwd = os.getcwd()
    if model_dir:
        if not Path(model_dir).is_dir():
            raise UserError(
                f"--model {spec}: its module was found in {model_dir} when the run was launched, but that "
                "folder is gone; put it back, or start the run again from where the module now is"
            )
        if model_dir not in sys.path:
            sys.path.insert(0, model_dir)
            importlib.invalidate_caches()
    for attempt in range(2):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (module == missing or module.startswith(missing + ".")):
                # The module exists but imports something that does not.
                raise UserError(
                    f"importing module {module!r} for --model {spec} failed ({_one_line(exc)}); "
                    "install what it needs or fix that module"
                ) from exc
            if attempt == 0 and not model_dir and cwd not in sys.path and "" not in sys.path:
                sys.path.append(cwd)
                importlib.invalidate_caches()
                continue
            where = (
                f"in {model_dir}, where it was found at launch" if model_dir else "in the current directory"
            )
            raise UserError(
                f"cannot import module {module!r} for --model {spec} ({_one_line(exc)}); put {module}.py "
                f"{where}, or add its folder to PYTHONPATH"
            ) from exc
        except Exception as exc:  # e.g. a SyntaxError in the user's file: theirs to fix, not a traceback
            raise UserError(
                f"importing module {module!r} for --model {spec} failed ({_one_line(exc)}); fix that module"
            ) from exc
        _check_found_in(mod, module, spec, model_dir)
        return mod
    raise AssertionError("unreachable")


def _check_found_in(mod: object, module: str, spec: str, model_dir: str | None) -> None:
    """A module imported from somewhere other than the recorded folder is another file of that name."""
    file = getattr(mod, "__file__", None)
    if not model_dir or not file:
        return
    if not Path(file).resolve().is_relative_to(Path(model_dir).resolve()):
        raise UserError(
            f"--model {spec}: module {module!r} was found in {model_dir} at launch, but this process "
            f"imports {file} instead; remove or rename the other {module.split('.')[0]}, or launch again"
        )


def _build_user_model(spec: str, num_classes: int, allow_import: bool, model_dir: str | None) -> nn.Module:
    module, _, func = spec.partition(":")
    if not is_module_function(spec):
        raise UserError(
            f"model {spec!r} is not a valid module:function; use e.g. --model mynets:build "
            "(a function taking num_classes and returning an nn.Module)"
        )
    if not allow_import:
        raise UserError(f"--model {spec} imports your code; add --allow-import to confirm")
    mod = _import_user_module(module, spec, model_dir)
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


_CONSENTED: dict[str, str | None] = {}  # user models this process was told to import: name -> folder


def allow_user_model(name: str, model_dir: str | None) -> None:
    """Record consent, for this process, to import `name` (from `model_dir`): for entry points such as
    the memory probe that build the model in several places from a command line's --allow-import."""
    _CONSENTED[name] = model_dir


def build_model(
    name: str, num_classes: int, allow_import: bool | None = None, model_dir: str | None = None
) -> nn.Module:
    """Build a fresh, initialised model with ``num_classes`` outputs.

    ``name`` is one of MODEL_NAMES or ``module:function``, a user callable taking num_classes and
    returning an nn.Module: only with consent (``allow_import``, or `allow_user_model` for this name),
    because it runs the user's code; imported from ``model_dir`` when given.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"number of classes {num_classes!r} must be a positive integer")
    if ":" in name:
        if allow_import is None:
            allow_import = name in _CONSENTED
            model_dir = model_dir or _CONSENTED.get(name)
        return _build_user_model(name, num_classes, allow_import, model_dir)
    builder = _BUILDERS.get(name)
    if builder is None:
        raise UserError(f"unknown model {name!r}; use one of {', '.join(MODEL_NAMES)} or module:function")
    return builder(num_classes)
