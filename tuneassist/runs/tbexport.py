"""`runs export ID --format tensorboard DIR`: a run's curves as TensorBoard event files.

For users who already look at TensorBoard: `tensorboard --logdir DIR` then shows each exported run as
`run-ID` beside their own. Written through `torch.utils.tensorboard` (it needs the `tensorboard`
package), imported only here and only for this format, so listing and other exports stay torch-free.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tuneassist.errors import UserError, printable
from tuneassist.runs.store import Store, check_export_target

# metric column -> TensorBoard tag; a row holds either a training step's or an evaluation's values
TAGS = {
    "train_loss": "train/loss",
    "lr": "train/lr",
    "momentum": "train/momentum",
    "images_per_s": "train/images_per_s",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "epoch": "train/epoch",
}


def _writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "--format tensorboard needs the tensorboard package; install it with: pip install tensorboard "
            "(or pip install 'tuneassist[tensorboard]'), or export --format csv"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


def export_tensorboard(store: Store, run_id: int, out: str | os.PathLike[str] | None) -> int:
    """Write run `run_id`'s metric rows under OUT/run-ID as event files; returns the rows written."""
    if out is None or not str(out).strip():
        raise UserError(
            f"--format tensorboard writes a folder; e.g. runs export {run_id} --format tensorboard tb/"
        )
    run = store.get_run(run_id, refresh=False)
    log_dir = Path(out).expanduser() / f"run-{run_id}"
    check_export_target(store.workspace, log_dir)
    if log_dir.is_dir() and any(log_dir.glob("events.out.tfevents.*")):
        raise UserError(
            f"{printable(log_dir)} already holds event files (an earlier export?); TensorBoard would show "
            "both: remove that folder, or choose another DIR"
        )
    if log_dir.exists() and not log_dir.is_dir():
        raise UserError(f"{printable(log_dir)} exists and is not a folder; choose another DIR")
    rows = store.metrics(run_id)
    # a row's wall is seconds of training (summed over resumes): counted from the first start
    started = float(run.started or run.created or 0.0) - float(run.wall_base or 0.0)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        w = _writer(log_dir)
        try:
            w.add_text("run", f"run {run_id} ({run.kind}, {run.status})", 0)
            w.add_text("spec", "```\n" + json.dumps(run.spec_data, indent=1, default=str) + "\n```", 0)
            for r in rows:
                step = int(r["step"])
                wall = started + float(r["wall"]) if r.get("wall") is not None and started else None
                for key, tag in TAGS.items():
                    v = r.get(key)
                    if v is not None and math.isfinite(float(v)):
                        w.add_scalar(tag, float(v), step, walltime=wall)
        finally:
            w.close()
    except OSError as e:
        raise UserError(f"cannot write {printable(log_dir)} ({e.strerror}); choose another DIR") from None
    return len(rows)
