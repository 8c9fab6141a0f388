"""Shared test set-up: a private workspace and cache per test session, a quiet single-threaded torch;
the `ws` fixture for tests that start real workers (helpers they share are in testkit.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from testkit import ...` in every folder
from testkit import ROOT, kill_workers  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real workspace or cache; share one cache so synthetic data is built once."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("TUNEASSIST_CACHE_DIR", os.environ.get("TUNEASSIST_TEST_CACHE", str(cache)))
    # The standby worker (a second process loading torch whenever runs are active) is an optimisation
    # with its own tests, which turn it on; elsewhere it would only compete for the CI's 2 cores.
    monkeypatch.setenv("TUNEASSIST_STANDBY", os.environ.get("TUNEASSIST_TEST_STANDBY", "0"))
    if "TUNEASSIST_HOME" not in os.environ:
        monkeypatch.setenv("TUNEASSIST_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private workspace (also $TUNEASSIST_HOME) for real workers, which inherit this environment:
    the repo importable, a 0.5 s heartbeat judged lost after 3 s (a test file that needs longer
    overrides `ws`), no per-device limit or injected OOM from outside; no worker outlives the test."""
    path = tmp_path / "ws"
    monkeypatch.setenv("TUNEASSIST_HOME", str(path))
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_TIMEOUT", "3")
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.delenv("TUNEASSIST_MAX_PER_DEVICE", raising=False)
    monkeypatch.delenv("TUNEASSIST_FAKE_OOM_ABOVE", raising=False)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    yield path
    kill_workers(path)
