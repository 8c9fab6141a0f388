"""Words, numbers and parsing shared by the screens.

State is always said in words (and a symbol), colour only adds to it: under NO_COLOR the screens
read the same. Parsing turns what the user types into checklist values, with one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from rich.text import Text

from tuneassist.advisor.lr_range import fmt_num
from tuneassist.errors import UserError
from tuneassist.runs.rows import Run
from tuneassist.runs.store import fmt_time  # noqa: F401 - fmt_time: the screens' clock
from tuneassist.text import g, pct  # noqa: F401 - the screens' numbers, shared with the CLI


class Badge(NamedTuple):
    """A status as the screens show it: the symbol and word carry it, the style only adds colour."""

    symbol: str
    word: str
    style: str

    def text(self, more: str = "") -> Text:
        return Text(f"{self.symbol} {self.word}{more}", style=self.style)


# What runs and checklist steps share: running, ended well, failed look the same on every screen.
RUNNING = Badge("●", "running", "cyan")
DONE = Badge("✓", "done", "green")
FAILED = Badge("✗", "failed", "red")

RUN_STATUS = {
    "queued": Badge("◌", "queued", "bright_black"),
    "running": RUNNING,
    "finished": DONE._replace(word="finished"),
    "diverged": Badge("✗", "diverged", "yellow"),
    "failed": FAILED,
    "cancelled": Badge("■", "cancelled", "bright_black"),
    "lost": Badge("?", "lost", "red"),
}
STEP_STATUS = {
    "pending": Badge("·", "to do", ""),
    "running": RUNNING,
    "ready": Badge("◆", "decide", "bright_yellow"),
    "done": DONE,
    "stale": Badge("!", "stale", "yellow"),
    "failed": FAILED,
}


def badge(table: Mapping[str, Badge], status: str) -> Badge:
    """The status's badge; one this UI does not know (a newer store's) still reads, as '?' and its name."""
    return table.get(status) or Badge("?", status, "")


def run_status(status: str, cancel_requested: bool = False, run: Run | None = None) -> Text:
    """A run's status in a symbol and words. Given the run, a range test that diverged reads as done,
    with the LR where it diverged: a range test runs until the loss blows up, so that is its expected
    end (the reading the advisor takes), not a failure."""
    if status == "diverged" and run is not None and is_range_test(run):
        d_lr = run.outcome.get("diverged_lr")
        where = f", diverged at LR {fmt_num(d_lr)}" if d_lr is not None else " (diverged)"
        return DONE.text(where)
    b = badge(RUN_STATUS, status)
    if cancel_requested and status == "running":
        b = b._replace(word="stopping")
    return b.text()


def is_range_test(run: Run) -> bool:
    """An LR range test, by its schedule (any launcher) or its checklist kind."""
    return run.schedule.startswith("range_") or run.kind.startswith(("lr_range", "lr_find"))


def step_status(status: str) -> Text:
    return badge(STEP_STATUS, status).text()


def fmt_minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def bar(fraction: float, width: int = 10) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(fraction * width)
    return (
        "█" * full
        + ("▌" if fraction * width - full >= 0.5 else "")
        + "·" * (width - full - (1 if fraction * width - full >= 0.5 else 0))
    )


def progress_text(run: Run, width: int = 8) -> str:
    done, total = run.progress
    if run.status == "queued":
        return "waiting"
    if not total:
        if done:
            return f"step {done}"
        return "starting" if run.status == "running" else "-"
    return f"{bar(done / total, width)} {100 * done / total:3.0f}%"


def hyper(spec: dict[str, Any]) -> str:
    """The key hyperparameters in one compact string."""
    sched = spec.get("schedule", "?")
    lo, hi = spec.get("lr_min"), spec.get("lr_max")
    lr = fmt_num(hi) if lo == hi or sched in ("constant", "step") else f"{fmt_num(lo)}→{fmt_num(hi)}"
    mh, ml = spec.get("momentum_max"), spec.get("momentum_min")
    mom = fmt_num(mh) if mh == ml else f"{fmt_num(mh)}→{fmt_num(ml)}"
    wd = spec.get("weight_decay", 0)
    return f"lr {lr} m {mom} wd {fmt_num(wd)} bs {spec.get('batch_size')}"


def run_kind(run: Run) -> str:
    """'LR range' for 'lr_range:1e-4 → 10' style kinds; plain kinds as they are."""
    from tuneassist.advisor.checklist import STEP_TITLES

    kind = run.kind
    step, _, label = kind.partition(":")
    if step in STEP_TITLES:
        return f"{STEP_TITLES[step]} {label}".strip()
    return kind


# ---------------------------------------------------------------------------------------------
# What the user types


def _floats(text: str, what: str, example: str) -> list[float]:
    parts = [p for p in text.replace("→", ":").replace(",", ":").replace(" ", ":").split(":") if p]
    if not parts:
        raise UserError(f"type a {what}, e.g. {example}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise UserError(f"{text!r} is not a {what}; type e.g. {example}") from None


def parse_value(step: str, text: str) -> Any:
    """A step's value from text: LR 'low:high', TBS '256', momentum 'high:low' or '0.9', WD '1e-4'."""
    text = text.strip()
    if step == "lr_range":
        v = _floats(text, "LR range low:high", "0.03:0.3")
        if len(v) != 2:
            raise UserError(f"{text!r}: give the LR range as low:high, e.g. 0.03:0.3")
        return v
    if step == "batch_size":
        v = _floats(text, "batch size", "256")
        if len(v) != 1 or not v[0].is_integer() or v[0] < 1:
            raise UserError(f"{text!r}: the batch size is one positive integer, e.g. 256")
        return int(v[0])
    if step == "momentum":
        v = _floats(text, "momentum high:low or one value", "0.95:0.85 or 0.9")
        if len(v) == 1:
            v = [v[0], v[0]]
        if len(v) != 2:
            raise UserError(f"{text!r}: give momentum as high:low or one value, e.g. 0.95:0.85")
        return v
    if step == "weight_decay":
        v = _floats(text, "weight decay", "1e-4")
        if len(v) != 1:
            raise UserError(f"{text!r}: the weight decay is one number, e.g. 1e-4")
        return v[0]
    raise UserError(f"step {step!r} takes no typed value")


def value_text(step: str, value: Any) -> str:
    """A value as the user would type it back (prefills the edit and override dialogs)."""
    if value is None:
        return ""
    if step == "lr_range":
        if isinstance(value, dict):
            return f"{fmt_num(value['lr_min'])}:{fmt_num(value['lr_max'])}"
        return f"{fmt_num(value[0])}:{fmt_num(value[1])}"
    if step == "momentum":
        hi, lo = (value, value) if isinstance(value, int | float) else value
        return fmt_num(hi) if hi == lo else f"{fmt_num(hi)}:{fmt_num(lo)}"
    if step == "weight_decay":
        return f"{float(value):g}"
    return str(value)


HINTS = {
    "lr_range": "low:high, e.g. 0.03:0.3",
    "batch_size": "total batch size, e.g. 256",
    "momentum": "high:low (cyclical) or one value, e.g. 0.95:0.85",
    "weight_decay": "e.g. 1e-4 (0 for none)",
}
