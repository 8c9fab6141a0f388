"""The paper's checklist as a pure state machine: which runs to do next, and what their curves decide.

A session moves through five steps: LR range test -> total batch size -> momentum -> weight decay ->
the final 1cycle run. For each step the checklist proposes run specs, the caller runs them (the
`runs` layer), hands the curves back, and gets a recommendation with its reason; the caller accepts
it or overrides the value. Changing an earlier value marks the later decisions stale. There is no
I/O here: the whole state is a JSON-able dict (`to_dict` / `from_dict`) that the store persists.

Typical use (autopilot)::

    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    while not cl.done:
        prop = cl.propose()                      # the runs still to do for the current step
        for cand in prop.candidates:
            cl.attach_run(prop.step, cand.key, launch(cand.spec))
        rec = cl.recommend(prop.step, {key: RunCurves.from_events(events(run_id))
                                       for key, run_id in cl.runs[prop.step].items()})
        if rec.needs_more_runs:                  # WD refinement, a range-test retry, a refinement
            cl.add_candidates(prop.step, rec.add)
            continue
        if not rec.ok:
            stop_and_show(rec.reason)
        cl.accept(rec)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from tuneassist.advisor.diagnosis import diagnose
from tuneassist.advisor.lr_range import fmt_num, suggest_lr
from tuneassist.advisor.sweep import (
    SweepCandidate,
    batch_size_candidates,
    model_kind,
    momentum_candidates,
    rank_sweep,
    refine_between,
    rescale_lr_for_batch,
    value_label,
    weight_decay_grid,
)
from tuneassist.curves import Curves
from tuneassist.dataref import BUILTIN as BUILTIN_DATA_FACTS
from tuneassist.dataref import after_holdout
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec, lr_range_ok

STEPS = ("lr_range", "batch_size", "momentum", "weight_decay", "final")
STEP_TITLES = {
    "lr_range": "LR range test",
    "batch_size": "Batch size",
    "momentum": "Momentum",
    "weight_decay": "Weight decay",
    "final": "1cycle run",
}
SWEEP_STEPS = ("batch_size", "momentum", "weight_decay")
# Training split sizes (after the default 10% validation hold-out) of the built-in data sets.
TRAIN_SIZES = {k: after_holdout(f.train) for k, f in BUILTIN_DATA_FACTS.items()}
FALLBACK_TRAIN_SIZE = TRAIN_SIZES["cifar10"]
# The final run's length in the paper (DESIGN.md §2) when the budget is 'paper'.
PAPER_EPOCHS = {("resnet56", "cifar10"): 95, ("densenet40", "cifar10"): 100, ("resnet56", "cifar100"): 100}
PAPER_EPOCHS_DEFAULT = 100
PAPER_EPOCHS_SHALLOW = 30


@dataclass(frozen=True)
class Budget:
    """How much training each step spends: the knob between a CPU demo and the paper's runs."""

    name: str
    range_steps: int
    range_lr: tuple[float, float]
    range_evals: int  # validation points recorded during the range test
    eval_subset: int | None  # validation images per evaluation in short runs (None: all)
    short_epochs: float  # length of one sweep candidate
    short_images: int | None  # ...but at most this many training images (large data sets)
    short_evals: int  # validation points per sweep candidate
    final_epochs: int | None  # None: the paper's epochs for this model and data
    final_images: int | None  # cap on the final run's training images
    wd_refine: bool  # one extra WD run between the two best
    range_retries: int = 1  # extra range tests when the first one cannot be read


BUDGETS: dict[str, Budget] = {
    # quick: synthetic + simple3 on 2 idle CPU cores in ~9 minutes (memory probe, 13 runs and
    # the baseline: about 330k training images; a 200-step range test read the LR 3x too low).
    "quick": Budget("quick", 300, (1e-4, 10.0), 20, 1000, 1.5, 15_000, 8, 8, 120_000, True),
    "standard": Budget("standard", 600, (1e-5, 10.0), 30, 2000, 5.0, None, 12, 30, None, True),
    "paper": Budget("paper", 1000, (1e-5, 10.0), 40, None, 15.0, None, 15, None, None, True),
}
# The batch size a user trains with when they name none (the CLI's default): the untuned baseline's.
DEFAULT_BATCH = 128
# Validation points of a final-length run (at least one per epoch): enough for a diagnosis.
FINAL_EVALS = 10
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
                {"key": c.key, "label": c.label, "value": _jsonable(c.value), "spec": c.spec.to_dict()}
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
        d["value"] = _jsonable(self.value)
        d["add"] = _jsonable(self.add)
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


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _range_pair(value: Any) -> tuple[float, float]:
    """A range-test candidate as (low, high): stored as [low, high]; a {lr_min, lr_max} dict (what
    sessions saved before set_candidates stored pairs) reads the same."""
    if isinstance(value, Mapping):
        return float(value["lr_min"]), float(value["lr_max"])
    lo, hi = value
    return float(lo), float(hi)


def _pow2_floor(n: float) -> int:
    return 2 ** int(math.floor(math.log2(max(1.0, n))))


# ---------------------------------------------------------------------------------------------
# The state machine


@dataclass
class Checklist:
    """One tuning session's progress through the checklist; JSON-able via to_dict/from_dict."""

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
            tbs = max(16, _pow2_floor(cap))
        t = int(tbs)
        return max(self.devices, t - t % self.devices)

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

    def final_epochs(self) -> int:
        if self.epochs:
            return int(self.epochs)
        if self.time_s:
            return self.time_plan()["final_epochs"]
        b = self.plan
        if b.final_epochs is not None:
            epochs = b.final_epochs
        elif self.kind == "shallow":
            epochs = PAPER_EPOCHS_SHALLOW
        else:
            epochs = PAPER_EPOCHS.get((self.model, self.data), PAPER_EPOCHS_DEFAULT)
        if b.final_images is not None:
            epochs = min(epochs, max(1, b.final_images // self.n_train))
        return epochs

    def short_epochs(self) -> float:
        if self.time_s:
            return self.time_plan()["short_epochs"]
        b = self.plan
        e = b.short_epochs
        if b.short_images is not None:
            e = min(e, b.short_images / self.n_train)
        return round(e, 2)

    def time_plan(self) -> dict[str, Any]:
        """Split a wall-time budget (`time_s` at `images_per_s`) over the steps: the range test first,
        then half of what is left to the sweeps' short runs and half to the final step's runs (the tuned
        one, the LR-only profile, the baseline and any refinement), all at equal length within a step.

        A quarter of the time is kept for evaluations and start-up. The final runs get at least one
        epoch; a stated --epochs is kept and the sweeps get the rest."""
        ips = float(self.images_per_s or 1000.0)
        usable = 0.75 * float(self.time_s or 0.0) * ips
        b = self.plan
        tbs = int(self.values["lr_tbs"])
        range_imgs = b.range_steps * tbs
        sweep_runs = (
            len(self._cands("batch_size")) + len(self._cands("momentum")) + len(self._cands("weight_decay"))
        )
        sweep_runs += 1 if b.wd_refine else 0
        final_runs = 1 + 1 + int(self.baseline) + self.refine  # tuned, LR-only, baseline, refinements
        left = max(0.0, usable - range_imgs)
        if self.epochs:
            final_epochs = int(self.epochs)
            short_imgs = max(0.0, left - final_runs * final_epochs * self.n_train) / sweep_runs
        else:
            final_epochs = max(1, int(left / 2 / (final_runs * self.n_train)))
            short_imgs = max(0.0, left - final_runs * final_epochs * self.n_train) / sweep_runs
        short = round(min(b.short_epochs, max(0.1, short_imgs / self.n_train)), 2)
        return {
            "images_per_s": ips,
            "range_images": range_imgs,
            "sweep_runs": sweep_runs,
            "short_epochs": short,
            "final_runs": final_runs,
            "final_epochs": final_epochs,
            "fits": usable
            >= range_imgs + sweep_runs * short * self.n_train + final_runs * final_epochs * self.n_train,
        }

    def time_plan_text(self) -> str:
        """How a time budget was split, in one sentence (tune prints it)."""
        t = self.time_plan()
        ips = t["images_per_s"]

        def mins(imgs: float) -> str:
            return f"{imgs / ips / 0.75 / 60:.1f} min"

        sweeps = t["sweep_runs"] * t["short_epochs"] * self.n_train
        final = t["final_runs"] * t["final_epochs"] * self.n_train
        warn = "" if t["fits"] else " It does not fit: the shortest useful runs need more time."
        return (
            f"Time budget {(self.time_s or 0) / 60:.0f} min at {ips:,.0f} img/s: range test "
            f"~{mins(t['range_images'])}; "
            f"{t['sweep_runs']} sweep runs of {fmt_num(t['short_epochs'])} epochs ~{mins(sweeps)}; "
            f"{t['final_runs']} final-step runs of {t['final_epochs']} epochs ~{mins(final)}.{warn}"
        )

    # -- specs ---------------------------------------------------------------------------------

    def _spec(self, **kw: Any) -> RunSpec:
        base: dict[str, Any] = dict(
            data=self.data,
            model=self.model,
            devices=self.devices,
            batch_size=int(self.values["batch_size"]),
            momentum_max=float(self.values["momentum_max"]),
            momentum_min=float(self.values["momentum_min"]),
            weight_decay=float(self.values["weight_decay"]),
            seed=0,
            test=False,
            eval_subset=self.plan.eval_subset,
            allow_import=self.allow_import,
            model_dir=self.model_dir,
            train_fn=self.train_fn,
        )
        base.update(kw)
        return RunSpec(**base).validate()

    def _short_spec(self, **kw: Any) -> RunSpec:
        """A sweep candidate: a compressed 1cycle run, evaluated `short_evals` times."""
        tbs = int(kw.get("batch_size", self.values["batch_size"]))
        lo, hi = self.effective_lr(tbs)
        epochs = self.short_epochs()
        steps = max(1, round(epochs * max(1, self.n_train // tbs)))
        kw.setdefault("lr_min", lo)
        kw.setdefault("lr_max", hi)
        return self._spec(
            schedule="onecycle",
            epochs=epochs,
            eval_every=max(1, math.ceil(steps / self.plan.short_evals)),
            **kw,
        )

    def _final_length(self, **kw: Any) -> RunSpec:
        """A run of the final step's length: evaluated FINAL_EVALS times (on a subset), then on the
        full validation and test splits at the end."""
        tbs = int(kw.get("batch_size", self.values["batch_size"]))
        epochs = float(self.final_epochs())
        steps = max(1, round(epochs * max(1, self.n_train // tbs)))
        every = max(1, math.ceil(steps / max(FINAL_EVALS, math.ceil(epochs))))
        return self._spec(epochs=epochs, eval_every=every, test=True, **kw)

    def final_spec(self) -> RunSpec:
        """The 1cycle run with every chosen value."""
        lo, hi = self.effective_lr()
        return self._final_length(schedule="onecycle", lr_min=lo, lr_max=hi)

    def baseline_spec(self) -> RunSpec:
        """What the user would have trained without the tool (DESIGN.md §6): SGD, constant LR 0.01,
        momentum 0.9, no WD, at the start batch size, for the final run's epochs. Never a tuned value."""
        return self._final_length(
            schedule="constant",
            lr_min=0.01,
            lr_max=0.01,
            momentum_max=0.9,
            momentum_min=0.9,
            weight_decay=0.0,
            batch_size=self.baseline_batch(),
        )

    def baseline_batch(self) -> int:
        """The batch the user trains with (the CLI's 128 when none named), only brought down to what
        fits memory: not the checklist's start TBS, which may also be capped by the data's size."""
        tbs = int(self.start_batch or DEFAULT_BATCH)
        if self.max_fit is not None and tbs > self.max_fit * self.devices:
            tbs = max(16, _pow2_floor(self.max_fit * self.devices))
        return max(self.devices, tbs - tbs % self.devices)

    def lr_only_spec(self) -> RunSpec:
        """1cycle at the range test's LR with every later step at its start value: what each later step
        must beat to earn its place."""
        tbs = int(self.start["batch_size"])
        lo, hi = self.effective_lr(tbs)
        return self._final_length(
            schedule="onecycle",
            lr_min=lo,
            lr_max=hi,
            batch_size=tbs,
            momentum_max=float(self.start["momentum_max"]),
            momentum_min=float(self.start["momentum_min"]),
            weight_decay=float(self.start["weight_decay"]),
        )

    def profile_spec(self) -> RunSpec:
        """The settings the profile saves: the final step's winning variant (the tuned values unless
        another validated better), or the tuned values before the final step has been read."""
        hp = (self.final or {}).get("hparams")
        spec = self.final_spec()
        return replace(spec, **{k: hp[k] for k in HPARAMS if k in hp}).validate() if hp else spec

    # -- candidates ----------------------------------------------------------------------------

    def _default_candidates(self, step: str) -> list[dict[str, Any]]:
        if step == "lr_range":
            lo, hi = self.plan.range_lr
            return [{"key": "range", "value": [lo, hi]}]
        if step == "batch_size":
            sizes = batch_size_candidates(
                int(self.values["lr_tbs"]), self.max_fit, self.devices, train_size=self.n_train
            )
            return [{"key": f"tbs{t}", "value": t} for t in sizes]
        if step == "momentum":
            return [
                {"key": f"m{value_label('momentum', m)}", "value": list(m)}
                for m in momentum_candidates(self.model)
            ]
        if step == "weight_decay":
            return [{"key": f"wd{value_label(step, w)}", "value": w} for w in weight_decay_grid(self.kind)]
        return self._final_variants()

    def _final_variants(self) -> list[dict[str, Any]]:
        """The tuned run, beside it what it must beat (the LR-only profile, when it differs, and the
        untuned baseline), then any refinement the diagnosis asked for. Built from the current values
        each time, so it never goes stale; only the refinements are stored."""
        out = [{"key": "final", "value": "tuned"}]
        if self.lr_only_spec().to_dict() != self.final_spec().to_dict():
            out.append({"key": "lr_only", "value": "lr_only"})
        if self.baseline:
            out.append({"key": "baseline", "value": "baseline"})
        have = {c["key"] for c in out}  # a session saved by an older version stored {"key": "final"}
        return out + [c for c in self.candidates.get("final", []) if c["key"] not in have]

    def add_candidates(self, step: str, add: Sequence[Mapping[str, Any]]) -> None:
        """Add the runs a recommendation asked for (`Recommendation.add`), once each."""
        have = {c["key"] for c in self._cands(step)}
        stored = self.candidates.setdefault(step, [] if step == "final" else self._cands(step))
        for c in add:
            if c["key"] not in have:
                stored.append({"key": str(c["key"]), "value": _jsonable(c["value"])})
                have.add(c["key"])

    def _cands(self, step: str) -> list[dict[str, Any]]:
        if step == "final":
            return self._final_variants()
        if step not in self.candidates:
            self.candidates[step] = self._default_candidates(step)
        return self.candidates[step]

    def set_candidates(self, step: str, values: Sequence[Any]) -> None:
        """Replace the values a step will try (the user edits the proposal); forgets its runs."""
        if step not in SWEEP_STEPS and step != "lr_range":
            raise UserError(
                f"step {step!r} has no candidates to edit; editable: lr_range, {', '.join(SWEEP_STEPS)}"
            )
        if not values:
            raise UserError(f"give at least one value for {STEP_TITLES[step]}")
        norm = [self._normalise(step, v) for v in values]
        if step == "lr_range":
            # One range test, stored as [low, high] like the default and the retries (the normalised
            # form is a decision's {lr_min, lr_max, tbs}, which the range-test spec cannot take).
            norm = [_range_pair(norm[-1])]
        self.candidates[step] = [
            {"key": f"{step}-{i}" if step != "lr_range" else "range", "value": _jsonable(v)}
            for i, v in enumerate(norm)
        ]
        self._forget_runs(step)

    def _spec_for(self, step: str, value: Any) -> RunSpec:
        if step == "lr_range":
            lo, hi = _range_pair(value)
            b = self.plan
            return self._spec(
                schedule="range_exp",
                lr_min=float(lo),
                lr_max=float(hi),
                steps=b.range_steps,
                eval_every=max(1, b.range_steps // b.range_evals),
                momentum_max=0.95,
                momentum_min=0.85,
            )
        if step == "batch_size":
            return self._short_spec(batch_size=int(value))
        if step == "momentum":
            return self._short_spec(momentum_max=float(value[0]), momentum_min=float(value[1]))
        if step == "weight_decay":
            return self._short_spec(weight_decay=float(value))
        if value == "lr_only":
            return self.lr_only_spec()
        if value == "baseline":
            return self.baseline_spec()
        if isinstance(value, Mapping):  # a refinement: concrete values
            return replace(self.final_spec(), **{k: value["hparams"][k] for k in HPARAMS}).validate()
        return self.final_spec()

    def _label(self, step: str, value: Any) -> str:
        if step == "lr_range":
            lo, hi = _range_pair(value)
            return f"{fmt_num(lo)} → {fmt_num(hi)}"
        if step == "final":
            if isinstance(value, Mapping):
                return f"refined ({value.get('change', 'diagnosis')})"
            return FINAL_LABELS.get(str(value), "1cycle")
        return value_label(step, value)

    def candidate_list(self, step: str) -> list[Candidate]:
        """Every candidate of a step with its spec built from the current values."""
        out = []
        for c in self._cands(step):
            v = list(_range_pair(c["value"])) if step == "lr_range" else c["value"]
            out.append(Candidate(c["key"], self._label(step, v), v, self._spec_for(step, v)))
        return out

    def propose(self, step: str | None = None) -> Proposal:
        """The runs still to do for `step` (default: the current step), with what they are for."""
        step = step or self.current_step
        if step is None:
            raise UserError("the checklist is complete; change a step's value to revisit it")
        if step not in STEPS:
            raise UserError(f"unknown checklist step {step!r}; steps: {', '.join(STEPS)}")
        attached = self.runs.get(step, {})
        cands = [c for c in self.candidate_list(step) if c.key not in attached]
        images = sum(self._images(c.spec) for c in cands)
        return Proposal(step, STEP_TITLES[step], cands, self._explain(step), images)

    def _images(self, spec: RunSpec) -> int:
        if spec.steps is not None:
            return spec.steps * spec.batch_size
        return int(spec.epochs * (self.n_train // spec.batch_size) * spec.batch_size)

    def _explain(self, step: str) -> str:
        b = self.plan
        lo, hi = self.effective_lr()
        mom = value_label("momentum", (self.values["momentum_max"], self.values["momentum_min"]))
        e = self.short_epochs()
        short = f"{fmt_num(e)} epoch{'' if e == 1 else 's'} each"
        if step == "lr_range":
            r = _range_pair(self._cands(step)[-1]["value"])
            return (
                f"LR grows {fmt_num(r[0])} → {fmt_num(r[1])} over {b.range_steps} steps (TBS "
                f"{self.values['batch_size']}) with momentum 0.95→0.85. The largest LR where validation loss "
                "still falls is the top of 1cycle."
            )
        vals = ", ".join(self._label(step, c["value"]) for c in self._cands(step))
        if step == "batch_size":
            return (
                f"Short 1cycle runs ({short}) at TBS {vals}: equal epochs, so each sees the same data; "
                "the LR is rescaled with the TBS (linear scaling rule). Larger TBS regularises less."
            )
        if step == "momentum":
            return (
                f"Short 1cycle runs ({short}) at LR {fmt_num(lo)} → {fmt_num(hi)} with momentum {vals} "
                "(constant, and cyclical falling while the LR rises); ranked by validation loss early in "
                "training."
            )
        if step == "weight_decay":
            why = "shallow nets need more regularisation" if self.kind == "shallow" else "deep nets need less"
            more = ", then one value between the two best" if b.wd_refine else ""
            return (
                f"Short 1cycle runs ({short}) with WD {vals} ({why}){more}; ranked by validation loss "
                "early in training, by accuracy when the loss does not separate them."
            )
        beside = []
        if any(c["key"] == "lr_only" for c in self._cands("final")):
            beside.append("the LR-only profile (every later step at its start value)")
        if self.baseline:
            beside.append(
                "the untuned baseline (SGD, constant LR 0.01, momentum 0.9, no WD, "
                f"TBS {self.baseline_batch()})"
            )
        cmp = (
            f" Beside it, at the same epochs: {' and '.join(beside)}; the profile keeps whichever tuned "
            "variant validates best."
            if beside
            else ""
        )
        return (
            f"The final 1cycle run: LR {fmt_num(lo)} → {fmt_num(hi)} and back over {self.final_epochs()} "
            f"epochs, momentum {mom}, WD {value_label('weight_decay', self.values['weight_decay'])}, "
            f"TBS {self.values['batch_size']}.{cmp}"
        )

    def attach_run(self, step: str, key: str, run_id: str) -> None:
        """Record which run executes a candidate (provenance, and so propose() skips it)."""
        if key not in {c["key"] for c in self._cands(step)}:
            raise UserError(f"step {step!r} has no candidate {key!r}")
        self.runs.setdefault(step, {})[key] = run_id

    def _forget_runs(self, step: str) -> None:
        if self.runs.get(step):
            self.history.append({"event": "runs_superseded", "step": step, "runs": dict(self.runs[step])})
        self.runs.pop(step, None)

    # -- reading results -------------------------------------------------------------------------

    def recommend(
        self, step: str, curves: Mapping[str, RunCurves | Mapping[str, Any] | Sequence[Mapping[str, Any]]]
    ) -> Recommendation:
        """Read the finished runs of `step` (candidate key -> curves) into a recommendation."""
        if step not in STEPS:
            raise UserError(f"unknown checklist step {step!r}; steps: {', '.join(STEPS)}")
        cs = {k: as_curves(v) for k, v in curves.items()}
        if step == "lr_range":
            return self._recommend_lr(cs)
        if step == "final":
            return self._recommend_final(cs)
        return self._recommend_sweep(step, cs)

    def _recommend_lr(self, cs: dict[str, RunCurves]) -> Recommendation:
        cands = self._cands("lr_range")
        have = [c for c in cands if c["key"] in cs]
        if not have:
            raise UserError("no range-test curves given; run the proposed range test first")
        latest = have[-1]
        c = cs[latest["key"]]
        s = suggest_lr(
            c.lrs,
            c.train_loss,
            c.eval_lrs() or None,
            c.val_loss or None,
            diverged_at_lr=c.diverged_lr if c.outcome == "diverged" else None,
        )
        tbs = int(self.values["batch_size"])
        tries = sum(1 for x in cands if x["key"].startswith("range"))
        retry_ok = s.retry_range is not None and tries <= self.plan.range_retries
        wants_retry = s.max_lr is None or s.failure == "no_divergence"
        detail = s.to_dict()
        if wants_retry and retry_ok:
            lo, hi = s.retry_range  # type: ignore[misc]
            return Recommendation(
                "lr_range",
                None if s.max_lr is None else {"lr_min": s.min_lr, "lr_max": s.max_lr, "tbs": tbs},
                None,
                f"{s.explanation} Re-running the range test over {fmt_num(lo)} → {fmt_num(hi)}.",
                ok=s.max_lr is not None,
                needs_more_runs=True,
                confidence=s.confidence,
                detail=detail,
                add=[{"key": f"range{tries + 1}", "value": [lo, hi]}],
            )
        if s.max_lr is None or s.min_lr is None:
            return Recommendation(
                "lr_range", None, None, s.explanation, ok=False, confidence="low", detail=detail
            )
        value = {"lr_min": s.min_lr, "lr_max": s.max_lr, "tbs": tbs}
        return Recommendation(
            "lr_range",
            value,
            f"{fmt_num(s.min_lr)} → {fmt_num(s.max_lr)}",
            s.explanation,
            confidence=s.confidence,
            detail=detail,
        )

    def _current_value(self, step: str) -> Any:
        """The value a sweep starts from (kept when its runs cannot tell the candidates apart)."""
        v = self.values
        if step == "batch_size":
            return int(v["lr_tbs"])
        if step == "momentum":
            return (float(v["momentum_max"]), float(v["momentum_min"]))
        return float(v["weight_decay"])

    def _recommend_sweep(self, step: str, cs: dict[str, RunCurves]) -> Recommendation:
        cands = self._cands(step)
        sweep = []
        for c in cands:
            rc = cs.get(c["key"])
            if rc is None:
                continue
            sweep.append(
                SweepCandidate(
                    value=tuple(c["value"]) if isinstance(c["value"], list) else c["value"],
                    steps=rc.eval_steps,
                    val_loss=rc.val_loss,
                    val_acc=rc.val_acc or None,
                    epochs=rc.eval_epochs or None,
                    train_steps=rc.steps,
                    train_loss=rc.train_loss,
                    diverged=rc.outcome == "diverged",
                    run_id=rc.run_id or self.runs.get(step, {}).get(c["key"]),
                    num_classes=rc.num_classes,
                )
            )
        if not sweep:
            raise UserError(f"no curves given for {STEP_TITLES[step]}; run the proposed candidates first")
        res = rank_sweep(step, sweep, model=self.model, start=self._current_value(step))
        rows = [asdict(r) for r in res.rows]
        detail = _jsonable(res.to_dict())
        if res.winner is None:
            return Recommendation(step, None, None, res.explanation, ok=False, rows=rows, detail=detail)

        # Weight decay: one more run between the two best grid values (the paper's refinement).
        if step == "weight_decay" and self.plan.wd_refine and not any(c["key"] == "wd_refine" for c in cands):
            ranked = sorted((r for r in res.rows if r.rank is not None), key=lambda r: r.rank or 0)
            if len(ranked) >= 2 and len(sweep) == len(cands):
                try:
                    mid = refine_between(float(ranked[0].value), float(ranked[1].value))
                except ValueError:
                    mid = None
                if mid is not None and all(not math.isclose(mid, float(c["value"])) for c in cands):
                    return Recommendation(
                        step,
                        res.winner,
                        res.winner_label,
                        f"{res.explanation} Refining: one more run at WD {value_label(step, mid)}, between "
                        f"{ranked[0].label} and {ranked[1].label}.",
                        needs_more_runs=True,
                        rows=rows,
                        detail=detail,
                        add=[{"key": "wd_refine", "value": mid}],
                    )

        reason = res.explanation
        if step == "batch_size":
            tbs = int(res.winner)
            if tbs != int(self.values["lr_tbs"]):
                lo, hi = self.effective_lr(tbs)
                why = rescale_lr_for_batch(float(self.values["lr_max"]), int(self.values["lr_tbs"]), tbs)
                reason += f" The 1cycle range becomes {fmt_num(lo)} → {fmt_num(hi)}: {why.reason}."
        value = list(res.winner) if isinstance(res.winner, tuple) else res.winner
        return Recommendation(step, value, res.winner_label, reason, rows=rows, detail=detail)

    def _variant_hparams(self, c: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._spec_for("final", c["value"])
        return {k: getattr(spec, k) for k in HPARAMS}

    def _recommend_final(self, cs: dict[str, RunCurves]) -> Recommendation:
        """Read the final step: the tuned run against the LR-only profile and the untuned baseline.

        The profile keeps the tuned variant (tuned, LR-only, refinements) with the best validation
        accuracy: a later step that did not help at the final budget gives way. The test split only
        reports. When the winner's diagnosis names a concrete remedy and `refine` allows, the step asks
        for one more run with it."""
        variants = {c["key"]: c for c in self._cands("final")}
        if not any(k in cs for k in variants):
            raise UserError("no curves given for the final run")
        results: dict[str, dict[str, Any]] = {}
        for k in variants:
            c = cs.get(k)
            if c is None:
                continue
            end = c.end or {}
            results[k] = {
                "outcome": c.outcome,
                **{m: end.get(m) for m in ("val_loss", "val_acc", "test_loss", "test_acc")},
                "epochs": end.get("epoch"),
            }
        order = [k for k in variants if k != "baseline"]
        pool = [
            k
            for k in order
            if results.get(k, {}).get("outcome") == "finished" and results[k]["val_acc"] is not None
        ]
        chosen = max(pool, key=lambda k: (results[k]["val_acc"], -order.index(k))) if pool else "final"
        c = cs.get(chosen) or next(iter(cs.values()))
        hp = self._variant_hparams(variants[chosen])
        d = diagnose(
            c.steps,
            c.train_loss,
            c.eval_steps,
            c.val_loss,
            c.val_acc or None,
            current={k: hp[k] for k in ("lr_max", "weight_decay", "batch_size")},
            model=self.model,
            num_classes=c.num_classes,
        )
        mine = results.get(chosen, {})
        value = {**mine, "diagnosis": d.kind, "variant": chosen, "hparams": hp, "compare": results}
        rows = [  # the TUI's candidate table: ★ on the variant the profile keeps
            {
                "label": self._label("final", variants[k]["value"]),
                "run_id": self.runs.get("final", {}).get(k) or (cs[k].run_id if k in cs else None),
                "winner": k == chosen,
                "val_loss": r.get("val_loss"),
                "val_acc": r.get("val_acc"),
                "diagnosis": d.kind if k == chosen else None,
            }
            for k, r in results.items()
        ]
        reason = self._final_reason(chosen, variants, results, d)
        n_refined = sum(1 for k in variants if k.startswith("refine"))
        all_ended = all(results.get(k, {}).get("outcome") for k in variants)
        base = results.get("baseline", {})
        # Losing to the untuned baseline on validation earns one refinement whatever the budget: a
        # profile worse than the default is the one result the tool must not hand over unchallenged.
        losing = (base.get("val_acc") or 0) > (mine.get("val_acc") or 0) and n_refined == 0
        allowed = self.refine + (1 if losing else 0)
        if d.change and n_refined < allowed and all_ended and mine.get("outcome") == "finished":
            new = dict(hp)
            for k, f in d.change.items():
                if k == "lr_max":
                    new["lr_min"], new["lr_max"] = hp["lr_min"] * f, hp["lr_max"] * f
                elif k == "weight_decay":
                    new[k] = hp[k] * f if hp[k] > 0 else f  # from 0: the remedy names the value to add
            seen = [self._variant_hparams(v) for v in variants.values()]
            if all(any(not math.isclose(float(new[k]), float(o[k])) for k in HPARAMS) for o in seen):
                key = f"refine{n_refined + 1}"
                what = d.remedy.split(";")[0].split(" or ")[0].rstrip(".")
                return Recommendation(
                    "final",
                    value,
                    "1cycle",
                    f"{reason} Acting on it: one more final-length run ({what}); the profile keeps whichever "
                    "validates better.",
                    ok=True,
                    needs_more_runs=True,
                    rows=rows,
                    detail={"diagnosis": d.to_dict()},
                    add=[{"key": key, "value": {"hparams": new, "change": what, "from": chosen}}],
                )
        return Recommendation(
            "final",
            value,
            self._label("final", variants[chosen]["value"]),
            reason,
            ok=mine.get("outcome") == "finished",
            confidence=None,
            rows=rows,
            detail={"diagnosis": d.to_dict()},
        )

    def _final_reason(
        self, chosen: str, variants: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]], d: Any
    ) -> str:
        """'Final runs: the profile keeps the tuned profile (val accuracy 84.1%, test 83.9%); …'."""

        def pct(v: Any) -> str:
            return "—" if v is None else f"{100 * float(v):.1f}%"

        mine = results.get(chosen, {})
        name = self._label("final", variants[chosen]["value"])
        head = f"Final runs: the profile keeps the {name}"
        if mine.get("outcome") != "finished":
            head = f"Final 1cycle run {mine.get('outcome') or 'unfinished'}"
        else:
            head += f" (val accuracy {pct(mine.get('val_acc'))}, test {pct(mine.get('test_acc'))})"
        parts = []
        for k in [k for k in variants if k != chosen]:
            r = results.get(k)
            if not r:
                continue
            label = self._label("final", variants[k]["value"])
            if r.get("outcome") != "finished":
                parts.append(f"{label} {r.get('outcome')}")
                continue
            gap = ""
            if mine.get("test_acc") is not None and r.get("test_acc") is not None:
                gap = f", {100 * (float(mine['test_acc']) - float(r['test_acc'])):+.1f} points on test"
            parts.append(f"{label}: val {pct(r.get('val_acc'))}, test {pct(r.get('test_acc'))}{gap}")
        if parts:
            head += "; " + "; ".join(parts)
        why = ""
        if chosen != "final" and "final" in results and results["final"].get("outcome") == "finished":
            why = (
                f" The tuned values validated lower ({pct(results['final'].get('val_acc'))}): at this budget "
                f"the later steps did not earn their place, so the profile takes the {name}'s values."
            )
        return f"{head}.{why} {d.explanation} Next: {d.remedy}"

    # -- decisions -------------------------------------------------------------------------------

    def accept(self, rec: Recommendation) -> Decision:
        """Take the advisor's recommendation for its step."""
        if not rec.ok or rec.value is None:
            raise UserError(f"{STEP_TITLES[rec.step]} has no usable recommendation: {rec.reason}")
        value = self._normalise(rec.step, rec.value)
        run_ids = list(self.runs.get(rec.step, {}).values())
        return self._decide(
            rec.step,
            value,
            rec.label or self._label_value(rec.step, value),
            "recommended",
            rec.reason,
            run_ids,
        )

    def override(self, step: str, value: Any, reason: str = "set by the user") -> Decision:
        """Use the user's own value for a step (checked like a run setting)."""
        if step not in STEPS or step == "final":
            raise UserError(f"cannot override step {step!r}; overridable: {', '.join(STEPS[:-1])}")
        v = self._normalise(step, value)
        return self._decide(
            step, v, self._label_value(step, v), "override", reason, list(self.runs.get(step, {}).values())
        )

    def _label_value(self, step: str, v: Any) -> str:
        if step == "lr_range":
            return f"{fmt_num(v['lr_min'])} → {fmt_num(v['lr_max'])}"
        if step == "final":
            return "1cycle"
        return value_label(step, v)

    def _normalise(self, step: str, value: Any) -> Any:
        """Check a step value and bring it to its stored form; UserError naming the fix."""
        try:
            if step == "lr_range":
                # An LR range refers to the TBS of the range-test step unless it says otherwise.
                if isinstance(value, Mapping):
                    lo, hi = float(value["lr_min"]), float(value["lr_max"])
                    tbs = int(value.get("tbs", self.values["lr_tbs"]))
                else:
                    lo, hi = (float(x) for x in value)
                    tbs = int(self.values["lr_tbs"])
                if not lr_range_ok(lo, hi, grows=True):
                    raise UserError(
                        f"LR range {fmt_num(lo)}:{fmt_num(hi)} must be positive and low:high, e.g. 0.1:1"
                    )
                return {"lr_min": lo, "lr_max": hi, "tbs": tbs}
            if step == "batch_size":
                if isinstance(value, bool) or int(value) != value or int(value) < 1:
                    raise UserError(f"batch size {value} must be a positive integer, e.g. 256")
                return int(value)
            if step == "momentum":
                hi, lo = (
                    (float(value), float(value))
                    if isinstance(value, int | float)
                    else (float(x) for x in value)
                )
                if not (0 <= lo <= hi < 1):
                    raise UserError(
                        f"momentum {fmt_num(hi)}:{fmt_num(lo)} must be high:low within [0, 1), "
                        "e.g. 0.95:0.85 or 0.9"
                    )
                return [hi, lo]
            if step == "weight_decay":
                v = float(value)
                if not (math.isfinite(v) and v >= 0):
                    raise UserError(f"weight decay {value} must be 0 or positive, e.g. 1e-4")
                return v
            if step == "final":
                return dict(value)
        except (TypeError, ValueError, KeyError) as exc:
            raise UserError(f"value {value!r} does not fit step {step!r}: {exc}") from exc
        raise UserError(f"unknown checklist step {step!r}; steps: {', '.join(STEPS)}")

    def _decide(
        self, step: str, value: Any, label: str, source: str, reason: str, run_ids: list[str]
    ) -> Decision:
        old = self.decisions.get(step)
        if old is not None and not old.stale and old.value == _jsonable(value) and old.source == source:
            return old  # the same decision again (a second window, a retried save): record it once
        changed = old is None or old.value != value
        if old is not None:
            self.history.append({"event": "replaced", **asdict(old)})
        d = Decision(step, _jsonable(value), label, source, reason, run_ids)
        self.decisions[step] = d
        self._apply(step, value)
        if changed:
            for later in STEPS[STEPS.index(step) + 1 :]:
                ld = self.decisions.get(later)
                if ld is not None and not ld.stale:
                    ld.stale = True
                    self.history.append({"event": "stale", "step": later, "because": step})
                if later in self.runs:
                    self._forget_runs(later)
                if later in SWEEP_STEPS and later in self.candidates:
                    # Regenerate (a refinement or retry belonged to the old context).
                    self.candidates[later] = [c for c in self.candidates[later] if c["key"] != "wd_refine"]
                if later == "final":
                    self.candidates.pop("final", None)  # refinements of the old tuned values
        return d

    def _apply(self, step: str, value: Any) -> None:
        if step == "lr_range":
            self.values.update(lr_min=value["lr_min"], lr_max=value["lr_max"], lr_tbs=value["tbs"])
        elif step == "batch_size":
            self.values["batch_size"] = int(value)
        elif step == "momentum":
            self.values.update(momentum_max=value[0], momentum_min=value[1])
        elif step == "weight_decay":
            self.values["weight_decay"] = float(value)
        elif step == "final":
            self.final = dict(value)

    # -- reports ---------------------------------------------------------------------------------

    def summary(self) -> list[dict[str, Any]]:
        """One row per step: candidates tried, the value chosen, by whom and why."""
        rows = []
        for s in STEPS:
            d = self.decisions.get(s)
            cands = ", ".join(self._label(s, c["value"]) for c in self._cands(s))
            rows.append(
                {
                    "step": s,
                    "title": STEP_TITLES[s],
                    "candidates": cands,
                    "chosen": d.label if d else None,
                    "source": d.source if d else None,
                    "why": d.reason if d else None,
                    "stale": bool(d and d.stale),
                }
            )
        return rows

    def summary_text(self) -> str:
        """The summary as a plain-text table (the autopilot prints it)."""
        rows = self.summary()
        lines = [f"{'step':<16} {'candidates':<34} {'chosen':<14} why"]
        for i, r in enumerate(rows, 1):
            chosen = (r["chosen"] or "—") + (" (stale)" if r["stale"] else "")
            if r["source"] == "override":
                chosen += " *"
            lines.append(f"{i} {r['title']:<14} {r['candidates'][:34]:<34} {chosen:<14} {r['why'] or ''}")
        if any(r["source"] == "override" for r in rows):
            lines.append("* set by the user")
        return "\n".join(lines)

    def provenance(self) -> dict[str, Any]:
        """What a profile records about how its values were found."""
        run_ids = [rid for s in STEPS for rid in (self.decisions[s].run_ids if s in self.decisions else [])]
        return {
            "session": self.session_id or "",
            "runs": run_ids,
            "budget": self.budget,
            "decisions": [
                {
                    "step": s,
                    "value": self.decisions[s].label,
                    "source": self.decisions[s].source,
                    "reason": self.decisions[s].reason,
                }
                for s in STEPS
                if s in self.decisions
            ],
        }

    def estimate_seconds(self, images_per_s: float = 1500.0, overhead_s: float = 5.0) -> dict[str, float]:
        """Rough time per step not yet decided (and 'total'), for ETAs shown before launching.

        Counts training images, plus evaluations at a third of the cost per image, plus a fixed start-up
        per run. A range test may stop early at divergence, so its figure is an upper bound.
        """
        b = self.plan
        val = self.n_train // 9
        out: dict[str, float] = {}
        for s in STEPS:
            d = self.decisions.get(s)
            if d is not None and not d.stale:
                continue
            secs = 0.0
            cands = self.candidate_list(s)
            if s == "weight_decay" and b.wd_refine and not any(c.key == "wd_refine" for c in cands):
                cands = cands + cands[-1:]  # the refinement run to come
            if s == "final":
                cands = cands + cands[:1] * max(
                    0, self.refine - sum(c.key.startswith("refine") for c in cands)
                )
            for c in cands:
                imgs = self._images(c.spec)
                steps = c.spec.steps or imgs // c.spec.batch_size
                if c.spec.eval_every:
                    evals = steps // c.spec.eval_every
                    eval_imgs = evals * min(c.spec.eval_subset or val, val)
                else:
                    evals = max(1, int(c.spec.epochs))
                    eval_imgs = evals * val + (self.n_train // 4.5 if c.spec.test else 0)
                secs += (imgs + eval_imgs / 3) / images_per_s + overhead_s
            out[s] = secs
        out["total"] = sum(out.values())
        return out

    # -- persistence -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = 1
        return _jsonable(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Checklist:
        d = dict(d)
        d.pop("version", None)
        decisions = {k: Decision(**v) for k, v in (d.pop("decisions", None) or {}).items()}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(
                f"stored checklist has unknown field(s) {', '.join(unknown)}; "
                "was it written by a newer tuneassist?"
            )
        cl = cls(**d)
        cl.decisions = decisions
        return cl
