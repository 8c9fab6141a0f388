"""How long each run of a session is: the final and short runs' epochs, a wall-time budget split over
the steps, and the time each step still needs (ETAs shown before launching)."""

from __future__ import annotations

from typing import Any

from tuneassist.advisor.budget import PAPER_EPOCHS, PAPER_EPOCHS_DEFAULT, PAPER_EPOCHS_SHALLOW
from tuneassist.advisor.numfmt import fmt_num
from tuneassist.advisor.state import ChecklistState
from tuneassist.advisor.steps import STEPS
from tuneassist.spec import RunSpec


class RunPlan(ChecklistState):
    """The run lengths of a session, from its budget (or its time budget) and its data size."""

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
                eval_imgs: float
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

    def _images(self, spec: RunSpec) -> int:
        if spec.steps is not None:
            return spec.steps * spec.batch_size
        return int(spec.epochs * (self.n_train // spec.batch_size) * spec.batch_size)
