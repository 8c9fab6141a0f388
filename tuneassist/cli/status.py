"""A live status line (`\\r` redraws) that never wraps, whatever the terminal's width.

A line longer than the terminal wraps, and every redraw then adds a line instead of replacing one
(an 80-column tmux pane filled with copies). So each line is cut to the width of the terminal the
stream is on, minus one column, and padded only over what the previous line left.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO


def term_width(stream: TextIO | None = None) -> int:
    """Columns of the terminal `stream` writes to ($COLUMNS first, as shutil does), 80 when unknown."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size((stream or sys.stderr).fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size((80, 24)).columns


class StatusLine:
    """One line redrawn in place on a terminal; nothing at all when the stream is not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.shown = 0  # length of the line now on screen

    def show(self, text: str) -> None:
        if not self.tty:
            return
        line = text[: max(10, term_width(self.stream) - 1)]
        self.stream.write("\r" + line + " " * max(0, self.shown - len(line)))
        self.stream.flush()
        self.shown = len(line)

    def clear(self) -> None:
        """Wipe the line so that the next print starts on a clean one."""
        if self.tty and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
        self.shown = 0
