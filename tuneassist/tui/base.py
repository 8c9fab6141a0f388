"""What every main screen shares: the top bar, live refreshes, and errors shown instead of raised."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual.screen import Screen

from tuneassist.errors import UserError
from tuneassist.tui.widgets import TopBar

if TYPE_CHECKING:
    from tuneassist.tui.app import TuneApp
    from tuneassist.tui.live import PollResult

log = logging.getLogger("tuneassist.tui")
F = TypeVar("F", bound=Callable[..., Any])


def log_note(app: Any, what: str = "traceback") -> str:
    """' (traceback in …/tui.log)' for a toast about what the log holds, when the app logs to a file."""
    path = getattr(app, "log_file", None)
    return f" ({what} in {path})" if path else ""


def guarded(fn: F) -> F:
    """Run an action; a UserError becomes a red toast, anything else a toast naming it (never a crash)."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except UserError as exc:
            self.app.notify(str(exc), severity="error", timeout=8)
        except Exception as exc:  # noqa: BLE001 - the UI must survive whatever a run or the store does
            log.exception("action failed")
            self.app.notify(
                f"unexpected {type(exc).__name__}: {exc}{log_note(self.app)}", severity="error", timeout=10
            )
        return None

    return cast(F, wrapper)


class LiveScreen(Screen):
    """A main screen: it shows data from the store and refreshes when a poll brings news."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]

    @property
    def tapp(self) -> TuneApp:
        return cast("TuneApp", self.app)

    @property
    def narrow(self) -> bool:
        return self.size.width < 100

    ready = False  # set once the screen's widgets are set up (on_mount); refreshes wait for it

    def on_screen_resume(self) -> None:
        self.refresh_all()

    def mark_ready(self) -> None:
        self.ready = True
        self.refresh_all()

    def refresh_all(self) -> None:
        if not self.ready:
            return
        self.update_top()
        self._safe_refresh(None)

    def update_top(self) -> None:
        app = self.tapp
        sid = app.session.id if app.session else None
        counts = app.live.counts(sid)
        for bar in self.query(TopBar):
            bar.show(app.session_line(), counts["running"], counts["queued"])

    # Screens showing elapsed time / ETA of running runs refresh on a clock; others only on news.
    CLOCK_SECONDS: float | None = None

    def on_poll(self, res: PollResult) -> None:
        """Refresh only on news (or, on clock screens, once a second while runs go): idle costs nothing."""
        if not self.ready:
            return
        now = time.monotonic()
        news = bool(res.changed or res.ended or res.started)
        clock = (
            self.CLOCK_SECONDS is not None
            and now - getattr(self, "_last_tick", 0.0) >= self.CLOCK_SECONDS
            and any(r.status == "running" for r in self.tapp.live.runs.values())
        )
        if not (news or clock):
            return
        self._last_tick = now
        self.update_top()
        self._safe_refresh(res)

    def _safe_refresh(self, res: PollResult | None) -> None:
        if not self.ready:
            return
        try:
            self.refresh_live(res)
        except Exception as exc:  # noqa: BLE001 - a strange run row must not take the screen down
            log.exception("refresh failed")
            key = f"{type(exc).__name__}: {exc}"
            if key != getattr(self, "_last_refresh_error", None):
                self._last_refresh_error = key
                self.app.notify(
                    f"could not refresh the screen: {key}{log_note(self.app)}", severity="error", timeout=10
                )

    def refresh_live(self, res: PollResult | None) -> None:
        """Update the widgets; res is None for a full refresh, else what the last poll changed."""
