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

Here: the candidates of each step, the proposals and the decisions. The rest, on the same state
(`state.ChecklistState`): the budgets (`budget`), run lengths and time plans (`plan`), the run specs
(`run_specs`), reading the curves (`reading`) and the words (`explain`); the step objects are in
`steps`. Every name this module had before that split is still importable from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from tuneassist.advisor.budget import (
    BUDGETS,
    DEFAULT_BATCH,
    FALLBACK_TRAIN_SIZE,
    FINAL_EVALS,
    PAPER_EPOCHS,
    PAPER_EPOCHS_DEFAULT,
    PAPER_EPOCHS_SHALLOW,
    TRAIN_SIZES,
    Budget,
)
from tuneassist.advisor.explain import StepTexts
from tuneassist.advisor.numfmt import fmt_num
from tuneassist.advisor.plan import RunPlan
from tuneassist.advisor.reading import StepReading
from tuneassist.advisor.run_specs import RunSpecs
from tuneassist.advisor.steps import (
    FINAL_LABELS,
    HPARAMS,
    STEP_TITLES,
    STEPS,
    SWEEP_STEPS,
    Candidate,
    Decision,
    Proposal,
    Recommendation,
    RunCurves,
    as_curves,
    jsonable,
    range_pair,
)
from tuneassist.advisor.sweep import (
    batch_size_candidates,
    momentum_candidates,
    value_label,
    weight_decay_grid,
)
from tuneassist.errors import UserError
from tuneassist.spec import lr_range_ok

__all__ = [
    "BUDGETS",
    "DEFAULT_BATCH",
    "FALLBACK_TRAIN_SIZE",
    "FINAL_EVALS",
    "FINAL_LABELS",
    "HPARAMS",
    "PAPER_EPOCHS",
    "PAPER_EPOCHS_DEFAULT",
    "PAPER_EPOCHS_SHALLOW",
    "STEPS",
    "STEP_TITLES",
    "SWEEP_STEPS",
    "TRAIN_SIZES",
    "Budget",
    "Candidate",
    "Checklist",
    "Decision",
    "Proposal",
    "Recommendation",
    "RunCurves",
    "as_curves",
]


class Checklist(StepReading, StepTexts, RunSpecs, RunPlan):
    """One tuning session's progress through the checklist; JSON-able via to_dict/from_dict.

    The fields are `ChecklistState`'s: Checklist(data, model, budget="quick", devices=1, ...)."""

    # -- candidates ----------------------------------------------------------------------------

    def default_candidates(self, step: str) -> list[dict[str, Any]]:
        """The values a step tries before anyone edits them ({key, value}): the budget's range test, the
        paper's grids for this net, the final step's variants."""
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
                stored.append({"key": str(c["key"]), "value": jsonable(c["value"])})
                have.add(c["key"])

    def _cands(self, step: str) -> list[dict[str, Any]]:
        if step == "final":
            return self._final_variants()
        if step not in self.candidates:
            self.candidates[step] = self.default_candidates(step)
        return self.candidates[step]

    def set_candidates(self, step: str, values: Sequence[Any]) -> None:
        """Replace the values a step will try (the user edits the proposal); forgets its runs."""
        if step not in SWEEP_STEPS and step != "lr_range":
            raise UserError(
                f"step {step!r} has no candidates to edit; editable: lr_range, {', '.join(SWEEP_STEPS)}"
            )
        if not values:
            raise UserError(f"give at least one value for {STEP_TITLES[step]}")
        norm = [self.normalise(step, v) for v in values]
        if step == "lr_range":
            # One range test, stored as [low, high] like the default and the retries (the normalised
            # form is a decision's {lr_min, lr_max, tbs}, which the range-test spec cannot take).
            norm = [range_pair(norm[-1])]
        self.candidates[step] = [
            {"key": f"{step}-{i}" if step != "lr_range" else "range", "value": jsonable(v)}
            for i, v in enumerate(norm)
        ]
        self.forget_runs(step)

    def candidate_list(self, step: str) -> list[Candidate]:
        """Every candidate of a step with its spec built from the current values."""
        out = []
        for c in self._cands(step):
            v = list(range_pair(c["value"])) if step == "lr_range" else c["value"]
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
        return Proposal(step, STEP_TITLES[step], cands, self.explain(step), images)

    def attach_run(self, step: str, key: str, run_id: str) -> None:
        """Record which run executes a candidate (provenance, and so propose() skips it)."""
        if key not in {c["key"] for c in self._cands(step)}:
            raise UserError(f"step {step!r} has no candidate {key!r}")
        self.runs.setdefault(step, {})[key] = run_id

    def forget_runs(self, step: str) -> None:
        """Detach a step's runs (its candidates changed), keeping them in the history as superseded."""
        if self.runs.get(step):
            self.history.append({"event": "runs_superseded", "step": step, "runs": dict(self.runs[step])})
        self.runs.pop(step, None)

    # -- decisions -------------------------------------------------------------------------------

    def accept(self, rec: Recommendation) -> Decision:
        """Take the advisor's recommendation for its step."""
        if not rec.ok or rec.value is None:
            raise UserError(f"{STEP_TITLES[rec.step]} has no usable recommendation: {rec.reason}")
        value = self.normalise(rec.step, rec.value)
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
        v = self.normalise(step, value)
        return self._decide(
            step, v, self._label_value(step, v), "override", reason, list(self.runs.get(step, {}).values())
        )

    def normalise(self, step: str, value: Any) -> Any:
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
        if old is not None and not old.stale and old.value == jsonable(value) and old.source == source:
            return old  # the same decision again (a second window, a retried save): record it once
        changed = old is None or old.value != value
        if old is not None:
            self.history.append({"event": "replaced", **asdict(old)})
        d = Decision(step, jsonable(value), label, source, reason, run_ids)
        self.decisions[step] = d
        self._apply(step, value)
        if changed:
            for later in STEPS[STEPS.index(step) + 1 :]:
                ld = self.decisions.get(later)
                if ld is not None and not ld.stale:
                    ld.stale = True
                    self.history.append({"event": "stale", "step": later, "because": step})
                if later in self.runs:
                    self.forget_runs(later)
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

    # -- persistence -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = 1
        return jsonable(d)

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
