"""Screens of the TUI on a seeded, recorded store: no training, the rendered text is checked.

The store is filled the way workers fill it (runs with their summary columns, metric rows written by
MetricWriter), with curves shaped like real ones: a range test that falls, bottoms out and diverges;
momentum candidates whose validation losses separate; a failed run with its error; a running run.
Each screen is rendered at 80x24 and 100x30 and its text (what a terminal would show) is checked.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from tuneassist.runs.launch import cancel_run
from tuneassist.runs.schema import EvalValues, TrainValues
from tuneassist.runs.store import MetricWriter, Store
from tuneassist.session import TuningSession
from tuneassist.tui.app import TuneApp
from tuneassist.tui.chart import Chart, Series, VLine, render_chart
from tuneassist.tui.widgets import PlotView

SIZES = [(80, 24), (100, 30)]


# ---------------------------------------------------------------------------------------------
# Helpers shared with test_tui_pilot.py


def screen_text(app: TuneApp) -> str:
    """The screen as plain text, as a terminal would show it (the SVG screenshot's text)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def toasts(app: TuneApp) -> list[str]:
    """The messages of the notifications shown so far."""
    return [n.message for n in app._notifications]


def flat(text: str) -> str:
    """Screen text with dialog borders dropped and lines joined: for sentences that wrap."""
    return " ".join(" ".join(line.strip(" │▎▊").split()) for line in text.splitlines())


async def wait_for(pilot: Any, cond: Any, timeout: float, what: str, app: TuneApp | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.2)
    extra = ""
    if app is not None:
        extra = "\n" + screen_text(app)
        for log in sorted((app.store.workspace / "runs").glob("*/worker.log")):
            extra += f"\n--- {log}\n{log.read_text()[-2000:]}"
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")


# ---------------------------------------------------------------------------------------------
# A recorded store


def _record(
    store: Store,
    session: TuningSession,
    step: str,
    key: str,
    label: str,
    spec: dict[str, Any],
    train: list[tuple[int, float, float, float]],  # (step, epoch, lr, loss)
    evals: list[tuple[int, float, float]],  # (step, val loss, val acc)
    status: str,
    outcome: dict[str, Any] | None = None,
    error: str | None = None,
    total_steps: int | None = None,
) -> int:
    rid = store.add_run(spec, kind=f"{step}:{label}", session_id=session.id)
    now = time.time()
    w = MetricWriter(store, rid, background=False)
    for s, ep, lr, loss in train:
        w.add_train(
            s, TrainValues(epoch=ep, lr=lr, momentum=0.9, train_loss=loss, images_per_s=1480.0, wall=0.01 * s)
        )
    for s, vl, va in evals:
        w.add_eval(s, EvalValues(val_loss=vl, val_acc=va))
    w.flush(final=True)
    fields: dict[str, Any] = dict(
        status=status,
        attempt=1,
        device="cpu",
        started=now - 60,
        info={"type": "start", "total_steps": total_steps or (train[-1][0] + 1 if train else 0),
              "steps_per_epoch": 33, "start_step": 0},
    )  # fmt: skip
    if status == "running":
        fields.update(heartbeat=now + 3600, pid=None)  # alive for as long as the test needs
    else:
        fields.update(ended=now, outcome=outcome, error=error)
    store.update_run(rid, **fields)
    session.checklist.attach_run(step, key, str(rid))
    session.save()
    return rid


def range_curve(n: int = 300, lo: float = 1e-4, hi: float = 10.0) -> tuple[list, list]:
    """A range test that falls from 2.3, bottoms out near LR 0.5 and blows up past 3 (diverged at 4.1):
    read as 1cycle 0.2 → 2.0, the floor's middle between 0.56 and 4.1."""
    rng = np.random.default_rng(0)
    lrs = lo * (hi / lo) ** (np.arange(n) / (n - 1))
    x = np.log10(lrs)
    loss = 2.3 - 1.1 / (1 + np.exp(-(x + 1.6) * 3)) + np.where(x > 0.2, (x - 0.2) ** 2 * 12, 0)
    loss = loss + rng.normal(0, 0.02, n)
    stop = int(np.argmax(lrs > 4.1))
    train = [(i, i / 33, float(lrs[i]), float(loss[i])) for i in range(stop)]
    evals = [(i, float(loss[i] + 0.05), 0.2 + 0.4 * (2.3 - loss[i]) / 1.1) for i in range(14, stop, 15)]
    return train, evals


def sweep_curve(level: float, n: int = 66, every: int = 7, seed: int = 0) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    train = [
        (i, i / 33, 0.05, float(2.3 * math.exp(-i / 30) + level + rng.normal(0, 0.02))) for i in range(n)
    ]
    evals = [
        (i, float(2.3 * math.exp(-i / 30) + level + 0.1), float(min(0.95, 0.3 + i / 100 - level / 4)))
        for i in range(every - 1, n, every)
    ]
    return train, evals


def seed_store(workspace: Path) -> dict[str, Any]:
    """A session at its momentum step: range test read and accepted, TBS set, momentum partly run."""
    store = Store(workspace)
    # Plain "synthetic" (nothing trains here) with the train size of synthetic:600: TBS 16, short runs.
    s = TuningSession.create(store, "synthetic", "simple3", budget="quick", train_size=540)
    cl = s.checklist
    spec = cl.candidate_list("lr_range")[0].spec.to_dict()
    train, evals = range_curve()
    outcome = {
        "outcome": "diverged",
        "step": len(train),
        "epoch": len(train) / 33,
        "diverged_at_step": len(train),
        "diverged_lr": 4.1,
        "wall_time": 30.0,
        "images_per_s": 1480.0,
        "reason": "loss blew up at LR 4.1",
    }
    range_id = _record(
        store,
        s,
        "lr_range",
        "range",
        "1e-4 → 10",
        spec,
        train,
        evals,
        "diverged",
        outcome=outcome,
        total_steps=300,
    )
    rec = s.recommend("lr_range")
    assert rec is not None and rec.ok, rec
    s.accept(rec)
    s.override("batch_size", 16)
    s.set_candidates("momentum", [[0.95, 0.85], [0.9, 0.9], [0.99, 0.99]])
    mom = cl.candidate_list("momentum")
    ids = {}
    for i, (c, level) in enumerate(zip(mom[:2], (0.55, 0.7), strict=True)):
        train, evals = sweep_curve(level, seed=i)
        ids[c.key] = _record(
            store, s, "momentum", c.key, c.label, c.spec.to_dict(), train, evals, "finished",
            outcome={"outcome": "finished", "step": 66, "epoch": 2.0, "val_loss": evals[-1][1],
                     "val_acc": evals[-1][2], "reason": "finished 2 epochs", "wall_time": 20.0},
        )  # fmt: skip
    train, evals = sweep_curve(0.62, n=30, seed=5)
    running_id = _record(
        store, s, "momentum", mom[2].key, mom[2].label, mom[2].spec.to_dict(), train, evals, "running",
        total_steps=66,
    )  # fmt: skip
    # A run of another kind that failed: its error must show.
    failed_id = store.add_run(cl.final_spec().to_dict(), kind="train", session_id=s.id)
    store.update_run(
        failed_id, status="failed", attempt=1, started=time.time() - 5, ended=time.time(),
        error="RuntimeError: CUDA out of memory (traceback in worker.log)",
    )  # fmt: skip
    store.run_dir(failed_id)
    store.log_path(failed_id).write_text(
        "2024-01-01 INFO start\n2024-01-01 ERROR failed: CUDA out of memory\n"
    )
    store.close()
    return {"range": range_id, "momentum": ids, "running": running_id, "failed": failed_id, "session": s.id}


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any]]:
    monkeypatch.setenv("TUNEASSIST_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path / "ws", seed_store(tmp_path / "ws")


def run_app(workspace: Path, size: tuple[int, int], script: Any) -> Any:
    """Run the app headless at `size`, drive it with `script(app, pilot)`, return what it returns."""

    async def main() -> Any:
        app = TuneApp(workspace=workspace, manage_queue=False, poll_seconds=0.2)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            return await script(app, pilot)

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Screens


async def at_sizes(app: TuneApp, pilot: Any) -> dict[tuple[int, int], str]:
    """The current screen's text at each of SIZES (the terminal resized in place)."""
    out = {}
    for size in SIZES:
        await pilot.resize_terminal(*size)
        await pilot.pause(0.1)
        out[size] = screen_text(app)
    return out


def test_checklist_steps(seeded: tuple[Path, dict]) -> None:
    ws, ids = seeded

    async def script(app: TuneApp, pilot: Any) -> tuple[dict, dict]:
        sweep = await at_sizes(app, pilot)  # opens on the current step: momentum
        await pilot.press("1")
        return sweep, await at_sizes(app, pilot)

    sweep, rng = run_app(ws, SIZES[0], script)
    for (w, h), text in rng.items():
        assert len(text.splitlines()) == h and max(len(x) for x in text.splitlines()) <= w
        assert "session 1: synthetic · simple3" in text
        assert "1 · LR range test (done)" in text
        assert "Chosen: 0.2 → 2.0 (recommended)" in flat(text)
        assert "diverged 4.1" in text  # the divergence marker on the plot
        assert "1e-4" in text and "0.01" in text  # log x axis over the range tested
        assert "[═" in text  # the chosen range marked on the LR axis
        assert "train loss" in text and "val loss" in text
        assert "● 1 running" in text
        assert "r run" in text and "a accept" in text and "? help" in text  # footer keys
    assert "LR range     ✓ 0.2 → 2.0" in rng[(100, 30)]  # the full sidebar at 100 columns
    assert " 1 ✓" in rng[(80, 24)] and "›3 ●" in rng[(80, 24)]  # numbers and symbols at 80
    for text in sweep.values():
        assert "3 · Momentum (running)" in text
        assert "0.95–0.85" in text and "0.99" in text  # legend and table
        assert "● running" in text and "✓ finished" in text
        assert "Running: 2 of 3 runs done" in text
        assert "val loss vs step" in text


def test_sweep_recommendation_and_accept(seeded: tuple[Path, dict], tmp_path: Path) -> None:
    """When the last candidate ends, the reading appears with the leader starred; a accepts it."""
    ws, ids = seeded
    with Store(ws) as store:
        store.update_run(ids["running"], status="finished", ended=time.time(), heartbeat=time.time(),
                         outcome={"outcome": "finished", "step": 30, "reason": "finished"})  # fmt: skip

    async def script(app: TuneApp, pilot: Any) -> tuple[str, str]:
        await wait_for(pilot, lambda: "[a] accept" in screen_text(app), 10, "the recommendation", app)
        before = screen_text(app)
        await pilot.press("a")
        await pilot.pause(0.3)
        return before, screen_text(app)

    before, after = run_app(ws, (100, 30), script)
    assert "★" in before and "[a] accept" in before and "decision" in before
    assert re.search(r"Recommendation · \d+ runs in \d+:\d\d, up to \d+ at once", before), before
    assert "4 · Weight decay" in after  # moved on to the next step
    s = TuningSession(Store(ws), ids["session"])
    assert s.checklist.decisions["momentum"].source == "recommended"
    assert s.checklist.current_step == "weight_decay"  # what "4 · Weight decay" on the screen shows


def test_the_keys_to_press_stay_on_screen_when_the_reading_is_long(
    seeded: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading longer than its pane (a noisy curve's cautions on 80x24) is cut, never the keys."""
    from tuneassist.tui import checklist_view

    ws, ids = seeded
    with Store(ws) as store:
        store.update_run(ids["running"], status="finished", ended=time.time(), heartbeat=time.time(),
                         outcome={"outcome": "finished", "step": 30, "reason": "finished"})  # fmt: skip
    split = checklist_view._split_first
    caution = " Caution: noisy curve, the paired gap swings between evaluations." * 6
    monkeypatch.setattr(checklist_view, "_split_first", lambda r: (split(r)[0], split(r)[1] + caution))

    async def script(app: TuneApp, pilot: Any) -> str:
        await wait_for(pilot, lambda: "★" in screen_text(app), 10, "the reading", app)
        await pilot.pause(0.3)
        return screen_text(app)

    text = run_app(ws, (80, 24), script)
    assert "▶ Momentum 0.95–0.85" in text  # the reading's head shows
    assert "[a] accept  [o] override  [r] re-run with another seed" in text, text


def test_runs_screen_and_detail(seeded: tuple[Path, dict]) -> None:
    ws, ids = seeded

    async def script(app: TuneApp, pilot: Any) -> tuple[dict, dict, dict]:
        await pilot.press("R")
        table = await at_sizes(app, pilot)  # the newest run (the failed one) is selected first
        await pilot.press("enter")
        failed = await at_sizes(app, pilot)
        await pilot.press("escape", "down", "enter")  # the running momentum run, next newest
        return table, failed, await at_sizes(app, pilot)

    tables, faileds, runnings = run_app(ws, SIZES[0], script)
    for size in SIZES:
        table, failed, running = tables[size], faileds[size], runnings[size]
        assert (
            "✗ failed" in table and "● running" in table and "✓ finished" in table
        )
        # the range test ran until the loss blew up, its expected end: done, not a red failure
        assert "✓ done, diverged at LR 4.1" in table and "✗ diverged" not in table
        assert "CUDA out of memory" in table  # the selected run's error under the table
        assert f"Run {ids['failed']}" in failed and "✗ failed" in failed and "CUDA out of memory" in failed
        assert "ERROR failed" in failed  # the log tail
        assert f"Run {ids['running']}" in running and "● running" in running and "step 30/66" in running
        assert "loss vs epoch" in running and "Diagnosis:" in running


@pytest.mark.parametrize("size", SIZES)
def test_profiles_screen_save_and_export(seeded: tuple[Path, dict], size: tuple[int, int]) -> None:
    """Save the session's result from the profiles screen, then export it as JSON (at both sizes)."""
    ws, ids = seeded

    async def script(app: TuneApp, pilot: Any) -> tuple[str, str, str]:
        await pilot.press("p")
        await pilot.pause()
        listing = screen_text(app)
        await pilot.press("s")  # save the session's result (not finished: saved with a note)
        await pilot.pause()
        dialog = screen_text(app)
        await pilot.press(*"mine", "enter")
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("down", "down", "enter")  # json
        await pilot.pause()
        await pilot.press("enter")  # the default path
        await pilot.pause()
        return listing, dialog, screen_text(app)

    listing, dialog, after = run_app(ws, size, script)
    assert "shipped" in listing and "cifar10-resnet56-1cycle" in listing
    assert "lr_min" in listing  # the TOML of the highlighted profile
    assert "The checklist is not finished" in flat(dialog)
    saved = ws / "profiles" / "mine.toml"
    assert saved.exists() and 'data = "synthetic"' in saved.read_text()
    exported = ws / "exports" / "mine.json"
    assert exported.exists() and '"lr_max"' in exported.read_text()
    assert "exported" in after and "exports/mine.json" in flat(after).replace(" ", "")


def test_a_session_made_in_the_form_is_capped_by_the_memory_probe(tmp_path: Path) -> None:
    """The form ran no memory probe, so its batch-size grid had no memory limit (a TBS candidate could
    run out of device memory); `tune` probed. Now the form probes off the UI thread (the real probe
    subprocess here), and a second create while it runs makes no second session."""
    from textual.widgets import Input

    from tuneassist.tui.checklist import ChecklistScreen

    ws = tmp_path / "ws"

    async def main() -> tuple[list[str], bool]:
        app = TuneApp(workspace=ws, manage_queue=False, poll_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            app.screen.query_one("#data", Input).value = "synthetic:600"
            await pilot.press("ctrl+n")
            await pilot.pause(0.1)
            await pilot.press("ctrl+n")  # again, while the probe runs
            responsive = "the memory probe is still running" in " ".join(toasts(app))
            await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen), 120, "the session", app)
            await pilot.pause(0.5)
            return toasts(app), responsive

    shown, responsive = asyncio.run(main())
    assert responsive, shown
    sessions = [s for s in Store(ws).list_sessions() if "checklist" in (s.get("state") or {})]
    assert len(sessions) == 1
    max_fit = sessions[0]["state"]["checklist"]["max_fit"]
    assert isinstance(max_fit, int) and max_fit >= 16  # only a probe's answer sets it
    assert any(f"largest batch that fits: {max_fit}" in t for t in shown), shown


def test_start_screen_lists_sessions_and_help(seeded: tuple[Path, dict]) -> None:
    ws, ids = seeded

    async def script(app: TuneApp, pilot: Any) -> tuple[str, str]:
        await pilot.press("S")
        await pilot.pause()
        start = screen_text(app)
        await pilot.press("question_mark")
        await pilot.pause()
        return start, screen_text(app)

    start, help_text = run_app(ws, (100, 30), script)
    assert "New tuning session" in start and "Sessions" in start
    assert "2/5 · next: Momentum" in start and "1 running" in start
    assert "Keys" in help_text and "Everywhere" in help_text and "Checklist" in help_text
    for key, words in (("a", "accept"), ("o", "override"), ("r", "run"), ("R", "runs"), ("q", "quit")):
        assert f" {key} " in help_text and words in help_text


def test_help_lists_every_binding(seeded: tuple[Path, dict]) -> None:
    """Every key bound on every screen appears in the help (built from the bindings themselves)."""
    from tuneassist.tui.checklist import ChecklistScreen
    from tuneassist.tui.profiles import ProfilesScreen
    from tuneassist.tui.runs import RunDetailScreen, RunsScreen
    from tuneassist.tui.start import StartScreen

    ws, _ = seeded
    app = TuneApp(workspace=ws, manage_queue=False)
    listed = {desc for _, keys in app.help_sections() for _, desc in keys}
    for cls in (TuneApp, ChecklistScreen, RunsScreen, RunDetailScreen, ProfilesScreen, StartScreen):
        for b in cls.BINDINGS:
            if not b.description.startswith("view step"):
                assert b.description in listed, (cls.__name__, b.key)
    assert "view step 1 … 5" in listed and "command palette (every action by name)" in listed


def test_no_color_states_in_words(seeded: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, ids = seeded
    monkeypatch.setenv("NO_COLOR", "1")

    async def script(app: TuneApp, pilot: Any) -> str:
        assert app.no_color
        await pilot.press("R")
        await pilot.pause()
        return screen_text(app)

    text = run_app(ws, (100, 30), script)
    for word in ("failed", "running", "diverged", "finished"):
        assert word in text


def test_chart_mono_glyphs_and_decimation() -> None:
    x = np.arange(100_000, dtype=float)
    y = np.exp(-x / 30_000)
    y[50_000] = 5.0  # one spike must survive decimation to 100 columns
    chart = Chart(
        [Series("a", x, y), Series("b", x, y * 0.5)], vlines=[VLine(60_000, "decision")], xlabel="step"
    )
    t0 = time.perf_counter()
    text = render_chart(chart, 100, 20).plain
    assert time.perf_counter() - t0 < 1.0
    rows = text.splitlines()
    assert len(rows) == 20 and all(len(r) <= 100 for r in rows)
    spike_col = [r for r in rows[1:4] if any(ch != " " and ord(ch) >= 0x2800 for ch in r[40:70])]
    assert spike_col, text  # the spike reaches the top rows
    assert "decision" in text and "┊" in text
    mono = render_chart(chart, 100, 20, mono=True).plain
    assert "•• a" in mono and "++ b" in mono and "+" in "".join(mono.splitlines()[1:])


def test_plot_redraws_only_on_change(seeded: tuple[Path, dict]) -> None:
    ws, ids = seeded

    async def script(app: TuneApp, pilot: Any) -> tuple[int, int]:
        await pilot.press("2")  # batch size: overridden, no runs: a still chart
        await pilot.pause()
        plot = app.screen.query_one(PlotView)
        first = plot.renders
        await pilot.pause(1.0)  # five polls, nothing new
        return first, plot.renders

    first, later = run_app(ws, (100, 30), script)
    assert later == first


def test_corrupt_run_rows_do_not_crash(seeded: tuple[Path, dict]) -> None:
    """NaN losses and a run with neither info nor metrics still render."""
    ws, ids = seeded
    with Store(ws) as store:
        sql = "UPDATE metrics SET train_loss = 9e999, val_loss = NULL WHERE run_id = ? AND step > 20"
        store.write(lambda c: c.execute(sql, (ids["running"],)))
        store.update_run(ids["running"], info=None)

    async def script(app: TuneApp, pilot: Any) -> str:
        await pilot.pause(0.5)
        await pilot.press("R", "down", "enter")
        await pilot.pause()
        return screen_text(app)

    text = run_app(ws, (80, 24), script)
    assert f"Run {ids['running']}" in text


def test_command_palette_reaches_actions(seeded: tuple[Path, dict]) -> None:
    from tuneassist.tui.runs import RunsScreen

    ws, _ = seeded

    async def script(app: TuneApp, pilot: Any) -> tuple[list[str], Any]:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"Cancel run")
        await pilot.pause(0.5)
        await pilot.press("enter")  # goes to the runs screen and tries to cancel the selected run
        await pilot.pause(0.5)
        return titles, (app.screen, toasts(app))

    titles, (screen, notes) = run_app(ws, (100, 30), script)
    for t in ("Accept recommendation", "Override value", "Run step", "Export profile", "Save profile",
              "Cancel run", "Resume run", "Help: keys", "Runs", "Profiles"):  # fmt: skip
        assert t in titles
    assert isinstance(screen, RunsScreen)
    assert any("only queued or running runs cancel" in n for n in notes)  # the newest run (failed)


def test_override_marks_later_steps_stale(seeded: tuple[Path, dict]) -> None:
    """o on the range step with a new range: the batch size chosen after it turns stale (in words)."""
    ws, ids = seeded

    async def script(app: TuneApp, pilot: Any) -> str:
        await pilot.press("1", "o")
        await pilot.pause()
        await pilot.press(*"0.02:0.2", "enter")
        await pilot.pause(0.3)
        await pilot.press("2")
        await wait_for(pilot, lambda: "Stale: 16" in screen_text(app), 10, "the stale batch size", app)
        return screen_text(app)

    text = run_app(ws, (100, 30), script)
    s = TuningSession(Store(ws), ids["session"])
    d = s.checklist.decisions
    assert d["lr_range"].source == "override" and d["lr_range"].value["lr_max"] == pytest.approx(0.2)
    assert d["batch_size"].stale
    assert "stale" in text and "2 · Batch size (stale)" in text and "Stale: 16" in text


def test_edit_add_remove_candidates(seeded: tuple[Path, dict]) -> None:
    """e / n / x edit the values a step will try; a step with runs still going refuses edits."""
    ws, ids = seeded

    async def script(app: TuneApp, pilot: Any) -> list[str]:
        await pilot.press("e")  # momentum: a run is still going
        await pilot.pause()
        await pilot.press("4", "n")  # weight decay: add a value
        await pilot.pause()
        await pilot.press(*"3e-4", "enter")
        await pilot.pause(0.2)
        await pilot.press("x")  # remove the first (1e-2)
        await pilot.pause(0.2)
        await pilot.press("e")
        await pilot.pause()
        await pilot.press(*"bogus", "enter")  # refused inline, the dialog stays
        await pilot.pause(0.2)
        text = screen_text(app)
        await pilot.press("ctrl+u", *"5e-3", "enter")  # ctrl+u clears the field
        await pilot.pause(0.2)
        labels = [c.label for c in app.session.checklist.candidate_list("weight_decay")]
        return [*labels, flat(text), " ".join(toasts(app))]

    *labels, dialog, notes = run_app(ws, (100, 30), script)
    assert "still going" in notes
    assert "is not a weight decay" in dialog
    assert labels == ["5e-3", "1e-4", "3e-4"]


def test_rerun_with_another_seed(seeded: tuple[Path, dict]) -> None:
    """r on a step whose runs ended asks, then queues the same values again with seed 1."""
    ws, ids = seeded
    with Store(ws) as store:
        # Keep the CPU slot taken by a stand-in run so the re-runs only queue (no real training here).
        blocker = store.add_run({"device": "cpu"}, kind="train")
        store.update_run(blocker, status="running", device="cpu", heartbeat=time.time() + 3600, attempt=1)
        store.update_run(ids["running"], status="finished", ended=time.time(), heartbeat=time.time(),
                         outcome={"outcome": "finished", "step": 30, "reason": "finished"})  # fmt: skip

    async def script(app: TuneApp, pilot: Any) -> str:
        await wait_for(pilot, lambda: "[a] accept" in screen_text(app), 10, "the reading", app)
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.3)
        return screen_text(app)

    text = run_app(ws, (100, 30), script)
    store = Store(ws)
    s = TuningSession(store, ids["session"])
    new = s.step_runs("momentum")
    assert set(new.values()).isdisjoint({*ids["momentum"].values(), ids["running"]})
    runs = [store.get_run(r) for r in new.values()]
    assert all(r.status == "queued" and r.spec_data["seed"] == 1 for r in runs)
    assert "◌ queued" in text and "Running: 0 of 3 runs done" in text
    for r in runs:
        store.request_cancel(r.id)
    store.close()


def test_checklist_shows_the_devices_panel(
    seeded: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_hardware import SMI_OUTPUT, fake_nvidia_smi

    fake_nvidia_smi(tmp_path, monkeypatch, SMI_OUTPUT)
    ws, _ = seeded

    async def script(app: Any, pilot: Any) -> str:
        await wait_for(pilot, lambda: "GPU 0 H200" in screen_text(app), 10, "the devices panel", app)
        return screen_text(app)

    text = run_app(ws, (100, 30), script)
    assert "12.0/140.4 GiB · 87%" in text and "RAM " in text


def test_final_step_compares_the_variants_and_refines_on_one_key(tmp_path: Path) -> None:
    """The final step's table shows the tuned run, the LR-only profile and the untuned baseline with ★
    on the one the profile keeps; `f` starts one more final-length run acting on the diagnosis,
    launched by the app's poll (never while drawing)."""
    ws = tmp_path / "ws"
    store = Store(ws)
    s = TuningSession.create(store, "synthetic", "simple3", budget="quick", train_size=540)
    for step, value in (("lr_range", (0.03, 0.3)), ("batch_size", 16), ("momentum", (0.9, 0.9))):
        s.override(step, value)
    s.override("weight_decay", 1e-2)
    levels = {"final": (0.82, True), "lr_only": (0.86, True), "baseline": (0.70, False)}
    for c in s.checklist.candidate_list("final"):
        acc, falling = levels[c.key]
        train = [(i, i / 33, 0.05, 2.0 - i / 400) for i in range(330)]
        evals = [(i, (2.2 - i / 300) if falling else 1.2, acc) for i in range(32, 330, 33)]
        _record(
            store, s, "final", c.key, c.label, c.spec.to_dict(), train, evals, "finished",
            outcome={"outcome": "finished", "step": 330, "epoch": 10.0, "val_loss": evals[-1][1],
                     "val_acc": acc, "test_acc": acc - 0.01, "reason": "finished", "wall_time": 20.0},
        )  # fmt: skip
    store.close()

    async def script(app: TuneApp, pilot: Any) -> tuple[str, list[str], dict[str, str]]:
        await pilot.press("5")
        await wait_for(pilot, lambda: "LR-only profile" in screen_text(app), 10, "the final table", app)
        await wait_for(pilot, lambda: "did not earn their place" in flat(screen_text(app)), 10, "the reading")
        text = screen_text(app)
        await pilot.press("f")
        await wait_for(pilot, lambda: "refine1" in app.session.checklist.runs.get("final", {}), 10, "refine")
        return text, toasts(app), dict(app.session.checklist.runs["final"])

    text, notes, runs = run_app(ws, (100, 30), script)
    star = next(line for line in text.splitlines() if "★" in line)
    assert "LR-only profile" in star  # validated best (86% vs 82%): the profile keeps it
    assert "untuned baseline" in text and "tuned profile" in text
    assert set(runs) == {"final", "lr_only", "baseline", "refine1"}
    assert any("Started run(s)" in n for n in notes)
    store = Store(ws)
    row = store.get_run(int(runs["refine1"]))
    cancel_run(store, int(runs["refine1"]), wait=30)  # a real worker: do not let it train on
    assert row.spec_data["lr_max"] == pytest.approx(2 * 0.3)  # "raise the max LR to 0.6 (from 0.3)"
    assert row.spec_data["epochs"] == s.checklist.final_epochs()
