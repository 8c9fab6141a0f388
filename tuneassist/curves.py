"""A run's curves: one torch-free type that the advisor, the session, the TUI and the CLI all read.

Built from the engine's events (`Curves.from_events`) or from the store's metric rows (`from_rows`, or
`add_rows` while polling a live run). numpy only: the UI process never loads torch.

Where an evaluation sits, decided here once: the engine evaluates after n optimiser steps and says so
(step n, epoch n / steps_per_epoch). The worker stores that evaluation in the row of step index n - 1
(the last step it saw, still buffered when the evaluation arrives), so a stored evaluation row is one
step early. Every reader gets it back at n: the same place as the train row of index n, which measures
the same weights, and the same place whichever front end (or the advisor) reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Run statuses whose stored outcome is the end of the curves (a failed or lost run has none to read).
_READ_OUTCOME = ("finished", "diverged", "cancelled")


def _f(v: Any) -> float:
    return math.nan if v is None else float(v)


class StoredRun(Protocol):
    """What the curves read of the store's `Run` (tuneassist.runs.rows), by shape: the advisor reads
    curves too and must never import the store."""

    @property
    def id(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def info(self) -> dict[str, Any]: ...
    @property
    def outcome(self) -> dict[str, Any]: ...


def finite_points(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """The (x, y) pairs where both are numbers: what a plot can draw."""
    pts = [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=False)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


@dataclass
class Curves:
    """A run's train points and evaluations as columns, plus how the run ended (when it has)."""

    run_id: int | str | None = None
    attempt: int = 0  # the store's attempt these rows belong to (a resume redoes steps: read anew)
    last_step: int = -1  # the last stored row read: `metrics_since` goes on from here
    version: int = 0  # changes exactly when new points arrive (plots redraw only then)
    steps: list[int] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_epochs: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    outcome: str | None = None  # 'finished' | 'diverged' | 'cancelled' | None (still running)
    diverged_lr: float | None = None
    steps_per_epoch: int | None = None
    end: dict[str, Any] | None = None
    num_classes: int | None = None
    # The train loss of the row each evaluation was stored with (the step just before it).
    eval_train_loss: list[float] = field(default_factory=list)

    # -- building
    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]], run_id: str | None = None) -> Curves:
        """From the engine's event dicts (an evaluation's step and epoch are already where it sits)."""
        c = cls(run_id=run_id)
        for e in events:
            kind = e.get("type")
            if kind == "step":
                c._train(int(e["step"]), e)
            elif kind == "eval":
                c._eval(int(e["step"]), _f(e.get("epoch")), e, math.nan)
            elif kind == "start":
                c.steps_per_epoch = e.get("steps_per_epoch")
                c.num_classes = e.get("num_classes")
            elif kind == "end":
                c.outcome = e.get("outcome")
                c.diverged_lr = e.get("diverged_lr")
                c.end = dict(e)
        return c

    @classmethod
    def for_run(cls, run: StoredRun) -> Curves:
        """Empty curves for a stored run, to fill with `add_rows` as its rows arrive."""
        c = cls(run_id=run.id, attempt=run.attempt)
        c.note_run(run)
        return c

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], run: StoredRun) -> Curves:
        """A stored run's curves from all its metric rows, with its outcome once it has ended."""
        c = cls.for_run(run)
        c.add_rows(rows)
        out = run.outcome
        if run.status in _READ_OUTCOME and out:
            c.outcome = out.get("outcome", run.status)
            c.diverged_lr = out.get("diverged_lr")
            c.end = dict(out)
        return c

    def note_run(self, run: StoredRun) -> None:
        """Take what the worker learned at the start (steps per epoch, classes) once the row has it."""
        info = run.info
        if self.steps_per_epoch is None:
            self.steps_per_epoch = info.get("steps_per_epoch")
        if self.num_classes is None:
            self.num_classes = info.get("num_classes")

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append stored metric rows (by step, past `last_step`), moving each evaluation to where it sits."""
        added = False
        for r in rows:
            row = int(r["step"])
            has_train = r.get("train_loss") is not None or r.get("lr") is not None
            if has_train:
                self._train(row, r)
            if r.get("val_loss") is not None or r.get("val_acc") is not None:
                epoch = _f(r.get("epoch"))
                # A row with train values carries its step's start epoch; one without took the
                # evaluation's own epoch (already the epoch after the step).
                if has_train and self.steps_per_epoch:
                    epoch += 1.0 / float(self.steps_per_epoch)
                self._eval(row + 1, epoch, r, _f(r.get("train_loss")))
            self.last_step = max(self.last_step, row)
            added = True
        if added:
            self.version += 1

    def _train(self, step: int, r: Mapping[str, Any]) -> None:
        self.steps.append(step)
        self.lrs.append(_f(r.get("lr")))
        self.train_loss.append(_f(r.get("train_loss")))
        self.epochs.append(_f(r.get("epoch")))
        self.images_per_s.append(_f(r.get("images_per_s")))
        self.wall.append(_f(r.get("wall")))

    def _eval(self, step: int, epoch: float, r: Mapping[str, Any], train_loss: float) -> None:
        self.eval_steps.append(step)
        self.eval_epochs.append(epoch)
        self.val_loss.append(_f(r.get("val_loss")))
        self.val_acc.append(_f(r.get("val_acc")))
        self.eval_train_loss.append(train_loss)

    # -- reading
    def eval_lrs(self) -> list[float]:
        """The LR at each evaluation (range tests read validation loss against LR)."""
        if not self.steps or not self.eval_steps:
            return []
        return [float(v) for v in np.interp(self.eval_steps, self.steps, self.lrs)]

    def epochs_done(self) -> float:
        """Epochs trained by the last step read (a step's row carries the epoch at which it began)."""
        if not self.epochs:
            return 0.0
        last = self.epochs[-1]
        done = last if math.isfinite(last) else 0.0
        return done + (1.0 / float(self.steps_per_epoch) if self.steps_per_epoch else 0.0)
