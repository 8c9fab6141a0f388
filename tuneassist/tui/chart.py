"""Line charts drawn in braille cells, as Rich text: the TUI's plots, and the CLI's (`cli.termplot`).

Pure functions of the data and the size, with no global state, so a redraw is cheap and safe to do
whenever a curve grows. Long curves are decimated to min/max per
pixel column, which keeps spikes (a diverging range test) while a 100k-point curve costs a few ms.
Under NO_COLOR (mono=True) every series gets its own glyph, so curves stay apart without colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.text import Text

# Standard colours only: they work on 16/256-colour terminals (no truecolor assumption).
PALETTE = ("cyan", "magenta", "green", "bright_blue", "red", "bright_yellow", "white", "blue")
GLYPHS = ("•", "+", "x", "o", "*", "#", "%", "@")
MARK_COLOR = "yellow"
AXIS_STYLE = "bright_black"
# Braille dot bits by (row within the cell 0..3, column within the cell 0..1).
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


@dataclass
class Series:
    """One curve: points (x, y); non-finite values are skipped."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str | None = None  # None: taken from PALETTE by position


@dataclass
class VLine:
    """A vertical marker (decision point, divergence) with a short label."""

    x: float
    label: str = ""
    color: str = MARK_COLOR


@dataclass
class Band:
    """A marked x range drawn on the x axis as [═══] (the suggested LR range)."""

    lo: float
    hi: float
    label: str = ""
    color: str = "green"


@dataclass
class Chart:
    """Everything a chart shows; `signature` changes exactly when the drawing would."""

    series: list[Series] = field(default_factory=list)
    vlines: list[VLine] = field(default_factory=list)
    band: Band | None = None
    logx: bool = False
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    xlabel: str = ""
    empty: str = "waiting for data"


def ema(values: Sequence[float], beta: float = 0.9) -> list[float]:
    """Debiased exponential moving average; non-finite values pass through without entering it.

    Per-step training losses of small batches are noisy: the smoothed curve is the one to read.
    """
    out: list[float] = []
    avg = 0.0
    weight = 0.0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(v if v is not None else math.nan)
            continue
        avg = beta * avg + (1 - beta) * v
        weight = beta * weight + (1 - beta)
        out.append(avg / weight)
    return out


def short_num(x: float) -> str:
    """Axis label: 1e-4, 0.003, 0.25, 12, 1.5k."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 1000:
        v = x / 1000
        return f"{v:.3g}k" if a < 1e6 else f"{x:.0e}".replace("e+0", "e").replace("e+", "e")
    if a < 1e-3:
        mant, _, exp = f"{x:.0e}".partition("e")
        return f"{mant}e{int(exp)}"
    return f"{x:.3g}"


def nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """About `count` round values (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo or count < 1:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), 10 * mag)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + 1e-9 * step:
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return out


def log_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Powers of ten in [lo, hi] (log10 units in, values out), thinned or enriched to about `count`."""
    a, b = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    decades = list(range(a, b + 1))
    if len(decades) >= 2:
        stride = max(1, math.ceil(len(decades) / max(1, count)))
        return [10.0**d for d in decades[::stride]]
    vals = [m * 10.0**d for d in range(a - 1, b + 2) for m in (1, 2, 5)]
    return [v for v in vals if lo - 1e-9 <= math.log10(v) <= hi + 1e-9]


def _finite_xy(s: Series, logx: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(s.xs, dtype=float)
    y = np.asarray(s.ys, dtype=float)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    ok = np.isfinite(x) & np.isfinite(y)
    if logx:
        ok &= x > 0
    x, y = x[ok], y[ok]
    if logx:
        x = np.log10(x)
    return x, y


def _limits(values: list[np.ndarray], given: tuple[float, float] | None) -> tuple[float, float] | None:
    if given is not None and all(math.isfinite(v) for v in given) and given[1] > given[0]:
        return float(given[0]), float(given[1])
    vals = [v for v in values if len(v)]
    if not vals:
        return None
    lo = float(min(v.min() for v in vals))
    hi = float(max(v.max() for v in vals))
    if hi <= lo:
        pad = abs(lo) * 0.1 or 0.5
        return lo - pad, hi + pad
    return lo, hi


class _Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.bits = np.zeros((h, w), dtype=np.int32)
        self.owner = np.full((h, w), -1, dtype=np.int32)
        self.glyph: dict[tuple[int, int], str] = {}
        self.over: dict[tuple[int, int], tuple[str, str]] = {}  # cell -> (char, style): markers, text

    def dot(self, px: int, py: int, who: int) -> None:
        r, c = py >> 2, px >> 1
        if 0 <= r < self.h and 0 <= c < self.w:
            self.bits[r, c] |= _DOTS[py & 3][px & 1]
            self.owner[r, c] = who

    def vspan(self, px: int, y0: int, y1: int, who: int) -> None:
        if y0 > y1:
            y0, y1 = y1, y0
        for py in range(y0, y1 + 1):
            self.dot(px, py, who)


def _draw_series(cv: _Canvas, x: np.ndarray, y: np.ndarray, xmap, ymap, who: int) -> None:  # noqa: ANN001
    """Min/max per pixel column, joined column to column: spikes survive any amount of decimation."""
    if not len(x):
        return
    pw, ph = cv.w * 2, cv.h * 4
    px = np.clip(np.rint(xmap(x)), 0, pw - 1).astype(np.int64)
    py = np.clip(np.rint(ymap(y)), 0, ph - 1).astype(np.int64)
    order = np.argsort(px, kind="stable")
    px, py = px[order], py[order]
    cols, start = np.unique(px, return_index=True)
    ends = np.r_[start[1:] - 1, len(px) - 1]
    mn = np.minimum.reduceat(py, start)
    mx = np.maximum.reduceat(py, start)
    first, last = py[start], py[ends]
    prev_c: int | None = None
    prev_y = 0
    for c, lo, hi, f, la in zip(
        cols.tolist(), mn.tolist(), mx.tolist(), first.tolist(), last.tolist(), strict=True
    ):
        if prev_c is not None and c - prev_c > 1:
            # Straight line over the empty columns in between.
            span = c - prev_c
            y_at = prev_y
            for k in range(1, span):
                yk = round(prev_y + (f - prev_y) * k / span)
                cv.vspan(prev_c + k, y_at, yk, who)
                y_at = yk
            cv.vspan(c, y_at, f, who)
        elif prev_c is not None:
            cv.vspan(c, prev_y, f, who)
        cv.vspan(c, lo, hi, who)
        prev_c, prev_y = c, la


def _put_text(cv: _Canvas, row: int, col: int, text: str, style: str) -> None:
    for i, ch in enumerate(text):
        c = col + i
        if 0 <= c < cv.w and 0 <= row < cv.h and cv.bits[row, c] == 0 and (row, c) not in cv.glyph:
            cv.over[(row, c)] = (ch, style)


def _place_label(cv: _Canvas, c: int, label: str, color: str) -> None:
    """Write a marker's label next to its line, on the highest row where no curve is in the way."""
    n = len(label)
    right = [c + 1 + k for k in range(8) if c + 1 + k + n <= cv.w]
    left = [c - n - k for k in range(8) if c - n - k >= 0]
    starts = [*right[:1], *left[:1], *right[1:], *left[1:]] or [max(0, c - n)]
    for row in range(cv.h):
        for start in starts:
            cells = range(start, min(cv.w, start + len(label)))
            if all(cv.bits[row, x] == 0 and (row, x) not in cv.glyph for x in cells):
                _put_text(cv, row, start, label, color)
                return
    _put_text(cv, 0, starts[0], label, color)  # crowded everywhere: the top row, partly hidden


@dataclass
class _Frame:
    """The plot area's data limits (log10 units on a log x axis) and their map to braille pixels."""

    xlim: tuple[float, float] | None
    ylim: tuple[float, float] | None
    logx: bool
    pw: int
    ph: int

    def xmap(self, x: np.ndarray | float) -> np.ndarray | float:
        assert self.xlim is not None
        return (np.asarray(x) - self.xlim[0]) / (self.xlim[1] - self.xlim[0]) * (self.pw - 1)

    def ymap(self, y: np.ndarray | float) -> np.ndarray | float:
        assert self.ylim is not None
        return (self.ylim[1] - np.asarray(y)) / (self.ylim[1] - self.ylim[0]) * (self.ph - 1)

    def col_of(self, x: float) -> int | None:
        """The cell column of data value `x` (not log10'd), None when it falls outside the plot."""
        if self.xlim is None:
            return None
        xv = math.log10(x) if self.logx else x
        if not (self.logx and x <= 0) and math.isfinite(xv):
            p = float(self.xmap(xv))
            if -0.5 <= p <= self.pw - 0.5:
                return int(round(p)) >> 1
        return None


def _legend(chart: Chart, colors: list[str], use_glyphs: bool) -> Text:
    """One line, cropped: the glyph or colour of each series, then the band."""
    legend = Text(no_wrap=True, overflow="crop")
    for i, s in enumerate(chart.series):
        if not s.label:
            continue
        mark = GLYPHS[i % len(GLYPHS)] * 2 if use_glyphs else "━━"
        legend.append(mark, style=colors[i])
        legend.append(f" {s.label}  ")
    if chart.band is not None and chart.band.label:
        legend.append("[══]", style=chart.band.color)
        legend.append(f" {chart.band.label}  ")
    legend.rstrip()
    return legend


def _data_limits(
    chart: Chart, data: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """The x range (covering the markers and the band too, unless given) and the y range (padded 5%)."""
    extra_x = [np.asarray([v.x for v in chart.vlines if math.isfinite(v.x) and (v.x > 0 or not chart.logx)])]
    if chart.band is not None:
        extra_x.append(np.asarray([chart.band.lo, chart.band.hi]))
    if chart.logx:
        extra_x = [np.log10(e[e > 0]) for e in extra_x]
    xl = chart.xlim
    if xl is not None and chart.logx:
        xl = (math.log10(xl[0]), math.log10(xl[1])) if xl[0] > 0 and xl[1] > 0 else None
    xlim = _limits([d[0] for d in data] + (extra_x if xl is None else []), xl)
    ylim = _limits([d[1] for d in data], chart.ylim)
    if ylim is not None and chart.ylim is None:
        pad = 0.05 * (ylim[1] - ylim[0])
        ylim = (ylim[0] - pad, ylim[1] + pad)
    return xlim, ylim


def _draw(
    cv: _Canvas, chart: Chart, data: list[tuple[np.ndarray, np.ndarray]], fr: _Frame, use_glyphs: bool
) -> None:
    """The curves, then the vertical markers behind them (labelled at the top); or the empty message."""
    has_data = any(len(d[0]) for d in data) and fr.xlim is not None and fr.ylim is not None
    if not has_data:
        msg = chart.empty
        _put_text(cv, cv.h // 2, max(0, (cv.w - len(msg)) // 2), msg[: cv.w], "italic")
        return
    for i, (x, y) in enumerate(data):
        _draw_series(cv, x, y, fr.xmap, fr.ymap, i)
        if use_glyphs:
            for r, c in zip(*np.nonzero(cv.owner == i), strict=True):
                cv.glyph[(int(r), int(c))] = GLYPHS[i % len(GLYPHS)]
    for v in chart.vlines:
        c = fr.col_of(v.x)
        if c is None:
            continue
        for r in range(cv.h):
            if cv.bits[r, c] == 0 and (r, c) not in cv.glyph:
                cv.over[(r, c)] = ("┊", v.color)
        if v.label:
            _place_label(cv, c, v.label, v.color)


def _append_rows(
    out: Text, cv: _Canvas, fr: _Frame, yt: list[float], ylabels: list[str], lw: int, colors: list[str]
) -> None:
    """The plot rows: the y axis with its tick labels, then the cells (a run of one style at once)."""
    tick_rows: dict[int, str] = {}
    if fr.ylim is not None:
        for t, lab in zip(yt, ylabels, strict=True):
            r = int(float(fr.ymap(t))) >> 2
            if 0 <= r < cv.h and r not in tick_rows:
                tick_rows[r] = lab
    for r in range(cv.h):
        tick = tick_rows.get(r)
        out.append(f"{tick:>{lw}}┤" if tick is not None else " " * lw + "│", style=AXIS_STYLE)
        run_ch: list[str] = []
        run_style: str | None = None
        for c in range(cv.w):
            if (r, c) in cv.glyph:
                ch, st = cv.glyph[(r, c)], colors[int(cv.owner[r, c])]
            elif cv.bits[r, c]:
                ch, st = chr(0x2800 + int(cv.bits[r, c])), colors[int(cv.owner[r, c])]
            elif (r, c) in cv.over:
                ch, st = cv.over[(r, c)]
            else:
                ch, st = " ", ""
            if st != run_style and run_ch:
                out.append("".join(run_ch), style=run_style or "")
                run_ch = []
            run_style = st
            run_ch.append(ch)
        if run_ch:
            out.append("".join(run_ch), style=run_style or "")
        out.append("\n")


def _append_x_axis(out: Text, chart: Chart, fr: _Frame, w: int, lw: int) -> None:
    """The x axis with ticks and the band as [═══], then the tick labels and the axis label."""
    axis = ["─"] * w
    axis_style = [AXIS_STYLE] * w
    labels = [" "] * (w + lw + 1)
    if fr.xlim is not None:
        n_ticks = max(2, w // 12)
        if chart.logx:
            ticks = log_ticks(fr.xlim[0], fr.xlim[1], n_ticks)
        else:
            ticks = nice_ticks(fr.xlim[0], fr.xlim[1], n_ticks)
        taken_until = -1
        for t in ticks:
            c = fr.col_of(t)
            if c is None:
                continue
            axis[c] = "┬"
            lab = short_num(t)
            pos = lw + 1 + c - len(lab) // 2
            pos = max(0, min(pos, len(labels) - len(lab)))
            if pos > taken_until:
                labels[pos : pos + len(lab)] = list(lab)
                taken_until = pos + len(lab)
        if chart.band is not None:
            a, b = fr.col_of(chart.band.lo), fr.col_of(chart.band.hi)
            if a is not None or b is not None:
                a = 0 if a is None else a
                b = w - 1 if b is None else b
                for c in range(a, b + 1):
                    axis[c] = "═"
                    axis_style[c] = chart.band.color
                axis[a], axis[b] = "[", "]"
        if chart.xlabel:
            lab = f" {chart.xlabel}"
            if taken_until < len(labels) - len(lab):
                labels[len(labels) - len(lab) :] = list(lab)
    out.append(" " * lw + "└", style=AXIS_STYLE)
    for ch, st in zip(axis, axis_style, strict=True):
        out.append(ch, style=st)
    out.append("\n")
    out.append("".join(labels).rstrip(), style=AXIS_STYLE)


def render_chart(chart: Chart, width: int, height: int, mono: bool = False) -> Text:
    """The chart as `height` lines of at most `width` cells: legend, plot with y axis, x axis, x labels."""
    width, height = max(20, width), max(6, height)
    data = [_finite_xy(s, chart.logx) for s in chart.series]
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(chart.series)]
    use_glyphs = mono and len(chart.series) > 1
    h = height - 3
    xlim, ylim = _data_limits(chart, data)
    yt = nice_ticks(ylim[0], ylim[1], max(2, h // 3)) if ylim else []
    ylabels = [short_num(t) for t in yt]
    lw = max([len(s) for s in ylabels] + [3])
    w = width - lw - 1
    cv = _Canvas(w, h)
    fr = _Frame(xlim, ylim, chart.logx, w * 2, h * 4)
    _draw(cv, chart, data, fr, use_glyphs)
    out = Text(no_wrap=True, overflow="crop")
    out.append_text(_legend(chart, colors, use_glyphs))
    out.append("\n")
    _append_rows(out, cv, fr, yt, ylabels, lw, colors)
    _append_x_axis(out, chart, fr, w, lw)
    return out


def chart_signature(chart: Chart) -> tuple:
    """A cheap key that changes when the chart's content does (lengths and last points)."""
    parts: list = [chart.logx, chart.xlim, chart.ylim, chart.xlabel, chart.empty]
    for s in chart.series:
        n = min(len(s.xs), len(s.ys))
        tail = (s.xs[n - 1], s.ys[n - 1]) if n else None
        parts.append((s.label, s.color, n, tail))
    parts.append(tuple((v.x, v.label, v.color) for v in chart.vlines))
    parts.append(None if chart.band is None else (chart.band.lo, chart.band.hi, chart.band.label))
    return tuple(parts)
