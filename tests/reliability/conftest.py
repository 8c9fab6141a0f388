"""Fixtures of the reliability suite (helpers live in relkit.py).

Every test here causes its fault for real (a killed process, a full or read-only file system, a NaN,
an injected out-of-memory exception where CUDA would raise it, a crafted pickle) and checks what the
user sees: a status in the store, one line of error, exit code 2, nothing executed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import kill_workers


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private workspace (also $TUNEASSIST_HOME); any worker still running at the end is killed."""
    path = tmp_path / "ws"
    monkeypatch.setenv("TUNEASSIST_HOME", str(path))
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_TIMEOUT", "3")
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.delenv("TUNEASSIST_MAX_PER_DEVICE", raising=False)
    monkeypatch.delenv("TUNEASSIST_FAKE_OOM_ABOVE", raising=False)
    yield path
    kill_workers(path)
