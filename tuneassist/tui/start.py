"""The start screen: create a tuning session, or resume one of the workspace's sessions."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from tuneassist.advisor.checklist import BUDGETS, STEP_TITLES, STEPS, Checklist
from tuneassist.dataref import is_data_module
from tuneassist.errors import UserError
from tuneassist.runs.launch import detect_gpus
from tuneassist.runs.probe_client import PROBE_SECONDS, probe_in_subprocess
from tuneassist.session import TuningSession, estimate_train_size, expected_throughput, parse_duration
from tuneassist.spec import BUILTIN_MODELS, RunSpec
from tuneassist.tui.base import LiveScreen, guarded, log_note
from tuneassist.tui.dialogs import ConfirmDialog
from tuneassist.tui.fmt import fmt_minutes
from tuneassist.tui.keys import BACK_TO_CHECKLIST
from tuneassist.tui.live import PollResult
from tuneassist.tui.widgets import KeyFooter, TopBar
from tuneassist.usercode import is_user_model, locate_module

DATA_SUGGESTIONS = ["synthetic", "synthetic:2000", "cifar10", "cifar100", "folder:"]
log = logging.getLogger(__name__)
BUDGET_HELP = {
    "quick": "quick (minutes on a CPU)",
    "standard": "standard (short GPU runs)",
    "paper": "paper (the paper's lengths)",
}


def session_progress(cl: Checklist) -> str:
    done = sum(1 for s in STEPS if s in cl.decisions and not cl.decisions[s].stale)
    cur = cl.current_step
    return f"{done}/5 · complete" if cur is None else f"{done}/5 · next: {STEP_TITLES[cur]}"


def _row(label: str, field: Widget, note: str | None = None) -> Horizontal:
    """One row of the form: its label, its field, and the note that says what the field takes."""
    parts: list[Widget] = [Label(label), field]
    if note is not None:
        parts.append(Static(note, classes="note"))
    return Horizontal(*parts, classes="row")


def _optional(field_id: str, example: str, **kw: Any) -> Input:
    """An optional text field, empty, its placeholder an example."""
    return Input("", placeholder=f"{example} (optional)", id=field_id, compact=True, **kw)


def _checklist_kw(form: dict[str, Any], ips: float | None) -> dict[str, Any]:
    """The Checklist the form describes, as keywords: the estimate is of the session `create` makes.
    The form's fields carry Checklist's names (all but `name`, the session's); a time budget plans
    from the throughput `ips`."""
    kw = {k: v for k, v in form.items() if k != "name"}
    return {
        **kw,
        "train_size": estimate_train_size(form["data"]),
        "images_per_s": ips if form["time_s"] else None,
    }


class StartScreen(LiveScreen):
    """A form for a new session above the list of existing ones (enter resumes the selected one)."""

    DEFAULT_CSS = """
    StartScreen #form { height: auto; padding: 0 1; border-top: solid $primary; }
    StartScreen .row { height: 1; margin: 0 0 1 0; }
    StartScreen .row Label { width: 9; }
    StartScreen .row Input { width: 1fr; max-width: 40; }
    StartScreen .row Select { width: 1fr; max-width: 40; }
    StartScreen .note { width: 1fr; padding: 0 0 0 2; color: $text-muted; }
    StartScreen #estimate { height: auto; }
    StartScreen #create { margin: 0 0 0 9; }
    StartScreen #keys-hint { height: auto; padding: 0; }
    StartScreen.-short #keys-hint { display: none; }
    StartScreen #sessions { height: 1fr; border-top: solid $primary; }
    StartScreen.-short .row { margin: 0; }
    """
    BINDINGS = [
        Binding("ctrl+n", "create", "create session"),
        BACK_TO_CHECKLIST,
    ]

    def __init__(self) -> None:
        super().__init__()
        self._rows_sig: tuple | None = None
        self._ids: list[int] = []
        self._probing = False  # a session waits for its memory probe: one at a time

    def compose(self) -> ComposeResult:
        yield TopBar()
        with Vertical(id="form") as form:
            form.border_title = "New tuning session"
            yield _row(
                "Data",
                Input("synthetic", id="data", compact=True,
                      suggester=SuggestFromList(DATA_SUGGESTIONS, case_sensitive=False)),
                "synthetic[:N] · cifar10 · cifar100 · folder:PATH · module:function",
            )  # fmt: skip
            yield _row("Size", _optional("image-size", "e.g. 64", type="integer"),
                       "a folder's side (default: its most common)")  # fmt: skip
            models = Select([(m, m) for m in BUILTIN_MODELS], value="simple3", allow_blank=False, id="model",
                            compact=True)  # fmt: skip
            yield _row("Model", models, "or type module:function below")
            yield _row("Custom", _optional("custom", "mynets:build"), "a function(num_classes) -> nn.Module")
            yield _row("Train", _optional("train", "mytrain:train"), "your training function(hp, report)")
            yield _row("Budget", Select([(BUDGET_HELP[b], b) for b in BUDGETS], value="quick",
                                        allow_blank=False, id="budget", compact=True))  # fmt: skip
            yield _row("Time", _optional("time", "e.g. 20m"), "fit the whole checklist in this wall time")
            gpus = detect_gpus()
            seen = f"{len(gpus)} GPU(s) seen" if gpus else "no GPU seen: runs use the CPU"
            yield _row("Devices", Input("1", id="devices", type="integer", compact=True), f"per run; {seen}")
            yield _row("Name", Input("", placeholder="(default: data · model)", id="name", compact=True))
            yield Static(id="estimate")
            yield Button("Create session (enter)", id="create", compact=True)
            yield Static(
                "tab / shift+tab move between fields and the sessions list · enter in a field creates · "
                "from the list: enter resumes, R runs, p profiles, ? help, q quit",
                classes="note",
                id="keys-hint",
            )
        table: DataTable[str] = DataTable(id="sessions", cursor_type="row")
        table.border_title = "Sessions (enter resumes)"
        yield table
        yield KeyFooter()

    def on_mount(self) -> None:
        t = self.query_one("#sessions", DataTable)
        for label in ("id", "name", "data · model", "budget", "progress", "runs", "created"):
            t.add_column(label, key=label)
        self._estimate()
        self.mark_ready()
        self._focus_first()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._focus_first()

    def _focus_first(self) -> None:
        """Resuming is the likely wish when sessions exist (and letter keys work from the list)."""
        if self._ids:
            self.query_one("#sessions", DataTable).focus()
        else:
            self.query_one("#data", Input).focus()

    def _form(self) -> dict[str, Any]:
        data = self.query_one("#data", Input).value.strip()
        custom = self.query_one("#custom", Input).value.strip()
        model = custom or str(self.query_one("#model", Select).value)
        budget = str(self.query_one("#budget", Select).value)
        dev_text = self.query_one("#devices", Input).value.strip() or "1"
        try:
            devices = int(dev_text)
        except ValueError:
            raise UserError(f"devices {dev_text!r} must be a whole number, e.g. 1") from None
        name = self.query_one("#name", Input).value.strip() or None
        if not data:
            raise UserError("type a data set, e.g. synthetic or cifar10")
        t = self.query_one("#time", Input).value.strip()
        time_s = parse_duration(t) if t else None
        train = self.query_one("#train", Input).value.strip() or None
        size_text = self.query_one("#image-size", Input).value.strip()
        try:
            image_size = int(size_text) if size_text else None
        except ValueError:
            raise UserError(f"image size {size_text!r} must be a whole number of pixels, e.g. 64") from None
        if image_size is not None:
            RunSpec(data=data, image_size=image_size).validate()  # the range, and folder:PATH data only
        return {
            "data": data,
            "model": train or model,  # a training function trains its own model: it names the model too
            "train_fn": train,
            "image_size": image_size,
            "budget": budget,
            "devices": devices,
            "name": name,
            "time_s": time_s,
        }

    def _estimate(self) -> None:
        box = self.query_one("#estimate", Static)
        try:
            f = self._form()
            ips, source = expected_throughput(self.tapp.store, f["model"], bool(detect_gpus()))
            cl = Checklist(**_checklist_kw(f, ips))
            secs = cl.estimate_seconds(images_per_s=ips)["total"]
            plan = f" {cl.time_plan_text()}" if cl.time_s else ""
            box.update(
                Text(
                    f"About {fmt_minutes(secs)} for the whole checklist at {ips:,.0f} img/s ({source}; "
                    f"TBS {cl.values['batch_size']}).{plan}",
                    style="bold",
                )
            )
        except UserError as exc:
            box.update(Text(f"✗ {exc}", style="red"))
        except Exception as exc:  # noqa: BLE001 - a half-typed form must never crash the screen
            box.update(Text(f"✗ {exc}", style="red"))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._estimate()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._estimate()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_create()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "create":
            self.action_create()

    @guarded
    def action_create(self) -> None:
        f = self._form()
        code = [
            ("Training function", f["model"], "--train")
            if f["train_fn"]
            else ("Model", f["model"], "--model")
        ]
        code = [c for c in code if is_user_model(c[1])]
        if is_data_module(f["data"]):
            code.append(("Data", f["data"], "--data"))
        if not code:
            self._create(f)
            return
        # A module:function model, training function or data runs the user's code in every run: ask
        # first, naming each file and the folder the runs import it from.
        Checklist(data=f["data"], model=f["model"], budget=f["budget"], train_fn=f["train_fn"])  # malformed?
        found = [(what, ref, *locate_module(ref, flag=flag)) for what, ref, flag in code]
        model_dir = next((str(folder) for what, _, folder, _ in found if what != "Data"), None)

        def answer(yes: bool | None) -> None:
            if yes:
                self._create(f, model_dir=model_dir, consent=True)
            else:
                refs = " and ".join(ref for _, ref, _, _ in found)
                self.app.notify(f"nothing imported; session not created ({refs} needs your consent)")

        lines = "; ".join(
            f"{what} {ref} imports and runs {file} (found in {folder}, which the runs will import it from)"
            for what, ref, folder, file in found
        )
        self.app.push_screen(
            ConfirmDialog("Import your code?", f"{lines}, in every run of this session. Import it?"), answer
        )

    @guarded
    def _create(self, f: dict[str, Any], model_dir: str | None = None, consent: bool = False) -> None:
        """Probe memory, then create the session; `consent` means the user agreed to import its code
        (model_dir: where its model or training function's module is).

        The probe (the largest batch that fits, as `tune` measures it) caps the batch-size step's grid:
        without it a TBS candidate could run out of device memory. It runs off the UI thread, after the
        form's values are checked, so a typo is not found only after the probe's minute."""
        if self._probing:
            self.app.notify("the memory probe is still running; the session is created when it ends")
            return
        ips = (
            expected_throughput(self.tapp.store, f["model"], bool(detect_gpus()))[0] if f["time_s"] else None
        )
        Checklist(**_checklist_kw(f, ips))  # a bad value: its one-line error now
        make = functools.partial(self._make_session, f, model_dir, consent, ips)
        if f["train_fn"]:  # the user's function builds its own batches: nothing to probe
            make(None)
            return
        self._probing = True
        wait = f"at most {PROBE_SECONDS:.0f} s"
        self.app.notify(f"memory probe: the largest batch of {f['model']} that fits ({wait})")
        self.run_worker(lambda: self._probe(f, model_dir, consent, make), thread=True, group="probe")

    def _probe(
        self, f: dict[str, Any], model_dir: str | None, consent: bool, make: Callable[[dict | None], None]
    ) -> None:
        """In a worker thread: the probe's subprocess, then `make` on the UI thread."""
        probe = None
        try:
            probe = probe_in_subprocess(
                f["model"], f["data"], device="auto", allow_import=consent,
                model_dir=model_dir, image_size=f["image_size"],
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - a probe that breaks leaves the limit unknown, as one that fails
            log.exception("memory probe failed")
        self.app.call_from_thread(self._probed, make, probe)

    def _probed(self, make: Callable[[dict | None], None], probe: dict[str, Any] | None) -> None:
        self._probing = False
        if probe is None:
            self.app.notify(
                f"the memory probe gave no answer{log_note(self.app, 'the reason')}; the batch-size step has "
                "no memory limit",
                severity="warning",
            )
        make(probe)

    @guarded
    def _make_session(
        self, f: dict[str, Any], model_dir: str | None, consent: bool, ips: float | None, probe: dict | None
    ) -> None:
        session = TuningSession.create(
            self.tapp.store,
            name=f["name"],
            allow_import=consent,
            model_dir=model_dir,
            max_fit=probe["max_batch"] if probe else None,
            **_checklist_kw(f, ips),
        )
        fits = f" (largest batch that fits: {probe['max_batch']})" if probe else ""
        self.app.notify(f"session {session.id} created: {session.name}{fits}; r starts the LR range test")
        self.tapp.set_session(session)
        self.tapp.action_goto("checklist")

    def refresh_live(self, res: PollResult | None) -> None:
        store = self.tapp.store
        sessions = [s for s in store.list_sessions() if "checklist" in (s.get("state") or {})]
        live = self.tapp.live
        rows = []
        for s in reversed(sessions):
            try:
                cl = Checklist.from_dict(s["state"]["checklist"])
                prog = session_progress(cl)
                budget = cl.budget
            except UserError as exc:
                prog, budget = f"✗ {exc}", "?"
            runs = live.session_runs(int(s["id"]))
            active = sum(1 for r in runs if r.status in ("queued", "running"))
            run_text = f"{len(runs)}" + (f" ({active} running)" if active else "")
            import time as _time

            created = _time.strftime("%Y-%m-%d %H:%M", _time.localtime(s.get("created") or 0))
            rows.append(
                (
                    str(s["id"]),
                    s.get("name") or "",
                    f"{s.get('data')} · {s.get('model')}",
                    budget,
                    prog,
                    run_text,
                    created,
                )
            )
        sig = tuple(rows)
        if sig == self._rows_sig:
            return
        self._rows_sig = sig
        t = self.query_one("#sessions", DataTable)
        t.clear()
        for r in rows:
            t.add_row(*r, key=r[0])
        self._ids = [int(r[0]) for r in rows]
        if not rows:
            t.border_title = "Sessions: none yet"
        else:
            t.border_title = "Sessions (enter resumes)"

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._open(event.cursor_row)

    @guarded
    def _open(self, row: int) -> None:
        if not (0 <= row < len(self._ids)):
            return
        session = TuningSession(self.tapp.store, self._ids[row])
        self.tapp.set_session(session)
        self.app.notify(f"resumed session {session.id}: {session.name}")
        self.tapp.action_goto("checklist")
