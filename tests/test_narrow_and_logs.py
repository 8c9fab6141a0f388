"""`tuneassist runs` fits the terminal instead of wrapping; the TUI writes the exceptions it survives
to a log file in the workspace and the toast names it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_tui_screens import seed_store, toasts
from testkit import make_run

from tuneassist.cli.main import main
from tuneassist.cli.runs_cmd import _table
from tuneassist.tui.fmt import run_status


@pytest.mark.parametrize("cols", [100, 80])
def test_runs_table_fits_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cols: int
) -> None:
    import sys

    ws = tmp_path / "ws"
    seed_store(ws)
    monkeypatch.setenv("COLUMNS", str(cols))
    assert main(["--workspace", str(ws), "runs"]) == 0  # not a terminal: every column, as before
    wide = capsys.readouterr().out.splitlines()
    assert max(map(len, wide)) > 120 and "BEST VAL LOSS" in wide[0]  # what used to wrap
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal of `cols` columns
    assert main(["--workspace", str(ws), "runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    table = out[: len(wide) - sum(1 for ln in wide if ln.startswith("run "))]
    assert all(len(line) <= cols for line in table), max(map(len, table))
    for col in ("ID", "STATUS", "KIND", "EPOCH", "VAL LOSS", "VAL ACC"):
        assert col in table[0], table[0]
    assert len(table) == len([ln for ln in wide if not ln.startswith("run ")])  # one line per run still


def test_table_cuts_long_cells_with_an_ellipsis() -> None:
    rows = [["1", "x" * 60, "running"]]
    text = _table(rows, ["ID", "HYPERPARAMETERS", "STATUS"], width=40)
    assert all(len(line) <= 40 for line in text.splitlines())
    assert "…" in text and "HYPERPARAMS" in text and "running" in text


def test_a_diverged_range_test_reads_as_done_with_its_lr() -> None:
    rt = make_run(spec={"schedule": "range_exp"}, kind="lr_range:range", outcome={"diverged_lr": 3.2})
    assert run_status("diverged", run=rt).plain == "✓ done, diverged at LR 3.2"
    train = make_run(spec={"schedule": "onecycle"}, kind="train", outcome={})
    assert run_status("diverged", run=train).plain == "✗ diverged"


def test_tui_writes_a_surviving_exception_to_its_log_and_the_toast_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneassist.tui.app import TuneApp
    from tuneassist.tui.start import StartScreen

    def broken(self: Any) -> dict[str, Any]:
        raise RuntimeError("a bug in the form")

    ws = tmp_path / "ws"

    async def run() -> list[str]:
        app = TuneApp(workspace=ws, manage_queue=False, poll_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            monkeypatch.setattr(StartScreen, "_form", broken)
            await pilot.press("ctrl+n")
            await pilot.pause(0.2)
            return toasts(app)

    shown = asyncio.run(run())
    log = ws / "tui.log"
    assert any("RuntimeError: a bug in the form" in t and f"(traceback in {log})" in t for t in shown), shown
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError: a bug in the form" in text
    assert log.stat().st_mode & 0o777 == 0o600
