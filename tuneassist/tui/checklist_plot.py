"""The checklist screen's plot: for the viewed step, the chart of its runs' curves and its title.

Pure functions of the step's candidates, runs, curves and reading (no widgets), so the screen only
puts the result in its PlotView: loss vs LR for the range test, the chosen metric vs step or epoch
for a sweep, loss or accuracy vs epoch for the final run.
"""

from __future__ import annotations

import math

import numpy as np

from tuneassist.advisor.checklist import STEPS, Decision, Recommendation
from tuneassist.advisor.lr_range import fmt_num
from tuneassist.curves import Curves
from tuneassist.tui.chart import Band, Chart, Series, VLine, ema
from tuneassist.tui.checklist_view import StepView
from tuneassist.tui.live import Live

SWEEP_METRICS = ("val loss", "val acc", "train loss (smoothed)")
FINAL_METRICS = ("loss", "val acc")
PLOT_TITLES = {
    "lr_range": "loss vs LR (log)",
    "batch_size": "{metric} vs epoch",
    "momentum": "{metric} vs step",
    "weight_decay": "{metric} vs step",
    "final": "{metric} vs epoch",
}


def range_ylim(c: Curves) -> tuple[float, float] | None:
    """Loss axis of a range test: from the lowest loss to a little above the starting loss.

    The blow-up at the end would otherwise squash the interesting part (the descent) to a line.
    """
    ys = np.asarray([v for v in ema(c.train_loss) if math.isfinite(v)], dtype=float)
    vs = np.asarray([v for v in c.val_loss if math.isfinite(v)], dtype=float)
    if len(ys) < 3:
        return None
    start = float(np.median(ys[: max(3, len(ys) // 20)]))
    allv = np.concatenate([ys, vs]) if len(vs) else ys
    lo, hi = float(allv.min()), float(allv.max())
    hi = min(hi, max(start * 1.3, lo + 1e-6))
    if hi <= lo:
        return None
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def step_chart(
    view: StepView,
    *,
    decision: Decision | None,
    current: str | None,
    metric: int,
    live: Live,
) -> tuple[Chart, str]:
    """The viewed step's chart and plot title; `metric` counts presses of m (the metric shown)."""
    step = view.step
    future = current is not None and STEPS.index(step) > STEPS.index(current) and decision is None
    wait = f"runs start once step {STEPS.index(current) + 1} is decided" if future and current else ""
    if step == "lr_range":
        return _range_chart(view, decision, live), PLOT_TITLES[step]
    if step == "final":
        return _final_chart(view, metric, wait)
    return _sweep_chart(view, metric, wait)


def _range_chart(view: StepView, decision: Decision | None, live: Live) -> Chart:
    """Loss vs LR of the latest range test, where it diverged, and the suggested or chosen range."""
    cands, runs, curves, rec = view.cands, view.runs, view.curves, view.rec
    with_run = [c for c in cands if c.key in runs]
    cand = with_run[-1] if with_run else (cands[-1] if cands else None)
    curve = curves.get(cand.key) if cand else None
    xlim = (float(cand.value[0]), float(cand.value[1])) if cand else None
    series, vlines, band, ylim = [], [], None, None
    if curve is not None:
        series = [
            Series("train loss (smoothed)", curve.lrs, ema(curve.train_loss), "cyan"),
            Series("val loss", curve.eval_lrs(), curve.val_loss, "magenta"),
        ]
        ylim = range_ylim(curve)
        run = live.run(runs[cand.key]) if cand else None
        d_lr = run.outcome.get("diverged_lr") if run else None
        if d_lr:
            vlines.append(VLine(float(d_lr), f"diverged {fmt_num(d_lr)}", "red"))
    if isinstance(rec, Recommendation) and isinstance(rec.value, dict) and rec.value.get("lr_max"):
        band = Band(rec.value["lr_min"], rec.value["lr_max"], f"suggested {rec.label or ''}".strip())
    elif decision is not None and isinstance(decision.value, dict):
        band = Band(decision.value["lr_min"], decision.value["lr_max"], f"chosen {decision.label}")
    empty = "press r to run the range test" if not runs else "waiting for the first steps"
    return Chart(series, vlines, band, logx=True, xlim=xlim, ylim=ylim, xlabel="LR", empty=empty)


def _final_chart(view: StepView, metric_i: int, wait: str) -> tuple[Chart, str]:
    """Loss (train smoothed and val) or val accuracy vs epoch of the final 1cycle run."""
    runs, curves = view.runs, view.curves
    metric = FINAL_METRICS[metric_i % len(FINAL_METRICS)]
    curve = next(iter(curves.values()), None)
    series = []
    if curve is not None and metric == "loss":
        series = [
            Series("train loss (smoothed)", curve.epochs, ema(curve.train_loss), "cyan"),
            Series("val loss", curve.eval_epochs, curve.val_loss, "magenta"),
        ]
    elif curve is not None:
        series = [Series("val acc %", curve.eval_epochs, [100 * v for v in curve.val_acc], "green")]
    empty = "press r to start the final 1cycle run" if not runs else "waiting for the first epoch"
    empty = wait or empty
    return Chart(series, xlabel="epoch", empty=empty), PLOT_TITLES["final"].format(metric=metric)


def _sweep_chart(view: StepView, metric_i: int, wait: str) -> tuple[Chart, str]:
    """One curve per value tried (the chosen metric vs epoch or step), and where the reading decided."""
    step, cands, runs, curves, rec = view.step, view.cands, view.runs, view.curves, view.rec
    metric = SWEEP_METRICS[metric_i % len(SWEEP_METRICS)]
    by_epoch = step == "batch_size"
    series = []
    for c in cands:
        curve = curves.get(c.key)
        if curve is None:
            continue
        if metric.startswith("train loss"):
            xs: list[float] | list[int] = curve.epochs if by_epoch else curve.steps
            ys = ema(curve.train_loss)
        else:
            xs = curve.eval_epochs if by_epoch else curve.eval_steps
            ys = curve.val_loss if metric == "val loss" else [100 * v for v in curve.val_acc]
        series.append(Series(c.label, xs, ys))
    vlines = []
    if isinstance(rec, Recommendation):
        at = rec.detail.get("decision_at")
        axis = rec.detail.get("axis")
        if at is not None and ((axis == "epoch") == by_epoch):
            vlines.append(VLine(float(at), "decision", "yellow"))
    n, plural = len(cands), "s" if len(cands) != 1 else ""
    empty = f"press r to launch {n} short run{plural}" if not runs else "waiting for evaluations"
    empty = wait or empty
    chart = Chart(series, vlines, xlabel="epoch" if by_epoch else "step", empty=empty)
    return chart, PLOT_TITLES[step].format(metric=metric + (" %" if metric == "val acc" else ""))
