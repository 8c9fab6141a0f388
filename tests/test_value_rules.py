"""One source of each value rule (tuneassist/spec.py, tuneassist/dataref.py): the spec, the profiles, the
checklist, the CLI and the engine accept exactly the same values, each with its own one-line message."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tuneassist.errors import UserError
from tuneassist.spec import RunSpec, is_module_function, lr_range_ok, rise_fraction_ok, splits_over

LR_PAIRS = [(0.1, 1.0), (0.1, 0.1), (1.0, 0.1), (0.0, 1.0), (-1.0, 1.0), (0.1, math.inf), (math.nan, 1.0)]


def _accepts(fn: Any, *args: Any, **kw: Any) -> bool:
    try:
        fn(*args, **kw)
    except UserError:
        return False
    return True


def _spec(**kw: Any) -> None:
    RunSpec(**kw).validate()


def _profile(**over: Any) -> None:
    from tuneassist.profiles import profile_from_dict

    raw: dict[str, Any] = dict(
        name="p", data="cifar10", model="resnet20", lr_min=0.1, lr_max=1.0, momentum_max=0.95,
        momentum_min=0.85, weight_decay=1e-4, batch_size=512, epochs=30,
    )  # fmt: skip
    schedule = {k: over.pop(k) for k in ("rise_fraction",) if k in over}
    raw.update(over)
    if schedule:
        raw["schedule"] = {"kind": "onecycle", **schedule}
    profile_from_dict(raw)


@pytest.mark.parametrize(("lo", "hi"), LR_PAIRS)
def test_every_layer_takes_the_specs_lr_range_rule(lo: float, hi: float) -> None:
    from tuneassist.advisor.checklist import Checklist
    from tuneassist.engine.schedules import OneCycleSchedule, RangeTestSchedule

    ok = lr_range_ok(lo, hi)
    assert ok == (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi)  # the rule itself
    assert _accepts(_spec, **{"lr_min": lo, "lr_max": hi}) == ok
    assert _accepts(_profile, **{"lr_min": lo, "lr_max": hi}) == ok
    assert _accepts(OneCycleSchedule, 10, lo, hi, 0.95, 0.85) == ok
    assert _accepts(RangeTestSchedule, 10, lo, hi, 0.95, 0.85) == ok
    # What must grow (a range test's sweep, the checklist's LR step) refuses equal ends too.
    grows = lr_range_ok(lo, hi, grows=True)
    assert grows == (ok and lo < hi)
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    assert _accepts(cl.override, "lr_range", [lo, hi], "mine") == grows


def test_lr_find_refuses_a_range_that_does_not_grow(capsys: pytest.CaptureFixture[str]) -> None:
    from testkit import run_main

    for lr in ("10:1e-4", "0.1:0.1"):
        code, _, err = run_main(capsys, "lr-find", "--lr", lr)
        assert code == 2 and "must grow" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.51, -0.1])
def test_rise_fraction_rule(fraction: float) -> None:
    from tuneassist.engine.schedules import OneCycleSchedule

    ok = rise_fraction_ok(fraction)
    assert ok == (0 < fraction <= 0.5)
    assert _accepts(_spec, **{"rise_fraction": fraction}) == ok
    assert _accepts(_profile, **{"rise_fraction": fraction}) == ok
    assert _accepts(OneCycleSchedule, 10, 0.1, 1.0, 0.95, 0.85, fraction) == ok


@pytest.mark.parametrize(("batch", "devices"), [(512, 2), (512, 3), (6, 3), (7, 2)])
def test_batch_split_rule(batch: int, devices: int) -> None:
    ok = splits_over(batch, devices)
    assert ok == (batch % devices == 0)
    assert _accepts(_spec, **{"batch_size": batch, "devices": devices}) == ok
    assert _accepts(_profile, **{"batch_size": batch, "devices": devices}) == ok


@pytest.mark.parametrize("model", ["mynets:build", "a.b:c", "my-nets:build", "mynets:", "a..b:c", "m:f:g"])
def test_module_function_rule(model: str) -> None:
    from tuneassist.engine.models import build_model

    ok = is_module_function(model)
    assert _accepts(_spec, **{"model": model}) == ok
    assert _accepts(_profile, **{"model": model}) == ok
    if not ok:  # the engine refuses it before any import
        with pytest.raises(UserError, match="not a valid module:function"):
            build_model(model, 10, allow_import=True)


DATA = [
    "synthetic",
    "synthetic:2000",
    "cifar10",
    "cifar100",
    "folder:/x",
    "mnist",
    "folder:",
    "synthetic:",
    "cifar",
]


@pytest.mark.parametrize("data", DATA)
def test_one_data_reference_parser(data: str) -> None:
    from tuneassist.dataref import parse_data
    from tuneassist.engine.data import parse_spec
    from tuneassist.profiles.validate import check_data

    ok = _accepts(parse_data, data)
    assert ok == (data in ("synthetic", "cifar10", "cifar100") or data in ("synthetic:2000", "folder:/x"))
    assert _accepts(parse_spec, data) == ok
    assert _accepts(_spec, **{"data": data}) == ok
    assert _accepts(check_data, "p", data) == ok


def test_one_table_of_data_set_facts(tmp_path: Path) -> None:
    from tuneassist.advisor.checklist import TRAIN_SIZES
    from tuneassist.dataref import BUILTIN, after_holdout
    from tuneassist.engine import cifar, synthetic
    from tuneassist.engine.data import Split, split_validation
    from tuneassist.engine.probe import data_facts
    from tuneassist.profiles.export import TRAIN_IMAGES
    from tuneassist.session import estimate_train_size

    assert TRAIN_SIZES == TRAIN_IMAGES == {"synthetic": 9000, "cifar10": 45000, "cifar100": 45000}
    assert synthetic.DEFAULT_TRAIN == BUILTIN["synthetic"].train
    assert synthetic.default_test_size(synthetic.DEFAULT_TRAIN) == BUILTIN["synthetic"].test
    assert len(synthetic.CLASSES) == BUILTIN["synthetic"].classes
    for name in ("cifar10", "cifar100"):
        assert cifar._INFO[name].num_classes == BUILTIN[name].classes
        assert data_facts(name) == (BUILTIN[name].classes, BUILTIN[name].train + BUILTIN[name].test)
    # The hold-out is rounded as the engine's split rounds it.
    import torch

    y = torch.arange(300) % 10
    x = torch.zeros(300, 3, 2, 2, dtype=torch.uint8)
    train, _ = split_validation(Split(x, y), 0.15, 0)
    assert len(train.x) == after_holdout(300, 0.15) == estimate_train_size("synthetic:300", 0.15)
    assert estimate_train_size("cifar10") is None  # built-in sets: from the table, by the caller
