"""What the checklist screen's panes say about the viewed step: the candidates table's rows and the
recommendation pane's text (the hero: the value, its reason and the keys that act on it).

Pure functions of the session's state, the runs and the advisor's reading (no widgets), so the
screen only puts the result in its DataTable and Static.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from tuneassist.advisor.checklist import (
    STEP_TITLES,
    STEPS,
    SWEEP_STEPS,
    Candidate,
    Checklist,
    Recommendation,
)
from tuneassist.advisor.lr_range import fmt_num
from tuneassist.advisor.sweep import same_value
from tuneassist.curves import Curves
from tuneassist.errors import UserError
from tuneassist.runs.rows import Run
from tuneassist.session import sharing, sharing_text
from tuneassist.tui.fmt import g, pct, progress_text, run_status
from tuneassist.tui.live import Live


def _finite(v: Any) -> float | None:
    return float(v) if v is not None and isinstance(v, int | float) and math.isfinite(v) else None



def _same(a: Any, b: Any) -> bool:
    """Whether a recommended value is the one already chosen (an LR range by its low and high)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(same_value(a.get(k), b.get(k)) for k in ("lr_min", "lr_max"))
    return same_value(a, b)


def _split_first(reason: str) -> tuple[str, str]:
    """The reason's first clause (the value to use), bold, and the rest (the numbers behind it)."""
    cut = [i for i in (reason.find(". "), reason.find(": ")) if i >= 0]
    if not cut:
        return reason, ""
    i = min(cut) + 1
    return reason[:i], reason[i:]


@dataclass
class StepView:
    """The viewed step as the screen shows it, gathered once a refresh: its values, their runs and
    curves, and the advisor's reading (None until every run ended; a string when there is none)."""

    step: str
    cands: list[Candidate]
    runs: dict[str, int]
    curves: dict[str, Curves]
    rec: Recommendation | str | None


def candidate_rows(view: StepView, live: Live, narrow: bool) -> tuple[list[str], list[tuple]]:
    """The table's row keys and rows: mark (★ winner, ≈ tie), value, run, status, progress, the
    latest (or the reading's) val loss and accuracy, and a note (diagnosis, divergence, error)."""
    cands, runs, curves, rec = view.cands, view.runs, view.curves, view.rec
    by_run: dict[str, dict[str, Any]] = {}
    if isinstance(rec, Recommendation):
        for row in rec.rows:
            if row.get("run_id") is not None:
                by_run[str(row["run_id"])] = row
    rows: list[tuple] = []
    keys: list[str] = []
    for c in cands:
        rid = runs.get(c.key)
        run = live.run(rid) if rid is not None else None
        curve = curves.get(c.key)
        mark, note = " ", ""
        vl = va = None
        if run is None:
            status: Text | str = Text("· not started", style="bright_black")
            prog = ""
        else:
            status = run_status(run.status, bool(run.cancel_requested), run)
            prog = progress_text(run)
            if curve is not None and curve.val_loss:
                vl, va = curve.val_loss[-1], curve.val_acc[-1]
            ranked = by_run.get(str(rid))
            if ranked is not None:
                mark = "★" if ranked.get("winner") else ("≈" if ranked.get("tie") else " ")
                vl = ranked.get("val_loss", vl)
                va = ranked.get("val_acc", va)
                note = ranked.get("diagnosis") or ""
            out = run.outcome
            if run.status == "diverged" and out.get("diverged_lr") is not None:
                note = f"diverged at LR {fmt_num(out['diverged_lr'])}"
            if run.status in ("failed", "lost") and run.error:
                note = str(run.error).splitlines()[0]
        rows.append(
            (
                mark,
                c.label,
                f"#{rid}" if rid is not None else "-",
                status,
                prog,
                g(_finite(vl), 4),
                pct(_finite(va)),
                Text(note[: 18 if narrow else 34], no_wrap=True),
            )
        )
        keys.append(c.key)
    return keys, rows


def recommendation_title(rows: list[Run | None], narrow: bool) -> str:
    """The pane's title; once a step's runs all ended, how they shared the device (None: a run gone
    from the store)."""
    active = [r for r in rows if r is not None and r.status in ("queued", "running")]
    shared = sharing(rows) if len(rows) > 1 and not active and not narrow else None
    return "Recommendation" + (f" · {sharing_text(shared)}" if shared else "")


def recommendation_text(view: StepView, cl: Checklist, rows: list[Run | None]) -> tuple[Text, Text]:
    """The pane's text (the decision taken, what is running, or the reading to act on) and, apart, the
    keys to press: the screen shows the keys on their own line, so a long reading on a short terminal
    is what gets cut, never what to press. `rows` are the step's runs as the store has them (None: one
    gone from it)."""
    t, keys = _recommendation(view, cl, rows)
    t.rstrip()
    return t, Text(keys, style="bold")


def _recommendation(view: StepView, cl: Checklist, rows: list[Run | None]) -> tuple[Text, str]:
    step, runs, rec = view.step, view.runs, view.rec
    t = Text()
    current = cl.current_step
    decision = cl.decisions.get(step)
    active = [r for r in rows if r is not None and r.status in ("queued", "running")]
    try:
        pending = cl.propose(step).candidates
    except UserError:
        pending = []
    if decision is not None and not decision.stale:
        who = "recommended" if decision.source == "recommended" else "set by you"
        t.append(f"✓ Chosen: {decision.label}", style="bold green")
        t.append(f" ({who}). {decision.reason}\n")
    elif decision is not None and decision.stale:
        t.append(f"! Stale: {decision.label}", style="bold yellow")
        t.append(" was chosen before an earlier step changed; run the step again.\n")
    if current is not None and STEPS.index(step) > STEPS.index(current) and decision is None:
        t.append(f"Decide step {STEPS.index(current) + 1} ({STEP_TITLES[current]}) first: ", style="bold")
        t.append("this step's runs use its value.")
        return t, ""
    if active:
        done = len(rows) - len(active)
        running = [r for r in active if r.status == "running"]
        t.append(f"● Running: {done} of {len(rows)} runs done", style="bold cyan")
        if running:
            r = running[0]
            d, total = r.progress
            t.append(f" · run {r.id} at step {d}/{total or '?'}")
        queued = len(active) - len(running)
        if queued:
            t.append(f" · {queued} queued")
        t.append(". The reading comes when they end; q quits and leaves them running.")
    elif pending:
        n = len(pending)
        more = " more" if runs else ""
        t.append(
            f"Press r to launch {n}{more} run{'s' if n != 1 else ''} in the background", style="bold"
        )
        t.append(" (e edits a value, n adds one, x removes one)." if step in SWEEP_STEPS else ".")
        if step != "final":
            t.append(" Or o to set the value yourself.")
    elif isinstance(rec, str):
        t.append(f"✗ {rec}", style="bold red")
        return t, "[r] re-run  [o] set the value yourself" if step != "final" else "[r] re-run"
    elif isinstance(rec, Recommendation):
        chosen = (
            decision is not None and not decision.stale and rec.ok and _same(rec.value, decision.value)
        )
        if chosen:
            return t, "[o] change it  [r] re-run with another seed"
        elif rec.ok and rec.value is not None and not rec.needs_more_runs:
            head, rest = _split_first(rec.reason)
            t.append("▶ " + head, style="bold")
            t.append(rest)
            if rec.confidence:
                t.append(f" Confidence: {rec.confidence}.")
            keys = (
                "[a] accept  [f] one more run acting on the diagnosis  [r] re-run"
                if step == "final"
                else "[a] accept  [o] override  [r] re-run with another seed"
            )
            return t, keys
        elif rec.needs_more_runs:
            t.append(rec.reason)
        else:
            t.append("✗ No usable reading: ", style="bold red")
            t.append(rec.reason)
            return t, "[o] set the value yourself  [r] re-run with another seed"
    elif decision is None and runs:
        t.append("Reading the runs…")
    return t, ""
