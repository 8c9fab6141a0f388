"""`tune --name` names a file in the workspace's profiles/: a path in it must never escape, and it is
checked before anything runs (issue 16: it was checked only after the whole checklist)."""

from __future__ import annotations

from pathlib import Path

import pytest
from relkit import one_line_error, run_main


@pytest.mark.parametrize("name", ["../../../../tmp/x", "a/b", "/etc/passwd", "..", " ", "x\x1b[2J"])
def test_a_profile_name_that_is_not_a_plain_file_name_is_refused_before_any_run(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, err = run_main(capsys, "tune", "--data", "synthetic:300", "--name", name)
    one_line_error(code, err, "profile name", "--name")
    assert "Traceback" not in err and out == ""
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())  # nothing was started
    assert not list(tmp_path.parent.glob("x.toml")) and not Path("/tmp/x.toml").exists()


def test_resume_checks_the_name_before_waiting_on_anything(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneassist.runs.store import Store
    from tuneassist.session import TuningSession

    s = TuningSession.create(Store(ws), "synthetic:300", "simple3")
    code, _, err = run_main(capsys, "tune", "--resume", str(s.id), "--name", "../../../../tmp/x")
    one_line_error(code, err, "profile name")
    assert not Path("/tmp/x.toml").exists() and not (ws / "runs").exists()
