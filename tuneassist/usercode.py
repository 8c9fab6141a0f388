"""A user's own `module:function` model or data: consent before anything imports it, and where it lives.

Torch-free and import-free: the CLI and the UI call this at launch. Finding the module uses the path
finder only (it reads directory listings; no module code runs), so the launcher can record the folder
the module was found in without importing it. Every worker then imports the module from that folder,
whatever directory the worker itself was started from (a queued run, a resumed one, the standby).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from importlib.machinery import PathFinder
from pathlib import Path

from tuneassist.dataref import is_data_module
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec


def is_user_model(model: str) -> bool:
    """`module:function` rather than a built-in name."""
    return ":" in model


def consent_error(model: str, flag: str = "--model") -> UserError:
    """The one refusal every front end gives for a user model (or `flag` "--data": data) without consent."""
    return UserError(f"{flag} {model} imports your code; add --allow-import to confirm")


def _search_path(cwd: Path) -> list[str]:
    """What a worker would search: this process's sys.path ('' meaning cwd), then cwd itself (a console
    script's sys.path[0] is its bin folder, not where the user keeps mynets.py)."""
    out: list[str] = []
    for p in [*sys.path, str(cwd)]:
        p = str(cwd) if p in ("", ".") else p
        if p not in out:
            out.append(p)
    return out


def locate_module(
    model: str, cwd: str | os.PathLike[str] | None = None, flag: str = "--model"
) -> tuple[Path, Path]:
    """(the folder to put on sys.path, the file or package folder found) for `model`'s module (`flag`
    names the option it came from in the messages: --model, or --data for the user's Datasets).

    Only the top-level name is looked up (a dotted module is imported from its top package's folder),
    so no package `__init__` runs here. Raises UserError naming the module when nothing has it.
    """
    module = model.partition(":")[0].strip()
    top = module.split(".")[0]
    if not top.isidentifier():
        if flag == "--data":
            raise UserError(
                f"data {model!r} is not a valid module:function; use e.g. --data mydata:datasets "
                "(a function returning your (train, test) Datasets)"
            )
        raise UserError(
            f"model {model!r} is not a valid module:function; use e.g. --model mynets:build "
            "(a function taking num_classes and returning an nn.Module)"
        )
    here = Path(cwd) if cwd is not None else Path.cwd()
    namespace: tuple[Path, Path] | None = None
    for entry in _search_path(here):
        try:
            found = PathFinder.find_spec(top, [entry])
        except (ImportError, OSError, ValueError):
            continue
        if found is None:
            continue
        if found.origin is None:  # a namespace portion: used only when no regular module exists
            if namespace is None:
                locs = list(found.submodule_search_locations or [])
                namespace = (Path(entry).resolve(), Path(locs[0]) if locs else Path(entry) / top)
            continue
        origin = Path(found.origin)
        what = origin.parent if origin.name == "__init__.py" else origin
        return Path(entry).resolve(), what.resolve()
    if namespace is not None:
        return namespace
    raise UserError(
        f"cannot find module {top!r} for {flag} {model} from {here} or PYTHONPATH; run from the folder "
        f"that holds {top}.py, or add that folder to PYTHONPATH"
    )


def prepare_spec(spec: RunSpec, cwd: str | os.PathLike[str] | None = None) -> RunSpec:
    """`spec`, checked for consent and with `model_dir` recorded, as it is stored and launched.

    A built-in model passes unchanged. A user model without `allow_import` is refused here, before
    anything is queued; with it, the folder its module is found in from `cwd` is recorded (unless the
    spec already holds one: a resumed or re-run spec keeps the folder it was first launched with).
    `--data module:function` (the user's Datasets) takes the same consent, its folder in `data_module_dir`.
    """
    if is_data_module(spec.data):  # the user's Datasets: the same consent, their own folder
        if not spec.allow_import:
            raise consent_error(spec.data, "--data")
        if not spec.data_module_dir:
            folder, _ = locate_module(spec.data, cwd, flag="--data")
            spec = dataclasses.replace(spec, data_module_dir=str(folder))
    if not is_user_model(spec.model):
        return spec
    if not spec.allow_import:
        raise consent_error(spec.model)
    if spec.model_dir:
        return spec
    folder, _ = locate_module(spec.model, cwd)
    return dataclasses.replace(spec, model_dir=str(folder))
