"""Logging overhead of the run store: the same short training with the store's logging on vs off.

"On" is the worker's real path: its event recorder feeding a MetricWriter (rows batched and committed
by a background thread) plus the heartbeat thread, against a real SQLite store. "Off" trains with no
event sink at all. Runs alternate (off, on, on, off, ...) to cancel drift, and the script prints the
median training throughput of each, their ratio, and, as a steadier second measure, the share of the
training wall time spent inside the event callback. Target: under 2% overhead.

    python benchmarks/store_overhead.py                      # CPU, synthetic data
    python benchmarks/store_overhead.py --device cuda --model resnet20 --data synthetic:20000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from tuneassist.runs.store import MetricWriter, Store
from tuneassist.runs.worker import Heartbeat, _Recorder
from tuneassist.spec import RunSpec


def run_once(spec: RunSpec, store: Store | None) -> dict[str, Any]:
    from tuneassist.engine.train import train

    if store is None:
        end = train(spec)
        return {"images_per_s": end["images_per_s"], "wall": end["wall_time"], "callback_s": 0.0, "rows": 0}
    run_id = store.add_run(spec.to_dict(), "train")
    ((_, _, attempt),) = store.claim_queued(lambda s: (["bench"], 1), 1, only=run_id)
    store.update_run(run_id, heartbeat=time.time())
    run = store.get_run(run_id, refresh=False)
    stop = threading.Event()
    heartbeat = Heartbeat(store, run_id, attempt, stop)
    heartbeat.start()
    writer = MetricWriter(store, run_id, attempt=attempt)
    recorder = _Recorder(store, run, writer, resume=False, stopping=stop)
    spent = step_spent = 0.0
    steps = 0

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal spent, step_spent, steps
        t = time.perf_counter()
        recorder(ev)
        dt = time.perf_counter() - t
        spent += dt
        if ev["type"] == "step":
            step_spent += dt
            steps += 1

    end = train(spec, on_event=on_event, should_stop=stop.is_set)
    t = time.perf_counter()
    writer.close()
    spent += time.perf_counter() - t
    heartbeat.finish()
    store.update_run(run_id, status="finished", ended=time.time())
    return {
        "images_per_s": end["images_per_s"],
        "wall": end["wall_time"],
        "callback_s": spent,
        "rows": store.metric_count(run_id),
        "step_event_s": step_spent / max(1, steps),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic:2000")
    p.add_argument("--model", default="simple3")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sync-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="runs of each variant (alternating)")
    args = p.parse_args(argv)
    spec = RunSpec(
        data=args.data, model=args.model, batch_size=args.batch_size, epochs=args.epochs, device=args.device,
        num_threads=args.threads, sync_every=args.sync_every, test=False,
    ).validate()  # fmt: skip
    with tempfile.TemporaryDirectory() as ws:
        store = Store(ws)
        run_once(
            RunSpec(**{**spec.to_dict(), "epochs": min(spec.epochs, 0.5)}), None
        )  # warm-up (data, kernels)
        results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        order = ["off", "on"]
        for i in range(args.repeats):
            for variant in order if i % 2 == 0 else order[::-1]:
                r = run_once(spec, store if variant == "on" else None)
                results[variant].append(r)
                print(
                    f"  {variant:3s}: {r['images_per_s']:10,.0f} img/s  wall {r['wall']:6.2f} s  "
                    f"callback {r['callback_s'] * 1e3:7.1f} ms  rows {r['rows']}",
                    flush=True,
                )
        store.close()
    off = statistics.median(r["images_per_s"] for r in results["off"])
    on = statistics.median(r["images_per_s"] for r in results["on"])
    share = statistics.median(r["callback_s"] / r["wall"] for r in results["on"])
    rows = results["on"][0]["rows"]
    print(f"device {args.device}, {args.model} on {args.data}, batch {args.batch_size}: {rows} rows per run")
    print(f"throughput off {off:,.0f} img/s, on {on:,.0f} img/s: ratio on/off {on / off:.4f} "
          f"({100 * (1 - on / off):+.2f}% overhead; run-to-run noise included)")  # fmt: skip
    per_step = statistics.median(r["step_event_s"] for r in results["on"])
    print(f"time inside the logging callback: {100 * share:.3f}% of training wall time (target < 2%), "
          f"{per_step * 1e6:.1f} us per step event: under 2% for any step longer than "
          f"{per_step / 0.02 * 1e3:.2f} ms")  # fmt: skip
    return 0 if share < 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
