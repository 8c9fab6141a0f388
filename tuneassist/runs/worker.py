"""The detached process that owns one run: `python -m tuneassist.runs.worker --workspace W --run ID`.

It claims the run, trains through the engine, streams metric rows into the store, heartbeats from a
background thread (so readers can tell a killed worker from a slow one), stops gracefully when the run
is cancelled, records the outcome, and finally starts the next queued run whose device is free: that
is how the queue advances with no daemon. Torch is imported only after the claim (the engine import).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from tuneassist.errors import UserError
from tuneassist.fsafe import open_new
from tuneassist.runs.launch import advance_queue, detect_gpus, placement, slots_for
from tuneassist.runs.schema import EvalValues, TrainValues
from tuneassist.runs.store import MetricWriter, Run, Store, heartbeat_interval
from tuneassist.spec import RunSpec

log = logging.getLogger("tuneassist.worker")


class Heartbeat(threading.Thread):
    """Writes the run's heartbeat every interval and turns a cancel request into the stop flag.

    If the run stops being ours (declared lost and resumed by someone else) it also sets the flag, so
    two workers never train the same run.
    """

    def __init__(self, store: Store, run_id: int, attempt: int, stop: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.store, self.run_id, self.attempt, self.stop_flag = store, run_id, attempt, stop
        self.interval = heartbeat_interval()
        self.cancelled = False
        self._done = threading.Event()

    def run(self) -> None:
        last_beat = time.monotonic()
        poll = min(0.5, self.interval)
        while not self._done.wait(poll):
            try:
                if time.monotonic() - last_beat >= self.interval:
                    last_beat = time.monotonic()
                    owner = {"status": "running", "attempt": self.attempt}
                    if not self.store.update_run(self.run_id, _only_if=owner, heartbeat=time.time()):
                        self._abandon()
                run = self.store.get_run(self.run_id, refresh=False)
                if run.status != "running" or run.attempt != self.attempt:
                    self._abandon()
                if run.cancel_requested and not self.cancelled:
                    log.info("cancel requested; stopping at the next check")
                    self.cancelled = True
                    self.stop_flag.set()
            except Exception:  # a transient store problem must not kill the heartbeat for good
                log.exception("heartbeat failed; retrying")

    def _abandon(self) -> None:
        """The run was declared lost (this process was frozen or cut off) and may run elsewhere now:
        exit at once, writing nothing (no checkpoint, no rows, no status) that could clobber it."""
        log.warning(
            "run %d is no longer ours (declared lost, cancelled or resumed elsewhere); exiting", self.run_id
        )
        logging.shutdown()
        os._exit(3)

    def finish(self) -> None:
        self._done.set()
        self.join()


def _claim(store: Store, run_id: int) -> Run | None:
    """Make the run ours: running, this pid, a fresh heartbeat. None if it is not ours to run."""
    run = store.get_run(run_id, refresh=False)
    if run.status == "queued":
        # Started by hand (or a launcher died between insert and claim): take a slot like a launcher would.
        if not store.claim_queued(slots_for, placement(store), only=run_id):
            log.info("run %d stays queued: its device has no free slot", run_id)
            return None
        run = store.get_run(run_id, refresh=False)
    if run.status != "running" or run.pid not in (None, os.getpid()):
        log.info("run %d is %s (pid %s); not starting it", run_id, run.status, run.pid)
        return None
    if not store.update_run(
        run_id,
        _only_if={"status": "running", "attempt": run.attempt, "pid": run.pid},
        pid=os.getpid(),
        heartbeat=time.time(),
    ):
        log.info("run %d changed while claiming it; not starting it", run_id)
        return None
    return store.get_run(run_id, refresh=False)


def _select_device(spec: RunSpec, slots: list[str], warm: bool = False) -> None:
    """Pin the run to its claimed GPU(s) (only GPUs the launcher saw).

    A fresh worker sets CUDA_VISIBLE_DEVICES before torch is imported. A standby (`warm`) has torch
    loaded already and sees every GPU of the launcher, in detect_gpus() order: it names its GPU by index
    instead; a multi-GPU run's ranks are new processes, so they still get the variable.
    """
    gpus = detect_gpus()
    ids = [s[5:] for s in slots if s.startswith("cuda:")]
    if not ids or len(ids) != len(slots) or not set(ids) <= set(gpus):
        return
    if warm and len(ids) == 1 and spec.devices == 1:
        spec.device = f"cuda:{gpus.index(ids[0])}"
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    spec.device = "cuda"


class _Recorder:
    """Turns engine events into metric rows and run updates."""

    def __init__(
        self, store: Store, run: Run, writer: MetricWriter, resume: bool, stopping: threading.Event
    ) -> None:
        self.store, self.run_id, self.attempt = store, run.id, run.attempt
        self.stopping = stopping
        self.deferred_checkpoint: dict[str, Any] = {}
        self.writer = writer
        self.resume = resume
        self.t0 = time.monotonic()
        self.wall_base = 0.0

    def wall(self) -> float:
        return self.wall_base + time.monotonic() - self.t0

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev["type"]
        if kind == "step":  # the hot path: one tuple appended, nothing else
            self.writer.add_train(
                ev["step"],
                TrainValues(
                    ev.get("epoch"),
                    ev.get("lr"),
                    ev.get("momentum"),
                    ev.get("train_loss"),
                    ev.get("images_per_s"),
                    self.wall(),
                ),
            )
        elif kind == "eval":
            # The engine evaluates after `step` optimiser steps: that is the row of step index step - 1,
            # which is still buffered, so the evaluation lands in it before any reader sees the row.
            row = max(int(ev["step"]) - 1, 0)
            self.writer.add_eval(
                row, EvalValues(val_loss=ev.get("val_loss"), val_acc=ev.get("val_acc"), epoch=ev.get("epoch"))
            )
            log.info("eval after step %s (epoch %.2f): val loss %s, val acc %s",
                     ev["step"], ev.get("epoch") or 0.0, ev.get("val_loss"), ev.get("val_acc"))  # fmt: skip
        elif kind == "checkpoint":
            ckpt = {"checkpoint_step": ev.get("step"), "checkpoint_epoch": ev.get("epoch")}
            if self.stopping.is_set():
                # A cancel checkpoint is followed by a last evaluation of its step: keep that row buffered
                # so the evaluation merges in, and record the checkpoint with the final status.
                self.deferred_checkpoint = ckpt
            else:
                self.writer.flush(final=True)  # rows up to the checkpoint are stored before it counts
                self.store.update_run(
                    self.run_id, _only_if={"status": "running", "attempt": self.attempt}, **ckpt
                )
            log.info("checkpoint at step %s (epoch %.2f)", ev.get("step"), ev.get("epoch") or 0.0)
        elif kind == "start":
            self._start(ev)

    def _start(self, ev: dict[str, Any]) -> None:
        start_step = int(ev.get("start_step") or 0)
        # Checkpoint at step count s: step events continue with index s. Rows from s on came from the
        # attempt that was lost or cancelled after the checkpoint: drop them so the curve continues cleanly.
        keep_upto = start_step - 1 if self.resume else -1
        self.writer.reset_after(keep_upto)
        last = self.store.last_metric(self.run_id) if keep_upto >= 0 else None
        self.wall_base = float(last["wall"] or 0.0) if last else 0.0
        self.t0 = time.monotonic()
        self.store.update_run(
            self.run_id,
            _only_if={"status": "running", "attempt": self.attempt},
            info=ev,
            wall_base=self.wall_base,
        )
        log.info("start: %s", {k: v for k, v in ev.items() if k != "type"})


def run_worker(store: Store, run_id: int, warm: bool = False) -> int:
    """Claim and train one run (`warm`: in a standby, torch already loaded); returns the exit code."""
    run = _claim(store, run_id)
    if run is None:
        return 0
    attempt = run.attempt
    log.info("run %d attempt %d on %s, pid %d", run_id, attempt, run.device, os.getpid())
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: cancelling the run gracefully", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    heartbeat = Heartbeat(store, run_id, attempt, stop)
    heartbeat.start()
    writer = MetricWriter(store, run_id, attempt=attempt)
    owner = {"status": "running", "attempt": attempt}
    result: dict[str, Any]
    try:
        # A fresh spec (the device is picked into it), and from_dict's one-line error for keys this
        # version does not know.
        spec = RunSpec.from_dict(run.spec_data)
        _select_device(spec, (run.device or "").split(","), warm)
        checkpoint = store.run_dir(run_id) / "checkpoint.pt"
        resume = run.resume and checkpoint.exists()
        recorder = _Recorder(store, run, writer, resume, stop)
        if spec.devices > 1:  # torchrun + DDP; rank 0's events come back to `recorder` in this process
            from tuneassist.engine.ddp_launch import run_distributed as train
        else:
            from tuneassist.engine.train import train  # torch loads here, after the claim

        end = train(
            spec, on_event=recorder, should_stop=stop.is_set, checkpoint_path=checkpoint, resume=resume
        )
        writer.close()
        outcome = end.get("outcome", "finished")
        status = outcome if outcome in ("finished", "diverged", "cancelled") else "finished"
        result = {"status": status, "outcome": end, "error": None, **recorder.deferred_checkpoint}
        log.info("end: %s: %s", outcome, end.get("reason"))
    except UserError as e:
        result = {"status": "failed", "error": str(e)}
        log.error("failed: %s", e)
    except BaseException as e:  # noqa: BLE001 - any failure is recorded; the traceback goes to the log only
        result = {
            "status": "failed",
            "error": f"{type(e).__name__}: {e} (traceback in {store.log_path(run_id)})",
        }
        log.error("failed:\n%s", traceback.format_exc())
    finally:
        heartbeat.finish()
    if result["status"] == "failed":
        try:
            writer.close()  # keep the rows it got before failing
        except Exception:
            log.exception("could not store the last metric rows")
    if writer.lost_ownership:
        log.warning("run %d was taken over; leaving its status alone", run_id)
        return 1
    store.update_run(run_id, _only_if=owner, ended=time.time(), **result)
    return 0 if result["status"] != "failed" else 1


# A standby leaves once no run has been queued or running for this long: enough for `tune`, or a quick
# user, to read a step's result and launch the next one.
STANDBY_GRACE_S = 30.0
STANDBY_MAX_WAIT_S = 600.0  # and after this long anyway (runs queued for a GPU that never frees up)


def _log_to(path: os.PathLike[str] | str) -> None:
    """Send logging, and anything written to stdout/stderr (C libraries too), to `path`."""
    fd = open_new(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # never through a planted symlink
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _warm_up() -> None:
    """Load what a run loads before its first step: torch, the engine, and torch._dynamo, which
    torch.optim imports on first use (3 s of the 3.4 s from claim to first step on 2 CPU cores).
    One step of a tiny run on the CPU does it all and leaves CUDA untouched (the GPU is chosen later)."""
    from tuneassist.engine.train import train

    train(RunSpec(data="synthetic:64", model="simple3", batch_size=32, steps=1, device="cpu"))


def _beat_while_loading(store: Store, pid: int, loaded: threading.Event) -> None:
    """A run handed over while the standby still loads must not look lost: heartbeat it until then."""
    while not loaded.wait(0.5):
        try:
            run_id = store.handed_run(pid)
            if run_id is not None:
                store.update_run(run_id, _only_if={"status": "running", "pid": pid}, heartbeat=time.time())
        except Exception:
            log.exception("heartbeat while loading failed; retrying")


def run_standby(store: Store) -> int | None:
    """Load torch and the engine, then wait to be handed a run (see Store.claim_queued's `handed`).

    Registered first, so launchers start no second standby and a run may be handed over while it still
    loads (it is further along than a fresh worker; a thread heartbeats the run meanwhile). Returns the
    run handed over, or None when another standby was registered first or no run was queued or running
    for STANDBY_GRACE_S. Leaving is one transaction with the hand-over, so a run handed at the last
    moment is still taken.
    """
    pid = os.getpid()
    if not store.register_standby(pid):
        return None
    t0 = time.monotonic()
    loaded = threading.Event()
    keeper = threading.Thread(target=_beat_while_loading, args=(store, pid, loaded), daemon=True)
    keeper.start()
    try:
        _warm_up()
    except Exception:
        log.exception("standby %d could not load the engine", pid)
        if store.retire_standby(pid):
            return None  # else a run was handed meanwhile: run it, it fails with the reason in its log
    finally:
        loaded.set()
        keeper.join()
    ready = time.monotonic()
    log.info("standby %d ready in %.1f s", pid, ready - t0)
    idle_since: float | None = None
    checked = 0.0
    while True:
        run_id = store.handed_run(pid)
        if run_id is not None:
            return run_id
        now = time.monotonic()
        if now - checked >= 1.0:  # a dead worker's run counts as lost, not running: refresh
            checked = now
            active = store.db_path.exists() and bool(store.list_runs(status=["queued", "running"]))
            idle_since = None if active else (idle_since or now)
        why = ""
        if idle_since is not None and now - idle_since > STANDBY_GRACE_S:
            why = "no run is queued or running"
        elif now - ready > STANDBY_MAX_WAIT_S:
            why = f"not needed for {STANDBY_MAX_WAIT_S / 60:.0f} min"
        if why and store.retire_standby(pid):
            log.info("standby %d: %s; leaving", pid, why)
            return None
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneassist.runs.worker", description=__doc__)
    parser.add_argument("--workspace", required=True, help="workspace directory holding the run store")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=int, help="id of the run to execute")
    which.add_argument("--standby", action="store_true", help="load torch, then wait to be handed a run")
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal must not end the run
    try:
        store = Store(args.workspace)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.standby:
        _log_to(store.workspace / "standby.log")
        try:
            run_id = run_standby(store)
        except Exception:
            log.exception("standby failed")
            # Leave, unless a run was handed over meanwhile: that one is ours to run (or to fail) now.
            try:
                run_id = None if store.retire_standby(os.getpid()) else store.handed_run(os.getpid())
            except Exception:
                run_id = None  # the store itself fails: a handed run shows `lost`, with resume
        if run_id is None:
            store.close()
            return 0
        args.run = run_id
    _log_to(store.run_dir(args.run) / "worker.log")
    code = 1
    try:
        code = run_worker(store, args.run, warm=args.standby)
    except UserError as e:
        log.error("%s", e)
    finally:
        try:
            started = advance_queue(store)  # the queue moves on with no daemon
            if started:
                log.info("started queued run(s) %s", ", ".join(map(str, started)))
        except Exception:
            log.exception("could not start the next queued run")
        store.close()
        logging.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
