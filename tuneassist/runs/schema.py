"""The store's schema: table layout, migrations and the values a run's status column may hold.

Kept apart from the code that opens the file so the layout reads in one place; migrations are
append-only (a released entry is never edited).
"""

from __future__ import annotations

import functools
import sqlite3
from typing import NamedTuple

APPLICATION_ID = 0x54554E41  # "TUNA": marks a database as ours, so a foreign file is never touched
DB_NAME = "tuneassist.db"
STATUSES = ("queued", "running", "finished", "diverged", "failed", "cancelled", "lost")
ACTIVE = ("queued", "running")
METRIC_FIELDS = (
    "step",
    "epoch",
    "lr",
    "momentum",
    "train_loss",
    "val_loss",
    "val_acc",
    "images_per_s",
    "wall",
)


class TrainValues(NamedTuple):
    """A training step's values in its metrics row, the one list of them (runs.metrics.MetricWriter
    takes it; the worker builds it from an engine step event, api.tracking from a user's log())."""

    epoch: float | None = None
    lr: float | None = None
    momentum: float | None = None
    train_loss: float | None = None
    images_per_s: float | None = None
    wall: float | None = None


class EvalValues(NamedTuple):
    """An evaluation's values in its step's row (its epoch/wall only fill a row without train values)."""

    val_loss: float | None = None
    val_acc: float | None = None
    epoch: float | None = None
    wall: float | None = None


TRAIN_FIELDS = TrainValues._fields

# Migration i brings schema version i to i + 1. Never edit a released entry: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT,
        created REAL NOT NULL,
        data TEXT,
        model TEXT,
        state TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id INTEGER REFERENCES sessions(id) ON DELETE SET NULL,
        kind TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'running', 'finished', 'diverged', 'failed', 'cancelled', 'lost')),
        device TEXT,
        host TEXT,
        pid INTEGER,
        heartbeat REAL,
        attempt INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        error TEXT,
        outcome TEXT,
        info TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        resume INTEGER NOT NULL DEFAULT 0,
        checkpoint_step INTEGER,
        checkpoint_epoch REAL,
        wall_base REAL NOT NULL DEFAULT 0,
        last_step INTEGER,
        last_epoch REAL,
        last_train_loss REAL,
        best_val_loss REAL,
        best_val_acc REAL,
        images_per_s REAL
    );
    CREATE INDEX runs_status ON runs(status);
    CREATE INDEX runs_session ON runs(session_id);
    CREATE TABLE metrics (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        epoch REAL,
        lr REAL,
        momentum REAL,
        train_loss REAL,
        val_loss REAL,
        val_acc REAL,
        images_per_s REAL,
        wall REAL,
        PRIMARY KEY (run_id, step)
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@functools.cache
def expected_columns() -> dict[str, set[str]]:
    """Columns of every table after all migrations (built once, in memory, from MIGRATIONS itself)."""
    con = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            con.executescript(migration)
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        return {t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")} for t in tables}
    finally:
        con.close()
