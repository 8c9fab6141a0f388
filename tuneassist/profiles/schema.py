"""Hyperparameter profiles: one TOML file per tuned setting, checked on load, never executed.

A profile is what the checklist produces and what anyone can re-run: the data set, the net, the
1cycle values (LR and momentum ranges, WD, TBS, epochs, schedule shape), the accuracy it reached or
is expected to reach, and how it was found (session, runs, the decision and reason for each step).

Layout (flat keys are the run settings, tables hold the rest)::

    name = "cifar10-resnet56-1cycle"
    data = "cifar10"
    model = "resnet56"
    batch_size = 512          # total batch size (all devices)
    devices = 1
    epochs = 95
    lr_min = 0.08
    lr_max = 0.8
    momentum_max = 0.95
    momentum_min = 0.85
    weight_decay = 1e-4

    [schedule]                # 1cycle shape
    kind = "onecycle"
    rise_fraction = 0.45
    final_div = 100.0

    [accuracy]                # percent, test split
    expected = 92.0

    [provenance]
    session = "..."
    [[provenance.decisions]]
    step = "lr_range"
    value = "0.08 → 0.8"
    reason = "..."

Loading validates every key and raises one UserError naming the first problem, the key and the fix.
A ``module:function`` model is accepted but flagged (`needs_import`): running it imports user code,
so `profile_to_runspec` refuses unless the caller allows imports.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import stat
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tuneassist
from tuneassist.dataref import parse_data
from tuneassist.errors import UserError
from tuneassist.spec import (
    BUILTIN_DATA,
    BUILTIN_MODELS,
    OPTIMIZERS,
    RISE_FRACTION_RANGE,
    RunSpec,
    is_module_function,
    lr_range_ok,
    rise_fraction_ok,
    splits_over,
)

if TYPE_CHECKING:
    from tuneassist.advisor.checklist import Checklist

SCHEDULE_KINDS = ("onecycle",)

# key -> (type description, example) for the messages
TOP_KEYS: dict[str, tuple[str, str]] = {
    "name": ("a non-empty string", 'name = "my-profile"'),
    "description": ("a string", 'description = "what it is for"'),
    "data": ("a data set name", 'data = "cifar10"'),
    "model": ("a model name", 'model = "resnet56"'),
    "batch_size": ("a positive integer (the total batch size)", "batch_size = 512"),
    "devices": ("a positive integer", "devices = 1"),
    "epochs": ("a number >= 1", "epochs = 30"),
    "lr_min": ("a positive number", "lr_min = 0.08"),
    "lr_max": ("a positive number", "lr_max = 0.8"),
    "momentum_max": ("a number in [0, 1)", "momentum_max = 0.95"),
    "momentum_min": ("a number in [0, 1)", "momentum_min = 0.85"),
    "weight_decay": ("0 or a positive number", "weight_decay = 1e-4"),
    "nesterov": ("true or false", "nesterov = false"),
    "optimizer": ("one of: " + ", ".join(OPTIMIZERS), 'optimizer = "sgd"'),
    "train": ("a module:function, your training function", 'train = "mytrain:train"'),
    "wd_exclude_bn_bias": ("true or false", "wd_exclude_bn_bias = false"),
    "notes": ("a string", 'notes = "..."'),
}
REQUIRED = (
    "name",
    "data",
    "model",
    "batch_size",
    "epochs",
    "lr_min",
    "lr_max",
    "momentum_max",
    "momentum_min",
    "weight_decay",
)
TABLE_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "schedule": {
        "kind": ("one of: " + ", ".join(SCHEDULE_KINDS), 'kind = "onecycle"'),
        "rise_fraction": ("a number in (0, 0.5]", "rise_fraction = 0.45"),
        "final_div": ("a number >= 1", "final_div = 100.0"),
        "steps_per_epoch": ("a positive integer", "steps_per_epoch = 87"),
    },
    "accuracy": {
        "expected": ("a percentage in [0, 100]", "expected = 92.0"),
        "expected_range": ("two percentages [low, high]", "expected_range = [91.5, 92.2]"),
        "expected_source": ("a string", 'expected_source = "Smith 2018, Table 1"'),
        "measured": ("a percentage in [0, 100]", "measured = 91.2"),
        "measured_val": ("a percentage in [0, 100]", "measured_val = 91.0"),
        "measured_run": ("a string (run id)", 'measured_run = "r42"'),
    },
    "provenance": {
        "session": ("a string", 'session = "s1"'),
        "runs": ("a list of run ids", 'runs = ["r1", "r2"]'),
        "decisions": ("an array of tables", "[[provenance.decisions]]"),
        "tuneassist_version": ("a string", 'tuneassist_version = "0.1.0"'),
        "created": ("a string (ISO date)", 'created = "2025-01-01T00:00:00+00:00"'),
        "budget": ("a string", 'budget = "quick"'),
        "source": ("a string", 'source = "paper"'),
    },
}
DECISION_KEYS = {"step": "a string", "value": "a string", "reason": "a string", "source": "a string"}


@dataclass
class Provenance:
    session: str = ""
    runs: list[str] = field(default_factory=list)
    decisions: list[dict[str, str]] = field(default_factory=list)  # step, value, reason, source
    tuneassist_version: str = ""
    created: str = ""
    budget: str = ""
    source: str = ""  # 'paper' for shipped profiles, 'tuneassist' for tuned ones


@dataclass
class Profile:
    """One profile; `path` is where it was loaded from (not stored in the file)."""

    name: str
    data: str
    model: str
    batch_size: int
    epochs: float
    lr_min: float
    lr_max: float
    momentum_max: float
    momentum_min: float
    weight_decay: float
    devices: int = 1
    description: str = ""
    notes: str = ""
    nesterov: bool = False
    # sgd (the paper's: momentum, L2 WD), adam (beta1 = momentum, L2 WD), adamw (decoupled WD)
    optimizer: str = "sgd"
    train_fn: str | None = None  # your own training function (tune --train): `model` names it too
    wd_exclude_bn_bias: bool = False
    schedule: str = "onecycle"
    rise_fraction: float = 0.45
    final_div: float = 100.0
    steps_per_epoch: int | None = None
    expected_accuracy: float | None = None
    expected_range: tuple[float, float] | None = None
    expected_source: str = ""
    measured_accuracy: float | None = None
    measured_val_accuracy: float | None = None
    measured_run: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    path: Path | None = None

    @property
    def needs_import(self) -> bool:
        """True when the model is `module:function`: running it imports user code."""
        return ":" in self.model

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout as nested dicts (None and empty optional values left out)."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d.update(
            data=self.data,
            model=self.model,
            batch_size=self.batch_size,
            devices=self.devices,
            epochs=self.epochs,
            lr_min=self.lr_min,
            lr_max=self.lr_max,
            momentum_max=self.momentum_max,
            momentum_min=self.momentum_min,
            weight_decay=self.weight_decay,
        )
        if self.nesterov:
            d["nesterov"] = True
        if self.optimizer != "sgd":
            d["optimizer"] = self.optimizer
        if self.train_fn:
            d["train"] = self.train_fn
        if self.wd_exclude_bn_bias:
            d["wd_exclude_bn_bias"] = True
        if self.notes:
            d["notes"] = self.notes
        sched: dict[str, Any] = {
            "kind": self.schedule,
            "rise_fraction": self.rise_fraction,
            "final_div": self.final_div,
        }
        if self.steps_per_epoch is not None:
            sched["steps_per_epoch"] = self.steps_per_epoch
        d["schedule"] = sched
        acc: dict[str, Any] = {}
        if self.expected_accuracy is not None:
            acc["expected"] = self.expected_accuracy
        if self.expected_range is not None:
            acc["expected_range"] = list(self.expected_range)
        if self.expected_source:
            acc["expected_source"] = self.expected_source
        if self.measured_accuracy is not None:
            acc["measured"] = self.measured_accuracy
        if self.measured_val_accuracy is not None:
            acc["measured_val"] = self.measured_val_accuracy
        if self.measured_run:
            acc["measured_run"] = self.measured_run
        if acc:
            d["accuracy"] = acc
        p = self.provenance
        prov: dict[str, Any] = {}
        for k in ("session", "tuneassist_version", "created", "budget", "source"):
            if getattr(p, k):
                prov[k] = getattr(p, k)
        if p.runs:
            prov["runs"] = list(p.runs)
        if p.decisions:
            prov["decisions"] = [dict(x) for x in p.decisions]
        if prov:
            d["provenance"] = prov
        return d

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())


# ---------------------------------------------------------------------------------------------
# A small TOML writer for this layout: scalars, lists of scalars, tables, arrays of tables.


def _toml_value(v: Any, key: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{key}: {v} cannot be stored")
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    raise ValueError(f"{key}: values of type {type(v).__name__} cannot be stored in a profile")


def dumps_toml(d: Mapping[str, Any]) -> str:
    """Serialise nested dicts (two levels, plus arrays of tables) to TOML that tomllib reads back."""
    lines: list[str] = []

    def scalars(m: Mapping[str, Any], prefix: str) -> None:
        for k, v in m.items():
            if isinstance(v, Mapping) or (
                isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v)
            ):
                continue
            if v is None:
                continue
            lines.append(f"{k} = {_toml_value(v, prefix + k)}")

    def tables(m: Mapping[str, Any], prefix: str) -> None:
        for k, v in m.items():
            if isinstance(v, Mapping):
                lines.append("")
                lines.append(f"[{prefix}{k}]")
                scalars(v, f"{prefix}{k}.")
                tables(v, f"{prefix}{k}.")
            elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                for item in v:
                    lines.append("")
                    lines.append(f"[[{prefix}{k}]]")
                    scalars(item, f"{prefix}{k}.")

    scalars(d, "")
    tables(d, "")
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# Validation


def _unknown(where: str, key: str, known: Iterable[str], table: str = "") -> UserError:
    known = sorted(known)
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    place = f" in [{table}]" if table else ""
    return UserError(f"{where}: unknown key {key!r}{place}; {hint}known keys: {', '.join(known)}")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_type(where: str, key: str, v: Any, kind: str, desc: str, example: str) -> None:
    ok = {
        "str": isinstance(v, str),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "num": _is_num(v) and math.isfinite(float(v)),
        "bool": isinstance(v, bool),
    }[kind]
    if not ok:
        raise UserError(
            f"{where}: key {key!r} is {v!r} ({type(v).__name__}); it must be {desc}, e.g. {example}"
        )


TOP_TYPES = {
    "name": "str",
    "description": "str",
    "data": "str",
    "model": "str",
    "batch_size": "int",
    "devices": "int",
    "epochs": "num",
    "lr_min": "num",
    "lr_max": "num",
    "momentum_max": "num",
    "momentum_min": "num",
    "weight_decay": "num",
    "nesterov": "bool",
    "optimizer": "str",
    "train": "str",
    "wd_exclude_bn_bias": "bool",
    "notes": "str",
}
TABLE_TYPES = {
    "schedule": {"kind": "str", "rise_fraction": "num", "final_div": "num", "steps_per_epoch": "int"},
    "accuracy": {
        "expected": "num",
        "expected_source": "str",
        "measured": "num",
        "measured_val": "num",
        "measured_run": "str",
    },
    "provenance": {
        "session": "str",
        "tuneassist_version": "str",
        "created": "str",
        "budget": "str",
        "source": "str",
    },
}


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
        f"{where}: unknown data set {data!r}; use {', '.join(BUILTIN_DATA)}, synthetic:N or folder:PATH"
    )


def profile_from_dict(raw: Mapping[str, Any], where: str = "profile") -> Profile:
    """Validate the parsed TOML of a profile; one UserError for the first problem found."""
    for key in raw:
        if key not in TOP_KEYS and key not in TABLE_KEYS:
            raise _unknown(where, key, list(TOP_KEYS) + list(TABLE_KEYS))
    for key in REQUIRED:
        if key not in raw:
            raise UserError(f"{where}: missing key {key!r}; add it, e.g. {TOP_KEYS[key][1]}")
    for key, kind in TOP_TYPES.items():
        if key in raw:
            desc, example = TOP_KEYS[key]
            _check_type(where, key, raw[key], kind, desc, example)

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
    for key in ("lr_min", "lr_max"):
        if raw[key] <= 0:
            raise UserError(
                f"{where}: {key} is {raw[key]}; it must be a positive number, e.g. {TOP_KEYS[key][1]}"
            )
    if not lr_range_ok(raw["lr_min"], raw["lr_max"]):
        raise UserError(
            f"{where}: lr_min {raw['lr_min']} is larger than lr_max {raw['lr_max']}; swap them "
            "(1cycle rises from lr_min to lr_max)"
        )
    for key in ("momentum_max", "momentum_min"):
        if not 0 <= raw[key] < 1:
            raise UserError(f"{where}: {key} is {raw[key]}; it must be in [0, 1), e.g. {TOP_KEYS[key][1]}")
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
    if optimizer != "sgd" and raw.get("nesterov", False):
        raise UserError(f'{where}: nesterov applies to SGD only; remove it or use optimizer = "sgd"')

    tabs: dict[str, dict[str, Any]] = {}
    for t, keys in TABLE_KEYS.items():
        v = raw.get(t, {})
        if not isinstance(v, Mapping):
            raise UserError(f"{where}: {t!r} must be a table, e.g. [{t}]")
        for k in v:
            if k not in keys:
                raise _unknown(where, k, keys, table=t)
        for k, kind in TABLE_TYPES[t].items():
            if k in v:
                desc, example = keys[k]
                _check_type(where, f"{t}.{k}", v[k], kind, desc, example)
        tabs[t] = dict(v)

    sched = tabs["schedule"]
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

    acc = tabs["accuracy"]
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

    prov = tabs["provenance"]
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

    return Profile(
        name=raw["name"],
        data=raw["data"],
        model=raw["model"],
        batch_size=raw["batch_size"],
        epochs=raw["epochs"],
        lr_min=float(raw["lr_min"]),
        lr_max=float(raw["lr_max"]),
        momentum_max=float(raw["momentum_max"]),
        momentum_min=float(raw["momentum_min"]),
        weight_decay=float(raw["weight_decay"]),
        devices=devices,
        description=raw.get("description", ""),
        notes=raw.get("notes", ""),
        nesterov=raw.get("nesterov", False),
        optimizer=optimizer,
        train_fn=train_fn,
        wd_exclude_bn_bias=raw.get("wd_exclude_bn_bias", False),
        schedule=kind,
        rise_fraction=float(rise),
        final_div=float(final_div),
        steps_per_epoch=spe,
        expected_accuracy=None if "expected" not in acc else float(acc["expected"]),
        expected_range=None if rng is None else (float(rng[0]), float(rng[1])),
        expected_source=acc.get("expected_source", ""),
        measured_accuracy=None if "measured" not in acc else float(acc["measured"]),
        measured_val_accuracy=None if "measured_val" not in acc else float(acc["measured_val"]),
        measured_run=acc.get("measured_run", ""),
        provenance=Provenance(
            session=prov.get("session", ""),
            runs=list(runs),
            decisions=[dict(x) for x in decisions],
            tuneassist_version=prov.get("tuneassist_version", ""),
            created=prov.get("created", ""),
            budget=prov.get("budget", ""),
            source=prov.get("source", ""),
        ),
    )


def loads_profile(text: str, where: str = "profile") -> Profile:
    """Parse and validate profile TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where}: not valid TOML ({exc}); fix the syntax there") from exc
    except RecursionError:  # tomllib recurses per nested array/table: a crafted file exhausts the stack
        raise UserError(f"{where}: nested too deeply to be a profile; check the [ and {{ brackets") from None
    return profile_from_dict(raw, where)


MAX_PROFILE_BYTES = 1 << 20  # 1 MiB: a profile is a few hundred bytes, a provenance a few KiB


def read_profile_text(path: str | os.PathLike[str]) -> str:
    """A profile file's text: only from a regular file (never a device, FIFO or socket, which could
    block or stream forever) and at most MAX_PROFILE_BYTES. Raises OSError/UnicodeDecodeError/UserError."""
    p = Path(path)
    # O_NONBLOCK: opening a FIFO for reading does not wait for a writer; it is refused just below.
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(p))
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            raise UserError(f"profile {p} is {kind}, not a regular file; give a .toml file")
        chunks, size = [], 0
        while size <= MAX_PROFILE_BYTES:
            chunk = os.read(fd, min(1 << 16, MAX_PROFILE_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_PROFILE_BYTES:
            raise UserError(
                f"profile {p} is larger than {MAX_PROFILE_BYTES >> 20} MiB, too large to be a profile; "
                "give the .toml file tuneassist saved"
            )
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile file. Reading never runs code from it."""
    p = Path(path)
    try:
        text = read_profile_text(p)
    except FileNotFoundError as exc:
        raise UserError(
            f"profile file {p} not found; check the path or run `tuneassist profile list`"
        ) from exc
    except IsADirectoryError as exc:
        raise UserError(f"profile path {p} is a folder; give a .toml file") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"profile {p}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"profile {p} cannot be read ({exc.strerror}); check its permissions") from exc
    prof = loads_profile(text, where=f"profile {p}")
    prof.path = p
    return prof


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> Path:
    """Write `profile` as TOML (atomically); a folder path gets `<name>.toml`. Returns the file path."""
    p = Path(path)
    if p.is_dir():
        p = p / f"{safe_filename(profile.name)}.toml"
    text = profile.to_toml()
    loads_profile(text, where=f"profile {profile.name!r}")  # never write a file that would not load back
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    profile.path = p
    return p


def safe_filename(name: str) -> str:
    """A profile name as a file name: letters, digits, '.', '-' and '_' kept, the rest '-'."""
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.strip()).strip(".-")
    return out or "profile"


# ---------------------------------------------------------------------------------------------
# Finding profiles


_SHIPPED_COPY: Path | None = None  # where profiles shipped inside a zip were copied, once per process


def shipped_profiles_dir() -> Path | None:
    """The paper's profiles, shipped as package data (`tuneassist/profiles/builtin/*.toml`).

    Read through importlib.resources so that a wheel, an editable install and a checkout find the
    same files; a package imported from a zip gets them copied to a private temporary folder once,
    because the loader reads profiles as regular files.
    """
    global _SHIPPED_COPY
    from importlib.resources import files

    res = files("tuneassist.profiles").joinpath("builtin")
    if isinstance(res, Path):
        return res if res.is_dir() else None
    if _SHIPPED_COPY is None:
        if not res.is_dir():
            return None
        tmp = Path(tempfile.mkdtemp(prefix="tuneassist-profiles-"))
        for item in res.iterdir():
            if item.name.endswith(".toml"):
                (tmp / item.name).write_bytes(item.read_bytes())
        _SHIPPED_COPY = tmp
    return _SHIPPED_COPY


@dataclass
class ProfileEntry:
    name: str
    path: Path
    profile: Profile | None
    error: str | None = None  # why it did not load
    shadowed: bool = False  # a profile of the same name in an earlier folder wins


def list_profiles(dirs: Iterable[str | os.PathLike[str] | None]) -> list[ProfileEntry]:
    """Every *.toml in `dirs`, in order (missing folders skipped); broken files come with their error."""
    out: list[ProfileEntry] = []
    seen: set[str] = set()
    for d in dirs:
        if d is None:
            continue
        folder = Path(d)
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.toml")):
            try:
                prof = load_profile(f)
                entry = ProfileEntry(prof.name, f, prof)
            except UserError as exc:
                entry = ProfileEntry(f.stem, f, None, str(exc))
            entry.shadowed = entry.name in seen
            seen.add(entry.name)
            out.append(entry)
    return out


def find_profile(name_or_path: str, dirs: Iterable[str | os.PathLike[str] | None]) -> Profile:
    """A profile by file path, or by name (or file stem) in `dirs`, first folder first."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path or p.is_file():
        return load_profile(p)
    entries = list_profiles(dirs)
    for e in entries:
        if e.name == name_or_path or e.path.stem == name_or_path:
            if e.profile is None:
                raise UserError(e.error or f"profile {name_or_path!r} does not load")
            return e.profile
    names = sorted({e.name for e in entries})
    raise UserError(
        f"no profile named {name_or_path!r}; available: {', '.join(names) if names else 'none'} "
        "(or give a path to a .toml file)"
    )


# ---------------------------------------------------------------------------------------------
# Conversions


def profile_to_runspec(profile: Profile, *, allow_import: bool = False, **overrides: Any) -> RunSpec:
    """The 1cycle run a profile describes. `overrides` set other RunSpec fields (device, data_dir ...).

    A `module:function` model needs `allow_import=True`: running it imports and calls user code.
    """
    if profile.needs_import and not allow_import:
        raise UserError(
            f"profile {profile.name!r} uses model {profile.model!r}, which imports and runs Python code; "
            "allow imports (e.g. --allow-import) only if you trust it"
        )
    kw: dict[str, Any] = dict(
        data=profile.data,
        model=profile.model,
        schedule="onecycle",
        lr_min=profile.lr_min,
        lr_max=profile.lr_max,
        momentum_max=profile.momentum_max,
        momentum_min=profile.momentum_min,
        weight_decay=profile.weight_decay,
        wd_exclude_bn_bias=profile.wd_exclude_bn_bias,
        nesterov=profile.nesterov,
        optimizer=profile.optimizer,
        train_fn=profile.train_fn,
        epochs=float(profile.epochs),
        batch_size=profile.batch_size,
        devices=profile.devices,
        rise_fraction=profile.rise_fraction,
        final_div=profile.final_div,
        test=True,
        allow_import=allow_import,
    )
    kw.update(overrides)
    return RunSpec(**kw).validate()


def profile_from_runspec(
    spec: RunSpec,
    name: str,
    *,
    description: str = "",
    provenance: Provenance | None = None,
    measured_accuracy: float | None = None,
    measured_val_accuracy: float | None = None,
    measured_run: str = "",
) -> Profile:
    """A profile holding a run's settings (accuracies in percent)."""
    if spec.schedule != "onecycle":
        raise UserError(f"only 1cycle runs make profiles; this run uses schedule {spec.schedule!r}")
    prov = provenance or Provenance()
    if not prov.tuneassist_version:
        prov.tuneassist_version = tuneassist.__version__
    if not prov.created:
        prov.created = datetime.now(UTC).isoformat(timespec="seconds")
    epochs: float = spec.epochs
    if float(epochs).is_integer():
        epochs = int(epochs)
    prof = Profile(
        name=name,
        data=spec.data,
        model=spec.model,
        batch_size=spec.batch_size,
        epochs=epochs,
        lr_min=spec.lr_min,
        lr_max=spec.lr_max,
        momentum_max=spec.momentum_max,
        momentum_min=spec.momentum_min,
        weight_decay=spec.weight_decay,
        devices=spec.devices,
        description=description,
        nesterov=spec.nesterov,
        optimizer=spec.optimizer,
        train_fn=spec.train_fn,
        wd_exclude_bn_bias=spec.wd_exclude_bn_bias,
        rise_fraction=spec.rise_fraction,
        final_div=spec.final_div,
        measured_accuracy=measured_accuracy,
        measured_val_accuracy=measured_val_accuracy,
        measured_run=measured_run,
        provenance=prov,
    )
    return profile_from_dict(prof.to_dict(), where=f"profile {name!r}")


def _percent(v: Any) -> float | None:
    """The engine reports accuracy as a fraction; profiles store percent."""
    return None if v is None else round(float(v) * 100, 2)


def profile_from_checklist(checklist: Checklist, name: str, *, description: str = "") -> Profile:
    """The profile a finished checklist produces: its final 1cycle settings, accuracy and decisions."""
    spec = checklist.profile_spec()  # the final step's winner: tuned, LR-only or a refinement
    prov_d = checklist.provenance()
    final = checklist.final or {}
    final_runs = checklist.runs.get("final", {})
    measured = final_runs.get(str(final.get("variant") or "final")) or next(iter(final_runs.values()), "")
    prov = Provenance(
        session=prov_d["session"],
        runs=list(prov_d["runs"]),
        decisions=[{k: str(v) for k, v in dec.items() if k in DECISION_KEYS} for dec in prov_d["decisions"]],
        budget=prov_d["budget"],
        source="tuneassist",
    )
    desc = description or f"Tuned by tuneassist ({checklist.budget} budget) for {spec.model} on {spec.data}."
    return profile_from_runspec(
        spec,
        name,
        description=desc,
        provenance=prov,
        measured_accuracy=_percent(final.get("test_acc")),
        measured_val_accuracy=_percent(final.get("val_acc")),
        measured_run=measured,
    )


def profile_fields() -> list[str]:
    """The attribute names of Profile (for UIs that show every field)."""
    return [f.name for f in fields(Profile) if f.name != "path"]
