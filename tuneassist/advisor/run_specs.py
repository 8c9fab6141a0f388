"""The run specs a session hands out: range test, sweep candidates, the final run and what it is
compared with (the LR-only profile and the untuned baseline)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tuneassist.advisor.budget import FINAL_EVALS
from tuneassist.advisor.state import ChecklistState
from tuneassist.advisor.steps import HPARAMS, range_pair
from tuneassist.spec import RunSpec


class RunSpecs(ChecklistState):
    """Every run of the checklist as a RunSpec, built from the current values."""

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
            image_size=self.image_size,
            stream=self.stream,
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

    def _spec_for(self, step: str, value: Any) -> RunSpec:
        if step == "lr_range":
            lo, hi = range_pair(value)
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
