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

This module holds the layout (the field tables the messages quote, the Profile dataclass); the
checks are in `profiles.validate`, files in `profiles.files`, run conversions in `profiles.convert`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from tuneassist.dataref import is_data_module
from tuneassist.profiles.toml_writer import dumps_toml
from tuneassist.spec import OPTIMIZERS

SCHEDULE_KINDS = ("onecycle",)


class Key(NamedTuple):
    """One key of the layout: its type, checked on load, and the words and example its messages quote."""

    kind: str  # "str", "int", "num" (finite int or float), "bool"; "" where it is checked on its own
    desc: str
    example: str


TOP_KEYS: dict[str, Key] = {
    "name": Key("str", "a non-empty string", 'name = "my-profile"'),
    "description": Key("str", "a string", 'description = "what it is for"'),
    "data": Key("str", "a data set name", 'data = "cifar10"'),
    "model": Key("str", "a model name", 'model = "resnet56"'),
    "batch_size": Key("int", "a positive integer (the total batch size)", "batch_size = 512"),
    "devices": Key("int", "a positive integer", "devices = 1"),
    "epochs": Key("num", "a number >= 1", "epochs = 30"),
    "lr_min": Key("num", "a positive number", "lr_min = 0.08"),
    "lr_max": Key("num", "a positive number", "lr_max = 0.8"),
    "momentum_max": Key("num", "a number in [0, 1)", "momentum_max = 0.95"),
    "momentum_min": Key("num", "a number in [0, 1)", "momentum_min = 0.85"),
    "weight_decay": Key("num", "0 or a positive number", "weight_decay = 1e-4"),
    "nesterov": Key("bool", "true or false", "nesterov = false"),
    "optimizer": Key("str", "one of: " + ", ".join(OPTIMIZERS), 'optimizer = "sgd"'),
    "train": Key("str", "a module:function, your training function", 'train = "mytrain:train"'),
    "image_size": Key("int", "a whole number of pixels (a folder's side)", "image_size = 64"),
    "wd_exclude_bn_bias": Key("bool", "true or false", "wd_exclude_bn_bias = false"),
    "notes": Key("str", "a string", 'notes = "..."'),
}
# The run settings, in the order a profile file lists them (after name and description).
RUN_KEYS = (
    "data",
    "model",
    "batch_size",
    "devices",
    "epochs",
    "lr_min",
    "lr_max",
    "momentum_max",
    "momentum_min",
    "weight_decay",
)
REQUIRED = ("name", *(k for k in RUN_KEYS if k != "devices"))  # devices defaults to 1
TABLE_KEYS: dict[str, dict[str, Key]] = {
    "schedule": {
        "kind": Key("str", "one of: " + ", ".join(SCHEDULE_KINDS), 'kind = "onecycle"'),
        "rise_fraction": Key("num", "a number in (0, 0.5]", "rise_fraction = 0.45"),
        "final_div": Key("num", "a number >= 1", "final_div = 100.0"),
        "steps_per_epoch": Key("int", "a positive integer", "steps_per_epoch = 87"),
    },
    "accuracy": {
        "expected": Key("num", "a percentage in [0, 100]", "expected = 92.0"),
        "expected_range": Key("", "two percentages [low, high]", "expected_range = [91.5, 92.2]"),
        "expected_source": Key("str", "a string", 'expected_source = "Smith 2018, Table 1"'),
        "measured": Key("num", "a percentage in [0, 100]", "measured = 91.2"),
        "measured_val": Key("num", "a percentage in [0, 100]", "measured_val = 91.0"),
        "measured_run": Key("str", "a string (run id)", 'measured_run = "r42"'),
    },
    "provenance": {
        "session": Key("str", "a string", 'session = "s1"'),
        "runs": Key("", "a list of run ids", 'runs = ["r1", "r2"]'),
        "decisions": Key("", "an array of tables", "[[provenance.decisions]]"),
        "tuneassist_version": Key("str", "a string", 'tuneassist_version = "0.1.0"'),
        "created": Key("str", "a string (ISO date)", 'created = "2025-01-01T00:00:00+00:00"'),
        "budget": Key("str", "a string", 'budget = "quick"'),
        "source": Key("str", "a string", 'source = "paper"'),
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
    image_size: int | None = None  # the side a folder:PATH was tuned at (train --profile trains at it)
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
        """True when the model (or the data) is `module:function`: running it imports user code."""
        return ":" in self.model or is_data_module(self.data)

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout as nested dicts (None and empty optional values left out)."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d.update({k: getattr(self, k) for k in RUN_KEYS})
        if self.nesterov:
            d["nesterov"] = True
        if self.optimizer != "sgd":
            d["optimizer"] = self.optimizer
        if self.train_fn:
            d["train"] = self.train_fn
        if self.image_size is not None:
            d["image_size"] = self.image_size
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


def safe_filename(name: str) -> str:
    """A profile name as a file name: letters, digits, '.', '-' and '_' kept, the rest '-'."""
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.strip()).strip(".-")
    return out or "profile"

def profile_fields() -> list[str]:
    """The attribute names of Profile (for UIs that show every field)."""
    return [f.name for f in fields(Profile) if f.name != "path"]
