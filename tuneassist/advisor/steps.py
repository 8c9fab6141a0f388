"""The checklist's steps and what it hands out: proposals, recommendations, decisions.

Plain data, JSON-able through `to_dict` / `jsonable`, shared by the state machine (`checklist`) and the
front ends that show it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tuneassist.curves import Curves
from tuneassist.spec import RunSpec

STEPS = ("lr_range", "batch_size", "momentum", "weight_decay", "final")
STEP_TITLES = {
    "lr_range": "LR range test",
    "batch_size": "Batch size",
    "momentum": "Momentum",
    "weight_decay": "Weight decay",
    "final": "1cycle run",
}
SWEEP_STEPS = ("batch_size", "momentum", "weight_decay")
# The hyperparameters a profile variant of the final step sets.
HPARAMS = ("lr_min", "lr_max", "momentum_max", "momentum_min", "weight_decay", "batch_size")
FINAL_LABELS = {"tuned": "tuned profile", "lr_only": "LR-only profile", "baseline": "untuned baseline"}


# ---------------------------------------------------------------------------------------------
# Curves handed back by the caller


# One type for a run's curves (tuneassist/curves.py); the advisor's name for it stays.
RunCurves = Curves


def as_curves(c: RunCurves | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> RunCurves:
    """Accept RunCurves, a list of engine events, or a RunCurves-shaped dict."""
    if isinstance(c, RunCurves):
        return c
    if isinstance(c, Mapping):
        known = set(RunCurves.__dataclass_fields__)
        return RunCurves(**{k: v for k, v in c.items() if k in known})
    return RunCurves.from_events(c)


# ---------------------------------------------------------------------------------------------
# What the checklist hands out


@dataclass
class Candidate:
    key: str
    label: str
    value: Any
    spec: RunSpec


@dataclass
class Proposal:
    step: str
    title: str
    candidates: list[Candidate]  # the runs still to do for this step
    explanation: str
    images: int  # training images these runs process (for an ETA)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "title": self.title,
            "explanation": self.explanation,
            "images": self.images,
            "candidates": [
                {"key": c.key, "label": c.label, "value": jsonable(c.value), "spec": c.spec.to_dict()}
                for c in self.candidates
            ],
        }


@dataclass
class Recommendation:
    step: str
    value: Any
    label: str | None
    reason: str
    ok: bool = True  # False: nothing usable (see reason); needs_more_runs may offer a retry
    needs_more_runs: bool = False  # the step asks for the runs in `add` (WD refinement, retry, refine)
    confidence: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    add: list[dict[str, Any]] = field(
        default_factory=list
    )  # candidates to add ({key, value}); see add_candidates

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["value"] = jsonable(self.value)
        d["add"] = jsonable(self.add)
        return d


@dataclass
class Decision:
    step: str
    value: Any
    label: str
    source: str  # 'recommended' | 'override'
    reason: str
    run_ids: list[str] = field(default_factory=list)
    stale: bool = False


def jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def range_pair(value: Any) -> tuple[float, float]:
    """A range-test candidate as (low, high): stored as [low, high]; a {lr_min, lr_max} dict (what
    sessions saved before set_candidates stored pairs) reads the same."""
    if isinstance(value, Mapping):
        return float(value["lr_min"]), float(value["lr_max"])
    lo, hi = value
    return float(lo), float(hi)
