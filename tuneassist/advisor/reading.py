"""Reading a step's finished runs into a recommendation: the range test, a sweep, the final step.

The numbers come from `lr_range`, `sweep` and `diagnosis`; this module maps them onto the checklist:
the value to accept, its reason, and the runs a step asks to add (a range-test retry, the WD
refinement, a final-step refinement on the diagnosis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from tuneassist.advisor.diagnosis import Diagnosis, diagnose
from tuneassist.advisor.lr_range import suggest_lr
from tuneassist.advisor.numfmt import fmt_acc, fmt_num
from tuneassist.advisor.state import ChecklistState
from tuneassist.advisor.steps import (
    HPARAMS,
    STEP_TITLES,
    STEPS,
    Recommendation,
    RunCurves,
    as_curves,
    jsonable,
)
from tuneassist.advisor.sweep import (
    SweepCandidate,
    SweepResult,
    rank_sweep,
    refine_between,
    rescale_lr_for_batch,
    value_label,
)
from tuneassist.errors import UserError


class StepReading(ChecklistState):
    """What a step's curves decide."""

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

    def _sweep_candidates(self, step: str, cs: dict[str, RunCurves]) -> list[SweepCandidate]:
        """The step's candidates that have curves, in candidate order, as the sweep ranking takes them."""
        sweep = []
        for c in self._cands(step):
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
        return sweep

    def _recommend_sweep(self, step: str, cs: dict[str, RunCurves]) -> Recommendation:
        sweep = self._sweep_candidates(step, cs)
        res = rank_sweep(step, sweep, model=self.model, start=self._current_value(step))
        rows = [asdict(r) for r in res.rows]
        detail = jsonable(res.to_dict())
        if res.winner is None:
            return Recommendation(step, None, None, res.explanation, ok=False, rows=rows, detail=detail)
        if step == "weight_decay":
            refine = self._wd_refinement(res, len(sweep), rows, detail)
            if refine is not None:
                return refine
        reason = res.explanation
        if step == "batch_size":
            tbs = int(res.winner)
            if tbs != int(self.values["lr_tbs"]):
                lo, hi = self.effective_lr(tbs)
                why = rescale_lr_for_batch(float(self.values["lr_max"]), int(self.values["lr_tbs"]), tbs)
                reason += f" The 1cycle range becomes {fmt_num(lo)} → {fmt_num(hi)}: {why.reason}."
        value = list(res.winner) if isinstance(res.winner, tuple) else res.winner
        return Recommendation(step, value, res.winner_label, reason, rows=rows, detail=detail)

    def _wd_refinement(
        self, res: SweepResult, n_read: int, rows: list[dict[str, Any]], detail: dict[str, Any]
    ) -> Recommendation | None:
        """Weight decay: one more run between the two best grid values (the paper's refinement), once,
        when every grid value was read."""
        step, cands = "weight_decay", self._cands("weight_decay")
        if not self.plan.wd_refine or any(c["key"] == "wd_refine" for c in cands):
            return None
        ranked = sorted((r for r in res.rows if r.rank is not None), key=lambda r: r.rank or 0)
        if len(ranked) < 2 or n_read != len(cands):
            return None
        try:
            mid = refine_between(float(ranked[0].value), float(ranked[1].value))
        except ValueError:
            return None
        if any(math.isclose(mid, float(c["value"])) for c in cands):
            return None
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

    def _variant_hparams(self, c: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._spec_for("final", c["value"])
        return {k: getattr(spec, k) for k in HPARAMS}

    @staticmethod
    def _final_results(variants: Mapping[str, Any], cs: dict[str, RunCurves]) -> dict[str, dict[str, Any]]:
        """Each finished final-step variant's end: outcome, val and test loss and accuracy, epochs."""
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
        return results

    def _recommend_final(self, cs: dict[str, RunCurves]) -> Recommendation:
        """Read the final step: the tuned run against the LR-only profile and the untuned baseline.

        The profile keeps the tuned variant (tuned, LR-only, refinements) with the best validation
        accuracy: a later step that did not help at the final budget gives way. The test split only
        reports. When the winner's diagnosis names a concrete remedy and `refine` allows, the step asks
        for one more run with it."""
        variants = {c["key"]: c for c in self._cands("final")}
        if not any(k in cs for k in variants):
            raise UserError("no curves given for the final run")
        results = self._final_results(variants, cs)
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
            lr_max=hp["lr_max"],
            weight_decay=hp["weight_decay"],
            batch_size=hp["batch_size"],
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
        rec = Recommendation(
            "final",
            value,
            self._label("final", variants[chosen]["value"]),
            self._final_reason(chosen, variants, results, d),
            ok=mine.get("outcome") == "finished",
            confidence=None,
            rows=rows,
            detail={"diagnosis": d.to_dict()},
        )
        return self._final_refinement(rec, variants, results, hp, d) or rec

    def _final_refinement(
        self,
        rec: Recommendation,
        variants: Mapping[str, Any],
        results: Mapping[str, Mapping[str, Any]],
        hp: dict[str, Any],
        d: Diagnosis,
    ) -> Recommendation | None:
        """One more final-length run acting on the winner's diagnosis, when `refine` allows and it would
        try values no variant has tried; None otherwise."""
        chosen = rec.value["variant"]
        mine = results.get(chosen, {})
        n_refined = sum(1 for k in variants if k.startswith("refine"))
        all_ended = all(results.get(k, {}).get("outcome") for k in variants)
        base = results.get("baseline", {})
        # Losing to the untuned baseline on validation earns one refinement whatever the budget: a
        # profile worse than the default is the one result the tool must not hand over unchallenged.
        losing = (base.get("val_acc") or 0) > (mine.get("val_acc") or 0) and n_refined == 0
        allowed = self.refine + (1 if losing else 0)
        if not (d.change and n_refined < allowed and all_ended and mine.get("outcome") == "finished"):
            return None
        new = dict(hp)
        for k, f in d.change.items():
            if k == "lr_max":
                new["lr_min"], new["lr_max"] = hp["lr_min"] * f, hp["lr_max"] * f
            elif k == "weight_decay":
                new[k] = hp[k] * f if hp[k] > 0 else f  # from 0: the remedy names the value to add
        seen = [self._variant_hparams(v) for v in variants.values()]
        if not all(any(not math.isclose(float(new[k]), float(o[k])) for k in HPARAMS) for o in seen):
            return None
        what = d.remedy.split(";")[0].split(" or ")[0].rstrip(".")
        return Recommendation(
            "final",
            rec.value,
            "1cycle",
            f"{rec.reason} Acting on it: one more final-length run ({what}); the profile keeps whichever "
            "validates better.",
            ok=True,
            needs_more_runs=True,
            rows=rec.rows,
            detail=rec.detail,
            add=[
                {"key": f"refine{n_refined + 1}", "value": {"hparams": new, "change": what, "from": chosen}}
            ],
        )

    def _final_reason(
        self, chosen: str, variants: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]], d: Diagnosis
    ) -> str:
        """'Final runs: the profile keeps the tuned profile (val accuracy 84.1%, test 83.9%); …'."""

        mine = results.get(chosen, {})
        name = self._label("final", variants[chosen]["value"])
        head = f"Final runs: the profile keeps the {name}"
        if mine.get("outcome") != "finished":
            head = f"Final 1cycle run {mine.get('outcome') or 'unfinished'}"
        else:
            head += f" (val accuracy {fmt_acc(mine.get('val_acc'))}, test {fmt_acc(mine.get('test_acc'))})"
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
            parts.append(f"{label}: val {fmt_acc(r.get('val_acc'))}, test {fmt_acc(r.get('test_acc'))}{gap}")
        if parts:
            head += "; " + "; ".join(parts)
        why = ""
        if chosen != "final" and "final" in results and results["final"].get("outcome") == "finished":
            why = (
                f" The tuned values validated lower ({fmt_acc(results['final'].get('val_acc'))}): at this "
                "budget "
                f"the later steps did not earn their place, so the profile takes the {name}'s values."
            )
        return f"{head}.{why} {d.explanation} Next: {d.remedy}"
