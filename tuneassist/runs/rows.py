"""Typed rows: what the store hands its readers, decoded in one place.

A run's row holds JSON columns (spec, outcome, info) that every reader used to unpack on its own with
`(run.get(...) or {})`; `Run` decodes them once, parses the spec into a `RunSpec` once, and answers the
questions the CLI and the screens ask (progress, elapsed time, ETA). Torch-free and SQLite-free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneassist.errors import UserError
from tuneassist.spec import RunSpec


def loads(text: str | None) -> Any:
    """A JSON column's value (None stays None)."""
    return None if text is None else json.loads(text)


def _parse_spec(data: Any) -> RunSpec | None:
    """The stored spec as a RunSpec, or None for one this version cannot read (an older or newer
    tuneassist's keys, a tracked script's own settings): readers then fall back on `spec_data`."""
    if not isinstance(data, dict):
        return None
    try:
        return RunSpec.from_dict(data)
    except (UserError, TypeError):
        return None


_DERIVED = frozenset({"spec", "spec_data", "outcome", "info"})  # built, not copied, by from_columns


@dataclass(frozen=True)
class Run:
    """One run as stored: its columns decoded (spec parsed once), plus what readers derive from them.

    `spec_data` is the spec exactly as stored (what `runs --json` prints and what an older run may
    lack keys in); `spec` is it parsed, or None when this version cannot. `outcome` and `info` are
    empty dicts when the run has none yet. No mapping interface: readers use the attributes, so a
    column's name is checked where it is read.
    """

    id: int
    kind: str
    status: str
    spec_data: dict[str, Any]
    spec: RunSpec | None
    session_id: int | None = None
    device: str | None = None
    host: str | None = None
    pid: int | None = None
    heartbeat: float | None = None
    attempt: int = 0
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    outcome: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    resume: bool = False
    checkpoint_step: int | None = None
    checkpoint_epoch: float | None = None
    wall_base: float = 0.0
    last_step: int | None = None
    last_epoch: float | None = None
    last_train_loss: float | None = None
    best_val_loss: float | None = None
    best_val_acc: float | None = None
    images_per_s: float | None = None

    @classmethod
    def from_columns(cls, d: Mapping[str, Any]) -> Run:
        """The one place a row becomes a Run: `d` holds the columns with the JSON ones decoded."""
        plain = {f.name for f in dataclasses.fields(cls)} - _DERIVED
        known = {k: d[k] for k in plain if k in d}
        spec = d.get("spec")
        return cls(
            **known,
            spec_data=spec if isinstance(spec, dict) else {},
            spec=_parse_spec(spec),
            outcome=d.get("outcome") or {},
            info=d.get("info") or {},
        )

    # -- what readers derive
    @property
    def model(self) -> Any:
        return self.spec_data.get("model")

    @property
    def data(self) -> Any:
        return self.spec_data.get("data")

    @property
    def schedule(self) -> str:
        """The stored schedule ('' when the spec has none)."""
        return str(self.spec_data.get("schedule", ""))

    @property
    def total_steps(self) -> int | None:
        total = self.info.get("total_steps")
        return int(total) if total else None

    @property
    def total_epochs(self) -> float | None:
        """Epochs the run trains in all: the worker's count once started, else the spec's."""
        if self.info.get("epochs"):
            return float(self.info["epochs"])
        return None if self.spec_data.get("steps") else float(self.spec_data.get("epochs") or 0)

    @property
    def epoch(self) -> float | None:
        """The epoch reached: the outcome's once ended, else the last stored row's."""
        return self.outcome.get("epoch", self.last_epoch)

    @property
    def steps_done(self) -> int:
        if self.outcome.get("step") is not None:
            return int(self.outcome["step"])
        return 0 if self.last_step is None else int(self.last_step) + 1

    @property
    def progress(self) -> tuple[int, int | None]:
        """(steps done, total steps or None)."""
        return self.steps_done, self.total_steps

    def elapsed(self, now: float | None = None) -> float | None:
        """Training time over all attempts (downtime between a loss and a resume excluded)."""
        if not self.started:
            return None
        end = self.ended or (now or time.time())
        if self.status == "queued":
            end = self.started
        return float(self.wall_base or 0.0) + max(0.0, end - self.started)

    def eta(self) -> float | None:
        """Seconds left for a running run, at its pace so far."""
        if self.status != "running":
            return None
        done, total = self.progress
        el = self.elapsed()
        if not total or not done or not el:
            return None
        return el / done * (total - done)


def session_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A session's row with its state decoded (an empty dict when it holds none)."""
    d = dict(row)
    d["state"] = loads(d["state"]) or {}
    return d


def fmt_time(seconds: float | None) -> str:
    """A run's elapsed time or ETA as h:mm:ss (m:ss under an hour): one format for the CLI and the TUI."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(max(0, seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
