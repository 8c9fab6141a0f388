"""One `Curves` type: the engine's events, the store's rows, the TUI and the CLI all put an evaluation
at the step the engine says it came after (tuneassist/curves.py)."""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import make_run

from tuneassist.curves import Curves, finite_points
from tuneassist.runs.store import MetricWriter, Store
from tuneassist.session import curves_from_store

SPE = 4  # steps per epoch of the recorded run


def _events(total: int = 8, eval_every: int = 3) -> list[dict[str, Any]]:
    """What the engine emits for a short run: a step event per step, an evaluation after every
    `eval_every` steps (and one at the end), the end."""
    ev: list[dict[str, Any]] = [
        {"type": "start", "steps_per_epoch": SPE, "total_steps": total, "num_classes": 10, "start_step": 0}
    ]
    for s in range(total):
        ev.append({"type": "step", "step": s, "epoch": s / SPE, "lr": 0.01 * (s + 1), "momentum": 0.9,
                   "train_loss": 2.0 - s / 10, "images_per_s": 500.0})  # fmt: skip
        done = s + 1
        if done % eval_every == 0 or done == total:
            ev.append({"type": "eval", "step": done, "epoch": done / SPE, "val_loss": 3.0 - done / 10,
                       "val_acc": done / 10})  # fmt: skip
    ev.append({"type": "end", "outcome": "finished", "step": total, "epoch": total / SPE})
    return ev


def _recorded_run(store: Store, events: list[dict[str, Any]]) -> int:
    """A run whose rows the worker's own recorder wrote from the engine's events, then finished."""
    from tuneassist.runs.worker import _Recorder

    run_id = store.add_run({"model": "simple3", "epochs": 2.0}, "train")
    claims = store.claim_queued(lambda s: (["cpu"], 1), 8, only=run_id)
    attempt = claims[0][2]
    writer = MetricWriter(store, run_id, attempt=attempt, background=False)
    rec = _Recorder(store, store.get_run(run_id), writer, False, threading.Event())
    for e in events[:-1]:
        rec(e)
    writer.close()
    store.update_run(run_id, status="finished", ended=time.time(), outcome=events[-1])
    return run_id


def _engine_evals(events: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(e["step"], e["epoch"]) for e in events if e["type"] == "eval"]


def test_every_reader_places_an_evaluation_where_the_engine_said(tmp_path: Path) -> None:
    events = _events()
    want = _engine_evals(events)
    assert want == [(3, 0.75), (6, 1.5), (8, 2.0)]
    from_events = Curves.from_events(events)
    assert list(zip(from_events.eval_steps, from_events.eval_epochs, strict=True)) == want
    with Store(tmp_path) as store:
        rid = _recorded_run(store, events)
        # The store keeps an evaluation in the row before it (step n - 1): a reader moves it back.
        stored = [r["step"] for r in store.metrics(rid) if r["val_loss"] is not None]
        assert stored == [2, 5, 7]
        c = curves_from_store(store, rid)
        assert list(zip(c.eval_steps, c.eval_epochs, strict=True)) == want
        assert c.val_loss == pytest.approx(from_events.val_loss)
        assert c.steps == from_events.steps and c.lrs == pytest.approx(from_events.lrs)
        assert c.eval_lrs() == pytest.approx(from_events.eval_lrs())
        assert c.outcome == "finished" and c.steps_per_epoch == SPE and c.num_classes == 10


def test_tui_and_cli_place_every_evaluation_at_the_same_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stored run through both front ends: the TUI's chart and the CLI's plot and lines put
    each validation point at the same epoch and step (they were one step apart)."""
    import tuneassist.cli.termplot as termplot
    from tuneassist.cli.main import main
    from tuneassist.tui.live import Live
    from tuneassist.tui.runs import run_chart

    events = _events()
    want = _engine_evals(events)
    with Store(tmp_path) as store:
        rid = _recorded_run(store, events)
        live = Live(store, manage_queue=False)
        live.poll()
        curve = live.curve(rid)
        run = live.run(rid)
        assert run is not None
        _, chart = run_chart(run, curve)
    tui_val = next(s for s in chart.series if s.label == "val loss")
    tui_points = finite_points(tui_val.xs, tui_val.ys)
    assert list(zip(curve.eval_steps, curve.eval_epochs, strict=True)) == want

    plotted: dict[str, tuple[list[float], list[float]]] = {}

    def capture(series: dict[str, tuple[list[float], list[float]]], **_: Any) -> str:
        plotted.update(series)
        return "loss vs epoch"

    monkeypatch.setattr(termplot, "plot_lines", capture)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["runs", "watch", str(rid), "--workspace", str(tmp_path)]) == 0
    capsys.readouterr()
    assert plotted["val loss"] == tui_points
    assert tui_points[0] == [epoch for _, epoch in want]

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert main(["runs", "watch", str(rid), "--workspace", str(tmp_path)]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    cli = [(int(w[3]), float(w[1])) for w in lines]  # 'epoch 0.75  step 3  train loss ...'
    assert cli == list(zip(curve.eval_steps, curve.eval_epochs, strict=True))


def test_live_curve_reads_only_new_rows_and_says_when_points_arrived(tmp_path: Path) -> None:
    """The TUI polls a running run: each read takes the rows past the last one and bumps `version`."""
    from tuneassist.runs.worker import _Recorder
    from tuneassist.tui.live import Live

    events = _events()
    with Store(tmp_path) as store:
        run_id = store.add_run({"model": "simple3"}, "train")
        attempt = store.claim_queued(lambda s: (["cpu"], 1), 8, only=run_id)[0][2]
        writer = MetricWriter(store, run_id, attempt=attempt, background=False)
        rec = _Recorder(store, store.get_run(run_id), writer, False, threading.Event())
        live = Live(store, manage_queue=False)
        half = next(i for i, e in enumerate(events) if e["type"] == "eval" and e["step"] == 6)
        for e in events[: half + 1]:
            rec(e)
        writer.flush(final=True)
        live.poll()
        first = live.curve(run_id)
        v1, n1 = first.version, len(first.eval_steps)
        for e in events[half + 1 : -1]:
            rec(e)
        writer.close()
        live.poll()
        again = live.curve(run_id)
    assert again is first and again.version == v1 + 1 and n1 == 2
    assert again.eval_steps == [3, 6, 8] and again.steps == list(range(8))


def test_curves_from_rows_keeps_missing_values_as_nan_and_an_eval_only_row_unshifted() -> None:
    run = make_run(id=7, attempt=0, status="running", info={"steps_per_epoch": 2})
    rows = [
        {"step": 0, "epoch": 0.0, "lr": 0.1, "train_loss": None, "val_loss": None, "val_acc": None},
        {"step": 1, "epoch": 0.5, "lr": 0.1, "train_loss": 1.0, "val_loss": 2.0, "val_acc": None},
        # A row with only an evaluation took the evaluation's own epoch (already after the step).
        {"step": 2, "epoch": 1.5, "lr": None, "train_loss": None, "val_loss": 1.5, "val_acc": 0.5},
    ]
    c = Curves.from_rows(rows, run)
    assert c.steps == [0, 1] and math.isnan(c.train_loss[0])
    assert c.eval_steps == [2, 3] and c.eval_epochs == [1.0, 1.5] and math.isnan(c.val_acc[0])
    assert c.eval_train_loss[0] == 1.0 and c.outcome is None and c.last_step == 2
    assert c.epochs_done() == 1.0
    assert finite_points([1.0, math.nan, 3.0], [1.0, 2.0, None]) == ([1.0], [1.0])  # type: ignore[list-item]
