"""The built wheel ships everything a non-editable install needs: the paper's profiles and `-m`.

The wheel is built offline from a copy of the sources (the working tree is never written to), with
the venv's own setuptools (`pip wheel --no-build-isolation --no-index`), then installed into a
private folder (`pip install --target`) and run from a directory that holds no checkout, so the
editable install cannot answer for it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "tuneassist" / "profiles" / "builtin"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tuneassist's wheel, built from a copy of pyproject.toml, README.md and tuneassist/."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "tuneassist", src / "tuneassist", ignore=shutil.ignore_patterns("__pycache__"))
    out = base / "dist"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("tuneassist-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (not editable) into a private folder; dependencies come from the venv."""
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return target


def _run_installed(target: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m tuneassist ARGS` importing the installed copy (PYTHONPATH comes before the editable
    finder, which sits at the end of sys.meta_path), from a folder with no checkout in it."""
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [sys.executable, "-m", "tuneassist", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_wheel_carries_every_shipped_profile_and_the_main_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in BUILTIN.glob("*.toml"))
    assert len(shipped) >= 4
    for name in shipped:
        assert f"tuneassist/profiles/builtin/{name}" in names
    assert "tuneassist/__main__.py" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Provides-Extra: serve" in text and "Provides-Extra: gpu" in text
    assert "textual-serve" in text and "nvidia-ml-py" in text


def test_installed_copy_lists_the_shipped_profiles(installed: Path, tmp_path: Path) -> None:
    r = _run_installed(installed, tmp_path, "--workspace", str(tmp_path / "ws"), "profile", "list", "--json")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    names = {e["name"] for e in entries}
    assert {p.stem for p in BUILTIN.glob("*.toml")} <= names
    for e in entries:  # read from the installed copy, not from this checkout
        assert e["error"] is None
        assert Path(e["path"]).resolve().is_relative_to(installed.resolve()), e["path"]
    r = _run_installed(installed, tmp_path, "--workspace", str(tmp_path / "ws"), "profile", "show",
                       "cifar10-resnet56-1cycle")  # fmt: skip
    assert r.returncode == 0 and "lr_max = 0.8" in r.stdout, r.stderr


@pytest.mark.slow
def test_installed_copy_trains_from_a_shipped_profile(installed: Path, tmp_path: Path) -> None:
    r = _run_installed(
        installed, tmp_path, "--workspace", str(tmp_path / "ws"), "train", "--profile",
        "synthetic-simple3-1cycle", "--data", "synthetic:256", "--epochs", "1", "--device", "cpu", "--json",
        timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["outcome"] == "finished" and out["val_acc"] is not None
