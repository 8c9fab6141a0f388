"""Profile validation: the parsed TOML checked key by key, one UserError for the first problem.

Every message is one line naming the file, the key, what is wrong and a fix (an example line from
the field tables in `profiles.schema`); the numeric rules shared with runs come from `spec`.
The checks run in a fixed order (keys and types, run settings, then the tables), so a file with
several problems always reports the same first one.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from tuneassist.dataref import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, parse_data, valid_image_size
from tuneassist.errors import UserError
from tuneassist.profiles.schema import (
    DECISION_KEYS,
    REQUIRED,
    SCHEDULE_KINDS,
    TABLE_KEYS,
    TOP_KEYS,
    Key,
    Profile,
    Provenance,
)
from tuneassist.spec import (
    BUILTIN_DATA,
    BUILTIN_MODELS,
    OPTIMIZERS,
    RISE_FRACTION_RANGE,
    is_module_function,
    lr_range_ok,
    rise_fraction_ok,
    splits_over,
)


def _unknown(where: str, key: str, known: Iterable[str], table: str = "") -> UserError:
    known = sorted(known)
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    place = f" in [{table}]" if table else ""
    return UserError(f"{where}: unknown key {key!r}{place}; {hint}known keys: {', '.join(known)}")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_type(where: str, key: str, v: Any, k: Key) -> None:
    ok = {
        "str": isinstance(v, str),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "num": _is_num(v) and math.isfinite(float(v)),
        "bool": isinstance(v, bool),
    }[k.kind]
    if not ok:
        raise UserError(
            f"{where}: key {key!r} is {v!r} ({type(v).__name__}); it must be {k.desc}, e.g. {k.example}"
        )


def check_model(where: str, model: str) -> None:
    """A built-in model or a well-formed `module:function` (never imported here)."""
    if ":" in model:
        if not is_module_function(model):
            raise UserError(
                f'{where}: model {model!r} is not a valid module:function; use e.g. model = "mynets:build" '
                f"or one of {', '.join(BUILTIN_MODELS)}"
            )
        return
    if model not in BUILTIN_MODELS:
        raise UserError(
            f"{where}: unknown model {model!r}; use one of {', '.join(BUILTIN_MODELS)} or module:function"
        )


def check_data(where: str, data: str) -> None:
    """A data reference the engine reads (tuneassist.dataref), written exactly; synthetic:N with digits."""
    try:
        kind, arg = parse_data(data)
    except UserError:
        kind, arg = "", None
    if kind and data == data.strip() and (kind != "synthetic" or arg is None or arg.isdigit()):
        return
    raise UserError(
        f"{where}: unknown data set {data!r}; use {', '.join(BUILTIN_DATA)}, synthetic:N, folder:PATH or "
        "module:function"
    )


def _check_keys(raw: Mapping[str, Any], where: str) -> None:
    """No unknown top-level key, every required one present, each of its type."""
    for key in raw:
        if key not in TOP_KEYS and key not in TABLE_KEYS:
            raise _unknown(where, key, list(TOP_KEYS) + list(TABLE_KEYS))
    for key in REQUIRED:
        if key not in raw:
            raise UserError(f"{where}: missing key {key!r}; add it, e.g. {TOP_KEYS[key].example}")
    for key, k in TOP_KEYS.items():
        if key in raw and k.kind:
            _check_type(where, key, raw[key], k)


def _check_what_and_size(raw: Mapping[str, Any], where: str) -> None:
    """Name, data set, model, the batch size over the devices, and the epochs."""
    if not raw["name"].strip():
        raise UserError(f"{where}: key 'name' is empty; give the profile a name, e.g. name = \"my-profile\"")
    check_data(where, raw["data"])
    check_model(where, raw["model"])
    if raw["batch_size"] < 1:
        raise UserError(
            f"{where}: batch_size {raw['batch_size']} must be a positive integer, e.g. batch_size = 512"
        )
    devices = raw.get("devices", 1)
    if devices < 1:
        raise UserError(f"{where}: devices {devices} must be at least 1, e.g. devices = 1")
    if not splits_over(raw["batch_size"], devices):
        raise UserError(
            f"{where}: batch_size {raw['batch_size']} does not split evenly over {devices} devices; "
            f"use a multiple of {devices}"
        )
    if raw["epochs"] < 1:
        raise UserError(f"{where}: epochs {raw['epochs']} must be at least 1, e.g. epochs = 30")


def _check_hyperparameters(raw: Mapping[str, Any], where: str) -> None:
    """The LR and momentum ranges, weight decay, optimizer, training function and Nesterov."""
    for key in ("lr_min", "lr_max"):
        if raw[key] <= 0:
            raise UserError(
                f"{where}: {key} is {raw[key]}; it must be a positive number, e.g. {TOP_KEYS[key].example}"
            )
    if not lr_range_ok(raw["lr_min"], raw["lr_max"]):
        raise UserError(
            f"{where}: lr_min {raw['lr_min']} is larger than lr_max {raw['lr_max']}; swap them "
            "(1cycle rises from lr_min to lr_max)"
        )
    for key in ("momentum_max", "momentum_min"):
        if not 0 <= raw[key] < 1:
            raise UserError(
                f"{where}: {key} is {raw[key]}; it must be in [0, 1), e.g. {TOP_KEYS[key].example}"
            )
    if raw["momentum_min"] > raw["momentum_max"]:
        raise UserError(
            f"{where}: momentum_min {raw['momentum_min']} is larger than momentum_max {raw['momentum_max']}; "
            "swap them (momentum falls while the LR rises)"
        )
    if raw["weight_decay"] < 0:
        raise UserError(
            f"{where}: weight_decay is {raw['weight_decay']}; use 0 or a positive value like 1e-4"
        )
    optimizer = raw.get("optimizer", "sgd")
    if optimizer not in OPTIMIZERS:
        raise UserError(
            f"{where}: optimizer {optimizer!r} is not supported; use one of {', '.join(OPTIMIZERS)}, "
            'e.g. optimizer = "sgd"'
        )
    train_fn = raw.get("train")
    if train_fn is not None and (not is_module_function(train_fn) or raw["model"] != train_fn):
        raise UserError(
            f"{where}: train {train_fn!r} must be a module:function and the profile's model the same, "
            f'e.g. train = "mytrain:train" with model = "mytrain:train"'
        )
    image_size = raw.get("image_size")
    folder = str(raw["data"]).startswith("folder:")
    if image_size is not None and not (valid_image_size(image_size) and folder):
        raise UserError(
            f"{where}: image_size {image_size} must be from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, "
            "for folder:PATH data (the other data sets are 32x32), e.g. image_size = 64"
        )
    if optimizer != "sgd" and raw.get("nesterov", False):
        raise UserError(f'{where}: nesterov applies to SGD only; remove it or use optimizer = "sgd"')


def _tables(raw: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Each table ([schedule], [accuracy], [provenance]; absent is empty) with known keys of their type."""
    tabs: dict[str, dict[str, Any]] = {}
    for t, keys in TABLE_KEYS.items():
        v = raw.get(t, {})
        if not isinstance(v, Mapping):
            raise UserError(f"{where}: {t!r} must be a table, e.g. [{t}]")
        for k in v:
            if k not in keys:
                raise _unknown(where, k, keys, table=t)
        for k, key in keys.items():
            if k in v and key.kind:
                _check_type(where, f"{t}.{k}", v[k], key)
        tabs[t] = dict(v)
    return tabs


def _check_schedule(sched: Mapping[str, Any], where: str) -> None:
    kind = sched.get("kind", "onecycle")
    if kind not in SCHEDULE_KINDS:
        raise UserError(f'{where}: schedule.kind {kind!r} is not supported; use kind = "onecycle"')
    rise = sched.get("rise_fraction", 0.45)
    if not rise_fraction_ok(rise):
        raise UserError(
            f"{where}: schedule.rise_fraction {rise} must be in {RISE_FRACTION_RANGE}, "
            "e.g. rise_fraction = 0.45"
        )
    final_div = sched.get("final_div", 100.0)
    if final_div < 1:
        raise UserError(f"{where}: schedule.final_div {final_div} must be >= 1, e.g. final_div = 100.0")
    spe = sched.get("steps_per_epoch")
    if spe is not None and spe < 1:
        raise UserError(f"{where}: schedule.steps_per_epoch {spe} must be a positive integer")


def _check_accuracy(acc: Mapping[str, Any], where: str) -> None:
    for k in ("expected", "measured", "measured_val"):
        if k in acc and not 0 <= acc[k] <= 100:
            raise UserError(
                f"{where}: accuracy.{k} {acc[k]} must be a percentage in [0, 100], e.g. {k} = 91.5"
            )
    rng = acc.get("expected_range")
    if rng is not None:
        if not (isinstance(rng, list) and len(rng) == 2 and all(_is_num(x) and 0 <= x <= 100 for x in rng)):
            raise UserError(
                f"{where}: accuracy.expected_range {rng!r} must be two percentages [low, high], "
                "e.g. expected_range = [91.5, 92.2]"
            )
        if rng[0] > rng[1]:
            raise UserError(f"{where}: accuracy.expected_range {rng!r} is reversed; write [low, high]")


def _check_provenance(prov: Mapping[str, Any], where: str) -> None:
    runs = prov.get("runs", [])
    if not (isinstance(runs, list) and all(isinstance(r, str) for r in runs)):
        raise UserError(f'{where}: provenance.runs must be a list of run ids, e.g. runs = ["r1", "r2"]')
    decisions = prov.get("decisions", [])
    if not (isinstance(decisions, list) and all(isinstance(x, Mapping) for x in decisions)):
        raise UserError(
            f"{where}: provenance.decisions must be an array of tables ([[provenance.decisions]])"
        )
    for dec in decisions:
        for k, v in dec.items():
            if k not in DECISION_KEYS:
                raise _unknown(where, k, DECISION_KEYS, table="provenance.decisions")
            if not isinstance(v, str):
                raise UserError(f"{where}: provenance.decisions.{k} is {v!r}; it must be a string")


# A flat key of the file sets the Profile field of its name (`train` sets train_fn); an absent one
# leaves the field's default. These are stored as floats; epochs keeps a whole number an int.
_FIELD_OF_KEY = {"train": "train_fn"}
_FLOAT_KEYS = ("lr_min", "lr_max", "momentum_max", "momentum_min", "weight_decay")


def _build(raw: Mapping[str, Any], tabs: Mapping[str, Mapping[str, Any]]) -> Profile:
    """The Profile of checked values (defaults filled in, numbers as float)."""
    sched, acc, prov = tabs["schedule"], tabs["accuracy"], tabs["provenance"]
    rng = acc.get("expected_range")
    spe = sched.get("steps_per_epoch")
    flat = {_FIELD_OF_KEY.get(k, k): raw[k] for k in TOP_KEYS if k in raw}
    flat.update({k: float(raw[k]) for k in _FLOAT_KEYS})
    return Profile(
        **flat,
        schedule=sched.get("kind", "onecycle"),
        rise_fraction=float(sched.get("rise_fraction", 0.45)),
        final_div=float(sched.get("final_div", 100.0)),
        steps_per_epoch=spe,
        expected_accuracy=None if "expected" not in acc else float(acc["expected"]),
        expected_range=None if rng is None else (float(rng[0]), float(rng[1])),
        expected_source=acc.get("expected_source", ""),
        measured_accuracy=None if "measured" not in acc else float(acc["measured"]),
        measured_val_accuracy=None if "measured_val" not in acc else float(acc["measured_val"]),
        measured_run=acc.get("measured_run", ""),
        provenance=Provenance(
            session=prov.get("session", ""),
            runs=list(prov.get("runs", [])),
            decisions=[dict(x) for x in prov.get("decisions", [])],
            tuneassist_version=prov.get("tuneassist_version", ""),
            created=prov.get("created", ""),
            budget=prov.get("budget", ""),
            source=prov.get("source", ""),
        ),
    )


def profile_from_dict(raw: Mapping[str, Any], where: str = "profile") -> Profile:
    """Validate the parsed TOML of a profile; one UserError for the first problem found."""
    _check_keys(raw, where)
    _check_what_and_size(raw, where)
    _check_hyperparameters(raw, where)
    tabs = _tables(raw, where)
    _check_schedule(tabs["schedule"], where)
    _check_accuracy(tabs["accuracy"], where)
    _check_provenance(tabs["provenance"], where)
    return _build(raw, tabs)



def loads_profile(text: str, where: str = "profile") -> Profile:
    """Parse and validate profile TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where}: not valid TOML ({exc}); fix the syntax there") from exc
    except RecursionError:  # tomllib recurses per nested array/table: a crafted file exhausts the stack
        raise UserError(f"{where}: nested too deeply to be a profile; check the [ and {{ brackets") from None
    return profile_from_dict(raw, where)
