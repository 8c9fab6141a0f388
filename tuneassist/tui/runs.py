"""The runs screen (a live table of every run) and one run's detail (curves, diagnosis, log tail)."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Static

from tuneassist.advisor.diagnosis import diagnose
from tuneassist.advisor.lr_range import fmt_num, suggest_lr
from tuneassist.curves import Curves
from tuneassist.errors import UserError
from tuneassist.runs.launch import cancel_run, resume_run
from tuneassist.runs.store import Run
from tuneassist.tui.base import LiveScreen, guarded
from tuneassist.tui.chart import Chart, Series, VLine, ema
from tuneassist.tui.dialogs import ConfirmDialog
from tuneassist.tui.fmt import fmt_time, g, hyper, pct, progress_text, run_kind, run_status
from tuneassist.tui.keys import BACK_TO_CHECKLIST, CANCEL_RUN, PLOT_METRIC, RESUME_RUN
from tuneassist.tui.live import PollResult
from tuneassist.tui.widgets import KeyFooter, PlotView, TopBar, sync_table

STATUS_FILTERS = {
    "all": None,
    "active": ("queued", "running"),
    "ended": ("finished", "diverged", "cancelled"),
    "problems": ("failed", "lost", "diverged"),
}
COLUMNS = (
    ("id", "id"),
    ("step", "kind"),
    ("status", "status"),
    ("progress", "progress"),
    ("val loss", "val_loss"),
    ("val acc", "val_acc"),
    ("img/s", "ips"),
    ("elapsed", "elapsed"),
    ("ETA", "eta"),
    ("hyperparameters", "hyper"),
    ("model · data", "model"),
)
LOG_LINES = 8


def log_tail(path: Any, n: int = LOG_LINES) -> list[str]:
    """The last n lines of a worker log (read from the end: logs can be long)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return list(deque(data.splitlines(), maxlen=n))


def is_range(run: Run) -> bool:
    return run.schedule.startswith("range_")


def run_chart(run: Run, c: Curves, metric: int = 0) -> tuple[str, Chart]:
    """A run's curves: loss vs LR for a range test, else loss (or val accuracy) vs epoch."""
    if is_range(run):
        from tuneassist.tui.checklist import range_ylim

        spec = run.spec_data
        series = [
            Series("train loss (smoothed)", c.lrs, ema(c.train_loss), "cyan"),
            Series("val loss", c.eval_lrs(), c.val_loss, "magenta"),
        ]
        vlines = []
        d_lr = run.outcome.get("diverged_lr")
        if d_lr:
            vlines.append(VLine(float(d_lr), f"diverged {fmt_num(d_lr)}", "red"))
        lo, hi = spec.get("lr_min"), spec.get("lr_max")
        xlim = (float(lo), float(hi)) if lo and hi else None
        chart = Chart(series, vlines, logx=True, xlim=xlim, ylim=range_ylim(c), xlabel="LR")
        return "loss vs LR (log)", chart
    if metric % 2 == 1:
        return "val acc % vs epoch", Chart(
            [Series("val acc %", c.eval_epochs, [100 * v for v in c.val_acc], "green")], xlabel="epoch"
        )
    chart = Chart(
        [
            Series("train loss (smoothed)", c.epochs, ema(c.train_loss), "cyan"),
            Series("val loss", c.eval_epochs, c.val_loss, "magenta"),
        ],
        xlabel="epoch",
    )
    return "loss vs epoch", chart


def run_reading(run: Run, c: Curves) -> Text:
    """What a run says: its error, how it ended, and the advisor's diagnosis of its curves."""
    t = Text()
    status = run.status
    if status in ("failed", "lost"):
        t.append(f"✗ {status}: ", style="bold red")
        t.append(f"{run.error or 'no error recorded'}\n")
        if status == "lost":
            t.append("u resumes it from its last checkpoint.\n")
    out = run.outcome
    if out.get("reason"):
        t.append(f"{status}: {out['reason']}\n", style="bold")
    if status == "cancelled":
        t.append("u resumes it from its last checkpoint.\n")
    if not c.steps and not c.eval_steps:
        if status not in ("failed", "lost"):
            t.append("No metrics yet." if status in ("queued", "running") else "No metrics were recorded.")
        return t
    try:
        if is_range(run):
            if len(c.steps) >= 8:
                s = suggest_lr(
                    c.lrs,
                    c.train_loss,
                    c.eval_lrs() or None,
                    c.val_loss or None,
                    diverged_at_lr=out.get("diverged_lr") if status == "diverged" else None,
                )
                t.append(s.explanation)
            else:
                t.append("Too few steps yet to read the range test.")
        else:
            spec = run.spec_data
            d = diagnose(
                c.steps,
                c.train_loss,
                c.eval_steps,
                c.val_loss,
                c.val_acc if len(c.val_acc) == len(c.val_loss) else None,
                lr_max=spec.get("lr_max"),
                weight_decay=spec.get("weight_decay"),
                batch_size=spec.get("batch_size"),
                model=spec.get("model"),
            )
            t.append(f"Diagnosis: {d.kind.replace('_', ' ')}. ", style="bold")
            t.append(f"{d.explanation} Next: {d.remedy}")
    except Exception as exc:  # noqa: BLE001 - a strange curve must not break the screen
        t.append(f"(no diagnosis: {type(exc).__name__}: {exc})")
    return t


class RunsScreen(LiveScreen):
    """Every run in the workspace (or the session), live: status, progress, values, speed, ETA."""

    CLOCK_SECONDS = 1.0

    DEFAULT_CSS = """
    RunsScreen #table { height: 1fr; }
    RunsScreen #line { height: auto; max-height: 3; padding: 0 1; border-top: solid $primary; }
    """
    BINDINGS = [
        Binding("enter", "open", "open", show=False),
        CANCEL_RUN,
        RESUME_RUN,
        Binding("f", "filter_session", "session/all"),
        Binding("s", "filter_status", "status filter"),
        BACK_TO_CHECKLIST,
    ]

    def __init__(self) -> None:
        super().__init__()
        self.only_session = True
        self.status_filter = "all"
        self._ids: list[int] = []

    def compose(self) -> ComposeResult:
        yield TopBar()
        yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
        yield Static(id="line")
        yield KeyFooter()

    def on_mount(self) -> None:
        t = self.query_one("#table", DataTable)
        for label, key in COLUMNS:
            t.add_column(label, key=key)
        t.focus()
        self.mark_ready()

    def _visible(self) -> list[Run]:
        app = self.tapp
        sid = app.session.id if (app.session and self.only_session) else None
        wanted = STATUS_FILTERS[self.status_filter]
        runs = [r for r in app.live.session_runs(sid) if wanted is None or r.status in wanted]
        return sorted(runs, key=lambda r: -r.id)

    def refresh_live(self, res: PollResult | None) -> None:
        runs = self._visible()
        rows = []
        for r in runs:
            rows.append(
                (
                    str(r.id),
                    run_kind(r),
                    run_status(r.status, r.cancel_requested, r),
                    progress_text(r),
                    g(r.best_val_loss, 4),
                    pct(r.best_val_acc),
                    "-" if not r.images_per_s else f"{r.images_per_s:,.0f}",
                    fmt_time(r.elapsed()),
                    fmt_time(r.eta()),
                    hyper(r.spec_data),
                    f"{r.model} · {r.data}",
                )
            )
        sync_table(self.query_one("#table", DataTable), [str(r.id) for r in runs], rows)
        self._ids = [r.id for r in runs]
        scope = (
            f"session {self.tapp.session.id}" if (self.only_session and self.tapp.session) else "all sessions"
        )
        self.sub_title = f"{scope} · {self.status_filter}"
        self._show_line()

    def _selected(self) -> int:
        """The selected run's id; a one-line error when the table has none selected."""
        rid = self.selected_id()
        if rid is None:
            raise UserError("no run selected")
        return rid

    def selected_id(self) -> int | None:
        table = self.query_one("#table", DataTable)
        if not self._ids or table.cursor_row < 0 or table.cursor_row >= len(self._ids):
            return None
        return self._ids[table.cursor_row]

    def _show_line(self) -> None:
        scope = (
            f"session {self.tapp.session.id}" if (self.only_session and self.tapp.session) else "all sessions"
        )
        t = Text(f"{len(self._ids)} runs · {scope} · status: {self.status_filter}", style="bold")
        rid = self.selected_id()
        run = self.tapp.live.run(rid) if rid is not None else None
        if run is not None:
            if run.status in ("failed", "lost") and run.error:
                t.append(f"\nrun {rid} {run.status}: ", style="bold red")
                t.append(str(run.error).splitlines()[0])
            elif run.outcome.get("reason"):
                t.append(f"\nrun {rid} {run.status}: {run.outcome['reason']}")
            else:
                t.append(f"\nrun {rid}: enter opens its curves and log")
        self.query_one("#line", Static).update(t)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_line()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    @guarded
    def action_open(self) -> None:
        self.app.push_screen(RunDetailScreen(self._selected()))

    def action_filter_session(self) -> None:
        self.only_session = not self.only_session
        self._safe_refresh(None)

    def action_filter_status(self) -> None:
        names = list(STATUS_FILTERS)
        self.status_filter = names[(names.index(self.status_filter) + 1) % len(names)]
        self._safe_refresh(None)

    @guarded
    def action_cancel(self) -> None:
        confirm_cancel(self, self._selected())

    @guarded
    def action_resume(self) -> None:
        do_resume(self, self._selected())


def confirm_cancel(screen: LiveScreen, rid: int) -> None:
    run = screen.tapp.live.run(rid)
    if run is None or run.status not in ("queued", "running", "lost"):
        raise UserError(f"run {rid} is {run.status if run else 'gone'}; only queued or running runs cancel")

    def go(yes: bool | None) -> None:
        if yes:
            try:
                status = cancel_run(screen.tapp.store, rid)
            except UserError as exc:
                screen.app.notify(str(exc), severity="error")
                return
            word = "stopping at its next check" if status == "running" else status
            screen.app.notify(f"run {rid}: {word} (it keeps its metrics and a checkpoint; u resumes it)")
            screen.tapp.poll_now()

    screen.app.push_screen(ConfirmDialog("Cancel run", f"Cancel run {rid} ({run_kind(run)})?"), go)


def do_resume(screen: LiveScreen, rid: int) -> None:
    info = resume_run(screen.tapp.store, rid)
    where = f"from step {info['from_step']}" if info.get("checkpoint") else "from the start (no checkpoint)"
    screen.app.notify(f"run {rid} resumed {where}: {info['status']}")
    screen.tapp.poll_now()


class RunDetailScreen(LiveScreen):
    """One run: its header, curves, the advisor's reading and the tail of its worker log."""

    CLOCK_SECONDS = 1.0

    DEFAULT_CSS = """
    RunDetailScreen #head { height: auto; max-height: 3; padding: 0 1; }
    RunDetailScreen #plot { border-top: solid $primary; min-height: 7; }
    RunDetailScreen #lower { height: auto; max-height: 12; }
    RunDetailScreen #diag { height: auto; max-height: 10; padding: 0 1; border-top: solid $accent;
                            width: 1fr; }
    RunDetailScreen #log { height: auto; max-height: 10; padding: 0 1; border-top: solid $primary; width: 1fr;
                           color: $text-muted; }
    RunDetailScreen.-narrow #lower { layout: vertical; }
    RunDetailScreen.-short #log { max-height: 4; }
    RunDetailScreen.-short #diag { max-height: 5; }
    """
    BINDINGS = [
        Binding("escape", "back", "back"),
        CANCEL_RUN,
        RESUME_RUN,
        PLOT_METRIC,
    ]

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = int(run_id)
        self.metric = 0
        self._diag_key: tuple | None = None

    def on_mount(self) -> None:
        self.mark_ready()

    def compose(self) -> ComposeResult:
        yield TopBar()
        yield Static(id="head")
        yield PlotView(id="plot")
        with Horizontal(id="lower"):
            yield Static(id="diag")
            yield Static(id="log")
        yield KeyFooter()

    def refresh_live(self, res: PollResult | None) -> None:
        live = self.tapp.live
        run = live.run(self.run_id)
        head = self.query_one("#head", Static)
        if run is None:
            head.update(f"run {self.run_id} is no longer in the store")
            return
        c = live.curve(self.run_id)
        spec = run.spec_data
        done, total = run.progress
        t = Text()
        t.append(f"Run {run.id} · {run_kind(run)} · ", style="bold")
        t.append_text(run_status(run.status, run.cancel_requested, run))
        if done or total:
            t.append(f" · step {done}/{total or '?'}")
        if run.images_per_s:
            t.append(f" · {run.images_per_s:,.0f} img/s")
        t.append(f" · elapsed {fmt_time(run.elapsed())}")
        if run.eta() is not None:
            t.append(f" · ETA {fmt_time(run.eta())}")
        t.append(f"\n{run.model} on {run.data} · {spec.get('schedule')} · {hyper(spec)}")
        t.append(f" · device {run.device or '-'}")
        if run.best_val_loss is not None:
            t.append(f"\nbest val loss {g(run.best_val_loss, 4)} · best val acc {pct(run.best_val_acc)}")
        head.update(t)
        title, chart = run_chart(run, c, self.metric)
        plot = self.query_one(PlotView)
        plot.border_title = title
        plot.set_chart(chart)
        key = (c.version, run.status, run.error, c.attempt)
        if key != self._diag_key:
            self._diag_key = key
            diag = self.query_one("#diag", Static)
            diag.border_title = "Reading"
            diag.update(run_reading(run, c))
        log = self.query_one("#log", Static)
        path = self.tapp.store.log_path(self.run_id)
        log.border_title = f"log: {path}"
        lines = log_tail(path)
        log.update(Text("\n".join(lines) if lines else "(no log yet)", no_wrap=True, overflow="ellipsis"))

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_metric(self) -> None:
        self.metric += 1
        self._safe_refresh(None)

    @guarded
    def action_cancel(self) -> None:
        confirm_cancel(self, self.run_id)

    @guarded
    def action_resume(self) -> None:
        do_resume(self, self.run_id)
