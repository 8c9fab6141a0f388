"""The TUI driven like a user would, with REAL detached worker processes training simple3 on synthetic data.

- a whole checklist on synthetic:600 through the screens: the range test (launched with r, its plot
  filling in, its reading accepted with a), an overridden batch size, a momentum sweep cut to two
  values and accepted, an overridden weight decay, the final 1cycle run accepted, a saved profile;
- quitting the app while a run trains leaves it training; a new app instance shows it live, and
  cancels it;
- the UI process never imports torch (checked in a fresh interpreter).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from tuneassist.runs.store import Store, pid_alive
from tuneassist.session import TuningSession
from tuneassist.tui.app import TuneApp
from tuneassist.tui.checklist import ChecklistScreen
from tuneassist.tui.dialogs import InputDialog
from tuneassist.tui.widgets import PlotView

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_tui_screens import screen_text, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(ws: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared workspace for real workers (none outlives the test); a worker counts as lost only
    after 20 s without a heartbeat, and colours are on."""
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_TIMEOUT", "20")
    monkeypatch.delenv("NO_COLOR", raising=False)
    return ws


def _plot_points(app: TuneApp) -> int:
    plot = app.screen.query_one(PlotView)
    return sum(min(len(s.xs), len(s.ys)) for s in plot.chart.series)


def _pane_title(app: TuneApp) -> str:
    """The title of the step the checklist pane shows (the sidebar names every step)."""
    if not isinstance(app.screen, ChecklistScreen):
        return ""
    return str(app.screen.query_one("#explain", Static).border_title or "")


def _rows(cl: Any) -> int:
    return len(cl.candidate_list("momentum"))


async def _override(pilot: Any, app: TuneApp, text: str) -> None:
    """Press o and type a value only once the dialog has focus, so no key lands on the checklist."""
    await pilot.press("o")
    await wait_for(
        pilot,
        lambda: isinstance(app.focused, Input) and isinstance(app.screen, InputDialog),
        10,
        "the override dialog",
        app,
    )
    app.focused.value = ""
    await pilot.press(*text, "enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, InputDialog), 10, "the dialog to close", app)


@pytest.mark.slow
def test_whole_checklist_with_real_workers(ws: Path) -> None:
    """About 4 runs of simple3 on 540 images; a minute or two on two busy cores."""

    async def main() -> None:
        app = TuneApp(poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            assert "New tuning session" in screen_text(app)  # an empty workspace opens the form
            await pilot.press(*"synthetic:600", "enter")  # replaces the preselected default
            await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen), 120, "the checklist")
            assert app.session is not None and app.session.checklist.data == "synthetic:600"

            # 1 · LR range test: launch, watch the plot fill in, accept the reading.
            await pilot.press("r")
            await wait_for(pilot, lambda: _plot_points(app) > 0, 120, "range-test points on the plot", app)
            first = _plot_points(app)
            await wait_for(pilot, lambda: "[a] accept" in screen_text(app), 180, "the LR reading", app)
            assert _plot_points(app) > first  # it kept filling in
            text = screen_text(app)
            assert "[══]" in text and "suggested" in text  # the suggested range, marked
            await pilot.press("a")
            cl = app.session.checklist
            await wait_for(pilot, lambda: "lr_range" in cl.decisions, 10, "the LR decision", app)
            assert cl.decisions["lr_range"].source == "recommended"

            # 2 · Batch size: override.
            await wait_for(pilot, lambda: "2 · Batch size" in _pane_title(app), 10, "step 2", app)
            await _override(pilot, app, "16")
            await wait_for(pilot, lambda: "batch_size" in cl.decisions, 10, "the batch-size decision", app)
            assert cl.decisions["batch_size"].value == 16

            # 3 · Momentum: cut the sweep to two values (x drops the selected row), run, accept.
            await wait_for(pilot, lambda: "3 · Momentum" in _pane_title(app), 10, "step 3", app)
            for n in (3, 2, 1):
                await pilot.press("x")
                await wait_for(pilot, lambda n=n: _rows(cl) == n + 1, 10, "a row to go", app)
            assert [c.label for c in app.session.checklist.candidate_list("momentum")] == ["0.9", "0.95–0.85"]
            await pilot.press("r")
            await wait_for(pilot, lambda: "[a] accept" in screen_text(app), 240, "the momentum reading", app)
            assert "★" in screen_text(app)
            await pilot.press("a")
            await wait_for(pilot, lambda: "momentum" in cl.decisions, 10, "the momentum decision", app)
            assert cl.decisions["momentum"].source == "recommended"

            # 4 · Weight decay: override.
            await wait_for(pilot, lambda: "4 · Weight decay" in _pane_title(app), 10, "step 4", app)
            await _override(pilot, app, "1e-3")
            await wait_for(pilot, lambda: "weight_decay" in cl.decisions, 10, "the WD decision", app)
            assert cl.decisions["weight_decay"].value == pytest.approx(1e-3)

            # 5 · The final 1cycle run; accepting it offers to save the profile.
            await wait_for(pilot, lambda: "5 · 1cycle run" in _pane_title(app), 10, "step 5", app)
            await pilot.press("r")
            await wait_for(
                pilot, lambda: "[a] accept" in screen_text(app), 240, "the final run's reading", app
            )
            assert "accuracy" in screen_text(app)
            await pilot.press("a")
            await wait_for(pilot, lambda: "Save profile" in screen_text(app), 10, "the save dialog", app)
            await pilot.press(*"tuned", "enter")
            await wait_for(pilot, lambda: "saved" in screen_text(app), 10, "the profiles screen", app)
            assert app.session.checklist.done

        path = ws / "profiles" / "tuned.toml"
        text = path.read_text()
        assert 'data = "synthetic:600"' in text and "measured" in text and "set by the user" in text

    asyncio.run(main())


def test_quit_leaves_run_running_and_reopen_shows_it(ws: Path) -> None:
    """Quit mid-run: the worker keeps training; a new app shows it live; c cancels it from the UI."""
    store = Store(ws)
    # The paper budget's range test (1000 steps): long enough to outlive the first app.
    TuningSession.create(store, "synthetic:600", "simple3", budget="paper", train_size=540)

    async def first() -> int:
        app = TuneApp(poll_seconds=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("r")
            await wait_for(pilot, lambda: _plot_points(app) > 20, 120, "the range test training", app)
            assert "Running:" in screen_text(app)
            rid = next(iter(app.session.step_runs("lr_range").values()))
            await pilot.press("q")
        return rid

    rid = asyncio.run(first())
    run = store.get_run(rid)
    assert run.status == "running" and pid_alive(run.pid)
    step_then = run.last_step

    async def second() -> None:
        app = TuneApp(poll_seconds=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            text = screen_text(app)
            assert "1 · LR range test (running)" in text and "● 1 running" in text
            await wait_for(pilot, lambda: (store.get_run(rid).last_step or 0) > step_then + 10, 60,
                           "more steps", app)  # fmt: skip
            points = _plot_points(app)
            await pilot.pause(1.0)
            assert _plot_points(app) > points  # live: the plot keeps growing
            await pilot.press("R")
            await pilot.pause()
            assert f"{rid}" in screen_text(app) and "● running" in screen_text(app)
            await pilot.press("c")
            await pilot.pause()
            await pilot.press("y")
            await wait_for(pilot, lambda: store.get_run(rid).status == "cancelled", 60, "the cancel", app)
            await wait_for(pilot, lambda: "■ cancelled" in screen_text(app), 5, "the cancelled status", app)

    asyncio.run(second())
    store.close()


NO_TORCH = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_tui_screens import seed_store
    from tuneassist.tui.app import TuneApp
    import tuneassist.cli.tui_cmd  # noqa: F401
    ws = Path({ws!r})
    seed_store(ws)

    async def main():
        app = TuneApp(workspace=ws, manage_queue=False)
        async with app.run_test(size=(100, 30)) as pilot:
            for keys in (["1"], ["3"], ["m"], ["R"], ["enter"], ["escape", "down", "enter"], ["p"], ["e"],
                         ["enter"], ["enter"], ["S"], ["question_mark"], ["escape"], ["k"]):
                await pilot.press(*keys)
                await pilot.pause(0.1)
    asyncio.run(main())
    bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("TORCH" if bad else "NO-TORCH", bad[:3])
    """
)


def test_ui_never_imports_torch(tmp_path: Path) -> None:
    script = NO_TORCH.format(tests=str(Path(__file__).resolve().parent), ws=str(tmp_path / "ws"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NO_COLOR", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NO-TORCH" in out.stdout, out.stdout


def test_serve_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from tuneassist.cli.main import main

    if importlib.util.find_spec("textual_serve") is not None:
        pytest.skip("textual-serve is installed here")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: textual-serve is not installed; pip install textual-serve"


def test_tui_command_opens_a_named_session(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tuneassist tui --session NAME` resolves the session and hands it to the app (not run here)."""
    import argparse

    from tuneassist.cli import tui_cmd

    store = Store(ws)
    a = TuningSession.create(store, "synthetic:600", "simple3", name="first", train_size=540)
    TuningSession.create(store, "synthetic:600", "simple3", name="second", train_size=540)
    seen: dict[str, Any] = {}

    def fake_run(self: TuneApp) -> None:
        seen["session"] = self.session.id if self.session else None

    monkeypatch.setattr(TuneApp, "run", fake_run)
    assert tui_cmd.open_tui(argparse.Namespace(workspace=str(ws), session="first")) == 0
    assert seen["session"] == a.id
    assert tui_cmd.open_tui(argparse.Namespace(workspace=str(ws), session=None)) == 0
    assert seen["session"] == a.id + 1  # no --session: the latest session
    store.close()


def test_wait_helper_reports_the_screen(ws: Path) -> None:
    """The waiting helper fails with the screen text, so a slow run's failure is readable."""

    async def main() -> None:
        app = TuneApp(workspace=ws, manage_queue=False)
        async with app.run_test(size=(80, 24)) as pilot:
            with pytest.raises(AssertionError, match="New tuning session"):
                await wait_for(pilot, lambda: False, 0.3, "nothing", app)

    asyncio.run(main())
