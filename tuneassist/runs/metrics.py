"""The worker's metric writer: training appends to a deque, a background thread commits in batches.

It also keeps the run's summary columns (last step, best val loss/acc, images/s) current, so listing
runs never scans the metric rows.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

from tuneassist.runs.schema import METRIC_FIELDS, TRAIN_FIELDS, EvalValues, TrainValues

if TYPE_CHECKING:
    from tuneassist.runs.store import Store


class MetricWriter:
    """Buffers a worker's metric rows and commits them in batches (every ~0.5 s or N rows).

    The training thread only appends a tuple to a deque (about a microsecond, no lock); a background
    thread merges and commits, so neither SQLite nor a busy database ever stalls training. A step's row
    is held back until a later step arrives, so an evaluation of that step still merges into it before
    any reader can see the row (readers polling `step > last_seen` never miss a value). While committing
    it also refreshes the run's summary columns (last step, best val loss/acc, images/s) used by `runs`.
    With attempt set, rows are written only while the run is still this attempt's (status running, same
    attempt); otherwise they are dropped and `lost_ownership` is set.
    """

    def __init__(
        self,
        store: Store,
        run_id: int,
        attempt: int | None = None,
        interval: float = 0.5,
        max_rows: int = 500,
        background: bool = True,
    ) -> None:
        self.store = store
        self.run_id = int(run_id)
        self.attempt = attempt
        self.interval = interval
        self.max_rows = max_rows
        self.lost_ownership = False
        self.rows_written = 0
        # append/popleft are atomic
        self._events: collections.deque[tuple[int, TrainValues | EvalValues]] = collections.deque()
        self._pending: dict[int, dict[str, Any]] = {}  # merged rows not yet committed (flush lock)
        self._late: list[dict[str, Any]] = []  # evaluations of steps already committed
        self._committed_max = -(2**62)
        self._max_seen = -(2**62)
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name=f"metrics-{run_id}", daemon=True)
            self._thread.start()

    # -- called from the training thread: no locks, no SQLite
    def add_train(self, step: int, values: TrainValues) -> None:
        """A training step's values."""
        self._raise_failed()
        self._events.append((step, values))
        if len(self._events) >= self.max_rows:
            self._wake.set()

    def add_eval(self, step: int, values: EvalValues) -> None:
        """An evaluation belonging to a step's row (epoch/wall only fill a row that has no train values)."""
        self._raise_failed()
        self._events.append((step, values))

    # -- merging (under the flush lock)
    def _drain(self) -> None:
        events, pending = self._events, self._pending
        while events:
            step, values = events.popleft()
            step = int(step)
            row = pending.get(step)
            if row is None and step <= self._committed_max:
                if isinstance(values, EvalValues):  # an evaluation of an older step: update the stored row
                    self._late.append({"step": step, "val_loss": values.val_loss, "val_acc": values.val_acc})
                continue
            if row is None:
                row = pending[step] = {"step": step}
            if isinstance(values, TrainValues):
                for k, v in zip(TRAIN_FIELDS, values, strict=True):
                    if v is not None:
                        row[k] = v
            else:
                for k, v in (("val_loss", values.val_loss), ("val_acc", values.val_acc)):
                    if v is not None:
                        row[k] = v
                for k, v in (("epoch", values.epoch), ("wall", values.wall)):
                    if v is not None and row.get(k) is None:
                        row[k] = v
            if step > self._max_seen:
                self._max_seen = step

    def reset_after(self, step: int) -> None:
        """Drop every row past `step` (stored and buffered): a resumed run redoes those steps."""
        self.flush(final=True)
        with self._flush_lock:
            self._committed_max = min(self._committed_max, step)
            self._max_seen = min(self._max_seen, step)

            def fn(c: sqlite3.Connection) -> None:
                c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (self.run_id, step))
                _refresh_summary(c, self.run_id)

            self.store.write(fn)

    # -- flushing
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except BaseException as e:  # surfaced to the training thread on its next add
                self._error = e
                return

    def flush(self, final: bool = False) -> int:
        """Commit buffered rows (all of them when final, else all but the newest step). Returns the count."""
        with self._flush_lock:
            self._drain()
            if final:
                keep: dict[int, dict[str, Any]] = {}
                rows = sorted(self._pending.values(), key=lambda r: r["step"])
            else:
                newest = self._max_seen
                keep = {newest: self._pending[newest]} if newest in self._pending else {}
                rows = sorted((r for st, r in self._pending.items() if st != newest), key=lambda r: r["step"])
            late, self._late = self._late, []
            if not rows and not late:
                return 0
            self._pending = keep
            if self.lost_ownership:
                return 0
            try:
                written = self.store.write(lambda c: self._commit(c, rows, late))
            except BaseException:
                # Keep them for the next flush: a full disk (a checkpoint's temp file filling it) is often
                # free again a moment later, and the final flush must still write every row.
                self._pending = {**{r["step"]: r for r in rows}, **keep}
                self._late = late + self._late
                raise
            if written is None:
                self.lost_ownership = True
                return 0
            if rows:
                self._committed_max = max(self._committed_max, rows[-1]["step"])
            self.rows_written += written
            return written

    def _commit(
        self, c: sqlite3.Connection, rows: list[dict[str, Any]], late: list[dict[str, Any]]
    ) -> int | None:
        if self.attempt is not None:
            owner = c.execute("SELECT status, attempt FROM runs WHERE id = ?", (self.run_id,)).fetchone()
            if owner is None or owner[0] != "running" or owner[1] != self.attempt:
                return None
        cols = ", ".join(METRIC_FIELDS)
        marks = ", ".join("?" for _ in METRIC_FIELDS)
        # Upsert: a value already stored is only replaced by a non-null one.
        updates = ", ".join(f"{k} = COALESCE(excluded.{k}, {k})" for k in METRIC_FIELDS[1:])
        c.executemany(
            f"INSERT INTO metrics (run_id, {cols}) VALUES (?, {marks}) "
            f"ON CONFLICT(run_id, step) DO UPDATE SET {updates}",
            [(self.run_id, *(r.get(k) for k in METRIC_FIELDS)) for r in rows],
        )
        for r in late:
            c.execute(
                "UPDATE metrics SET val_loss = COALESCE(?, val_loss), val_acc = COALESCE(?, val_acc) "
                "WHERE run_id = ? AND step = ?",
                (r.get("val_loss"), r.get("val_acc"), self.run_id, r["step"]),
            )
        _update_summary(c, self.run_id, rows + late)
        return len(rows)

    def close(self) -> None:
        """Stop the background thread and commit everything left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush(final=True)
        self._raise_failed()

    def _raise_failed(self) -> None:
        """Surface a failed background commit to the training thread (it must not train on unlogged)."""
        if self._error is not None:
            raise RuntimeError(f"metric writer failed: {self._error}") from self._error


def _update_summary(c: sqlite3.Connection, run_id: int, rows: list[dict[str, Any]]) -> None:
    """Fold a batch into the run's summary columns (cheap `runs` listings without scanning metrics)."""
    stepped = [r for r in rows if r.get("train_loss") is not None or r.get("epoch") is not None]
    if stepped:
        last = max(stepped, key=lambda r: r["step"])
        c.execute(
            "UPDATE runs SET last_step = ?, last_epoch = COALESCE(?, last_epoch) "
            "WHERE id = ? AND (last_step IS NULL OR last_step <= ?)",
            (last["step"], last.get("epoch"), run_id, last["step"]),
        )
    train = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
    ips = [r["images_per_s"] for r in rows if r.get("images_per_s") is not None]
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    if train or ips:
        c.execute(
            "UPDATE runs SET last_train_loss = COALESCE(?, last_train_loss), "
            "images_per_s = COALESCE(?, images_per_s) WHERE id = ?",
            (train[-1] if train else None, ips[-1] if ips else None, run_id),
        )
    if losses:
        c.execute(
            "UPDATE runs SET best_val_loss = MIN(COALESCE(best_val_loss, ?1), ?1) WHERE id = ?2",
            (min(losses), run_id),
        )
    if accs:
        c.execute(
            "UPDATE runs SET best_val_acc = MAX(COALESCE(best_val_acc, ?1), ?1) WHERE id = ?2",
            (max(accs), run_id),
        )


def _refresh_summary(c: sqlite3.Connection, run_id: int) -> None:
    """Recompute the summary columns from the stored rows (after rows were dropped)."""
    c.execute(
        "UPDATE runs SET "
        "last_step = (SELECT MAX(step) FROM metrics WHERE run_id = ?1), "
        "last_epoch = (SELECT epoch FROM metrics WHERE run_id = ?1 ORDER BY step DESC LIMIT 1), "
        "last_train_loss = (SELECT train_loss FROM metrics WHERE run_id = ?1 AND train_loss IS NOT NULL "
        "  ORDER BY step DESC LIMIT 1), "
        "best_val_loss = (SELECT MIN(val_loss) FROM metrics WHERE run_id = ?1), "
        "best_val_acc = (SELECT MAX(val_acc) FROM metrics WHERE run_id = ?1), "
        "images_per_s = (SELECT images_per_s FROM metrics WHERE run_id = ?1 AND images_per_s IS NOT NULL "
        "  ORDER BY step DESC LIMIT 1) "
        "WHERE id = ?1",
        (run_id,),
    )
