"""`track`: a run of the user's own training loop recorded live in the workspace's run store.

No torch: the loop logs plain floats; the store (SQLite) is imported when a run starts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneassist.api.checks import check_positive, number_or_none
from tuneassist.runs.schema import EvalValues, TrainValues


@dataclass
class TrackedRun:
    """A run of your own loop in the workspace's run store; `log()` one step at a time.

    Made by `track()`; ends when its `with` block does: finished, failed (an exception: re-raised),
    cancelled (Ctrl-C, or `should_stop` honoured after `tuneassist runs cancel ID`), or diverged (a
    NaN/inf training loss was logged).
    """

    run_id: int
    workspace: Path
    steps_per_epoch: float | None
    batch_size: int | None
    _store: Any = field(repr=False)
    _writer: Any = field(repr=False)
    _last: dict[str, Any] = field(default_factory=dict, repr=False)
    _nonfinite_at: int | None = field(default=None, repr=False)
    _t0: float = field(default_factory=time.monotonic, repr=False)
    _tick: tuple[int, float] | None = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    rows: int = 0

    @property
    def should_stop(self) -> bool:
        """True once `tuneassist runs cancel ID` (or the TUI) asked this run to stop: break your loop."""
        return self._cancel.is_set()

    def log(
        self,
        step: int,
        *,
        lr: float | None = None,
        momentum: float | None = None,
        train_loss: float | None = None,
        val_loss: float | None = None,
        val_acc: float | None = None,
        epoch: float | None = None,
        images_per_s: float | None = None,
    ) -> None:
        """Record step `step` (0, 1, 2 ...: optimiser steps): any of its values, a training step's, an
        evaluation's or both. Costs about a microsecond: rows are committed by a background thread."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise TypeError(f"step={step!r}: give the optimiser step as a whole number from 0")
        tl = number_or_none("train_loss", train_loss)
        if train_loss is not None and tl is None and self._nonfinite_at is None:
            self._nonfinite_at = step  # NaN/inf: stored as NULL, and the run ends diverged
        if epoch is None and self.steps_per_epoch:
            epoch = step / self.steps_per_epoch
        ep = number_or_none("epoch", epoch)
        now = time.monotonic()
        ips = number_or_none("images_per_s", images_per_s)
        if ips is None and self.batch_size and self._tick is not None and step > self._tick[0]:
            ips = (step - self._tick[0]) * self.batch_size / max(now - self._tick[1], 1e-9)
        wall = now - self._t0
        lr_, mom = number_or_none("lr", lr), number_or_none("momentum", momentum)
        if any(v is not None for v in (lr_, mom, tl)) or (train_loss is not None):
            self._writer.add_train(step, TrainValues(ep, lr_, mom, tl, ips, wall))
            self._tick = (step, now)
        vl, va = number_or_none("val_loss", val_loss), number_or_none("val_acc", val_acc)
        if vl is not None or va is not None:
            self._writer.add_eval(step, EvalValues(val_loss=vl, val_acc=va, epoch=ep, wall=wall))
            if vl is not None:
                self._last["val_loss"] = vl
            if va is not None:
                self._last["val_acc"] = va
        self._last["step"] = max(step, self._last.get("step", -1))
        if ep is not None:
            self._last["epoch"] = ep
        self.rows += 1


class _TrackHeartbeat(threading.Thread):
    """Keeps a tracked run alive in the store (its liveness is its heartbeat) and hears cancel requests."""

    def __init__(self, store: Any, run: TrackedRun) -> None:
        super().__init__(name=f"track-heartbeat-{run.run_id}", daemon=True)
        from tuneassist.runs.store import heartbeat_interval

        self.store, self.run_ = store, run
        self.interval = heartbeat_interval()
        self.done = threading.Event()

    def run(self) -> None:
        owner = {"status": "running", "attempt": 1}
        while not self.done.wait(self.interval):
            with contextlib.suppress(Exception):  # a busy store must not stop the user's training
                self.store.update_run(self.run_.run_id, _only_if=owner, heartbeat=time.time())
                if self.store.get_run(self.run_.run_id, refresh=False).cancel_requested:
                    self.run_._cancel.set()

    def finish(self) -> None:
        self.done.set()
        self.join()


@contextlib.contextmanager
def track(
    name: str | None = None,
    *,
    hparams: Mapping[str, Any] | None = None,
    model: str | None = None,
    data: str | None = None,
    total_steps: int | None = None,
    steps_per_epoch: float | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> Any:
    """Record a run of your own training loop in the workspace's run store, live.

    ``with tuneassist.track(...) as run:`` then ``run.log(step, lr=..., train_loss=..., val_loss=...)``
    in the loop; the run shows in `tuneassist runs`, `tuneassist runs watch ID` and the TUI's runs
    screen while it trains, with the advisor's diagnosis of its curves. `hparams` (lr_max, lr_min,
    momentum_max, weight_decay, batch_size, epochs, schedule, optimizer ...) are shown beside it and
    turn the diagnosis's remedy into values; `steps_per_epoch` (len(train_loader)) puts the curves on
    an epoch axis, `total_steps` gives the progress and ETA. The workspace is `--workspace`'s
    ($TUNEASSIST_HOME, default the user data dir). No torch needed: log plain floats.
    """
    from tuneassist.runs.store import MetricWriter, Store

    hp = _checked_hparams(hparams, total_steps, steps_per_epoch)
    spec = _run_spec(name, hp, model, data, total_steps)
    bs = hp.get("batch_size")
    store = Store(workspace)
    try:
        run_id = store.add_tracked_run(spec, _run_info(total_steps, steps_per_epoch))
        writer = MetricWriter(store, run_id, attempt=1)
        run = TrackedRun(
            run_id=run_id,
            workspace=store.workspace,
            steps_per_epoch=steps_per_epoch,
            batch_size=bs if isinstance(bs, int) and not isinstance(bs, bool) and bs > 0 else None,
            _store=store,
            _writer=writer,
        )
        heartbeat = _TrackHeartbeat(store, run)
        heartbeat.start()
    except BaseException:
        store.close()
        raise
    status, error = "finished", None
    try:
        yield run
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e} (raised in your script)"
        raise
    finally:
        heartbeat.finish()
        try:
            writer.close()
        finally:
            _record_end(store, run, writer, status, error)


def _checked_hparams(
    hparams: Mapping[str, Any] | None, total_steps: int | None, steps_per_epoch: float | None
) -> dict[str, Any]:
    """`hparams` as a dict of plain values; TypeError/ValueError naming the first bad argument."""
    hp = dict(hparams or {})
    for k, v in hp.items():
        if not isinstance(k, str):
            raise TypeError(f"hparams key {k!r} is not a string")
        if not (v is None or isinstance(v, str | bool | int | float)):
            raise TypeError(f"hparams[{k!r}] is a {type(v).__name__}; give numbers, strings or booleans")
    if total_steps is not None:
        check_positive("total_steps", total_steps, integer=True)
    if steps_per_epoch is not None:
        check_positive("steps_per_epoch", steps_per_epoch)
    return hp


def _run_spec(
    name: str | None, hp: Mapping[str, Any], model: str | None, data: str | None, total_steps: int | None
) -> dict[str, Any]:
    """The stored run's spec: the hparams as given, a user schedule, and what the run is of."""
    spec: dict[str, Any] = {
        "schedule": "user",
        **hp,
        "model": model or hp.get("model") or "your model",
        "data": data or hp.get("data") or "your data",
        "tracked": True,
    }
    if name is not None:
        spec["name"] = str(name)
    if total_steps is not None:
        spec.setdefault("steps", total_steps)
    return spec


def _run_info(total_steps: int | None, steps_per_epoch: float | None) -> dict[str, Any]:
    """The stored run's info: which process runs it (for liveness) and its planned length."""
    return {
        "tracked": True,
        "pid": os.getpid(),
        "script": " ".join(sys.argv)[:300],
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "epochs": total_steps / steps_per_epoch if total_steps and steps_per_epoch else None,
    }


def _record_end(store: Any, run: TrackedRun, writer: Any, status: str, error: str | None) -> None:
    """The run's final status and outcome in the store (unless it was declared lost meanwhile); closes it."""
    if status == "finished" and run._nonfinite_at is not None:
        status = "diverged"
    elif status == "finished" and run.should_stop:
        status = "cancelled"
    last = run._last
    end_step = last.get("step", -1) + 1
    reasons = {
        "finished": "your training loop ended",
        "diverged": f"a NaN/inf training loss was logged at step {run._nonfinite_at}",
        "cancelled": "stopped on request",
        "failed": error,
    }
    outcome = {
        "outcome": status,
        "step": end_step,
        "epoch": last.get("epoch"),
        "val_loss": last.get("val_loss"),
        "val_acc": last.get("val_acc"),
        "wall_time": time.monotonic() - run._t0,
        "reason": reasons[status],
    }
    if writer.lost_ownership:  # declared lost meanwhile (the process was stopped): leave it so
        pass
    else:
        store.update_run(
            run.run_id,
            _only_if={"status": "running", "attempt": 1},
            status=status,
            ended=time.time(),
            outcome=outcome,
            error=error,
        )
    store.close()
