"""Small widgets shared by the screens: the top bar, the plot view and the step sidebar."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import DataTable, Footer, OptionList, Static
from textual.widgets.option_list import Option

from tuneassist.tui.chart import Chart, chart_signature, render_chart
from tuneassist.tui.fmt import STEP_STATUS, badge

if TYPE_CHECKING:
    from tuneassist.session import StepState


SIDEBAR_WIDTH = 30
SHORT_TITLES = {
    "lr_range": "LR range",
    "batch_size": "Batch size",
    "momentum": "Momentum",
    "weight_decay": "Weight decay",
    "final": "1cycle run",
}


def sync_table(table: DataTable, keys: list[str], rows: list[tuple]) -> bool:
    """Show `rows` (one per key) in `table`, touching only cells that changed; returns whether any did.

    Same keys in the same order: changed cells are updated in place (no flicker, the cursor stays).
    Otherwise the table is rebuilt and the cursor kept on the same key where it still exists.
    """
    old: dict[str, tuple] = getattr(table, "_synced", {})
    old_keys: list[str] = getattr(table, "_synced_keys", [])
    if keys == old_keys:
        columns = list(table.columns)
        changed = False
        for key, row in zip(keys, rows, strict=True):
            prev = old.get(key)
            for i, value in enumerate(row):
                if prev is None or str(prev[i]) != str(value):
                    table.update_cell(key, columns[i], value, update_width=True)
                    changed = True
        table._synced = dict(zip(keys, rows, strict=True))  # type: ignore[attr-defined]
        return changed
    selected = old_keys[table.cursor_row] if 0 <= table.cursor_row < len(old_keys) else None
    table.clear()
    for key, row in zip(keys, rows, strict=True):
        table.add_row(*row, key=key)
    table._synced = dict(zip(keys, rows, strict=True))  # type: ignore[attr-defined]
    table._synced_keys = list(keys)  # type: ignore[attr-defined]
    if selected in keys:
        table.move_cursor(row=keys.index(selected))
    return True


class KeyFooter(Footer):
    """The footer of keys, compact; narrow terminals leave the palette key to the help screen."""

    def __init__(self) -> None:
        super().__init__(compact=True)

    def on_resize(self) -> None:
        self.show_command_palette = self.size.width >= 100


class TopBar(Static):
    """One line: the session and how many runs are going (words, not only colour)."""

    DEFAULT_CSS = """
    TopBar { dock: top; height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    _last: tuple[str, int, int] | None = None

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(*self._last)

    def show(self, left: str, running: int, queued: int) -> None:
        self._last = (left, running, queued)
        right = Text()
        right.append(f"● {running} running", style="cyan" if running else "")
        right.append(f"  ◌ {queued} queued")
        width = max(20, self.content_size.width) if self.content_size.width else 98
        if width < 98:
            left = left.removeprefix("tuneassist").strip()
        room = width - len(right.plain) - 1
        while len(left) > room and " · " in left:
            left = left.rsplit(" · ", 1)[0]  # drop the least important detail first
        left_t = Text(left, no_wrap=True, overflow="ellipsis")
        if room < 10:
            self.update(left_t)
            return
        left_t.truncate(room, overflow="ellipsis")
        pad = max(1, width - len(left_t.plain) - len(right.plain))
        self.update(Text.assemble(left_t, " " * pad, right))


class PlotView(Widget):
    """A chart that re-renders only when its data or its size changed."""

    DEFAULT_CSS = """
    PlotView { height: 1fr; min-height: 7; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self._chart = Chart()
        self._sig: tuple | None = None
        self._cache_key: tuple | None = None
        self._cache: Text | None = None
        self.renders = 0  # how many times the chart was drawn (tests check redraws stay rare)

    @property
    def chart(self) -> Chart:
        return self._chart

    def set_chart(self, chart: Chart) -> bool:
        """Show `chart`; returns whether anything changed (and a redraw was scheduled)."""
        sig = chart_signature(chart)
        if sig == self._sig:
            return False
        self._chart, self._sig = chart, sig
        self.refresh()
        return True

    def render(self) -> Text:
        size: Size = self.content_size
        mono = bool(getattr(self.app, "no_color", False))
        key = (size.width, size.height, self._sig, mono)
        if key != self._cache_key or self._cache is None:
            self._cache = render_chart(self._chart, size.width, size.height, mono=mono)
            self._cache_key = key
            self.renders += 1
        return self._cache


class StepSidebar(OptionList):
    """The five checklist steps with their state; narrow terminals show numbers and symbols only."""

    DEFAULT_CSS = f"""
    StepSidebar {{ width: {SIDEBAR_WIDTH}; height: 1fr; border: none; padding: 0; }}
    StepSidebar.-narrow {{ width: 7; }}
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self._key: tuple | None = None

    def show(self, states: list[StepState], current: str | None, narrow: bool, viewing: int) -> None:
        """Update the steps in place: rebuilding the list would move the highlight and post a stale
        `OptionHighlighted` that would drag the pane back to the step it just left."""
        key = (tuple((s.step, s.status, s.value_label) for s in states), current, narrow)
        if key != self._key:
            self._key = key
            self.set_class(narrow, "-narrow")
            prompts = [self._prompt(i, s, current, narrow) for i, s in enumerate(states, 1)]
            if self.option_count == len(states):
                for i, prompt in enumerate(prompts):
                    self.replace_option_prompt_at_index(i, prompt)
            else:
                self.clear_options()
                self.add_options([Option(t, id=s.step) for t, s in zip(prompts, states, strict=True)])
        if self.highlighted != viewing:
            self.highlighted = viewing

    @staticmethod
    def _prompt(i: int, s: StepState, current: str | None, narrow: bool) -> Text:
        sym, word, color = badge(STEP_STATUS, s.status)
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("›" if s.step == current else " ")
        if narrow:
            t.append(f"{i} ")
            t.append(sym, style=color)
            return t
        t.append(f"{i} {SHORT_TITLES.get(s.step, s.title):<12} ")
        detail = s.value_label if s.status in ("done", "stale") and s.value_label else word
        if s.status == "stale":
            detail = f"stale {detail}"
        room = SIDEBAR_WIDTH - len(t) - 3  # the symbol, its space, and the scrollbar gutter
        if len(detail) > room:  # one line per step: a wrapped value reads as another step
            detail = detail.replace(" → ", "→")
        if len(detail) > room:
            detail = detail[: room - 1] + "…"
        t.append(f"{sym} ", style=color)
        t.append(detail, style=color)
        return t
