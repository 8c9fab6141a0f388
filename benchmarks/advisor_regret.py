"""Does the saved profile beat what the user would have trained without the tool? (DESIGN.md §6)

Runs `tuneassist tune` in a fresh workspace, then, for the same data, net and final-run epochs:
- the untuned baseline: SGD, constant LR 0.01, momentum 0.9, WD 0, at the user's start batch (128);
- the LR-only profile: 1cycle at the range test's LR, every later step at its start value;
- the saved profile, re-run with `train --profile`;
- the ground truth per decision, everything else at the profile's values: a grid over max LR in
  factors of 2 (min = max/10, as the tool reads it), over WD, over momentum, and over TBS (equal
  epochs, LR scaled linearly; img/s reported so the equal-time view can be read too).
Regret of a decision = best grid test accuracy minus the accuracy at the chosen value.

Slow: run by hand, results committed under benchmarks/results/.

    python benchmarks/advisor_regret.py --data synthetic --model simple3 --epochs 8
    python benchmarks/advisor_regret.py --data folder:data/cifar10 --model simple3 --epochs 3
    python benchmarks/advisor_regret.py --data folder:data/cifar10 --model resnet20 --epochs 2 --grids lr,wd

Every run is cached by its spec in --cache (JSON), so an interrupted benchmark resumes, and a grid
point that equals another (the profile's own value) is trained once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
WD_GRID = {"shallow": (0.0, 1e-4, 5e-4, 1e-3, 1e-2), "deep": (0.0, 1e-5, 1e-4, 5e-4, 1e-3)}
MOMENTA = ((0.95, 0.85), (0.9, 0.9), (0.95, 0.95), (0.97, 0.97))


# What makes two runs the same experiment (device, threads and logging do not).
KEY_FIELDS = ("data", "model", "schedule", "lr_min", "lr_max", "momentum_max", "momentum_min", "weight_decay",
              "batch_size", "epochs", "steps", "seed", "rise_fraction", "final_div", "optimizer", "nesterov",
              "augment", "wd_exclude_bn_bias", "val_fraction")  # fmt: skip


def _key(spec: Any) -> str:
    items = spec.to_dict().items()
    d = {k: (round(v, 12) if isinstance(v, float) else v) for k, v in items if k in KEY_FIELDS}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class Runner:
    """Trains specs in this process (test split on), caching each outcome by its spec."""

    def __init__(self, cache: Path, threads: int | None) -> None:
        self.cache_path = cache
        self.cache: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
        self.threads = threads

    def run(self, spec: Any, label: str) -> dict[str, Any]:
        from tuneassist.engine.train import train

        spec = replace(spec, test=True, eval_every=None, eval_subset=None, num_threads=self.threads)
        k = _key(spec)
        if k not in self.cache:
            t0 = time.perf_counter()
            end = train(spec)
            self.cache[k] = {
                "label": label,
                "test_acc": end.get("test_acc"),
                "val_acc": end.get("val_acc"),
                "outcome": end.get("outcome"),
                "images_per_s": end.get("images_per_s"),
                "wall_s": time.perf_counter() - t0,
                "spec": spec.to_dict(),
            }
            self.cache_path.write_text(json.dumps(self.cache, indent=1))
        r = self.cache[k]
        acc = r["test_acc"]
        print(f"  {label:34s} test {100 * acc if acc is not None else float('nan'):6.2f}%  "
              f"({r['outcome']}, {r['images_per_s'] or 0:,.0f} img/s)", flush=True)  # fmt: skip
        return r


def provenance(script: str, argv: list[str] | None) -> dict[str, str]:
    """How a results file was made: the command, date, torch and machine."""
    import torch

    return {
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.date.today().isoformat(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def _acc(r: dict[str, Any]) -> float:
    return float(r["test_acc"]) if r.get("test_acc") is not None and r["outcome"] == "finished" else 0.0


def run_tune(data: str, model: str, budget: str, epochs: int, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tuneassist-regret-") as tmp:
        env = {**os.environ, "TUNEASSIST_HOME": str(Path(tmp) / "ws")}
        cmd = [sys.executable, "-m", "tuneassist.cli.main", "tune", "--data", data, "--model", model,
               "--budget", budget, "--epochs", str(epochs), "--name", "regret", "--json", *extra]  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"tune failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")
        summary = json.loads(r.stdout)
        summary["wall_s"] = wall
        summary["profile_toml"] = Path(summary["profile"]).read_text()
        return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="synthetic")
    p.add_argument("--model", default="simple3")
    p.add_argument("--epochs", type=int, default=8, help="the final run's epochs (tune --epochs)")
    p.add_argument("--budget", default="quick")
    p.add_argument("--grids", default="lr,wd,tbs,momentum", help="which decision grids to run")
    p.add_argument(
        "--lr-factors", default=",".join(map(str, LR_FACTORS)), help="max-LR grid, x the profile's"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tune-arg", action="append", default=[], help="an extra argument for tune")
    p.add_argument("--tune-json", type=Path, default=None, help="reuse a tune summary (no tune run)")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: benchmarks/results/...)")
    a = p.parse_args(argv)

    from tuneassist.advisor.grids import model_kind
    from tuneassist.advisor.sweep import same_value
    from tuneassist.profiles import load_profile, profile_to_runspec
    from tuneassist.spec import RunSpec

    tag = f"{a.data.replace('folder:', '').replace('/', '_')}-{a.model}-{a.epochs}ep"
    out = a.out or RESULTS / f"regret-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    runner = Runner(a.cache or Path(tempfile.gettempdir()) / f"tuneassist-regret-cache-{tag}.json", a.threads)

    print(f"tune --data {a.data} --model {a.model} --budget {a.budget} --epochs {a.epochs}", flush=True)
    if a.tune_json:
        summary = json.loads(a.tune_json.read_text())
    else:
        summary = run_tune(a.data, a.model, a.budget, a.epochs, a.tune_arg)
        (out.with_suffix(".tune.json")).write_text(json.dumps(summary, indent=1, default=str))
    print(f"  tune took {summary['wall_s'] / 60:.1f} min", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(summary["profile_toml"])
    prof = profile_to_runspec(load_profile(f.name))
    prof = replace(prof, data=a.data, seed=0)
    starts = summary["start_values"]
    start_tbs = int(starts["batch_size"])  # the checklist's start (the range test's TBS)
    user_tbs = int(summary["baseline_batch"])  # the batch the user trains with

    rows: dict[str, Any] = {}
    print("baselines and the profile:", flush=True)
    base = RunSpec(data=a.data, model=a.model, schedule="constant", lr_min=0.01, lr_max=0.01,
                   momentum_max=0.9, momentum_min=0.9, weight_decay=0.0, batch_size=user_tbs,
                   epochs=float(a.epochs))  # fmt: skip
    rows["untuned"] = runner.run(base, f"untuned (const 0.01, TBS {user_tbs})")
    lr = summary["lr_range"]
    f = start_tbs / lr["tbs"]
    lr_only = replace(prof, lr_min=lr["lr_min"] * f, lr_max=lr["lr_max"] * f, batch_size=start_tbs,
                      momentum_max=starts["momentum_max"], momentum_min=starts["momentum_min"],
                      weight_decay=starts["weight_decay"])  # fmt: skip
    rows["lr_only"] = runner.run(lr_only, f"LR-only ({lr_only.lr_min:.3g}-{lr_only.lr_max:.3g})")
    rows["profile"] = runner.run(prof, "saved profile")

    grids: dict[str, list[dict[str, Any]]] = {}
    want = set(a.grids.split(","))
    if "lr" in want:
        print("max-LR grid (factors of 2):", flush=True)
        grids["lr"] = []
        for f in (float(x) for x in a.lr_factors.split(",")):
            s = replace(prof, lr_min=prof.lr_min * f, lr_max=prof.lr_max * f)
            grids["lr"].append({"value": s.lr_max, **runner.run(s, f"max LR {s.lr_max:.3g}")})
    if "wd" in want:
        print("WD grid:", flush=True)
        vals = sorted(set(WD_GRID[model_kind(a.model)]) | {prof.weight_decay})
        grids["wd"] = [{"value": w, **runner.run(replace(prof, weight_decay=w), f"WD {w:g}")} for w in vals]
    if "momentum" in want:
        print("momentum grid:", flush=True)
        ms = sorted(set(MOMENTA) | {(prof.momentum_max, prof.momentum_min)})
        grids["momentum"] = []
        for m in ms:
            s = replace(prof, momentum_max=m[0], momentum_min=m[1])
            grids["momentum"].append({"value": list(m), **runner.run(s, f"momentum {m}")})
    if "tbs" in want:
        print("TBS grid (equal epochs, LR scaled linearly):", flush=True)
        sizes = sorted({start_tbs // 2, start_tbs, start_tbs * 2, prof.batch_size})
        grids["tbs"] = []
        for t in sizes:
            f = t / prof.batch_size
            s = replace(prof, batch_size=t, lr_min=prof.lr_min * f, lr_max=prof.lr_max * f)
            grids["tbs"].append({"value": t, **runner.run(s, f"TBS {t}")})

    chosen = {"lr": prof.lr_max, "wd": prof.weight_decay, "momentum": [prof.momentum_max, prof.momentum_min],
              "tbs": prof.batch_size}  # fmt: skip
    regret = {}
    for name, g in grids.items():
        best = max(g, key=_acc)
        mine = [r for r in g if same_value(r["value"], chosen[name])]
        mine_acc = _acc(mine[0]) if mine else _acc(rows["profile"])
        regret[name] = {"best": best["value"], "best_acc": _acc(best), "chosen": chosen[name],
                        "chosen_acc": mine_acc, "regret_points": 100 * (_acc(best) - mine_acc)}  # fmt: skip
    res = {
        **provenance("advisor_regret.py", argv),
        "data": a.data, "model": a.model, "epochs": a.epochs, "budget": a.budget,
        "tune_wall_s": summary["wall_s"], "tune_steps": summary["steps"],
        "profile": {"lr": [prof.lr_min, prof.lr_max], "tbs": prof.batch_size, "momentum": chosen["momentum"],
                    "wd": prof.weight_decay},
        "accuracy": {k: _acc(v) for k, v in rows.items()},
        "gain_vs_untuned_points": 100 * (_acc(rows["profile"]) - _acc(rows["untuned"])),
        "gain_vs_lr_only_points": 100 * (_acc(rows["profile"]) - _acc(rows["lr_only"])),
        "regret": regret,
        "grids": grids,
    }  # fmt: skip
    out.write_text(json.dumps(res, indent=1, default=str))
    print(f"\nprofile {100 * _acc(rows['profile']):.2f}% · untuned {100 * _acc(rows['untuned']):.2f}% "
          f"({res['gain_vs_untuned_points']:+.2f}) · LR-only {100 * _acc(rows['lr_only']):.2f}% "
          f"({res['gain_vs_lr_only_points']:+.2f})")  # fmt: skip
    for name, r in regret.items():
        print(f"  {name:9s} chosen {r['chosen']}: {100 * r['chosen_acc']:.2f}%; best {r['best']}: "
              f"{100 * r['best_acc']:.2f}%; regret {r['regret_points']:.2f} points")  # fmt: skip
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
