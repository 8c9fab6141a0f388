"""The profiles screen: shipped and saved profiles, their TOML, saving the session's result, exporting."""

from __future__ import annotations

from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tuneassist.errors import UserError
from tuneassist.fsafe import write_file
from tuneassist.profiles import (
    EXTENSIONS,
    FORMATS,
    Profile,
    ProfileEntry,
    export_profile,
    list_profiles,
    profile_to_runspec,
    shipped_profiles_dir,
)
from tuneassist.profiles.schema import safe_filename
from tuneassist.runs.launch import launch_run
from tuneassist.runs.store import check_export_target
from tuneassist.tui.base import LiveScreen, guarded
from tuneassist.tui.dialogs import ChoiceDialog, ConfirmDialog, InputDialog
from tuneassist.tui.keys import BACK_TO_CHECKLIST
from tuneassist.tui.live import PollResult
from tuneassist.tui.widgets import KeyFooter, TopBar

FORMAT_LABELS = {
    "pytorch": "PyTorch script (optimizer + OneCycleLR), .py",
    "lightning": "LightningModule mixin (configure_optimizers), .py",
    "json": "JSON, .json",
}


class ProfilesScreen(LiveScreen):
    """List on the left (saved first, then shipped); the selected profile's TOML on the right."""

    DEFAULT_CSS = """
    ProfilesScreen #body { height: 1fr; }
    ProfilesScreen #list { width: 40; height: 1fr; border: none; border-right: vkey $panel-lighten-2; }
    ProfilesScreen.-narrow #list { width: 28; }
    ProfilesScreen #view { width: 1fr; height: 1fr; border-top: solid $primary; }
    ProfilesScreen #toml { padding: 0 1; }
    ProfilesScreen #msg { height: auto; max-height: 5; padding: 0 1; border-top: solid $primary; }
    """
    BINDINGS = [
        Binding("s", "app.save_profile", "save session result"),
        Binding("e", "export", "export"),
        Binding("t", "train", "train from it"),
        BACK_TO_CHECKLIST,
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[ProfileEntry] = []
        self._listing: tuple | None = None
        self.message: Text | str = ""
        self.select_path: Path | None = None

    def compose(self) -> ComposeResult:
        yield TopBar()
        with Horizontal(id="body"):
            yield OptionList(id="list")
            with VerticalScroll(id="view"):
                yield Static(id="toml")
        yield Static(id="msg")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#list", OptionList).focus()
        self.mark_ready()

    @property
    def saved_dir(self) -> Path:
        return self.tapp.store.workspace / "profiles"

    def refresh_live(self, res: PollResult | None) -> None:
        if res is not None:
            return  # profiles do not change with runs; refreshed on entry and after saving
        self.reload()

    def reload(self) -> None:
        saved = list_profiles([self.saved_dir])
        shipped_dir = shipped_profiles_dir()
        shipped = list_profiles([shipped_dir]) if shipped_dir else []
        entries = [*saved, *shipped]
        listing = tuple((str(e.path), e.path.stat().st_mtime if e.path.exists() else 0) for e in entries)
        ol = self.query_one("#list", OptionList)
        if listing != self._listing:
            self._listing = listing
            self.entries = entries
            keep = self.select_path or self.selected_path()
            ol.clear_options()
            for i, e in enumerate(entries):
                origin = "saved" if i < len(saved) else "shipped"
                t = Text(no_wrap=True, overflow="ellipsis")
                t.append(f"{origin:<8}", style="green" if origin == "saved" else "bright_black")
                t.append(e.name)
                if e.error:
                    t.append(" ✗ broken", style="red")
                ol.add_option(Option(t, id=str(i)))
            target = 0
            for i, e in enumerate(entries):
                if keep is not None and e.path == keep:
                    target = i
            if entries:
                ol.highlighted = target
            self.select_path = None
        self._show_selected()

    def selected(self) -> ProfileEntry | None:
        ol = self.query_one("#list", OptionList)
        if ol.highlighted is None or not (0 <= ol.highlighted < len(self.entries)):
            return None
        return self.entries[ol.highlighted]

    def selected_path(self) -> Path | None:
        e = self.selected()
        return e.path if e else None

    def _show_selected(self) -> None:
        e = self.selected()
        view = self.query_one("#toml", Static)
        box = self.query_one("#view")
        if e is None:
            box.border_title = "no profiles"
            view.update(
                f"No profiles yet. Finish the checklist, then s saves its result here ({self.saved_dir})."
            )
        elif e.error:
            box.border_title = str(e.path)
            view.update(Text(f"✗ this file does not load: {e.error}", style="red"))
        else:
            box.border_title = str(e.path)
            try:
                text = e.path.read_text(encoding="utf-8")
            except OSError as exc:
                text = f"# cannot read {e.path}: {exc.strerror}"
            view.update(Syntax(text, "toml", theme="ansi_dark", word_wrap=True, background_color="default"))
        msg = self.query_one("#msg", Static)
        msg.update(
            self.message or "s saves this session's result · e exports the selected profile · t trains"
        )

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_selected()

    def show_saved(self, path: Path) -> None:
        self.select_path = path
        self._listing = None
        self.message = Text(f"✓ saved {path}", style="green")
        if self.ready:  # a screen still mounting shows it when it is ready
            self.reload()

    def _loaded_selection(self, to: str) -> Profile:
        """The selected profile; UserError when none is selected or its file does not load."""
        e = self.selected()
        if e is None or e.profile is None:
            raise UserError(f"select a profile that loads to {to}")
        return e.profile

    @guarded
    def action_export(self) -> None:
        profile = self._loaded_selection("export it")

        def chose(fmt: str | None) -> None:
            if not fmt:
                return
            default = (
                self.tapp.store.workspace / "exports" / f"{safe_filename(profile.name)}{EXTENSIONS[fmt]}"
            )

            def write(text: str) -> Path:
                path = Path(text.strip() or default).expanduser()
                content = export_profile(profile, fmt)
                check_export_target(self.tapp.store.workspace, path)  # never over the store or a run
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_file(path, lambda f: f.write(content))
                except OSError as exc:
                    raise UserError(f"cannot write {path} ({exc.strerror}); choose another file") from None
                return path

            def written(path: Path | None) -> None:
                if path is not None:
                    self.message = Text(
                        f"✓ exported {profile.name} as {fmt}: {path.resolve()}", style="green"
                    )
                    self.app.notify(f"exported to {path.resolve()}")
                    self._show_selected()

            self.app.push_screen(
                InputDialog(
                    f"Export · {profile.name}", f"Write the {fmt} export to:", str(default), check=write
                ),
                written,
            )

        self.app.push_screen(
            ChoiceDialog(
                f"Export · {profile.name}", "Format:", [(f, FORMAT_LABELS.get(f, f)) for f in FORMATS]
            ),
            chose,
        )

    @guarded
    def action_train(self) -> None:
        profile = self._loaded_selection("train from it")
        spec = profile_to_runspec(profile)

        def go(yes: bool | None) -> None:
            if not yes:
                return
            try:
                sid = self.tapp.session.id if self.tapp.session else None
                rid = launch_run(self.tapp.store, spec, kind=f"profile:{profile.name}", session_id=sid)
            except UserError as exc:
                self.app.notify(str(exc), severity="error")
                return
            self.app.notify(f"run {rid} started from profile {profile.name}; R shows it")
            self.tapp.poll_now()

        self.app.push_screen(
            ConfirmDialog(
                "Train from profile",
                f"Start a {spec.epochs:g}-epoch 1cycle run of {spec.model} on {spec.data} "
                f"(LR {spec.lr_min:g} → {spec.lr_max:g}, TBS {spec.batch_size}) in the background?",
            ),
            go,
        )
