"""The headless CLI as a user meets it: exit codes, one-line errors, JSON output, no torch for --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import run_main

from tuneassist.cli.main import main

ENV = {**os.environ, "TUNEASSIST_DEBUG": ""}


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, **os.environ},
    )


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from tuneassist.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for c in ('lr-find', 'train', 'runs', 'tune', 'profile'):\n"
        "    try:\n        main([c, '--help'])\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "lr-find" in r.stdout and "train" in r.stdout


BAD_INPUTS = [
    (["train", "--model", "resnet9000"], "unknown model"),
    (["train", "--data", "imagenet"], "unknown data set"),
    (["train", "--lr", "1:0.1"], "reversed"),
    (["lr-find", "--lr", "10:1e-4"], "must grow"),
    (["train", "--wd", "-1e-4"], "negative"),
    (["train", "--batch-size", "0"], "positive"),
    (["train", "--batch-size", "abc"], "whole number"),
    (["train", "--lr", "fast"], "not a number"),
    (["train", "--model", "not a module:fn"], "module:function"),
    (["train", "--model", "mymod:"], "module:function"),
    (["train", "--model", "somemod:build"], "--allow-import"),
    (["train", "--momentum", "1.5"], "outside [0, 1)"),
    (["train", "--epochs", "0"], "epochs"),
    (["train", "--schedule", "cosine"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err


def test_batch_larger_than_split_and_missing_folder(tmp_path: Path) -> None:
    r = cli("train", "--data", "synthetic:100", "--batch-size", "512", "--epochs", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "larger than the training split" in r.stderr and "--batch-size" in r.stderr
    r = cli("train", "--data", f"folder:{tmp_path / 'nope'}", "--epochs", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "nope" in r.stderr and "Traceback" not in r.stderr
    r = cli(
        "train",
        "--model",
        "no_such_module_xyz:build",
        "--allow-import",
        "--epochs",
        "1",
        "--data",
        "synthetic:200",
    )
    assert r.returncode == 2 and "no_such_module_xyz" in r.stderr and "Traceback" not in r.stderr


def test_train_json_reports_final_metrics() -> None:
    r = cli(
        "train",
        "--data",
        "synthetic:400",
        "--model",
        "simple3",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.02:0.2",
        "--json",
        "--threads",
        "2",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["outcome"] == "finished"
    for k in ("val_loss", "val_acc", "test_loss", "test_acc", "wall_time", "images_per_s"):
        assert isinstance(res[k], float), k
    assert res["epochs"] == pytest.approx(1.0)
    assert 0.0 <= res["test_acc"] <= 1.0


def test_lr_find_json_and_plot() -> None:
    r = cli(
        "lr-find",
        "--data",
        "synthetic:600",
        "--model",
        "simple3",
        "--batch-size",
        "32",
        "--steps",
        "50",
        "--lr",
        "1e-4:50",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert len(res["curve"]["lr"]) == len(res["curve"]["train_loss"]) > 10
    assert res["curve"]["val_loss"], "the range test records validation loss"
    s = res["suggestion"]
    assert s["explanation"]
    if s["max_lr"] is not None:
        assert 1e-4 < s["min_lr"] < s["max_lr"] < 50
    from tuneassist.cli.train_cmd import render_lr_find

    text = render_lr_find(res)
    assert "LR range test" in text and "learning rate" in text and "Confidence:" in text
    assert "\x1b[" not in text, "no colour codes when stdout is not a terminal"


def test_profile_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "profile", "list")
    assert code == 0 and "cifar10-resnet56-1cycle" in out
    code, out, _ = run_main(capsys, "profile", "show", "cifar10-resnet56-1cycle")
    assert code == 0 and "resnet56" in out and "lr_max" in out
    dest = tmp_path / "snippet.py"
    code, out, _ = run_main(
        capsys, "profile", "export", "cifar10-resnet56-1cycle", "--format", "pytorch", "-o", str(dest)
    )
    assert code == 0 and dest.exists()
    compile(dest.read_text(), str(dest), "exec")
    code, out, _ = run_main(capsys, "profile", "export", "cifar10-resnet56-1cycle", "--format", "json")
    assert json.loads(out)["model"] == "resnet56"
    code, _, err = run_main(capsys, "profile", "show", "no-such-profile")
    assert code == 2 and "no profile named" in err


def test_train_from_a_profile(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        capsys,
        "train",
        "--profile",
        "synthetic-simple3-1cycle",
        "--data",
        "synthetic:300",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["outcome"] == "finished" and res["epochs"] == pytest.approx(1.0)


def test_tune_rejects_a_bad_time_budget_in_one_line(capsys) -> None:
    from tuneassist.session import parse_duration

    assert (parse_duration("20m"), parse_duration("90s"), parse_duration("1.5h"), parse_duration("2")) == (
        1200.0,
        90.0,
        5400.0,
        120.0,
    )
    for bad in ("soon", "-5m", "0"):
        try:
            code = main(["tune", f"--time={bad}"])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and "duration" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--batch-size", "-3", "-3 must be a positive whole number"),  # it launched a range test at bs 1
        ("--devices", "0", "0 must be a positive whole number"),  # refused only after the memory probe
        ("--epochs", "0", "0 must be a positive whole number"),
        ("--image-size", "x", "'x' is not a whole number"),
        ("--refine", "-1", "-1 must be 0 or a positive whole number"),
    ],
)
def test_tune_refuses_a_bad_number_as_train_does_before_anything_runs(
    option: str,
    value: str,
    why: str,
    ws: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tuneassist.runs.probe_client as probe_client

    def probed(*a: object, **k: object) -> None:
        raise AssertionError("the memory probe ran")

    monkeypatch.setattr(probe_client, "probe_in_subprocess", probed)
    rc, out, err = run_main(capsys, "tune", option, value, "--budget", "quick")
    assert rc == 2 and out == ""
    assert err.strip() == f"error: argument {option}: {why}; see `tuneassist tune --help`"


@pytest.mark.parametrize(
    "argv",
    [
        ["tune", "--data", "synthetic", "--model", "simple3"],
        ["train", "--data", "synthetic", "--model", "simple3"],
        ["lr-find", "--data", "synthetic", "--model", "simple3"],
        ["profile"],
        ["profile", "list"],
        ["profile", "show", "p"],
        ["profile", "export", "p"],
        ["runs"],
        ["tui"],
    ],
)
def test_every_command_that_reads_the_workspace_takes_it_after_its_name(argv: list[str]) -> None:
    """`tuneassist tune … --workspace DIR` was refused ("unrecognized arguments") while `runs` and
    `tui` took it there; before or after the command, it names the same folder."""
    from tuneassist.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args([*argv, "--workspace", "/w"]).workspace == "/w"
    assert parser.parse_args(["--workspace", "/w", *argv]).workspace == "/w"
    assert getattr(parser.parse_args(argv), "workspace", None) is None


def test_profile_list_reads_the_workspace_named_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "profiles").mkdir()
    src = Path(__file__).resolve().parents[1] / "tuneassist" / "profiles" / "builtin"
    shipped = sorted(src.glob("*.toml"))[0]
    text = shipped.read_text().replace(f'name = "{shipped.stem}"', 'name = "mine"')
    (tmp_path / "profiles" / "mine.toml").write_text(text)
    code, out, err = run_main(capsys, "profile", "list", "--workspace", str(tmp_path))
    assert code == 0, err
    assert any(line.startswith("mine ") for line in out.splitlines())
