"""The Textual app: modes for the checklist, runs, profiles and start screens, and the store poll.

Each main screen is a mode with its own stack, so R / p / k / S jump between them without piling up
screens. Twice a second the app polls the store (one query for the run rows, plus new metric rows
for the curves on screen), tells the visible screen what changed, and toasts runs that ended.
Nothing here imports torch; runs are separate processes that outlive the app.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tuneassist.advisor.checklist import STEP_TITLES
from tuneassist.errors import UserError
from tuneassist.fsafe import open_new
from tuneassist.profiles.schema import safe_filename
from tuneassist.runs.rows import Run
from tuneassist.runs.store import Store
from tuneassist.session import TuningSession
from tuneassist.tui.base import LiveScreen, log_note
from tuneassist.tui.checklist import ChecklistScreen
from tuneassist.tui.dialogs import HelpScreen, InputDialog
from tuneassist.tui.live import Live
from tuneassist.tui.profiles import ProfilesScreen
from tuneassist.tui.runs import RunDetailScreen, RunsScreen
from tuneassist.tui.start import StartScreen

log = logging.getLogger("tuneassist.tui")
POLL_SECONDS = 0.5
TUI_LOG = "tui.log"  # in the workspace: tracebacks of the exceptions a toast reported


class TuneApp(App[None]):
    """tuneassist's terminal UI over one workspace's run store."""

    TITLE = "tuneassist"
    MODES = {
        "start": StartScreen,
        "checklist": ChecklistScreen,
        "runs": RunsScreen,
        "profiles": ProfilesScreen,
    }
    BINDINGS = [
        Binding("k", "goto('checklist')", "checklist", show=False),
        Binding("R", "goto('runs')", "runs"),
        Binding("p", "goto('profiles')", "profiles"),
        Binding("S", "goto('start')", "sessions", show=False),
        Binding("question_mark", "help", "help"),
        Binding("f1", "help", "help", show=False, priority=True),
        Binding("q", "quit", "quit (runs go on)"),
    ]
    CSS = """
    Screen { background: $background; }
    Footer { height: 1; }
    """

    def __init__(
        self,
        workspace: str | Path | None = None,
        session_id: int | None = None,
        poll_seconds: float = POLL_SECONDS,
        manage_queue: bool = True,
        store: Store | None = None,
    ) -> None:
        self.store = store or Store(workspace)
        if session_id is not None:
            self.session: TuningSession | None = TuningSession(
                self.store, int(self.store.get_session(session_id)["id"])
            )
        else:
            self.session = TuningSession.latest(self.store)
        # Open straight into the last session; a first start opens the form for a new one.
        self.DEFAULT_MODE = "checklist" if self.session else "start"  # type: ignore[misc]
        super().__init__()
        self.live = Live(self.store, manage_queue=manage_queue)
        self.poll_seconds = poll_seconds
        self.polls = 0
        self._poll_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    log_file: Path | None = None  # where exceptions are written (the toasts name it); None: nowhere
    _log_handler: logging.Handler | None = None

    def _open_log(self) -> None:
        """Write the tracebacks of exceptions the UI survives to `tui.log` in the workspace (private,
        never through a symlink), so a toast that vanished can still be read and reported."""
        if self.store.read_only:
            return
        path = self.store.workspace / TUI_LOG
        try:
            stream = os.fdopen(open_new(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a", encoding="utf-8",
                               errors="backslashreplace")  # fmt: skip
        except OSError:
            return
        handler = logging.StreamHandler(stream)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("tuneassist").addHandler(handler)
        self._log_handler, self.log_file = handler, path

    def on_unmount(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("tuneassist").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _handle_exception(self, error: Exception) -> None:
        """An exception that ends the app: its traceback goes to the log file too, then Textual's way."""
        log.error("the UI stopped on an unexpected error", exc_info=error)
        super()._handle_exception(error)

    def on_mount(self) -> None:
        self._open_log()
        if self.store.read_only:  # a full disk or a read-only mount: runs show, nothing can change
            self.notify(
                f"The workspace {self.store.read_only_why}: runs are shown, but nothing can be started, "
                "cancelled or saved until it is writable again.",
                severity="warning",
                timeout=30,
            )
        self._warn_logout()
        self.poll_now()
        self.set_interval(self.poll_seconds, self.poll_now)

    def _warn_logout(self) -> None:
        """Where logind kills a user's processes at logout, say so once, as a toast (a warning printed
        to stderr would tear the screen); the launcher then stays quiet in this process."""
        from tuneassist.runs import launch

        launch._logout_warned = True
        msg = launch.logout_kills_workers()
        if msg:
            self.notify(msg, severity="warning", timeout=30)

    def poll_now(self) -> None:
        """Read the store, toast runs that ended, and refresh the visible screen (never raises)."""
        try:
            res = self.live.poll()
            self._poll_error = None
        except Exception as exc:  # noqa: BLE001 - a locked or damaged store must not crash the UI
            msg = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            if msg != self._poll_error:
                self._poll_error = msg
                log.exception("poll failed")
                self.notify(f"cannot read the run store: {msg}{log_note(self)}", severity="error", timeout=10)
            return
        self.polls += 1
        for run in res.ended:
            self._toast_end(run)
        synced = self._reload_session() if self.session is not None else False
        if self.session is not None and (res.ended or synced or self.polls == 1):
            synced = self._advance_session() or synced
        stack = self.screen_stack  # empty for a moment while a mode switch is under way
        screen = stack[-1] if stack else None
        if isinstance(screen, LiveScreen):
            try:
                screen.on_poll(res)
                if synced and not (res.changed or res.ended):
                    screen.refresh_all()  # another window or `tune` changed the session, no run did
            except Exception:  # noqa: BLE001 - the next poll tries again; the UI stays up
                log.exception("screen refresh failed")

    def _reload_session(self) -> bool:
        """Pick up changes another window, the CLI or the autopilot saved to the session (in place:
        dialogs and actions hold this session object and must see the new state)."""
        assert self.session is not None
        try:
            return self.session.sync()
        except UserError:
            return False

    def session_changed_advance(self) -> None:
        """After a change that lets the checklist ask for runs (a refinement allowed): one turn now."""
        if self.session is not None:
            self._advance_session()

    def _advance_session(self) -> bool:
        """The checklist loop `tune` drives, run here on the poll and never while drawing: start the
        runs a finished step's reading asks for (WD refinement, a range-test retry, a refinement of the
        final run). The user still starts each step and accepts each value. True when it launched."""
        assert self.session is not None
        if self.store.read_only:
            return False
        try:
            turn = self.session.advance(accept=False, start=False)
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return False
        if turn.event != "more_runs":
            return False
        from tuneassist.advisor.checklist import STEP_TITLES

        title = STEP_TITLES[turn.step or "final"]
        self.notify(f"{title}: {turn.message} Started run(s) {', '.join(map(str, turn.run_ids))}.")
        return True

    def _toast_end(self, run: Run) -> None:
        from tuneassist.tui.fmt import run_kind

        status = run.status
        what = f"run {run.id} ({run_kind(run)}) {status}"
        if status in ("failed", "lost"):
            self.notify(f"{what}: {run.error or 'no error recorded'}", severity="error", timeout=10)
        elif status == "diverged" and run.kind.startswith("lr_range"):
            self.notify(f"{what} (expected: a range test runs until the loss blows up)")
        elif status == "diverged":
            self.notify(f"{what}: {run.outcome.get('reason', '')}", severity="warning")
        else:
            self.notify(what)

    # -- sessions ------------------------------------------------------------------------------
    def set_session(self, session: TuningSession) -> None:
        self.session = session
        self.poll_now()

    def session_line(self) -> str:
        s = self.session
        ro = "READ-ONLY · " if self.store.read_only else ""
        if s is None:
            return f"tuneassist  {ro}no session · workspace {self.store.workspace}"
        cl = s.checklist
        dev = f"{cl.devices}×GPU" if self.live and _has_gpu() else f"{cl.devices}×CPU"
        return (
            f"tuneassist  {ro}session {s.id}: {cl.data} · {cl.model} · {dev} · TBS {cl.values['batch_size']} "
            f"· {cl.budget}"
        )

    # -- actions -------------------------------------------------------------------------------
    def action_goto(self, mode: str) -> None:
        if mode == "checklist" and self.session is None:
            self.notify("no tuning session yet: create one first", severity="warning")
            mode = "start"
        if self.current_mode == mode:
            # Leave a pushed screen (a run's detail, a dialog) for the mode's own screen.
            while len(self.screen_stack) > 1:
                self.pop_screen()
            return
        self.switch_mode(mode)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(HelpScreen(self.help_sections()))

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every key of every screen, from their bindings (so the help never drifts from them)."""
        groups: list[tuple[str, type]] = [
            ("Everywhere", TuneApp),
            ("Checklist", ChecklistScreen),
            ("Runs", RunsScreen),
            ("One run (enter on Runs)", RunDetailScreen),
            ("Profiles", ProfilesScreen),
            ("Sessions (start)", StartScreen),
        ]
        out = []
        for title, cls in groups:
            by_desc: dict[str, list[str]] = {}
            for b in cls.BINDINGS:  # type: ignore[attr-defined]
                if isinstance(b, Binding):
                    by_desc.setdefault(b.description, []).append(self._key_names(b.key))
            keys = [(" / ".join(k), desc) for desc, k in by_desc.items()]
            if cls is ChecklistScreen:
                keys = [k for k in keys if not k[1].startswith("view step")] + [("1 … 5", "view step 1 … 5")]
                keys.append(("tab", "sidebar ↔ candidates table (arrows move)"))
            if cls is RunsScreen:
                keys.append(("↑ ↓ / enter", "select / open a run"))
            if cls is TuneApp:
                keys.append(("ctrl+p", "command palette (every action by name)"))
            out.append((title, keys))
        out.append(("Dialogs", [("enter", "ok / choose"), ("escape", "cancel"), ("y / n", "yes / no")]))
        return out

    def _key_names(self, keys: str) -> str:
        names = []
        for k in keys.split(","):
            k = k.strip()
            names.append(
                {
                    "question_mark": "?",
                    "left_square_bracket": "[",
                    "right_square_bracket": "]",
                    "escape": "escape",
                    "enter": "enter",
                }.get(k, k)
            )
        return " / ".join(names)

    def action_save_profile(self) -> None:
        """Save the session's result as a profile (named in a dialog) and show it on the profiles screen."""
        s = self.session
        if s is None:
            self.notify("no tuning session to save", severity="error")
            return
        cl = s.checklist
        pending = cl.current_step
        default = safe_filename(f"{cl.data.replace('folder:', '')}-{cl.model}-{cl.budget}")
        note = (
            ""
            if pending is None
            else f" The checklist is not finished ({STEP_TITLES[pending]} is next): the profile holds the "
            "values chosen so far."
        )

        def save(name: str) -> Path:
            name = name.strip()
            if not name:
                raise UserError("type a profile name, e.g. cifar10-resnet56")
            return s.save_profile(safe_filename(name))

        def saved(path: Path | None) -> None:
            if path is None:
                return
            self.notify(f"profile saved: {path}")
            self.action_goto("profiles")
            screen = self.screen
            if isinstance(screen, ProfilesScreen):
                screen.show_saved(path)

        self.push_screen(
            InputDialog(
                "Save profile", f"Save this session's result as a profile named:{note}", default, check=save
            ),
            saved,
        )

    # -- command palette ---------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)

        def on(mode: str, action: str | None = None) -> Any:
            def run() -> None:
                self.action_goto(mode)
                if action is not None:
                    self.call_after_refresh(lambda: self._screen_action(action))

            return run

        for title, help_, mode in _GOTO_COMMANDS:
            yield SystemCommand(title, help_, on(mode))
        yield SystemCommand("Help: keys", "Every key of every screen (?)", self.action_help)
        if self.session is not None:
            for title, help_, mode, action in _SESSION_COMMANDS:
                yield SystemCommand(title, help_, on(mode, action))
            yield SystemCommand(
                "Save profile",
                "Save the session's result as a profile (s on Profiles)",
                self.action_save_profile,
            )
        for title, help_, mode, action in _SCREEN_COMMANDS:
            yield SystemCommand(title, help_, on(mode, action))
        yield SystemCommand("New session", "Create a tuning session (S)", on("start"))

    def _screen_action(self, action: str) -> None:
        fn = getattr(self.screen, f"action_{action}", None)
        if fn is not None:
            fn()


# The command palette: (title, help, screen) to go to a screen, (title, help, screen, action) to run
# one of its actions there; the session's commands are offered while a session is open.
_GOTO_COMMANDS = (
    ("Checklist", "Go to the checklist of this session (k)", "checklist"),
    ("Runs", "All runs, live (R)", "runs"),
    ("Profiles", "Saved and shipped profiles (p)", "profiles"),
    ("Sessions", "Create a session or resume one (S)", "start"),
)
_SESSION_COMMANDS = (
    ("Run step", "Launch the viewed step's runs, or re-run them (r)", "checklist", "run"),
    ("Accept recommendation", "Take the advisor's value for the step (a)", "checklist", "accept"),
    ("Override value", "Type your own value for the step (o)", "checklist", "override"),
    ("Edit candidate value", "Change a value the step tries (e)", "checklist", "edit"),
    ("Add candidate value", "Try one more value in the step (n)", "checklist", "add"),
    ("Remove candidate value", "Drop a value from the step (x)", "checklist", "remove"),
    ("Plot metric", "Cycle val loss / val acc / train loss (m)", "checklist", "metric"),
)
_SCREEN_COMMANDS = (
    ("Export profile", "Export the selected profile (e on Profiles)", "profiles", "export"),
    ("Train from profile", "Start a run from the selected profile (t on Profiles)", "profiles", "train"),
    ("Cancel run", "Cancel the selected run (c on Runs)", "runs", "cancel"),
    ("Resume run", "Resume the selected lost or cancelled run (u on Runs)", "runs", "resume"),
)


_GPU: bool | None = None


def _has_gpu() -> bool:
    global _GPU
    if _GPU is None:
        from tuneassist.runs.launch import detect_gpus

        _GPU = bool(detect_gpus())
    return _GPU
