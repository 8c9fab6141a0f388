"""Is the LR read from the range test the max LR that trains best in the final run's budget?

For one data set, net and final-run length: runs the checklist's own range test (same spec as
`tune`), reads it with `suggest_lr`, then trains a 1cycle grid over max LR (min = max/10) at the
checklist's start values (the LR-only profile: TBS, momentum 0.95-0.85, WD of its kind) for the
final run's epochs on the test split. Reports the grid, the reading, and the regret of the reading
(best grid test accuracy minus the accuracy at the grid point nearest the reading, in log LR).

The range-test curve and the grid are kept in the results file, so a new reading rule can be scored
on every recorded net offline (`--rescore`), without training again.

Slow: run by hand, results committed under benchmarks/results/lr-rule-*.json.

    python benchmarks/lr_rule.py --data folder:data/cifar10 --model simple3 --epochs 3
    python benchmarks/lr_rule.py --data folder:data/cifar10 --model resnet20 --epochs 2
    python benchmarks/lr_rule.py --data folder:data/cifar10 --model benchmarks.nets:quick_nobn --epochs 3
    python benchmarks/lr_rule.py --rescore            # every results file, with the current rule
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.nets` as a user module

RESULTS = Path(__file__).resolve().parent / "results"
# Max-LR grid: factors of 2 from 1/64 to 16 of 0.1 (x the batch ratio), the paper's whole useful span.
DEFAULT_GRID = tuple(0.1 * 2.0**k for k in range(-6, 5))


def _read(rc: Any) -> Any:
    from tuneassist.advisor.lr_range import suggest_lr

    return suggest_lr(
        rc["lrs"],
        rc["train_loss"],
        rc["eval_lrs"] or None,
        rc["val_loss"] or None,
        diverged_at_lr=rc["diverged_lr"] if rc["outcome"] == "diverged" else None,
    )


def score(res: dict[str, Any]) -> dict[str, Any]:
    """The current rule's reading of a recorded range test, and its regret on the recorded grid."""
    s = _read(res["range"])
    scale = res["grid_tbs"] / res["range_tbs"]
    grid = [g for g in res["grid"] if g["test_acc"] is not None]
    best = max(grid, key=lambda g: g["test_acc"] if g["outcome"] == "finished" else 0.0)
    out: dict[str, Any] = {"explanation": s.explanation, "estimates": s.estimates, "best": best["value"],
                           "best_acc": best["test_acc"], "max_lr": None, "regret_points": None}  # fmt: skip
    if s.max_lr is not None:
        lr = s.max_lr * scale
        near = min(grid, key=lambda g: abs(math.log(g["value"] / lr)))
        acc = near["test_acc"] if near["outcome"] == "finished" else 0.0
        out.update(max_lr=lr, nearest=near["value"], nearest_acc=acc,
                   regret_points=100 * (best["test_acc"] - acc))  # fmt: skip
    return out


def _curves(events: list[dict[str, Any]]) -> dict[str, Any]:
    from tuneassist.advisor.checklist import RunCurves

    c = RunCurves.from_events(events)
    return {"lrs": c.lrs, "train_loss": c.train_loss, "eval_lrs": c.eval_lrs(), "val_loss": c.val_loss,
            "outcome": c.outcome, "diverged_lr": c.diverged_lr}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="synthetic")
    p.add_argument("--model", default="simple3")
    p.add_argument("--epochs", type=int, default=3, help="the final run's epochs")
    p.add_argument("--budget", default="quick", help="the checklist budget whose range test is read")
    p.add_argument("--grid", default=",".join(f"{v:g}" for v in DEFAULT_GRID), help="max LRs at TBS 128")
    p.add_argument("--grid-tbs", type=int, default=None, help="the grid's TBS (default: the start TBS)")
    p.add_argument("--wd", type=float, default=None, help="the grid's WD (default: the start WD)")
    p.add_argument("--momentum", default=None, help="the grid's momentum MAX:MIN (default 0.95:0.85)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--rescore", action="store_true", help="score every results file; train nothing")
    a = p.parse_args(argv)

    if a.rescore:
        total = []
        for f in sorted(RESULTS.glob("lr-rule-*.json")):
            r = score(json.loads(f.read_text()))
            total.append(r["regret_points"] if r["regret_points"] is not None else float("nan"))
            print(f"{f.stem:42s} read {r['max_lr'] or float('nan'):8.3g} (nearest {r.get('nearest', 0):.3g}) "
                  f"best {r['best']:.3g} regret {total[-1]:6.2f}")  # fmt: skip
        print(f"mean regret {sum(total) / max(len(total), 1):.2f} points over {len(total)} nets")
        return 0

    from benchmarks.advisor_regret import Runner, provenance
    from tuneassist.advisor.checklist import Checklist
    from tuneassist.engine.train import train

    cl = Checklist(data=a.data, model=a.model, budget=a.budget, epochs=a.epochs)
    range_spec = cl.propose("lr_range").candidates[0].spec
    range_spec = replace(range_spec, allow_import=True, num_threads=a.threads)
    tag = f"{a.data.replace('folder:', '').replace('/', '_')}-{a.model.replace(':', '.')}-{a.epochs}ep"
    out = RESULTS / f"lr-rule-{tag}.json"
    prior = json.loads(out.read_text()) if out.exists() else {}
    if prior.get("range_spec") == range_spec.to_dict():
        curves = prior["range"]
        print("range test: reused from", out, flush=True)
    else:
        events: list[dict[str, Any]] = []
        r = range_spec
        print(f"range test: {r.lr_min:g} -> {r.lr_max:g} over {r.steps} steps", flush=True)
        train(range_spec, on_event=events.append)
        curves = _curves(events)

    start = cl.lr_only_spec()
    grid_tbs = a.grid_tbs or start.batch_size
    mom = tuple(float(x) for x in a.momentum.split(":")) if a.momentum else (0.95, 0.85)
    base = replace(start, batch_size=grid_tbs, allow_import=True, momentum_max=mom[0], momentum_min=mom[1],
                   weight_decay=start.weight_decay if a.wd is None else a.wd)  # fmt: skip
    runner = Runner(a.cache or Path(tempfile.gettempdir()) / f"tuneassist-regret-cache-{tag}.json", a.threads)
    grid = []
    print(f"1cycle grid at TBS {grid_tbs}, momentum {mom}, WD {base.weight_decay:g}, {a.epochs} epochs:")
    for v in (float(x) * grid_tbs / 128 for x in a.grid.split(",")):
        r = runner.run(replace(base, lr_min=v / 10, lr_max=v), f"max LR {v:.3g}")
        grid.append({"value": v, "test_acc": r["test_acc"], "val_acc": r["val_acc"], "outcome": r["outcome"],
                     "images_per_s": r["images_per_s"]})  # fmt: skip
        if r["outcome"] == "diverged" or (r["test_acc"] is not None and r["test_acc"] < 0.15):
            break  # beyond the ceiling: every larger LR diverges too
    res = {
        **provenance("lr_rule.py", argv),
        "data": a.data, "model": a.model, "epochs": a.epochs, "budget": a.budget,
        "range_spec": range_spec.to_dict(), "range_tbs": range_spec.batch_size, "range": curves,
        "grid_tbs": grid_tbs, "grid_momentum": list(mom), "grid_wd": base.weight_decay, "grid": grid,
    }  # fmt: skip
    res["reading"] = score(res)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    r = res["reading"]
    print(f"\n{r['explanation']}\nread {r['max_lr']}, best {r['best']:.3g} ({100 * r['best_acc']:.2f}%), "
          f"regret {r['regret_points']} points\nresults: {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
