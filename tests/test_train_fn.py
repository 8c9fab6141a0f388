"""The checklist on the user's own training function (issue 13 item 2): `--train module:function`.

The shipped example (examples/cifar_style.py: its own CNN, its own learnable images) runs through the
same paths as the engine's loop: a foreground range test read by the advisor, a background run in a
worker whose rows land in the store, consent before any import, one-line errors for a broken function.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = "examples.cifar_style:train"


def _cli(ws: Path, *args: str, cwd: Path = REPO, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", "--workspace", str(ws), *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


def test_lr_find_reads_the_users_own_training_function(tmp_path: Path) -> None:
    out = _cli(tmp_path / "ws", "lr-find", "--train", EXAMPLE, "--allow-import", "--data", "synthetic:1000",
               "--steps", "60", "--threads", "1", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["spec"]["train_fn"] == EXAMPLE and result["spec"]["model"] == EXAMPLE
    curve = result["curve"]
    assert len(curve["lr"]) == len(curve["train_loss"]) > 8 and curve["lr"][0] == pytest.approx(1e-4)
    assert len(curve["val_loss"]) >= 5  # the function's own validation, every eval_every steps
    s = result["suggestion"]
    assert s["explanation"] and (s["max_lr"] is not None or s["advice"]), s


def test_a_background_run_of_the_users_function_lands_in_the_store(tmp_path: Path) -> None:
    from tuneassist.runs.store import Store

    ws = tmp_path / "ws"
    out = _cli(ws, "train", "--train", EXAMPLE, "--allow-import", "--data", "synthetic:1000", "--schedule",
               "onecycle", "--lr", "0.04:0.4", "--steps", "21", "--eval-every", "7", "--threads", "1",
               "--background", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    rid = json.loads(out.stdout)["run_id"]
    store = Store(ws)
    deadline = time.monotonic() + 200
    while store.get_run(rid).status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    run = store.get_run(rid)
    assert run.status == "finished", (run.status, run.error)
    assert run.spec_data["model_dir"] == str(REPO)  # recorded at launch, like a --model of your own
    rows = store.metrics(rid)
    assert [r["step"] for r in rows] == list(range(21))
    assert [r["step"] for r in rows if r["val_loss"] is not None] == [6, 13, 20]
    assert rows[0]["lr"] == pytest.approx(0.04) and max(r["lr"] for r in rows) == pytest.approx(0.4, rel=0.1)
    assert run.outcome["test_acc"] is not None and run.info["user_train"] == EXAMPLE
    listed = json.loads(_cli(ws, "runs", "--json").stdout)
    assert listed[0]["model"] == EXAMPLE and listed[0]["best_val_acc"] == run.best_val_acc


def test_consent_and_broken_functions_end_in_one_line(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    no = _cli(ws, "train", "--train", EXAMPLE, "--steps", "2")
    assert no.returncode == 2 and "add --allow-import" in no.stderr and no.stderr.count("\n") == 1
    bad = _cli(ws, "train", "--train", "not a function", "--allow-import", "--steps", "2")
    assert bad.returncode == 2 and "module:function" in bad.stderr and bad.stderr.count("\n") == 1
    (tmp_path / "broken.py").write_text("def train(hp, report):\n    return None\n")
    missing = _cli(ws, "train", "--train", "broken:nothere", "--allow-import", "--steps", "2", cwd=tmp_path)
    assert missing.returncode == 2 and "has no function 'nothere'" in missing.stderr, missing.stderr
    silent = _cli(ws, "train", "--train", "broken:train", "--allow-import", "--steps", "2", cwd=tmp_path)
    assert silent.returncode == 2 and "without calling hp.plan() and report()" in silent.stderr
    assert silent.stderr.count("\n") == 1


def test_a_profile_keeps_the_training_function() -> None:
    from tuneassist.errors import UserError
    from tuneassist.profiles import dumps_toml, loads_profile, profile_from_runspec, profile_to_runspec
    from tuneassist.spec import RunSpec

    spec = RunSpec(model=EXAMPLE, train_fn=EXAMPLE, allow_import=True, lr_min=0.04, lr_max=0.4).validate()
    prof = profile_from_runspec(spec, "mine")
    text = dumps_toml(prof.to_dict())
    assert f'train = "{EXAMPLE}"' in text
    again = loads_profile(text)
    assert again.train_fn == EXAMPLE and again.needs_import
    assert profile_to_runspec(again, allow_import=True).train_fn == EXAMPLE
    with pytest.raises(UserError, match="imports and runs Python code"):
        profile_to_runspec(again)
    with pytest.raises(UserError, match="the profile's model the same"):
        loads_profile(text.replace(f'train = "{EXAMPLE}"', 'train = "other:train"'))
    with pytest.raises(UserError, match="runs your function on one device"):
        RunSpec(model=EXAMPLE, train_fn=EXAMPLE, devices=2, batch_size=128).validate()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tune_runs_the_whole_quick_checklist_on_the_users_function(tmp_path: Path) -> None:
    """Every step of the quick checklist through background workers on the example's own data and net,
    and a profile that names the function (minutes on 2 cores: marked slow)."""
    from tuneassist.profiles import load_profile

    args = ["tune", "--train", EXAMPLE, "--allow-import", "--data", "synthetic:1000", "--budget", "quick",
            "--epochs", "2", "--no-baseline", "--name", "mine", "--json"]  # fmt: skip
    out = _cli(tmp_path / "ws", *args, timeout=1400)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    steps = {s["step"]: s for s in summary["steps"]}
    assert set(steps) == {"lr_range", "batch_size", "momentum", "weight_decay", "final"}
    assert all(s["chosen"] and s["why"] for s in steps.values()), steps
    profile = load_profile(summary["profile"])
    assert profile.train_fn == EXAMPLE and profile.model == EXAMPLE
    assert summary["final"]["test_acc"] is not None and summary["final"]["test_acc"] > 0.3
    runs = json.loads(_cli(tmp_path / "ws", "runs", "--json").stdout)
    assert runs and all(r["model"] == EXAMPLE for r in runs), runs
    # A range test ends where the loss blows up ("diverged", as for a built-in model): this one blew up
    # at LR 9.3, one step before its end, so either ending is its normal one. Every other run finishes.
    ends = {r["kind"].split(":")[0]: set() for r in runs}
    for r in runs:
        ends[r["kind"].split(":")[0]].add(r["status"])
    assert ends.pop("lr_range") <= {"finished", "diverged"}, runs
    assert all(e == {"finished"} for e in ends.values()), runs
