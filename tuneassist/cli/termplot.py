"""Terminal plots for the headless commands (plotext), downsampled to the plot width."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import plotext as plt

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def downsample(xs: Sequence[float], ys: Sequence[float], width: int) -> tuple[list[float], list[float]]:
    """Keep about 2 points per column: plotting 100k points in a 100-column plot is wasted work."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None and math.isfinite(y)]
    step = max(1, len(pts) // max(1, 2 * width))
    pts = pts[::step]
    return [p[0] for p in pts], [p[1] for p in pts]


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
    vlines: dict[str, float] | None = None,
    width: int | None = None,
    height: int | None = None,
    color: bool = True,
    ylim: tuple[float, float] | None = None,
) -> str:
    """Render named (x, y) series as one plot and return it as text (no colour under NO_COLOR,
    https://no-color.org, whatever the caller asked: one place for every plot)."""
    color = color and use_color()
    w, h = _size(width, height)
    plt.clear_figure()
    plt.plotsize(w, h)
    if color:
        plt.theme("pro")
    else:
        plt.clear_color()
    if logx:
        plt.xscale("log")
    ymin, ymax = math.inf, -math.inf
    for name, (xs, ys) in series.items():
        dx, dy = downsample(xs, ys, w)
        if not dx:
            continue
        if ylim is not None:  # plotext crawls drawing lines far off-scale: pin them to the edge
            dy = [min(max(v, ylim[0]), ylim[1]) for v in dy]
        ymin, ymax = min(ymin, min(dy)), max(ymax, max(dy))
        plt.plot(dx, dy, label=name, marker="braille")
    for name, x in (vlines or {}).items():
        if x is not None and math.isfinite(x) and (not logx or x > 0):
            plt.vline(x)
            if math.isfinite(ymax):
                plt.text(name, x=x, y=ymax)
    if ylim is not None:
        plt.ylim(*ylim)
    elif math.isfinite(ymin) and ymax > ymin:
        pad = 0.05 * (ymax - ymin)
        plt.ylim(ymin - pad, ymax + pad)
    plt.title(title)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    out = plt.build()
    plt.clear_figure()
    return out if color else ANSI.sub("", out)


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
