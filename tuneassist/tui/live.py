"""What the UI knows about the runs: their rows and curves, kept current by polling the store.

Workers and the UI meet only in the store. Every poll reads the runs' summary rows (one cheap query)
and, only for the curves a screen shows, the metric rows past the last step already read
(`metrics_since`): a long run costs the same per poll as a short one. A curve's `version` changes
exactly when new points arrived, so plots redraw only then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tuneassist.curves import Curves
from tuneassist.runs.launch import advance_queue
from tuneassist.runs.store import ACTIVE, Run, Store

ENDED = ("finished", "diverged", "failed", "cancelled", "lost")


@dataclass
class PollResult:
    changed: set[int] = field(default_factory=set)  # runs whose row changed (or appeared)
    ended: list[Run] = field(default_factory=list)  # runs seen active, now ended
    started: list[int] = field(default_factory=list)  # queued runs this poll started


class Live:
    """The runs of the workspace as last polled, and the curves asked for so far."""

    def __init__(self, store: Store, manage_queue: bool = True) -> None:
        self.store = store
        self.manage_queue = manage_queue
        self.runs: dict[int, Run] = {}
        self.curves: dict[int, Curves] = {}
        self._sig: dict[int, tuple] = {}
        self.polled_at: float | None = None

    @staticmethod
    def _signature(r: Run) -> tuple:
        return (
            r.status,
            r.attempt,
            r.last_step,
            r.best_val_loss,
            r.best_val_acc,
            r.images_per_s,
            r.error,
            r.cancel_requested,
            r.checkpoint_step,
            r.ended,
            r.pid,
        )

    def poll(self) -> PollResult:
        """Read every run's row; start queued runs whose device is free (a lost run frees its slot)."""
        res = PollResult()
        rows = self.store.list_runs(refresh=True)
        if self.manage_queue and any(r.status == "queued" for r in rows):
            res.started = advance_queue(self.store)
            if res.started:
                rows = self.store.list_runs(refresh=False)
        seen = set()
        for r in rows:
            rid = r.id
            seen.add(rid)
            sig = self._signature(r)
            old = self.runs.get(rid)
            if self._sig.get(rid) != sig:
                res.changed.add(rid)
                self._sig[rid] = sig
                if old is not None and old.status in ACTIVE and r.status in ENDED:
                    res.ended.append(r)
            self.runs[rid] = r
        for rid in set(self.runs) - seen:
            self.runs.pop(rid, None)
            self._sig.pop(rid, None)
            self.curves.pop(rid, None)
            res.changed.add(rid)
        self.polled_at = time.time()
        return res

    def run(self, run_id: int) -> Run | None:
        r = self.runs.get(int(run_id))
        if r is None:
            try:
                r = self.store.get_run(int(run_id), refresh=False)
            except Exception:  # a run deleted under us: show nothing rather than fail
                return None
            self.runs[int(run_id)] = r
        return r

    def curve(self, run_id: int) -> Curves:
        """The run's curve, reading only rows past the last step read (or all, after a resume)."""
        run_id = int(run_id)
        c = self.curves.get(run_id)
        run = self.run(run_id)
        attempt = run.attempt if run else 0
        if c is None or c.attempt != attempt:
            # A resumed run redoes the steps after its checkpoint: read it again from the start.
            version = c.version + 1 if c is not None else 0
            c = self.curves[run_id] = Curves(run_id, attempt=attempt, version=version)
        if run:
            c.note_run(run)  # steps per epoch place the evaluations (tuneassist/curves.py)
        stored_last = run.last_step if run else None
        if stored_last is None or c.last_step < int(stored_last) or c.last_step < 0:
            rows = self.store.metrics_since(run_id, c.last_step)
            if rows and c.steps_per_epoch is None:  # the worker started after the last poll
                c.note_run(self.store.get_run(run_id, refresh=False))
            c.add_rows(rows)
        return c

    def session_runs(self, session_id: int | None) -> list[Run]:
        return [r for r in self.runs.values() if session_id is None or r.session_id == session_id]

    def counts(self, session_id: int | None = None) -> dict[str, int]:
        out = {"running": 0, "queued": 0}
        for r in self.session_runs(session_id):
            if r.status in out:
                out[r.status] += 1
        return out
