"""What a terminal shows: no colour under NO_COLOR, and `\\r` status lines that fit the pane's width
(a line that wraps adds a line on every redraw). Run in a real pseudo-terminal of 80x24."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tuneassist.cli.status import StatusLine, term_width
from tuneassist.cli.termplot import plot_lines, use_color

SGR = re.compile(rb"\x1b\[[0-9;]*m")


def _in_pty(args: list[str], env: dict[str, str], cols: int = 80, timeout: float = 240) -> tuple[int, bytes]:
    """Run `python -m tuneassist ARGS` with stdout and stderr on a pty of `cols` x 24; all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "tuneassist", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env, close_fds=True)  # fmt: skip
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=30), bytes(out)


@pytest.mark.slow  # a real lr-find in a pty: ~50 s on the shared 2-core box
def test_lr_find_in_an_80_column_pane_no_colour_and_no_wrapped_redraws(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {"NO_COLOR": "1", "TERM": "xterm-256color", "TUNEASSIST_HOME": str(tmp_path / "ws")}
    rc, out = _in_pty(["lr-find", "--data", "synthetic:300", "--steps", "40", "--device", "cpu"], env)
    assert rc == 0, out[-2000:]
    assert b"LR range test" in out
    assert not SGR.findall(out), SGR.findall(out)[:5]
    # "\rSTATUS\rSTATUS\r   \rLINE\n": the segments between carriage returns are the redrawn ones; the
    # last one of a line is printed once (it may wrap like any long line); the pty writes \n as \r\n
    lines = [line.removesuffix(b"\r") for line in out.split(b"\n")]
    status = [seg for line in lines for seg in line.split(b"\r")[1:-1] if seg.strip()]
    assert status and all(len(seg.decode("utf-8", "replace")) <= 79 for seg in status), status[:3]


def test_status_line_is_cut_to_the_width_and_wipes_only_what_it_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = Tty()
    line = StatusLine(s)
    line.show("x" * 100)
    line.show("short")
    line.clear()
    parts = s.getvalue().split("\r")[1:]
    assert parts[0] == "x" * 39 and parts[1] == "short" + " " * 34 and parts[2] == " " * 5
    assert term_width(s) == 40
    quiet = io.StringIO()  # not a terminal: nothing at all
    StatusLine(quiet).show("hello")
    assert quiet.getvalue() == ""


def test_plots_have_no_colour_under_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    series = {"a": ([1.0, 2.0, 3.0], [3.0, 1.0, 2.0])}
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert "\x1b[" in plot_lines(series, title="t", xlabel="x", ylabel="y", width=40, height=10)
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color() is False
    assert "\x1b[" not in plot_lines(series, title="t", xlabel="x", ylabel="y", width=40, height=10)


def test_folder_decoding_reports_its_progress(tmp_path: Path) -> None:
    """The progress hook a foreground command's status line uses: images done of all, to the end."""
    import numpy as np
    from PIL import Image

    from tuneassist.engine import folder

    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = tmp_path / "imgs" / split / cls
            d.mkdir(parents=True)
            for i in range(5):
                Image.fromarray(np.full((32, 32, 3), i * 40, np.uint8)).save(d / f"{i}.png")
    seen: list[tuple[int, int]] = []
    folder.set_decode_progress(lambda done, total: seen.append((done, total)))
    try:
        folder.load_folder(tmp_path / "imgs", tmp_path / "cache", processes=1)
    finally:
        folder.set_decode_progress(None)
    assert seen and seen[-1] == (20, 20) and all(t == 20 for _, t in seen)


def test_probe_wait_calls_back_while_the_subprocess_runs() -> None:
    from tuneassist.runs.probe_client import _run_waiting

    ticks: list[float] = []
    code = "import time; time.sleep(2.5); print('done')"
    res = _run_waiting([sys.executable, "-c", code], dict(os.environ), 30, ticks.append)
    assert res.returncode == 0 and res.stdout.strip() == "done" and len(ticks) >= 2
    with pytest.raises(subprocess.TimeoutExpired):
        _run_waiting(
            [sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), 1.5, ticks.append
        )
