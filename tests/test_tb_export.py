"""`runs export ID --format tensorboard DIR`: the run's curves as TensorBoard event files, read back
with TensorBoard's own reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_tui_screens import seed_store

from tuneassist.cli.main import main
from tuneassist.runs.store import Store

pytest.importorskip("tensorboard")


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_export_tensorboard_writes_every_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    ids = seed_store(ws)
    rid = next(iter(ids["momentum"].values()))
    rows = Store(ws).metrics(rid)
    tb = tmp_path / "tb"
    assert main(["--workspace", str(ws), "runs", "export", str(rid), "--format", "tensorboard", str(tb)]) == 0
    assert f"tensorboard --logdir {tb}" in capsys.readouterr().err
    got = _scalars(tb / f"run-{rid}")
    train = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
    val = [(r["step"], r["val_acc"]) for r in rows if r["val_acc"] is not None]
    assert [s for s, _ in got["train/loss"]] == [s for s, _ in train]
    assert [v for _, v in got["train/loss"]] == pytest.approx([v for _, v in train], rel=1e-6)
    assert [s for s, _ in got["val/acc"]] == [s for s, _ in val] and len(val) >= 2
    assert [v for _, v in got["val/acc"]] == pytest.approx([v for _, v in val], rel=1e-6)
    assert {"train/lr", "train/momentum", "val/loss"} <= set(got)
    # exporting again into the same DIR would show the curve twice: refused in one line
    assert main(["--workspace", str(ws), "runs", "export", str(rid), "--format", "tensorboard", str(tb)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds event files" in err


def test_export_tensorboard_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    rid = seed_store(ws)["range"]
    base = ["--workspace", str(ws), "runs", "export", str(rid)]
    assert main([*base, "--format", "tensorboard"]) == 2
    assert "writes a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse's one line
        main([*base, "--format", "csv", str(tmp_path / "x")])
    assert e.value.code == 2 and "only tensorboard takes a DIR" in capsys.readouterr().err
    assert main([*base, "--format", "tensorboard", str(ws / "runs")]) == 2  # inside the run store
    assert "run store" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as without the package
    assert main([*base, "--format", "tensorboard", str(tmp_path / "tb2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install tensorboard" in err
