"""Modal dialogs: type a value, pick one of a few, confirm, and the key help."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tuneassist.errors import UserError

DIALOG_CSS = """
ModalScreen { align: center middle; }
.dialog { width: 72; max-width: 100%; height: auto; max-height: 100%; border: round $accent;
          background: $surface; padding: 0 1; }
.dialog .hint { color: $text-muted; }
.dialog .error { color: $error; }
.dialog Input { margin: 0; }
"""


class InputDialog(ModalScreen[Any]):
    """Ask for one value; `check` turns the text into the result or raises UserError (shown inline)."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(
        self,
        title: str,
        prompt: str,
        value: str = "",
        placeholder: str = "",
        check: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__()
        self.title_text, self.prompt, self.value, self.placeholder = title, prompt, value, placeholder
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self.title_text
            yield Static(self.prompt)
            yield Input(self.value, placeholder=self.placeholder, id="value")
            yield Static("enter: ok · escape: cancel", classes="hint")
            yield Static("", classes="error", id="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        try:
            result = self.check(text) if self.check else text
        except UserError as exc:
            self.query_one("#error", Static).update(f"✗ {exc}")
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceDialog(ModalScreen[str | None]):
    """Pick one option (id, label) with the arrow keys and enter."""

    DEFAULT_CSS = DIALOG_CSS + "ChoiceDialog OptionList { height: auto; max-height: 12; }"
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, prompt: str, options: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text, self.prompt, self.options = title, prompt, list(options)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self.title_text
            yield Static(self.prompt)
            yield OptionList(*[Option(label, id=oid) for oid, label in self.options], id="choices")
            yield Static("enter: choose · escape: cancel", classes="hint")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no: y/enter confirm, n/escape cancel."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [
        Binding("y,enter", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text, self.message = title, message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self.title_text
            yield Static(self.message)
            yield Static("y / enter: yes · n / escape: no", classes="hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    """Every key of every screen, grouped (built from the screens' bindings, so it never drifts)."""

    DEFAULT_CSS = DIALOG_CSS + "HelpScreen .dialog { width: 80; height: 100%; }"
    BINDINGS = [Binding("escape,question_mark,q", "close", "close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        text = Text()
        for title, keys in self.sections:
            text.append(f"{title}\n", style="bold")
            for key, desc in keys:
                text.append(f"  {key:<14}", style="bold cyan")
                text.append(f"{desc}\n")
            text.append("\n")
        text.append(
            "Runs are separate processes: quitting (or losing the SSH connection) leaves them running; "
            "`tuneassist` reopens the last session and shows them live.\n"
            "ctrl+p opens the command palette: every action by name.",
            style="italic",
        )
        with VerticalScroll(classes="dialog") as v:
            v.border_title = "Keys (escape closes)"
            yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)
