"""Slow checks on the real CIFAR-10 (JPEG image folder from ../shared/data); skipped without it.

pytest -m slow tests/test_real_data.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ARCHIVE = Path(
    os.environ.get(
        "TUNEASSIST_CIFAR10_JPEG", Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.xz"
    )
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ARCHIVE.exists(), reason=f"real CIFAR-10 archive not found at {ARCHIVE}"),
]


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(root, filter="data")
    # the archive may hold train/ and test/ at its top or one folder down
    hits = [p.parent for p in root.rglob("train") if (p.parent / "test").is_dir()]
    assert hits, "archive layout: expected train/ and test/"
    return hits[0]


@pytest.mark.timeout(900)
def test_simple3_reaches_65_percent_in_3_epochs(cifar_folder: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneassist.cli.main",
            "train",
            "--data",
            f"folder:{cifar_folder}",
            "--model",
            "simple3",
            "--schedule",
            "onecycle",
            "--lr",
            "0.04:0.4",
            "--momentum",
            "0.95:0.85",
            "--wd",
            "5e-4",
            "--epochs",
            "3",
            "--batch-size",
            "256",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["test_acc"] >= 0.65, res
