"""The checklist screen: the five steps, each with its runs, its live plot and its recommendation.

A step's main pane answers, top to bottom: what this step does and what it costs, which values it
tries (editable until they run), what the curves show so far, and what to do next. The last part is
the hero: one sentence with the value and its reason, and the keys to accept, override or re-run.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, OptionList, Static

from tuneassist.advisor.checklist import STEP_TITLES, STEPS, SWEEP_STEPS, Candidate, Recommendation
from tuneassist.errors import UserError
from tuneassist.hardware import panel_lines, read_devices
from tuneassist.runs.launch import detect_gpus
from tuneassist.session import TuningSession, expected_throughput
from tuneassist.tui.base import LiveScreen, guarded
from tuneassist.tui.checklist_plot import range_ylim, step_chart
from tuneassist.tui.checklist_view import StepView, candidate_rows, recommendation_text, recommendation_title
from tuneassist.tui.dialogs import ConfirmDialog, InputDialog
from tuneassist.tui.fmt import HINTS, STEP_STATUS, badge, fmt_minutes, parse_value, value_text
from tuneassist.tui.keys import PLOT_METRIC
from tuneassist.tui.live import ENDED, PollResult
from tuneassist.tui.widgets import KeyFooter, PlotView, StepSidebar, TopBar, sync_table

__all__ = ["ChecklistScreen", "range_ylim"]  # range_ylim: tui/runs.py draws range tests with it

DEVICE_SECONDS = 2.0  # how often the devices panel samples memory and load


class ChecklistScreen(LiveScreen):
    """Sidebar of steps; the viewed step's explanation, candidates, plot and recommendation."""

    DEFAULT_CSS = """
    ChecklistScreen #body { height: 1fr; }
    ChecklistScreen #side { width: auto; height: 1fr; border-right: vkey $panel-lighten-2; }
    ChecklistScreen #devices { width: 30; height: auto; padding: 0 1; color: $text-muted;
                               border-top: solid $panel-lighten-2; }
    ChecklistScreen.-narrow #devices { display: none; }
    ChecklistScreen #main { width: 1fr; height: 1fr; }
    ChecklistScreen #explain { height: auto; max-height: 4; padding: 0 1; border-top: solid $primary; }
    ChecklistScreen #cands { height: auto; max-height: 7; overflow-x: hidden; }
    ChecklistScreen #plot { border-top: solid $primary; min-height: 7; }
    ChecklistScreen #rec { height: auto; max-height: 8; padding: 0 1; border-top: solid $accent; }
    ChecklistScreen #rec-keys { height: auto; padding: 0 1; }
    ChecklistScreen.-short #explain { max-height: 2; }
    ChecklistScreen.-short #cands { max-height: 5; }
    ChecklistScreen.-short #rec { max-height: 6; }
    """

    BINDINGS = [
        Binding("r", "run", "run"),
        Binding("a", "accept", "accept"),
        Binding("o", "override", "override"),
        Binding("e", "edit", "edit"),
        Binding("n", "add", "add value", show=False),
        Binding("x", "remove", "remove value", show=False),
        replace(PLOT_METRIC, show=False),
        Binding("f", "refine", "refine (final step)", show=False),
        Binding("left_square_bracket", "step(-1)", "previous step", show=False),
        Binding("right_square_bracket", "step(1)", "next step", show=False),
        *[Binding(str(i), f"view({i})", f"view step {i}", show=False) for i in range(1, 6)],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.viewing: str = "lr_range"
        self.metric = 0
        self._sid: int | None = None
        self._recs: dict[str, tuple[tuple, Recommendation | str | None]] = {}
        self._table_keys: list[str] = []

    def compose(self) -> ComposeResult:
        yield TopBar()
        with Horizontal(id="body"):
            with Vertical(id="side"):
                yield StepSidebar(id="steps")
                yield Static(id="devices")
            with Vertical(id="main"):
                yield Static(id="explain")
                yield DataTable(id="cands", cursor_type="row", zebra_stripes=False)
                yield PlotView(id="plot")
                yield Static(id="rec")
                yield Static(id="rec-keys")
        yield KeyFooter()

    def on_mount(self) -> None:
        t = self.query_one("#cands", DataTable)
        for label, key in (
            (" ", "mark"),
            ("value", "value"),
            ("run", "run"),
            ("status", "status"),
            ("progress", "progress"),
            ("val loss", "val_loss"),
            ("val acc", "val_acc"),
            ("note", "note"),
        ):
            t.add_column(label, key=key)
        t.focus()
        self.mark_ready()
        self._sample_devices()
        self.set_interval(DEVICE_SECONDS, self._sample_devices)

    def _sample_devices(self) -> None:
        """GPU memory and load for choosing a batch size; read off the UI thread (nvidia-smi is slow)."""
        if self.app.screen is not self or self.narrow:
            return
        self.run_worker(self._read_devices, thread=True, exclusive=True, group="devices")

    def _read_devices(self) -> None:
        lines = panel_lines(read_devices())
        self.app.call_from_thread(self._show_devices, lines)

    def _show_devices(self, lines: list[str]) -> None:
        if lines == getattr(self, "_device_lines", None):
            return  # nothing new: no redraw
        self._device_lines = lines
        box = self.query_one("#devices", Static)
        box.border_title = "devices"
        box.update("\n".join(lines))

    # -- data ----------------------------------------------------------------------------------
    @property
    def session(self) -> TuningSession | None:
        return self.tapp.session

    def on_resize(self) -> None:
        self._safe_refresh(None)

    def refresh_live(self, res: PollResult | None) -> None:
        s = self.session
        if s is None:
            self.query_one("#explain", Static).update("No tuning session yet: press S to create one.")
            return
        if s.id != self._sid:
            self._sid = s.id
            self._recs.clear()
            self.viewing = s.checklist.current_step or "final"
        cl = s.checklist
        states = s.steps()
        self.query_one(StepSidebar).show(states, cl.current_step, self.narrow, STEPS.index(self.viewing))
        step = self.viewing
        runs = s.step_runs(step)
        curves = {k: self.tapp.live.curve(r) for k, r in runs.items()}
        rec = self._recommendation(step, runs)
        cands = self._candidates(step)
        view = StepView(step, cands, runs, curves, rec)
        self._show_explain(step)
        self._show_table(view)
        self._show_plot(view)
        self._show_rec(view)

    def _candidates(self, step: str) -> list[Candidate]:
        assert self.session is not None
        try:
            return self.session.checklist.candidate_list(step)
        except UserError:
            return []

    def _recommendation(self, step: str, runs: dict[str, int]) -> Recommendation | str | None:
        """The advisor's reading once every run of the step ended (cached until the runs change)."""
        s = self.session
        assert s is not None
        if not runs:
            return None
        live = self.tapp.live
        rows = [live.run(r) for r in runs.values()]
        statuses = tuple(r.status if r is not None else "lost" for r in rows)
        if any(st not in ENDED for st in statuses):
            return None
        try:
            if s.checklist.propose(step).candidates:
                return None  # values still to run (added or edited): no reading yet
        except UserError:
            return None
        key = (tuple(sorted(runs.items())), statuses)
        cached = self._recs.get(step)
        if cached is not None and cached[0] == key:
            return cached[1]
        if all(st in ("failed", "lost", "cancelled") for st in statuses):
            errs = [f"run {r.id} {r.status}: {r.error or 'no error recorded'}" for r in rows if r]
            msg = "Every run of this step ended without a result. " + " · ".join(errs[:2])
            self._recs[step] = (key, msg)
            return msg
        try:
            rec: Recommendation | str | None = s.recommend(step)
        except UserError as exc:
            rec = str(exc)
        if rec is None:
            return None  # the store saw a run still going: ask again next poll
        self._recs[step] = (key, rec)  # runs it asks for are started by the app's poll (advance)
        return rec

    # -- drawing -------------------------------------------------------------------------------
    def _images_per_s(self) -> tuple[float, str]:
        s = self.session
        vals = [
            r.images_per_s
            for r in self.tapp.live.session_runs(s.id if s else None)
            if r.images_per_s and r.status in ("finished", "running")
        ]
        if vals:
            return float(statistics.median(vals)), "measured"
        model = s.checklist.model if s else "simple3"
        return expected_throughput(self.tapp.store, model, bool(detect_gpus()))

    def _show_explain(self, step: str) -> None:
        s = self.session
        assert s is not None
        cl = s.checklist
        box = self.query_one("#explain", Static)
        i = STEPS.index(step) + 1
        state = next(st for st in s.steps() if st.step == step)
        box.border_title = f"{i} · {STEP_TITLES[step]} ({badge(STEP_STATUS, state.status).word})"
        try:
            text = cl.propose(step).explanation
        except UserError:
            text = cl.explain(step)
        ips, source = self._images_per_s()
        est = cl.estimate_seconds(images_per_s=ips).get(step)
        if est and not s.step_runs(step):
            text += f" About {fmt_minutes(est)} at {ips:,.0f} img/s ({source})."
        box.update(text)

    def _show_table(self, view: StepView) -> None:
        keys, rows = candidate_rows(view, self.tapp.live, self.narrow)
        sync_table(self.query_one("#cands", DataTable), keys, rows)
        self._table_keys = keys

    def _show_plot(self, view: StepView) -> None:
        s = self.session
        assert s is not None
        plot = self.query_one(PlotView)
        chart, title = step_chart(
            view,
            decision=s.checklist.decisions.get(view.step),
            current=s.checklist.current_step,
            metric=self.metric,
            live=self.tapp.live,
        )
        plot.border_title = title
        plot.set_chart(chart)

    def _show_rec(self, view: StepView) -> None:
        s = self.session
        assert s is not None
        box = self.query_one("#rec", Static)
        live = self.tapp.live
        rows = [live.run(r) for r in view.runs.values()]
        box.border_title = recommendation_title(rows, self.narrow)
        text, keys = recommendation_text(view, s.checklist, rows)
        box.update(text)
        key_line = self.query_one("#rec-keys", Static)
        key_line.update(keys)
        key_line.display = bool(keys.plain)

    # -- navigation ----------------------------------------------------------------------------
    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        # Only the highlight as it is now: an event queued before the checklist moved on is stale.
        now = event.option_list.highlighted_option
        if now is None or now.id != event.option.id:
            return
        if event.option.id and event.option.id != self.viewing:
            self.viewing = event.option.id
            self.metric = 0
            self._safe_refresh(None)

    def action_view(self, i: int) -> None:
        self.viewing = STEPS[i - 1]
        self.metric = 0
        self._safe_refresh(None)

    def action_step(self, delta: int) -> None:
        self.action_view(min(len(STEPS), max(1, STEPS.index(self.viewing) + 1 + delta)))

    def action_metric(self) -> None:
        self.metric += 1
        self._safe_refresh(None)

    # -- actions -------------------------------------------------------------------------------
    def _need_session(self) -> TuningSession:
        if self.session is None:
            raise UserError("no tuning session: press S to create one")
        return self.session

    def _active_runs(self, step: str) -> list[int]:
        s = self._need_session()
        live = self.tapp.live
        return [
            r
            for r in s.step_runs(step).values()
            if (run := live.run(r)) is not None and run.status in ("queued", "running")
        ]

    @guarded
    def action_run(self) -> None:
        """Launch the step's runs; when they all ended, re-run them with another seed."""
        s = self._need_session()
        step = self.viewing
        current = s.checklist.current_step
        if (
            current is not None
            and STEPS.index(step) > STEPS.index(current)
            and step not in s.checklist.decisions
        ):
            raise UserError(f"decide step {STEPS.index(current) + 1} ({STEP_TITLES[current]}) first")
        if self._active_runs(step):
            raise UserError(f"{STEP_TITLES[step]} runs are still going; R shows them (c cancels one)")
        if s.checklist.propose(step).candidates:
            ids = s.launch(step)
            self.app.notify(
                f"{STEP_TITLES[step]}: started run(s) {', '.join(map(str, ids))} in the background"
            )
            self._after_change()
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._rerun(step)

        n = len(s.step_runs(step))
        self.app.push_screen(
            ConfirmDialog(
                "Re-run",
                f"Run the {n} run(s) of {STEP_TITLES[step]} again with another seed? "
                "The old runs stay in the Runs screen; the reading will use the new ones.",
            ),
            confirmed,
        )

    @guarded
    def _rerun(self, step: str) -> None:
        s = self._need_session()
        ids = s.rerun(step)
        self._recs.pop(step, None)
        runs = ", ".join(map(str, ids))
        self.app.notify(f"{STEP_TITLES[step]}: re-running with seed {s.seed_for(step)} (run(s) {runs})")
        self._after_change()

    def _after_change(self) -> None:
        self.tapp.poll_now()
        self.refresh_all()  # the session changed even when no run did

    def _current_rec(self, step: str) -> Recommendation | str | None:
        s = self._need_session()
        return self._recommendation(step, s.step_runs(step))

    @guarded
    def action_accept(self) -> None:
        s = self._need_session()
        step = self.viewing
        rec = self._current_rec(step)
        if not isinstance(rec, Recommendation):
            if self._active_runs(step):
                raise UserError(f"nothing to accept yet: {STEP_TITLES[step]} runs are still going")
            raise UserError(
                f"nothing to accept for {STEP_TITLES[step]}: press r to run it (or o to set a value)"
            )
        if rec.needs_more_runs:
            raise UserError(f"{STEP_TITLES[step]} is waiting for its extra run(s) before a reading")
        if not rec.ok:
            raise UserError(
                f"{STEP_TITLES[step]} has no usable reading; press o to set a value or r to re-run"
            )
        s.accept(rec)
        self.app.notify(f"{STEP_TITLES[step]}: {rec.label} accepted")
        self._advance()

    @guarded
    def action_refine(self) -> None:
        """The final step: one more final-length run with the diagnosis's remedy; the profile keeps the
        variant that validates best (started by the app's poll, like the WD refinement)."""
        s = self._need_session()
        if self.viewing != "final":
            raise UserError("f refines the final run: view step 5 first")
        if self._active_runs("final"):
            raise UserError("wait for the final step's runs to end before refining")
        s.allow_refine()
        self.app.notify(
            "Refinement allowed: starting one more final-length run if the diagnosis names a remedy"
        )
        self._recs.pop("final", None)
        self.tapp.session_changed_advance()
        self._after_change()

    def _advance(self) -> None:
        s = self._need_session()
        nxt = s.checklist.current_step
        self.viewing = nxt or "final"
        self.metric = 0
        self._after_change()
        if nxt is None:
            self.app.notify("Checklist complete. Save the result as a profile.")
            self.tapp.action_save_profile()

    def _default_value(self, step: str) -> Any:
        s = self._need_session()
        cl = s.checklist
        rec = self._current_rec(step)
        if isinstance(rec, Recommendation) and rec.ok and rec.value is not None:
            return rec.value
        d = cl.decisions.get(step)
        if d is not None:
            return d.value
        v = cl.values
        return {
            "lr_range": [v["lr_min"], v["lr_max"]],
            "batch_size": v["batch_size"],
            "momentum": [v["momentum_max"], v["momentum_min"]],
            "weight_decay": v["weight_decay"],
        }.get(step)

    @guarded
    def action_override(self) -> None:
        s = self._need_session()
        step = self.viewing
        if step == "final":
            raise UserError("the final run has no value to set; r runs it again")
        title = STEP_TITLES[step]

        def apply(text: str) -> Any:
            value = parse_value(step, text)
            s.override(step, value, reason="set by the user in the TUI")
            return value

        def done(value: Any) -> None:
            if value is not None:
                self.app.notify(f"{title}: {value_text(step, value)} set by you")
                self._advance()

        later = [STEP_TITLES[x] for x in STEPS[STEPS.index(step) + 1 :] if x in s.checklist.decisions]
        warn = f" Changing it marks {', '.join(later)} stale." if later else ""
        self.app.push_screen(
            InputDialog(
                f"Override · {title}",
                f"Use your own value for {title}: {HINTS[step]}.{warn}",
                value=value_text(step, self._default_value(step)),
                check=apply,
            ),
            done,
        )

    def _editable(self, step: str) -> None:
        if step not in SWEEP_STEPS and step != "lr_range":
            raise UserError(f"{STEP_TITLES[step]} has no values to edit")
        if self._active_runs(step):
            raise UserError(f"{STEP_TITLES[step]} runs are still going; cancel them in R before editing")

    def _edit_values(self, step: str, values: list[Any], what: str) -> None:
        """Replace the step's values; when runs exist, confirm that they will be set aside."""
        s = self._need_session()

        def go(yes: bool | None = True) -> None:
            if yes:
                try:
                    s.set_candidates(step, values)
                except UserError as exc:
                    self.app.notify(str(exc), severity="error")
                    return
                self._recs.pop(step, None)
                self.app.notify(f"{STEP_TITLES[step]}: {what}")
                self._after_change()

        if s.step_runs(step):
            self.app.push_screen(
                ConfirmDialog(
                    "Edit values",
                    f"{STEP_TITLES[step]} already has runs; changing its values sets them aside (they stay "
                    "in Runs) and the step runs again. Continue?",
                ),
                go,
            )
        else:
            go()

    def _selected(self) -> int:
        table = self.query_one("#cands", DataTable)
        return max(0, min(table.cursor_row, len(self._table_keys) - 1))

    def _ask_value(self, step: str, verb: str, prompt: str, done: Any, value: str = "") -> None:
        """A dialog asking for one of the step's values, checked as it is typed; `done` gets it."""
        self.app.push_screen(
            InputDialog(
                f"{verb} · {STEP_TITLES[step]}",
                prompt,
                value=value,
                check=lambda text: parse_value(step, text),
            ),
            done,
        )

    @guarded
    def action_edit(self) -> None:
        s = self._need_session()
        step = self.viewing
        self._editable(step)
        cands = s.checklist.candidate_list(step)
        i = self._selected() if step != "lr_range" else len(cands) - 1
        values = [c.value for c in cands]

        def done(v: Any) -> None:
            if v is not None:
                values[i] = v
                self._edit_values(step, values, f"value {i + 1} is now {value_text(step, v)}")

        self._ask_value(step, "Edit", f"New value ({HINTS[step]}):", done, value=value_text(step, values[i]))

    @guarded
    def action_add(self) -> None:
        s = self._need_session()
        step = self.viewing
        self._editable(step)
        if step == "lr_range":
            raise UserError("the range test runs one range; e edits it")
        values = [c.value for c in s.checklist.candidate_list(step)]

        def done(v: Any) -> None:
            if v is not None:
                self._edit_values(step, [*values, v], f"added {value_text(step, v)}")

        self._ask_value(step, "Add", f"Another value to try ({HINTS[step]}):", done)

    @guarded
    def action_remove(self) -> None:
        s = self._need_session()
        step = self.viewing
        self._editable(step)
        values = [c.value for c in s.checklist.candidate_list(step)]
        if len(values) < 2:
            raise UserError("a step needs at least one value; e edits it")
        i = self._selected()
        removed = values.pop(i)
        self._edit_values(step, values, f"removed {value_text(step, removed)}")
