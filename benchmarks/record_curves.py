"""Record real training curves from the engine as small JSON fixtures for the advisor's rule tests.

Why: the advisor's rules (LR suggestion, diagnosis, sweep ranking) are numpy-only and are tested on
curves. Synthetic functions test the arithmetic; these fixtures test the rules on what the engine
really produces (BatchNorm warm-up bumps, noisy mini-batch losses, a real blow-up), without training
in the test suite. Each file holds the engine's events reduced to the fields the advisor reads,
rounded to 4 significant digits, and a header that says exactly how it was made.

    python benchmarks/record_curves.py                    # every recording (~10 min, 1 CPU thread)
    python benchmarks/record_curves.py --only range_simple3 --threads 2

Recorded on the CPU with one thread by default: on a shared 2-core machine one thread was several
times faster than two fighting over the cores (simple3: ~490 vs ~150 images/s). The runs are seeded;
another thread count may change the low digits (floating-point summation order).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneassist.engine.train import train
from tuneassist.spec import RunSpec

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "curves"
MAX_BYTES = 60_000
FORMAT = (
    "runs[i].steps: columns step, lr, train_loss (null where non-finite), one entry per training step; "
    "runs[i].evals: columns step, epoch, val_loss, val_acc; runs[i].start / runs[i].end: the engine's "
    "start and end events without timings; floats rounded to 4 significant digits."
)


@dataclass
class Run:
    label: str
    value: Any  # the swept value (WD), or None
    spec: RunSpec


@dataclass
class Recording:
    name: str
    what: str
    runs: list[Run]


def _range_spec(**kw: Any) -> RunSpec:
    """An exponential LR range test as the checklist runs it (cyclical momentum 0.95 -> 0.85)."""
    base: dict[str, Any] = dict(
        model="simple3",
        schedule="range_exp",
        lr_min=1e-4,
        lr_max=10.0,
        batch_size=128,
        momentum_max=0.95,
        momentum_min=0.85,
        weight_decay=1e-4,
        eval_every=10,
        eval_subset=500,
        test=False,
        seed=0,
        device="cpu",
    )
    base.update(kw)
    return RunSpec(**base).validate()


def _wd_run(wd: float) -> Run:
    # As the checklist's quick budget runs its WD step for simple3 on synthetic: 9,000 training images
    # -> 70 steps/epoch at TBS 128, 2 epochs, 10 evaluations (every 14 steps, a fifth of an epoch) on
    # 1,000 validation images; 1cycle at the range the advisor reads off range_simple3.json (0.004 -> 0.04).
    spec = RunSpec(
        data="synthetic",
        model="simple3",
        schedule="onecycle",
        lr_min=0.004,
        lr_max=0.04,
        momentum_max=0.95,
        momentum_min=0.85,
        weight_decay=wd,
        epochs=2.0,
        batch_size=128,
        eval_every=14,
        eval_subset=1000,
        test=False,
        seed=0,
        device="cpu",
    ).validate()
    return Run(f"wd {wd:.0e}", wd, spec)


RECORDINGS: list[Recording] = [
    Recording(
        "range_simple3",
        "LR range test, simple3 on synthetic (9,000 train images): LR 1e-4 -> 10 exponentially over 250 "
        "steps at TBS 128, momentum 0.95 -> 0.85, WD 1e-4, val loss on 500 images every 10 steps.",
        [Run("range", None, _range_spec(data="synthetic", steps=250))],
    ),
    Recording(
        "range_resnet20",
        "LR range test, resnet20 on synthetic:4000 (3,600 train images): LR 1e-4 -> 10 exponentially over "
        "150 steps at TBS 128, momentum 0.95 -> 0.85, WD 1e-4, val loss on 400 images every 10 steps.",
        [Run("range", None, _range_spec(data="synthetic:4000", model="resnet20", steps=150))],
    ),
    Recording(
        "wd_sweep_simple3",
        "Weight-decay sweep, simple3 on synthetic: WD 1e-2, 1e-3, 1e-4, each a 2-epoch 1cycle run "
        "(LR 0.004 -> 0.04 -> 4e-5, momentum 0.95 -> 0.85 -> 0.95, TBS 128), val loss on 1,000 images "
        "every 14 steps (a fifth of an epoch), as the checklist's quick budget runs it.",
        [_wd_run(w) for w in (1e-2, 1e-3, 1e-4)],
    ),
    Recording(
        "overfit_simple3",
        "Deliberate overfitting: simple3 on synthetic:600 with half held out (300 train, 300 val), no "
        "augmentation, no WD, constant LR 0.05 and momentum 0.9, TBS 32, 40 epochs, val loss on all 300 "
        "val images every epoch.",
        [
            Run(
                "overfit",
                None,
                RunSpec(
                    data="synthetic:600",
                    model="simple3",
                    val_fraction=0.5,
                    augment=False,
                    schedule="constant",
                    lr_min=0.05,
                    lr_max=0.05,
                    momentum_max=0.9,
                    momentum_min=0.9,
                    weight_decay=0.0,
                    epochs=40.0,
                    batch_size=32,
                    eval_every=None,
                    test=False,
                    seed=0,
                    device="cpu",
                ).validate(),
            )
        ],
    ),
    Recording(
        "diverge_simple3",
        "A training run that diverges: simple3 on synthetic:2000 (1,800 train), 1cycle with LR 0.02 -> 3 "
        "(the range test blew up at 1.7), momentum 0.95 -> 0.85, WD 1e-4, TBS 64, 8 epochs planned (LR "
        "rising for 100 steps), val loss on 500 images every 4 steps; the engine stops it when the "
        "training loss blows up.",
        [
            Run(
                "diverge",
                None,
                RunSpec(
                    data="synthetic:2000",
                    model="simple3",
                    schedule="onecycle",
                    lr_min=0.02,
                    lr_max=3.0,
                    momentum_max=0.95,
                    momentum_min=0.85,
                    weight_decay=1e-4,
                    epochs=8.0,
                    batch_size=64,
                    eval_every=4,
                    eval_subset=500,
                    test=False,
                    seed=0,
                    device="cpu",
                ).validate(),
            )
        ],
    ),
]


def sig4(x: Any) -> Any:
    """4 significant digits for floats (None for NaN/inf); other values unchanged."""
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        return float(f"{x:.4g}")
    return x


def reduce_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep what the advisor reads: per-step LR and loss, evaluations, and the start/end facts."""
    steps: dict[str, list[Any]] = {"step": [], "lr": [], "train_loss": []}
    evals: dict[str, list[Any]] = {"step": [], "epoch": [], "val_loss": [], "val_acc": []}
    start: dict[str, Any] = {}
    end: dict[str, Any] = {}
    for e in events:
        kind = e["type"]
        if kind == "step":
            steps["step"].append(int(e["step"]))
            steps["lr"].append(sig4(float(e["lr"])))
            loss = e.get("train_loss")
            steps["train_loss"].append(None if loss is None else sig4(float(loss)))
        elif kind == "eval":
            evals["step"].append(int(e["step"]))
            evals["epoch"].append(sig4(float(e["epoch"])))
            evals["val_loss"].append(sig4(float(e["val_loss"])))
            evals["val_acc"].append(sig4(float(e["val_acc"])))
        elif kind == "start":
            start = {k: sig4(v) for k, v in e.items() if k != "type"}
        elif kind == "end":
            end = {k: sig4(v) for k, v in e.items() if k not in ("type", "wall_time", "images_per_s")}
    return {"start": start, "steps": steps, "evals": evals, "end": end}


def git_state() -> str:
    """The commit the engine code came from, and whether the working tree had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return out.stdout.strip() or "unknown (not a git checkout)"


def record(rec: Recording, out_dir: Path, threads: int, argv: list[str]) -> Path:
    runs = []
    t0 = time.perf_counter()
    for run in rec.runs:
        events: list[dict[str, Any]] = []
        t = time.perf_counter()
        train(run.spec, on_event=events.append)
        red = reduce_events(events)
        print(
            f"  {rec.name} / {run.label}: {red['end'].get('outcome')} at step {red['end'].get('step')}, "
            f"{time.perf_counter() - t:.0f} s",
            flush=True,
        )
        runs.append({"label": run.label, "value": run.value, "spec": run.spec.to_dict(), **red})
    header = {
        "name": rec.name,
        "what": rec.what,
        "command": "python " + " ".join(["benchmarks/record_curves.py", *argv]),
        "recording": f"RECORDINGS[{rec.name!r}] in benchmarks/record_curves.py (specs repeated per run)",
        "engine_source": f"git {git_state()}",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu",
        "threads": threads,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "recording_seconds": round(time.perf_counter() - t0, 1),
        "format": FORMAT,
    }
    text = json.dumps({"header": header, "runs": runs}, separators=(",", ":"))
    if len(text) > MAX_BYTES:
        raise SystemExit(f"{rec.name}: {len(text)} bytes, over the {MAX_BYTES}-byte fixture limit")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{rec.name}.json"
    path.write_text(text + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT_DIR, help="where the JSON files go")
    p.add_argument("--only", action="append", default=None, help="record only this one (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = {r.name for r in RECORDINGS}
    for n in args.only or []:
        if n not in names:
            p.error(f"unknown recording {n!r}; known: {', '.join(sorted(names))}")
    t0 = time.perf_counter()
    for rec in RECORDINGS:
        if args.only and rec.name not in args.only:
            continue
        path = record(rec, args.out, args.threads, argv)
        print(f"{path} ({path.stat().st_size:,} bytes)", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
