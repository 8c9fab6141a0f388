"""The state a tuning session keeps: the fields the store persists, and the facts derived from them.

`ChecklistState` holds every field of a `Checklist` (the whole state is a JSON-able dict); the parts
of the checklist's behaviour live in mixins on it (`plan`, `run_specs`, `explain`, `reading`) and the
state machine itself in `checklist`. The methods one mixin calls on another are declared here, for
the type checker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuneassist.advisor.budget import (
    BUDGETS,
    DEFAULT_BATCH,
    FALLBACK_TRAIN_SIZE,
    TRAIN_SIZES,
    Budget,
    pow2_floor,
)
from tuneassist.advisor.grids import model_kind
from tuneassist.advisor.steps import STEPS, Candidate, Decision
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec


@dataclass
class ChecklistState:
    """The fields of a `Checklist` (one tuning session's progress) and what follows from them alone."""

    data: str
    model: str
    budget: str = "quick"
    devices: int = 1
    max_fit: int | None = None  # largest per-device batch that fits (memory probe); None: unknown
    train_size: int | None = None  # training images; None: the known size of a built-in data set
    start_batch: int | None = None  # the batch size the user trains with; None: the CLI's 128
    epochs: int | None = None  # the final run's epochs when the user states them; None: the budget's
    refine: int = 0  # runs the final step may add to act on its own diagnosis
    time_s: float | None = None  # a wall-time budget for the whole checklist (tune --time); see time_plan
    images_per_s: float | None = None  # the training speed the time budget is planned with
    baseline: bool = True  # train the untuned baseline beside the final run
    allow_import: bool = False  # the user's consent to import a module:function model (tune --allow-import)
    model_dir: str | None = None  # where that module was found at launch (tuneassist.usercode)
    train_fn: str | None = None  # the user's own training function, tune --train (engine/usertrain.py)
    image_size: int | None = None  # a folder's side, tune --image-size (None: its most common size)
    stream: bool = False  # tune --stream: every run reads its data through DataLoader workers
    session_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    candidates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    runs: dict[str, dict[str, str]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    start: dict[str, Any] = field(default_factory=dict)  # the values before any step: the LR-only profile's

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise UserError(f"unknown budget {self.budget!r}; use one of {', '.join(BUDGETS)}")
        if self.devices < 1:
            raise UserError(f"devices {self.devices} must be at least 1")
        RunSpec(data=self.data, model=self.model).validate()  # unknown data/model: one clear error
        if not self.values:
            tbs = self.default_tbs()
            shallow = self.kind == "shallow"
            self.values = {
                "lr_min": 0.01 if shallow else 0.1,
                "lr_max": 0.1 if shallow else 1.0,
                "lr_tbs": tbs,
                "batch_size": tbs,
                "momentum_max": 0.95,
                "momentum_min": 0.85,
                "weight_decay": 1e-3 if shallow else 1e-4,
            }
        if not self.start:
            self.start = dict(self.values)

    # -- derived facts -----------------------------------------------------------------------

    @property
    def plan(self) -> Budget:
        return BUDGETS[self.budget]

    @property
    def kind(self) -> str:
        return model_kind(self.model)

    @property
    def n_train(self) -> int:
        return self.train_size or TRAIN_SIZES.get(self.data, FALLBACK_TRAIN_SIZE)

    def default_tbs(self) -> int:
        """The start TBS (range test, baseline): the user's batch size, the CLI's 128 when none, brought
        down to a power of two that fits memory and leaves 40 steps per epoch.

        Not the largest that fits: the final run's budget is in epochs, and at a few epochs a larger TBS
        means too few steps (the TBS step can still move it on evidence)."""
        tbs = float(self.start_batch or DEFAULT_BATCH)
        cap = self.n_train / 40
        if self.max_fit is not None:
            cap = min(cap, self.max_fit * self.devices)
        if tbs > cap:
            tbs = max(16, pow2_floor(cap))
        t = int(tbs)
        return max(self.devices, t - t % self.devices)

    def baseline_batch(self) -> int:
        """The batch the user trains with (the CLI's 128 when none named), only brought down to what
        fits memory: not the checklist's start TBS, which may also be capped by the data's size."""
        tbs = int(self.start_batch or DEFAULT_BATCH)
        if self.max_fit is not None and tbs > self.max_fit * self.devices:
            tbs = max(16, pow2_floor(self.max_fit * self.devices))
        return max(self.devices, tbs - tbs % self.devices)

    def effective_lr(self, batch_size: int | None = None) -> tuple[float, float]:
        """The LR range at `batch_size` (default: the current TBS), rescaled from the TBS it was found at."""
        tbs = batch_size or int(self.values["batch_size"])
        f = tbs / int(self.values["lr_tbs"])
        return float(self.values["lr_min"]) * f, float(self.values["lr_max"]) * f

    @property
    def current_step(self) -> str | None:
        for s in STEPS:
            d = self.decisions.get(s)
            if d is None or d.stale:
                return s
        return None

    @property
    def done(self) -> bool:
        return self.current_step is None

    if TYPE_CHECKING:  # defined by the mixins (see the module notes)

        def final_epochs(self) -> int: ...

        def short_epochs(self) -> float: ...

        def _spec_for(self, step: str, value: Any) -> RunSpec: ...

        def _cands(self, step: str) -> list[dict[str, Any]]: ...

        def candidate_list(self, step: str) -> list[Candidate]: ...

        def _label(self, step: str, value: Any) -> str: ...
