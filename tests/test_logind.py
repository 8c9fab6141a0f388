"""The warning at launch when logind would kill the detached workers at logout (KillUserProcesses=yes
and no linger), with the fix; read from files the test writes, never the machine's own."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from tuneassist.runs import launch
from tuneassist.runs.launch import logout_kills_workers


def _conf(tmp_path: Path, main: str, dropins: dict[str, str] | None = None) -> tuple[Path, ...]:
    etc = tmp_path / "etc"
    (etc / "logind.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "logind.conf").write_text(main)
    for name, text in (dropins or {}).items():
        (etc / "logind.conf.d" / name).write_text(text)
    return (tmp_path / "usr-lib-none", etc / "logind.conf", etc / "logind.conf.d")


def test_kill_user_processes_without_linger_warns_naming_the_fix(tmp_path: Path) -> None:
    linger = tmp_path / "linger"
    linger.mkdir()
    conf = _conf(tmp_path, "[Login]\nKillUserProcesses=yes\n")
    msg = logout_kills_workers("alice", conf, linger)
    assert msg is not None and "\n" not in msg
    assert "KillUserProcesses=yes" in msg and str(conf[1]) in msg and "loginctl enable-linger alice" in msg
    (linger / "alice").touch()  # `loginctl enable-linger alice` makes this file
    assert logout_kills_workers("alice", conf, linger) is None


def test_defaults_drop_ins_and_excluded_users(tmp_path: Path) -> None:
    linger = tmp_path / "linger"
    assert logout_kills_workers("alice", _conf(tmp_path, "[Login]\n#KillUserProcesses=yes\n"), linger) is None
    # a drop-in overrides the main file, in either direction
    conf = _conf(
        tmp_path, "[Login]\nKillUserProcesses=yes\n", {"10-keep.conf": "[Login]\nKillUserProcesses=no\n"}
    )
    assert logout_kills_workers("alice", conf, linger) is None
    conf = _conf(
        tmp_path, "[Login]\nKillUserProcesses=no\n", {"10-keep.conf": "[Login]\nKillUserProcesses=yes\n"}
    )
    msg = logout_kills_workers("alice", conf, linger)
    assert msg and "10-keep.conf" in msg
    assert logout_kills_workers("root", conf, linger) is None  # KillExcludeUsers defaults to root
    only = _conf(tmp_path, "[Login]\nKillUserProcesses=yes\nKillOnlyUsers=bob\n", {"10-keep.conf": ""})
    assert logout_kills_workers("alice", only, linger) is None
    assert logout_kills_workers("bob", only, linger)
    other = _conf(tmp_path, "[Other]\nKillUserProcesses=yes\n", {"10-keep.conf": ""})
    assert logout_kills_workers("alice", other, linger) is None  # only [Login] counts


def test_background_launch_prints_the_warning_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneassist.cli.main import main

    monkeypatch.setattr(launch, "LOGIND_CONF", _conf(tmp_path, "[Login]\nKillUserProcesses=yes\n"))
    monkeypatch.setattr(launch, "LINGER_DIR", tmp_path / "linger")
    monkeypatch.setattr(launch, "_logout_warned", False)
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    monkeypatch.setattr(launch, "_start_detached", lambda *a, **k: types.SimpleNamespace(pid=0))
    args = [
        "--workspace",
        str(tmp_path / "ws"),
        "train",
        "--data",
        "synthetic:64",
        "--epochs",
        "1",
        "--background",
    ]
    assert main(args) == 0
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: logind kills")]
    assert len(warnings) == 1 and "loginctl enable-linger alice" in warnings[0], err
