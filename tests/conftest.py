"""Shared test set-up: a private workspace and cache per test session, a quiet single-threaded torch."""

from __future__ import annotations

import os

import pytest


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
