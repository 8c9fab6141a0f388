"""The run store: one SQLite database per workspace that every process shares.

Workers (writers) and the CLI/TUI (readers) never talk to each other; they only meet here. `Store` is
composed from its parts, each in its own module, and this module keeps the names every caller imports:

- `schema`: tables, migrations, statuses;  `workspace`: where the store lives, who may write there;
- `db`: opening, checking and migrating the file, transactions, run folders;
- `liveness`: lost runs, cancels, claims, the standby worker;  `records`: settings, sessions, runs;
- `rows`: the typed `Run` readers get;  `metrics`: the worker's `MetricWriter`;
- `picklescan`: the torch-free checkpoint check.

It is torch-free so the UI can read it cheaply.
"""

from __future__ import annotations

from tuneassist.runs.db import BUSY_TIMEOUT_MS, RETRY_DEADLINE_S
from tuneassist.runs.liveness import pid_alive
from tuneassist.runs.metrics import MetricWriter
from tuneassist.runs.picklescan import checkpoint_problem
from tuneassist.runs.records import Records
from tuneassist.runs.rows import Run, fmt_time
from tuneassist.runs.schema import (
    ACTIVE,
    APPLICATION_ID,
    DB_NAME,
    METRIC_FIELDS,
    MIGRATIONS,
    SCHEMA_VERSION,
    STATUSES,
)
from tuneassist.runs.workspace import (
    check_export_target,
    heartbeat_interval,
    heartbeat_timeout,
    resolve_workspace,
)


class Store(Records):
    """The workspace's database plus its per-run folders; safe to share between threads.

    A workspace this process cannot write (a read-only mount, no write permission) still opens, read-only
    (`read_only`): listing and watching runs work, and every change is refused with one line saying why.
    """


__all__ = [
    "ACTIVE",
    "APPLICATION_ID",
    "BUSY_TIMEOUT_MS",
    "DB_NAME",
    "METRIC_FIELDS",
    "MIGRATIONS",
    "RETRY_DEADLINE_S",
    "SCHEMA_VERSION",
    "STATUSES",
    "MetricWriter",
    "Run",
    "Store",
    "check_export_target",
    "checkpoint_problem",
    "fmt_time",
    "heartbeat_interval",
    "heartbeat_timeout",
    "pid_alive",
    "resolve_workspace",
]
