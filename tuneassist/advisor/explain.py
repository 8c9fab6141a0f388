"""The checklist's words: what each step's runs are for, how values read, and the summary of a session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuneassist.advisor.numfmt import fmt_num
from tuneassist.advisor.state import ChecklistState
from tuneassist.advisor.steps import FINAL_LABELS, STEP_TITLES, STEPS, range_pair
from tuneassist.advisor.sweep import value_label


class StepTexts(ChecklistState):
    """Sentences and labels for a session's steps, its summary table and its provenance."""

    def explain(self, step: str) -> str:
        """What a step's runs are and what they decide, at the current values (a proposal's text)."""
        b = self.plan
        lo, hi = self.effective_lr()
        mom = value_label("momentum", (self.values["momentum_max"], self.values["momentum_min"]))
        e = self.short_epochs()
        short = f"{fmt_num(e)} epoch{'' if e == 1 else 's'} each"
        if step == "lr_range":
            r = range_pair(self._cands(step)[-1]["value"])
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

    def _label(self, step: str, value: Any) -> str:
        if step == "lr_range":
            lo, hi = range_pair(value)
            return f"{fmt_num(lo)} → {fmt_num(hi)}"
        if step == "final":
            if isinstance(value, Mapping):
                return f"refined ({value.get('change', 'diagnosis')})"
            return FINAL_LABELS.get(str(value), "1cycle")
        return value_label(step, value)

    def _label_value(self, step: str, v: Any) -> str:
        if step == "lr_range":
            return f"{fmt_num(v['lr_min'])} → {fmt_num(v['lr_max'])}"
        if step == "final":
            return "1cycle"
        return value_label(step, v)

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
        chosen = [_chosen_text(r) for r in rows]
        cands = [_clip_list(r["candidates"], _CANDIDATES_WIDTH) for r in rows]
        cw = max(len("candidates"), *map(len, cands))
        vw = max(len("chosen"), *map(len, chosen))
        lines = [f"{'step':<16} {'candidates':<{cw}} {'chosen':<{vw}} why"]
        for i, (r, c, v) in enumerate(zip(rows, cands, chosen, strict=True), 1):
            lines.append(f"{i} {r['title']:<14} {c:<{cw}} {v:<{vw}} {r['why'] or ''}")
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


def _chosen_text(row: Mapping[str, Any]) -> str:
    """The chosen column: the value, "(stale)" after an earlier step changed, "*" when the user set it."""
    stale = " (stale)" if row["stale"] else ""
    return (row["chosen"] or "—") + stale + (" *" if row["source"] == "override" else "")


_CANDIDATES_WIDTH = 50  # the summary's candidates column at the most; a longer list ends in "…"


def _clip_list(text: str, width: int) -> str:
    """`text`, a comma-separated list, cut after its last whole item that fits with "…" after it: a
    cut inside a word ran into the next column ("… LR-only profile, un" + "tuned profile")."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    cut = head.rfind(", ")
    return (head[: cut + 1] if cut > 0 else head) + "…"
