"""Conversions between profiles and runs: the run a profile describes, the profile a run or a
finished checklist makes (always re-validated, so a conversion never yields a profile that would not load)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import tuneassist
from tuneassist.errors import UserError
from tuneassist.profiles.schema import DECISION_KEYS, Profile, Provenance
from tuneassist.profiles.validate import profile_from_dict
from tuneassist.spec import RunSpec

if TYPE_CHECKING:
    from tuneassist.advisor.checklist import Checklist

# The settings a profile and a RunSpec both hold, under the same name and meaning (epochs differ:
# a profile keeps a whole number as an int, a RunSpec holds a float).
SHARED_FIELDS = (
    "data",
    "model",
    "batch_size",
    "devices",
    "lr_min",
    "lr_max",
    "momentum_max",
    "momentum_min",
    "weight_decay",
    "wd_exclude_bn_bias",
    "nesterov",
    "optimizer",
    "train_fn",
    "image_size",
    "rise_fraction",
    "final_div",
)


def profile_to_runspec(profile: Profile, *, allow_import: bool = False, **overrides: Any) -> RunSpec:
    """The 1cycle run a profile describes. `overrides` set other RunSpec fields (device, data_dir ...).

    A `module:function` model needs `allow_import=True`: running it imports and calls user code.
    """
    if profile.needs_import and not allow_import:
        raise UserError(
            f"profile {profile.name!r} uses "
            + (f"model {profile.model!r}" if ":" in profile.model else f"data {profile.data!r}")
            + ", which imports and runs Python code; "
            "allow imports (e.g. --allow-import) only if you trust it"
        )
    kw: dict[str, Any] = {k: getattr(profile, k) for k in SHARED_FIELDS}
    kw.update(schedule="onecycle", epochs=float(profile.epochs), test=True, allow_import=allow_import)
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
        epochs=epochs,
        description=description,
        measured_accuracy=measured_accuracy,
        measured_val_accuracy=measured_val_accuracy,
        measured_run=measured_run,
        provenance=prov,
        **{k: getattr(spec, k) for k in SHARED_FIELDS},
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
