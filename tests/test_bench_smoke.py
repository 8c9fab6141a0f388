"""The GPU benchmark's code paths, run for real at tiny sizes on the CPU (and its skip without CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_quick_mode_runs_every_setting_on_the_cpu(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    out = tmp_path / "gpu.json"
    bench = str(ROOT / "benchmarks" / "gpu.py")
    quick = subprocess.Popen(
        [sys.executable, bench, "--device", "cpu", "--quick", "--no-sweep", "--json", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    plain = subprocess.run([sys.executable, bench], env=env, capture_output=True, text=True, timeout=120)
    stdout, stderr = quick.communicate(timeout=120)
    assert quick.returncode == 0, stderr
    res = json.loads(out.read_text())
    rows = res["training"]
    assert [r["mode"] for r in rows] == ["eager fp32", "bf16 + CL", "bf16 + CL + compile"]
    for r in rows:
        assert r["images_per_s"] > 0 and len(r["epoch_s"]) == 1 and 0 < r["mean_loss"] < 10
        # Counted by torch: simple3's 12.3 M multiply-adds forward, about 3x that for forward + backward.
        assert 0.06 < r["train_gflops_per_image"] < 0.075
        assert r["peak_pct"] is None
    assert res["pipeline"]["images_per_s"] > 0
    assert "bf16 + CL + compile" in stdout and "unknown" in stdout
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the benchmark would run for real instead of skipping")
    assert plain.returncode == 0 and plain.stdout.count("\n") == 1 and "skipped" in plain.stdout, plain


def test_checklist_benchmark_finds_the_image_folder_in_an_archive(tmp_path: Path) -> None:
    import tarfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from checklist_time import _folder
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    src = tmp_path / "src" / "cifar"
    for split in ("train", "test"):
        (src / split / "cat").mkdir(parents=True)
        (src / split / "cat" / "0.jpg").write_bytes(b"x")
    archive = tmp_path / "c.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(src, arcname="cifar")
    assert _folder(archive, tmp_path / "out") == f"folder:{tmp_path / 'out' / 'cifar'}"
