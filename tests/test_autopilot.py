"""Autopilot end to end: real workers run the whole quick checklist, then the tuned profile must beat
the default baseline (SGD, constant LR 0.01, momentum 0.9, no WD) trained for the same epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneassist.profiles import load_profile, profile_to_runspec


@pytest.mark.timeout(900)
def test_quick_autopilot_beats_the_baseline_and_saves_a_valid_profile(tmp_path: Path) -> None:
    env = {**os.environ, "TUNEASSIST_HOME": str(tmp_path / "ws"), "TUNEASSIST_STANDBY": "1"}  # as for users
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneassist.cli.main",
            "tune",
            "--data",
            "synthetic:3000",
            "--model",
            "simple3",
            "--budget",
            "quick",
            "--name",
            "auto",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    # Every run trains on all the cores: no standby worker, which would only compete with them for CPU.
    assert not (tmp_path / "ws" / "standby.log").exists()
    summary = json.loads(r.stdout)
    steps = {s["step"]: s for s in summary["steps"]}
    assert set(steps) == {"lr_range", "batch_size", "momentum", "weight_decay", "final"}
    assert all(s["chosen"] and s["why"] for s in steps.values()), steps
    assert summary["timing"]["momentum"]["runs"] == len(steps["momentum"]["candidates"].split(", "))
    profile = load_profile(summary["profile"])
    assert profile.name == "auto" and profile.model == "simple3"
    assert 0 < profile.lr_min < profile.lr_max
    assert profile.provenance.runs and profile.provenance.decisions
    spec = profile_to_runspec(profile)
    assert spec.schedule == "onecycle"
    # The final step ran the untuned baseline at the user's batch (the CLI's 128, not a tuned TBS) and
    # the LR-only profile beside the tuned run, in this test, on the same epochs.
    runs = {s["step"]: s for s in summary["steps"]}["final"]["candidates"]
    assert "untuned baseline" in runs
    assert summary["baseline_batch"] == 128 and summary["baseline"]["outcome"] == "finished"
    final, base = summary["final"]["test_acc"], summary["baseline"]["test_acc"]
    assert base is not None and final is not None
    assert final > base, f"tuned {final:.3f} vs baseline {base:.3f}"
    assert summary["comparison"]["gain_vs_baseline_points"] == pytest.approx(100 * (final - base))
    assert profile.measured_accuracy == pytest.approx(100 * final, abs=0.01)
    assert (profile.batch_size, profile.weight_decay) == tuple(
        summary["comparison"]["hparams"][k] for k in ("batch_size", "weight_decay")
    )
