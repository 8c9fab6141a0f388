"""Keys that mean the same on more than one screen, bound once: a key and its label never drift apart
between the runs list, a run's page and the checklist (the help screen lists them by label)."""

from __future__ import annotations

from textual.binding import Binding

BACK_TO_CHECKLIST = Binding("escape", "app.goto('checklist')", "back", show=False)
CANCEL_RUN = Binding("c", "cancel", "cancel run")
RESUME_RUN = Binding("u", "resume", "resume run")
PLOT_METRIC = Binding("m", "metric", "plot metric")
