"""`tuneassist lr-read FILE`: read a range test that another tool ran (torch-lr-finder, Lightning's
Tuner, your own loop) and print what `lr-find` prints: the plot, the suggested 1cycle range, why."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lr-read",
        help="read a range-test curve from a CSV/JSON file (torch-lr-finder, Lightning) into a 1cycle range",
        description="Read the loss-vs-LR curve of a range test another tool recorded and print the plot "
        "and the suggested 1cycle LR range, as lr-find does. FILE: JSON {\"lr\": [...], \"loss\": [...]} "
        "(torch-lr-finder's lr_finder.history, Lightning's lr_finder.results, lr-find --json), JSON lines "
        "or CSV with lr and loss (or train_loss) columns and an optional val_loss column (runs export).",
    )
    p.add_argument("file", metavar="FILE", help="the curve: .json, .jsonl or .csv")
    p.add_argument("--json", action="store_true", help="print the suggestion and the curve as JSON")
    p.set_defaults(func=cmd_lr_read)


def cmd_lr_read(args: argparse.Namespace) -> int:
    from tuneassist.api import read_range_test
    from tuneassist.cli.termplot import range_test_lines

    result = read_range_test(args.file)
    if args.json:
        print(json.dumps({"file": str(args.file), **result.to_dict()}))
        return 0
    s = result.suggestion
    lines = range_test_lines(result.curve, s.to_dict(), color=sys.stdout.isatty())
    if s.max_lr is None or s.min_lr is None:
        retry = f" from {s.retry_range[0]:.3g} to {s.retry_range[1]:.3g}" if s.retry_range else ""
        lines.append(f"Next: re-run your range test{retry} (see the note above)")
    else:
        lines.append(
            f"Next: train with 1cycle, LR {s.min_lr:.3g} -> {s.max_lr:.3g} and momentum 0.95 -> 0.85: "
            f"torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr={s.max_lr:.3g}, "
            f"div_factor={s.max_lr / s.min_lr:.3g}, total_steps=epochs * len(train_loader), "
            "base_momentum=0.85, max_momentum=0.95), stepped every batch"
        )
    print("\n".join(lines))  # only numbers from the file reach the text: nothing to escape
    return 0
