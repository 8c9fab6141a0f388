"""Terminal plots for the headless commands: the TUI's braille charts (`tuneassist.tui.chart`), printed.

One renderer for both front ends, so `lr-find`, `lr-read`, `runs watch` and `RangeTestResult.plot()`
draw the curves the TUI draws: a log-x LR axis with its decades, the loss curves, the suggested max
and min LR marked and labelled, axis labels. Long curves are decimated by the renderer (min/max per
pixel column), so a 100k-point curve costs a few milliseconds.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from tuneassist.tui.chart import AXIS_STYLE, Chart, Series, VLine, render_chart


def use_color(stream: TextIO | None = None) -> bool:
    """Colour only for a terminal, and never under NO_COLOR (any value) or TERM=dumb. `stream=None`
    checks the environment alone (a caller that already knows it writes to a terminal)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream is None or bool(getattr(stream, "isatty", lambda: False)())


def _size(width: int | None, height: int | None) -> tuple[int, int]:
    cols, rows = shutil.get_terminal_size((100, 30))
    return width or min(cols, 110), height or max(12, min(rows - 8, 22))


def plot_lines(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    vlines: dict[str, float | None] | None = None,
    width: int | None = None,
    height: int | None = None,
    color: bool = True,
    ylim: tuple[float, float] | None = None,
) -> str:
    """Render named (x, y) series as one plot and return it as text: the title, the legend (after the
    y axis's label), the plot and the x axis with its label. No colour under NO_COLOR
    (https://no-color.org) whatever the caller asked: one place for every plot; without colour each
    curve has its own glyph."""
    color = color and use_color()
    w, h = _size(width, height)
    marks = [
        VLine(float(x), name)
        for name, x in (vlines or {}).items()
        if x is not None and math.isfinite(x) and (not logx or x > 0)
    ]
    chart = Chart(
        [Series(name, xs, ys) for name, (xs, ys) in series.items()],
        marks,
        logx=logx,
        ylim=ylim,
        empty="no finite points to plot",
    )
    body = render_chart(chart, w, h - 2, mono=not color)
    out = Text(no_wrap=True, overflow="crop")
    out.append(title, style="bold")
    out.append("\n")
    out.append(f"{ylabel}  ", style=AXIS_STYLE)
    out.append_text(body)
    out.append("\n")
    out.append(f"{xlabel:>{w}}", style=AXIS_STYLE)  # its own line: the tick labels may fill the axis's
    if not color:
        return "\n".join(line.rstrip() for line in out.plain.splitlines())
    buf = io.StringIO()
    console = Console(file=buf, width=w, force_terminal=True, color_system="standard", no_color=False)
    console.print(out, end="", crop=True, soft_wrap=False)
    return buf.getvalue()


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def range_test_lines(
    curve: Mapping[str, Sequence[float | None]],
    suggestion: Mapping[str, Any],
    *,
    color: bool,
    width: int | None = None,
    height: int | None = None,
) -> list[str]:
    """A range test as `lr-find` prints it: the loss-vs-LR plot with the suggested range marked, the
    reading and its confidence. One home for `lr-find`, `lr-read` and the Python API's `.plot()`.

    `curve` holds lr and train_loss per step, val_lr and val_loss per evaluation (None for NaN);
    `suggestion` is `LRSuggestion.to_dict()`.
    """
    lrs, train = list(curve.get("lr") or []), list(curve.get("train_loss") or [])
    val_lrs, val = list(curve.get("val_lr") or []), list(curve.get("val_loss") or [])
    finite, val_finite = _finite(train), _finite(val)
    ylim = None
    if finite:  # from the lowest loss to a little above the starting loss: the blow-up is off-scale
        lo = min(finite + val_finite)
        top = max(finite[:5] + _finite(val[:2]))
        ylim = (lo - 0.05 * (top - lo + 1e-9), top + 0.25 * (top - lo + 1e-9))
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {"train loss": (lrs, train)}  # type: ignore[dict-item]
    if val_lrs:
        series["val loss"] = (val_lrs, val)  # type: ignore[assignment]
    plot = plot_lines(
        series,
        title="LR range test: loss vs learning rate",
        xlabel="learning rate (log)",
        ylabel="loss",
        logx=True,
        vlines={"max": suggestion.get("max_lr"), "min": suggestion.get("min_lr")},
        ylim=ylim,
        width=width,
        height=height,
        color=color,
    )
    lines = [plot, "", str(suggestion["explanation"])]
    if suggestion.get("advice"):
        lines.append(f"Note: {suggestion['advice']}")
    lines.append(f"Confidence: {suggestion['confidence']}.")
    return lines
