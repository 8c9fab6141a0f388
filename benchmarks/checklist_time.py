"""Wall time of the whole quick checklist (`tuneassist tune`), end to end, as a user would run it.

The issue's target: ResNet-56 on CIFAR-10, quick budget, under 10 minutes on one H100. Everything a
user waits for counts: the memory probe, every run's start-up, decoding the image folder the first
time, the final 1cycle run and the baseline. It runs in a fresh workspace and prints the total, each
step's wall time with how its runs shared the device, and the tuned vs baseline test accuracy.

    python benchmarks/checklist_time.py         # simple3 on synthetic:3000 (2 CPU cores: about 3.5 min)
    python benchmarks/checklist_time.py --archive ../shared/data/cifar10-jpeg.tar.xz --model resnet56
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from tuneassist.runs.store import fmt_time
from tuneassist.session import sharing_text


def _folder(archive: Path, into: Path) -> str:
    """Unpack an image-folder archive (train/ and test/ inside, at any depth); returns folder:PATH."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    train = next(p for p in sorted(into.rglob("train")) if p.is_dir())
    return f"folder:{train.parent}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic:3000")
    p.add_argument("--archive", type=Path, default=None, help="an image-folder .tar.xz to use as --data")
    p.add_argument("--model", default="simple3")
    p.add_argument("--budget", default="quick")
    p.add_argument("--target-min", type=float, default=10.0, help="the time to beat, minutes")
    p.add_argument("--timeout-min", type=float, default=30.0)
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tuneassist-checklist-") as tmp:
        data = _folder(a.archive, Path(tmp) / "data") if a.archive else a.data
        env = {
            **os.environ,
            "TUNEASSIST_HOME": str(Path(tmp) / "ws"),
            "TUNEASSIST_CACHE_DIR": str(Path(tmp) / "cache"),
        }
        cmd = [sys.executable, "-m", "tuneassist.cli.main", "tune", "--data", data, "--model", a.model,
               "--budget", a.budget, "--name", "bench", "--json"]  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout_min * 60)
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        print(f"tune failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = json.loads(r.stdout)
    met = "met" if wall <= a.target_min * 60 else "missed"
    print(f"{a.model} on {data.split('/')[-1] if a.archive else data}, budget {a.budget}: "
          f"{fmt_time(wall)} in all (target {a.target_min:g} min: {met})")  # fmt: skip
    for step, t in summary["timing"].items():
        if t:
            print(f"  {step:13s} {sharing_text(t)}")
    final, base = summary["final"].get("test_acc"), (summary["baseline"] or {}).get("test_acc")
    if final is not None and base is not None:
        print(f"  test accuracy: tuned {100 * final:.2f}%, baseline {100 * base:.2f}%")
    if a.json:
        Path(a.json).write_text(
            json.dumps({"wall_s": wall, "target_s": a.target_min * 60, **summary}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
