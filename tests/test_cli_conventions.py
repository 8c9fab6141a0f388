"""CLI conventions: every flag has help, every reporting command has --json."""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import pytest

from tuneassist.cli.main import build_parser, main


def _actions(p: argparse.ArgumentParser, path: list[str]) -> list[tuple[str, argparse.Action]]:
    out = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out += _actions(sp, [*path, name])
        elif a.dest != "help" and a.help != argparse.SUPPRESS:
            out.append((" ".join(path), a))
    return out


def _g(v: object) -> str:
    """A default as the help texts write it: 1e-4:10 for (0.0001, 10.0), 60 for 60.0."""
    if isinstance(v, tuple):
        return ":".join(_g(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}" if 1e-3 <= abs(v) < 1e6 or v == 0 else f"{v:.0e}".replace("e-0", "e-")
    return str(v)


def test_every_flag_has_help_and_names_its_default() -> None:
    missing, no_default = [], []
    for where, a in _actions(build_parser(), ["tuneassist"]):
        name = f"{where} {'/'.join(a.option_strings) or a.dest}"
        if not a.help:
            missing.append(name)
        elif (
            a.option_strings
            and a.default not in (None, False, argparse.SUPPRESS)
            and not any(_shown(a.default) in a.help for _shown in (str, _g))
            and "default" not in a.help
        ):
            no_default.append(f"{name} ({a.default!r}: {a.help})")
    assert not missing, missing
    assert not no_default, no_default


def test_profile_show_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--workspace", str(tmp_path), "profile", "show", "cifar10-resnet56-1cycle", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "cifar10-resnet56-1cycle" and out["path"].endswith("cifar10-resnet56-1cycle.toml")
    assert out["profile"]["lr_max"] == 0.8 and out["needs_import"] is False


def test_runs_cancel_and_resume_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneassist.runs import launch

    monkeypatch.setattr(launch, "advance_queue", lambda store: [])  # queued, never started
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "train", "--data", "synthetic:64", "--epochs", "1", "--background", "--json"]) == 0
    capsys.readouterr()
    assert main([*ws, "runs", "cancel", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == 1 and out["status"] == "cancelled" and out["stopping"] is False
    monkeypatch.setattr(launch, "_start_detached", lambda *a, **k: types.SimpleNamespace(pid=0))
    assert main([*ws, "runs", "resume", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == 1 and out["status"] in ("queued", "running") and out["checkpoint"] is False
    assert out["from_step"] == 0
