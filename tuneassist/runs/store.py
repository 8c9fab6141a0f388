"""The run store: one SQLite database per workspace that every process shares.

Workers (writers) and the CLI/TUI (readers) never talk to each other; they only meet here. So the
store has to stay consistent when processes die at any moment (WAL, short transactions, the run's
status changed in one transaction) and must never fail with "database is locked" (busy timeout,
BEGIN IMMEDIATE for every write, retries on top). It is torch-free so the UI can read it cheaply.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tuneassist.errors import UserError
from tuneassist.fsafe import untrusted_dir
from tuneassist.runs.packing import Fits, count_limit

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
_TRAIN_FIELDS = ("epoch", "lr", "momentum", "train_loss", "images_per_s", "wall")
_SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 10_000
RETRY_DEADLINE_S = 120.0

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
def _expected_columns() -> dict[str, set[str]]:
    """Columns of every table after all migrations (built once, in memory, from MIGRATIONS itself)."""
    con = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            con.executescript(migration)
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        return {t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")} for t in tables}
    finally:
        con.close()


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which a running run counts as lost (env-tunable for tests)."""
    return _env_float("TUNEASSIST_HEARTBEAT_TIMEOUT", 15.0)


def heartbeat_interval() -> float:
    """Seconds between a worker's heartbeats."""
    return _env_float("TUNEASSIST_HEARTBEAT_INTERVAL", 2.0)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(
            f"{name}={raw!r} is not a number; unset it or give seconds, e.g. {default:g}"
        ) from None
    if not value > 0:
        raise UserError(f"{name}={raw!r} must be positive; unset it or give seconds, e.g. {default:g}")
    return value


def resolve_workspace(workspace: str | os.PathLike[str] | None = None) -> Path:
    """Explicit argument, then $TUNEASSIST_HOME, then the platform's user data dir."""
    if workspace:
        return _absolute(workspace, "--workspace")
    env = os.environ.get("TUNEASSIST_HOME")
    if env:
        return _absolute(env, "TUNEASSIST_HOME")
    import platformdirs

    return Path(platformdirs.user_data_dir("tuneassist"))


def check_export_target(workspace: str | os.PathLike[str] | None, target: str | os.PathLike[str]) -> None:
    """Refuse an export path that is the workspace's store (or its -wal/-shm/-journal) or lies in its
    run folders, by resolved path and by inode (a hard link); one UserError naming it."""
    from tuneassist.fsafe import check_not_protected

    ws = resolve_workspace(workspace)
    db = ws / DB_NAME
    files = [db, *(db.with_name(db.name + sfx) for sfx in ("-wal", "-shm", "-journal"))]
    check_not_protected(Path(target), files, [ws / "runs"], "part of the workspace's run store")


def _absolute(raw: str | os.PathLike[str], source: str) -> Path:
    """`~` expanded and made absolute: the same workspace whichever folder a command (or the detached
    worker it starts) runs from."""
    try:
        p = Path(raw).expanduser()
    except RuntimeError:  # ~nosuchuser
        user = str(raw).split(os.sep, 1)[0]
        raise UserError(
            f"{source} {str(raw)!r}: no user {user[1:]!r} to expand {user} for; give a full path"
        ) from None
    return Path(os.path.abspath(p))


def _is_busy(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("database is locked" in msg or "busy" in msg)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Store:
    """The workspace's database plus its per-run folders; safe to share between threads.

    A workspace this process cannot write (a read-only mount, no write permission) still opens, read-only
    (`read_only`): listing and watching runs work, and every change is refused with one line saying why.
    """

    def __init__(self, workspace: str | os.PathLike[str] | None = None) -> None:
        self.workspace = resolve_workspace(workspace)
        self.db_path = self.workspace / DB_NAME
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        self.read_only = False
        self.read_only_why = ""  # why read_only: "is read-only here" or "is on a full disk (...)"
        self._lost_overlay: dict[int, str] = {}  # runs found lost that a read-only store cannot mark
        self._make_workspace()
        self._check_file()
        self._con = self._connect()
        try:
            self._migrate()
        except BaseException:  # refused (newer, damaged): let go of the file at once
            self.close()
            raise

    # ----------------------------------------------------------------- opening and migrating
    def _make_workspace(self) -> None:
        ws = self.workspace
        if ws.exists() and not ws.is_dir():
            raise UserError(f"workspace {ws} is a file, not a directory; pass another --workspace DIR")
        if not ws.exists():
            try:
                ws.mkdir(parents=True, mode=0o700)
            except FileExistsError:
                pass
            except OSError as e:
                msg = f"cannot create workspace {ws} ({e.strerror}); pass a writable --workspace DIR"
                raise UserError(msg) from None
            with contextlib.suppress(OSError):
                ws.chmod(0o700)  # mkdir's mode is masked by the umask
        self._check_trusted(ws, "workspace")
        self._check_trusted(ws / "runs", "run folder")
        if not self.db_path.exists():
            try:
                fd = os.open(self.db_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
            except FileExistsError:
                pass  # another process created it first: fine
            except OSError as e:
                msg = f"cannot create {self.db_path} ({e.strerror}); pass a writable --workspace DIR"
                raise UserError(msg) from None

    @staticmethod
    def _check_trusted(folder: Path, what: str) -> None:
        """Refuse a folder others could plant files or links in: runs would write through them."""
        problem = untrusted_dir(folder)
        if problem is None:
            return
        if problem.startswith("is owned"):
            fix = "use a workspace of your own: pass --workspace DIR or set TUNEASSIST_HOME"
        else:
            fix = f"make it private with: chmod go-w {folder}"
        raise UserError(f"{what} {folder} {problem}, who could plant files or links in it; {fix}")

    def _damaged(self, why: str) -> UserError:
        p = self.db_path
        return UserError(
            f"{p} {why}; it was left untouched: move it aside (mv {p} {p}.bad) to start a new store there, "
            "or pass another --workspace DIR"
        )

    def _foreign(self, tables: list[str] | set[str]) -> UserError:
        names = ", ".join(sorted(tables)[:5])
        return self._damaged(f"is not a tuneassist database (it holds other tables: {names})")

    def _check_file(self) -> None:
        """Reject a foreign or truncated file before SQLite opens it (and might write to it)."""
        try:
            size = self.db_path.stat().st_size
            if size == 0:
                return  # brand new (or a placeholder we created): nothing to lose
            with open(self.db_path, "rb") as f:
                header = f.read(100)
        except IsADirectoryError:
            raise self._damaged("is a folder, not a database") from None
        except OSError as e:
            raise UserError(f"cannot read {self.db_path} ({e.strerror}); check its permissions") from None
        if not header.startswith(_SQLITE_MAGIC[: len(header)]) or len(header) < len(_SQLITE_MAGIC):
            raise self._damaged("is not a tuneassist database (not an SQLite file)")
        if len(header) < 100:
            raise self._damaged("is truncated (shorter than an SQLite header)")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        if page_size < 512 or page_size & (page_size - 1):
            raise self._damaged("is damaged (bad SQLite header)")
        n_pages = int.from_bytes(header[28:32], "big")
        header_size_valid = header[24:28] == header[92:96] and n_pages > 0
        if size % page_size or (header_size_valid and size < n_pages * page_size):
            raise self._damaged("is truncated")
        app_id = int.from_bytes(header[68:72], "big")
        if app_id not in (0, APPLICATION_ID):
            raise self._damaged("is not a tuneassist database (it belongs to another program)")

    def _writable(self) -> bool:
        return os.access(self.workspace, os.W_OK) and os.access(self.db_path, os.W_OK)

    def _connect(self) -> sqlite3.Connection:
        if not self._writable():
            return self._connect_read_only()
        try:
            con = sqlite3.connect(
                self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Refuse a foreign database before anything (like switching to WAL) could write to it.
            app_id = self._retry(lambda: con.execute("PRAGMA application_id").fetchone()[0])
            if app_id != APPLICATION_ID:
                tables = self._retry(
                    lambda: [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                )
                if tables:
                    con.close()
                    raise self._foreign(tables)
            self._retry(lambda: self._set_wal(con))
            con.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
            con.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            if self._disk_full(e):  # SQLite cannot even make its -shm file: read what is there
                with contextlib.suppress(Exception):
                    con.close()
                return self._connect_read_only(full=True)
            if "unable to open" in str(e).lower():
                raise UserError(f"cannot open {self.db_path} ({e}); check its permissions") from None
            raise self._damaged(f"cannot be opened as a database ({e})") from None
        return con

    def _disk_full(self, e: BaseException) -> bool:
        """Whether an SQLite error came from a full disk (not a damaged file: never say "move it aside")."""
        msg = str(e).lower()
        if "full" in msg:
            return True
        try:
            return "i/o" in msg and shutil.disk_usage(self.workspace).free < 1 << 20
        except OSError:
            return False

    def _connect_read_only(self, full: bool = False) -> sqlite3.Connection:
        """Open the database for reading only (the workspace or the file is not writable here).

        SQLite reads a WAL database read-only when its -shm file exists or can be created; otherwise the
        file is opened as immutable, which is exact only while no -wal file holds unmerged changes, so
        a non-empty -wal is refused rather than silently ignored.
        """
        self.read_only = True
        if full:
            free = shutil.disk_usage(self.workspace).free
            self.read_only_why = f"is on a full disk ({free // 1024} KiB free)"
            fix = f"free some space on the disk holding {self.workspace}"
        else:
            self.read_only_why = "is read-only here"
            fix = f"make {self.workspace} writable"
        uri = "file:" + urllib.parse.quote(str(self.db_path.resolve())) + "?mode=ro"
        wal = self.db_path.with_name(DB_NAME + "-wal")

        def open_(u: str) -> sqlite3.Connection:
            con = sqlite3.connect(u, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                  check_same_thread=False)  # fmt: skip
            con.row_factory = sqlite3.Row
            try:
                app_id = self._retry(lambda: con.execute("PRAGMA application_id").fetchone()[0])
                if app_id != APPLICATION_ID:
                    tables = [
                        r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                    ]
                    raise self._foreign(tables) if tables else self._damaged("holds no tuneassist store")
            except BaseException:
                con.close()
                raise
            return con

        try:
            try:
                return open_(uri)
            except sqlite3.OperationalError:
                if wal.exists() and wal.stat().st_size > 0:
                    raise UserError(
                        f"{self.db_path} {self.read_only_why} and its latest changes are still in "
                        f"{wal.name}; {fix} to read the runs"
                    ) from None
                return open_(uri + "&immutable=1")
        except sqlite3.DatabaseError as e:
            raise self._damaged(f"cannot be opened as a database ({e})") from None

    @staticmethod
    def _set_wal(con: sqlite3.Connection) -> None:
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            con.execute("PRAGMA journal_mode = WAL")

    def _migrate(self) -> None:
        def check_and_migrate(con: sqlite3.Connection) -> None:
            app_id = con.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if app_id != APPLICATION_ID:
                if tables:
                    raise self._foreign(tables)
                con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                con.execute("INSERT INTO schema_version VALUES (0)")
            row = con.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"{self.db_path} was written by a newer tuneassist (schema v{version}; this one knows up "
                    f"to v{SCHEMA_VERSION}); upgrade tuneassist or pass another --workspace DIR"
                )
            for i in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("UPDATE schema_version SET version = ?", (i + 1,))

        # Cheap read first: only take the write lock when there is something to do.
        def current(con: sqlite3.Connection) -> tuple[int, int | None]:
            app_id = con.execute("PRAGMA application_id").fetchone()[0]
            if app_id != APPLICATION_ID:
                return app_id, None
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_version" not in tables:
                raise self._damaged("is damaged (its schema_version table is missing)")
            row = con.execute("SELECT version FROM schema_version").fetchone()
            return app_id, None if row is None else int(row[0])

        app_id, version = self._read(current)
        if app_id == APPLICATION_ID and version is not None and version > SCHEMA_VERSION:
            raise UserError(
                f"{self.db_path} was written by a newer tuneassist (schema v{version}; this one knows up "
                f"to v{SCHEMA_VERSION}); upgrade tuneassist or pass another --workspace DIR"
            )
        if (app_id, version) == (APPLICATION_ID, SCHEMA_VERSION):
            self._read(self._check_schema)
            return
        if self.read_only:
            raise UserError(
                f"{self.db_path} needs an upgrade to schema v{SCHEMA_VERSION} but {self.workspace} is "
                "read-only; make it writable once (this tuneassist then migrates it)"
            )
        self._write(check_and_migrate)
        self._read(self._check_schema)

    def _check_schema(self, con: sqlite3.Connection) -> None:
        """Refuse a store whose tables lack columns this version reads (a damaged file, or one from a
        development build under the same schema number) instead of failing later mid-command."""
        for table, expected in _expected_columns().items():
            have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
            missing = sorted(expected - have)
            if missing:
                what = f"table {table} lacks {', '.join(missing)}" if have else f"table {table} is missing"
                raise self._damaged(f"is damaged or from an incompatible tuneassist ({what})")

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- transactions
    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Run fn, retrying on SQLITE_BUSY beyond the busy timeout (e.g. WAL recovery, snapshot races)."""
        deadline = time.monotonic() + RETRY_DEADLINE_S
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _is_busy(e):
                    raise
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{self.db_path} stayed locked by another process for over {RETRY_DEADLINE_S:.0f} s; "
                        "try again (a stuck process holding it can be found with: fuser "
                        + str(self.db_path)
                        + ")"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _run(self, fn: Callable[[sqlite3.Connection], Any], write: bool) -> Any:
        if write and self.read_only:
            fix = (
                "free some space on it"
                if "full" in self.read_only_why
                else "make it writable (chmod u+w, or remount it read-write)"
            )
            raise UserError(
                f"workspace {self.workspace} {self.read_only_why}: its runs can be listed but not started, "
                f"cancelled or resumed; {fix} or pass another --workspace DIR"
            )

        def attempt() -> Any:
            con = self._con
            if con is None:
                raise RuntimeError("store is closed")
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(con)
                con.execute("COMMIT")
                return result
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise

        with self._lock:
            try:
                return self._retry(attempt)
            except sqlite3.DatabaseError as e:
                msg = str(e).lower()
                if "readonly" in msg or "unable to open" in msg:
                    raise UserError(f"cannot write {self.db_path} ({e}); check its permissions") from None
                if "disk is full" in msg or "disk i/o" in msg:
                    raise UserError(f"cannot write {self.db_path} ({e}); free some disk space") from None
                if not ("malformed" in msg or "not a database" in msg):
                    raise  # a bug of ours (e.g. a bad binding) is not a damaged file: never say "move it"
                raise self._damaged(f"is damaged ({e})") from None

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """One write transaction (BEGIN IMMEDIATE: the lock is taken up front, so no upgrade deadlocks)."""
        return self._run(fn, write=True)

    def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """One read transaction: a consistent snapshot."""
        return self._run(fn, write=False)

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn(connection) in one retried BEGIN IMMEDIATE transaction and return its result."""
        return self._write(fn)

    def read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn(connection) in one read transaction and return its result."""
        return self._read(fn)

    # ----------------------------------------------------------------- folders
    def run_dir(self, run_id: int, create: bool = True) -> Path:
        """The run's folder (checkpoint.pt, worker.log), private to the user."""
        d = self.workspace / "runs" / str(int(run_id))
        if create and not d.exists():
            for folder in (d.parent, d):  # mkdir(parents=True) would leave runs/ at the umask's 0755
                if not folder.exists():
                    folder.mkdir(exist_ok=True, mode=0o700)
                    with contextlib.suppress(OSError):
                        folder.chmod(0o700)
        return d

    def _new_run_dir(self, run_id: int) -> Path:
        """Create the folder of a run just inserted, fresh (never reuse one that was already there: it
        may hold links planted by someone else, or files of another store's run with the same id, which
        is moved aside as runs/N.stale-TIME with a warning)."""
        runs = self.workspace / "runs"
        with contextlib.suppress(FileExistsError):
            os.mkdir(runs, 0o700)
            with contextlib.suppress(OSError):
                os.chmod(runs, 0o700)  # mkdir's mode is masked by the umask
        self._check_trusted(runs, "run folder")
        d = runs / str(int(run_id))
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            aside = runs / f"{int(run_id)}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
            n = 1
            while os.path.lexists(aside):
                n += 1
                aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
            os.rename(d, aside)
            warnings.warn(
                f"{d} existed before run {run_id} was created (left by another store, or planted); "
                f"moved it aside to {aside}",
                stacklevel=2,
            )
            os.mkdir(d, 0o700)
        with contextlib.suppress(OSError):
            os.chmod(d, 0o700)
        return d

    def checkpoint_path(self, run_id: int) -> Path:
        return self.run_dir(run_id, create=False) / "checkpoint.pt"

    def log_path(self, run_id: int) -> Path:
        return self.run_dir(run_id, create=False) / "worker.log"

    # ----------------------------------------------------------------- settings
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self._read(lambda c: c.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone())
        return default if row is None else row[0]

    def set_setting(self, key: str, value: str | None) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if value is None:
                c.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                c.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

        self._write(fn)

    # ----------------------------------------------------------------- sessions
    def create_session(
        self,
        name: str | None = None,
        data: str | None = None,
        model: str | None = None,
        state: dict | None = None,
    ) -> int:
        return self._write(
            lambda c: (
                c.execute(
                    "INSERT INTO sessions (name, created, data, model, state) VALUES (?, ?, ?, ?, ?)",
                    (name, time.time(), data, model, json.dumps(state or {})),
                ).lastrowid
            )
        )

    def get_session(self, session: int | str) -> dict[str, Any]:
        """A session by id or name; UserError when there is none."""

        def fn(c: sqlite3.Connection) -> sqlite3.Row | None:
            if (isinstance(session, int) or str(session).isdigit()) and 0 <= int(session) < 2**63:
                row = c.execute("SELECT * FROM sessions WHERE id = ?", (int(session),)).fetchone()
                if row is not None:
                    return row
            try:
                str(session).encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes from argv: no stored name can match
                return None
            return c.execute(
                "SELECT * FROM sessions WHERE name = ? ORDER BY id DESC LIMIT 1", (str(session),)
            ).fetchone()

        row = self._read(fn)
        if row is None:
            raise UserError(
                f"no tuning session {session!r} in {self.workspace}; list runs with: tuneassist runs"
            )
        d = dict(row)
        d["state"] = _loads(d["state"]) or {}
        return d

    def list_sessions(self) -> list[dict[str, Any]]:
        rows = self._read(lambda c: c.execute("SELECT * FROM sessions ORDER BY id").fetchall())
        out = []
        for r in rows:
            d = dict(r)
            d["state"] = _loads(d["state"]) or {}
            out.append(d)
        return out

    def update_session(self, session_id: int, **fields: Any) -> None:
        """Set name/data/model/state (state is JSON-encoded)."""
        allowed = {"name", "data", "model", "state"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown session field(s) {sorted(bad)}")
        if "state" in fields:
            fields["state"] = json.dumps(fields["state"])
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._write(
            lambda c: c.execute(f"UPDATE sessions SET {cols} WHERE id = ?", (*fields.values(), session_id))
        )

    # ----------------------------------------------------------------- runs
    def add_run(
        self,
        spec: dict[str, Any],
        kind: str = "train",
        session_id: int | None = None,
        reuse_active: bool = False,
    ) -> int:
        """Store a run as queued and return its id.

        With reuse_active, a queued or running run of the same session, kind and spec is returned instead
        of a new one, checked and inserted in one transaction: two windows launching the same checklist
        step at once start its runs once.
        """
        text = json.dumps(spec)

        def fn(c: sqlite3.Connection) -> tuple[int, bool]:
            if reuse_active and session_id is not None:
                row = c.execute(
                    "SELECT id FROM runs WHERE session_id = ? AND kind = ? AND spec = ? "
                    "AND status IN ('queued', 'running') ORDER BY id LIMIT 1",
                    (session_id, kind, text),
                ).fetchone()
                if row is not None:
                    return int(row[0]), False
            rid = c.execute(
                "INSERT INTO runs (session_id, kind, spec, status, created) VALUES (?, ?, ?, 'queued', ?)",
                (session_id, kind, text, time.time()),
            ).lastrowid
            return int(rid), True

        run_id, inserted = self._write(fn)
        if inserted:
            try:
                self._new_run_dir(run_id)
            except BaseException as e:
                self._write(lambda c: c.execute("DELETE FROM runs WHERE id = ?", (run_id,)))
                if isinstance(e, OSError):
                    folder = self.workspace / "runs" / str(run_id)
                    raise UserError(
                        f"cannot create the run folder {folder} ({e.strerror}); "
                        f"make {self.workspace} writable"
                    ) from None
                raise
        return run_id

    def add_tracked_run(self, spec: dict[str, Any], info: dict[str, Any], kind: str = "track") -> int:
        """Store a run that the user's own process trains and logs (`tuneassist.track`): running from the
        start, attempt 1, no device slot and no worker pid (no worker runs it: its liveness is its
        heartbeat, so a script that dies shows `lost` after the heartbeat timeout)."""
        spec_text, info_text = json.dumps(spec), json.dumps(info)

        def fn(c: sqlite3.Connection) -> int:
            now = time.time()
            return int(
                c.execute(
                    "INSERT INTO runs (kind, spec, status, host, heartbeat, attempt, created, started, info) "
                    "VALUES (?, ?, 'running', ?, ?, 1, ?, ?, ?)",
                    (kind, spec_text, socket.gethostname(), now, now, now, info_text),
                ).lastrowid
            )

        run_id = self._write(fn)
        try:
            self._new_run_dir(run_id)
        except OSError as e:
            self._write(lambda c: c.execute("DELETE FROM runs WHERE id = ?", (run_id,)))
            raise UserError(
                f"cannot create the run folder {self.workspace / 'runs' / str(run_id)} ({e.strerror}); "
                f"make {self.workspace} writable"
            ) from None
        return run_id

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["spec"] = _loads(d["spec"])
        d["outcome"] = _loads(d["outcome"])
        d["info"] = _loads(d["info"])
        d["cancel_requested"] = bool(d["cancel_requested"])
        d["resume"] = bool(d["resume"])
        return d

    def get_run(self, run_id: int, refresh: bool = True) -> dict[str, Any]:
        """One run as a dict (spec/outcome/info decoded); UserError when there is none."""
        if refresh:
            self.refresh_lost([run_id])
        ok = -(2**63) <= int(run_id) < 2**63  # beyond SQLite's integers: no such run, not an overflow
        row = (
            self._read(lambda c: c.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone())
            if ok
            else None
        )
        if row is None:
            raise UserError(f"no run {run_id} in {self.workspace}; list runs with: tuneassist runs")
        return self._overlay(self._run_dict(row))

    def _overlay(self, run: dict[str, Any]) -> dict[str, Any]:
        """Show a run found lost as lost even when this store could not record it (read-only, disk full)."""
        why = self._lost_overlay.get(run["id"])
        if why is not None and run["status"] == "running":
            run["status"] = "lost"
            run["error"] = why
        return run

    def list_runs(
        self,
        session: int | str | None = None,
        status: str | Sequence[str] | None = None,
        refresh: bool = True,
    ) -> list[dict[str, Any]]:
        """Runs, oldest first, optionally filtered by session (id or name) and status(es)."""
        if refresh:
            self.refresh_lost()
        where, args = [], []
        if session is not None:
            where.append("session_id = ?")
            args.append(self.get_session(session)["id"])
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise UserError(f"unknown run status {bad[0]!r}; use one of {', '.join(STATUSES)}")
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args.extend(statuses)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        rows = self._read(lambda c: c.execute(sql, args).fetchall())
        return [self._overlay(self._run_dict(r)) for r in rows]

    def update_run(self, run_id: int, _only_if: dict[str, Any] | None = None, **fields: Any) -> bool:
        """Set columns of one run (dicts are JSON-encoded); with _only_if, only when those columns match.

        Returns whether a row was changed: the compare-and-set lets a worker act only while it still owns
        its run (status running, same attempt).
        """
        for k in ("spec", "outcome", "info"):
            if k in fields and fields[k] is not None and not isinstance(fields[k], str):
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k} = ?" for k in fields)
        where, args = ["id = ?"], [int(run_id)]
        for k, v in (_only_if or {}).items():
            where.append(f"{k} IS ?")
            args.append(v)
        sql = f"UPDATE runs SET {cols} WHERE {' AND '.join(where)}"
        return bool(self._write(lambda c: c.execute(sql, (*fields.values(), *args)).rowcount))

    # ----------------------------------------------------------------- liveness
    def refresh_lost(self, run_ids: Sequence[int] | None = None) -> list[int]:
        """Mark running runs whose worker vanished (pid gone, heartbeat too old) as lost; return their ids."""
        timeout = heartbeat_timeout()

        def candidates(c: sqlite3.Connection) -> list[sqlite3.Row]:
            sql = "SELECT id, pid, host, heartbeat, attempt FROM runs WHERE status = 'running'"
            if run_ids is not None:
                sql += f" AND id IN ({', '.join(str(int(i)) for i in run_ids) or 'NULL'})"
            return c.execute(sql).fetchall()

        rows = self._read(candidates)
        if not rows:
            return []
        now = time.time()
        host = socket.gethostname()
        dead: dict[int, tuple[int, str]] = {}
        for r in rows:
            why = _vanished(r["pid"], r["host"], r["heartbeat"], now, timeout, host)
            if why:
                hint = f"log: {self.log_path(r['id'])}; resume it with: tuneassist runs resume {r['id']}"
                dead[r["id"]] = (r["attempt"], f"{why} ({hint})")
        if not dead:
            return []
        if self.read_only:
            note = f" (not recorded: the workspace {self.read_only_why})"
            self._lost_overlay.update({i: why + note for i, (_, why) in dead.items()})
            return list(dead)

        def mark(c: sqlite3.Connection) -> list[int]:
            lost = []
            for run_id, (attempt, why) in dead.items():
                n = c.execute(
                    "UPDATE runs SET status = 'lost', ended = ?, error = ? "
                    "WHERE id = ? AND status = 'running' AND attempt = ?",
                    (time.time(), why, run_id, attempt),
                ).rowcount
                if n:
                    lost.append(run_id)
            return lost

        try:
            return self._write(mark)
        except UserError as e:  # e.g. the disk is full: readers still see the run as lost
            self._lost_overlay.update({i: f"{why} (not recorded: {e})" for i, (_, why) in dead.items()})
            return list(dead)

    # ----------------------------------------------------------------- cancel / claims
    def request_cancel(self, run_id: int) -> str:
        """Cancel a run: queued/lost ones at once, running ones by flag (the worker stops gracefully).

        Returns the status the run is in afterwards ('cancelled' or 'running').
        """
        self.refresh_lost([run_id])

        def fn(c: sqlite3.Connection) -> str:
            row = c.execute("SELECT status FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if row is None:
                raise UserError(f"no run {run_id} in {self.workspace}; list runs with: tuneassist runs")
            status = row[0]
            if status in ("queued", "lost"):
                c.execute(
                    "UPDATE runs SET status = 'cancelled', cancel_requested = 1, ended = ?, "
                    "error = CASE WHEN status = 'lost' THEN error ELSE NULL END WHERE id = ?",
                    (time.time(), run_id),
                )
                return "cancelled"
            if status == "running":
                c.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
                return "running"
            raise UserError(f"run {run_id} already ended ({status}); nothing to cancel")

        return self._write(fn)

    def claim_queued(
        self,
        slots_for: Callable[[dict[str, Any]], tuple[list[str], int]],
        fits: int | Fits,
        only: int | None = None,
        handed: list[int] | None = None,
    ) -> list[tuple[int, list[str], int]]:
        """Move queued runs whose devices have room to running, in one transaction (race-free).

        slots_for(spec) gives (candidate slot keys, how many of them the run needs); fits(slot, specs of
        the runs on it, spec) says whether the run may join that slot (an int: at most that many runs
        per slot). Runs are taken oldest first; a run that does not fit is skipped, so a busy GPU never
        blocks a CPU run. Returns (run id, claimed slots, attempt) per claim.

        With `handed` (a list), the first claim goes to the workspace's standby worker when one is
        registered and alive on this machine: the run gets its pid and its id is appended to `handed`;
        the standby is unregistered in the same transaction, so it can never be handed two runs.
        """
        host = socket.gethostname()
        if isinstance(fits, int):
            fits = count_limit(fits)

        def fn(c: sqlite3.Connection) -> list[tuple[int, list[str], int]]:
            on: dict[str, list[dict[str, Any]]] = {}
            for dev, spec_text in c.execute(
                "SELECT device, spec FROM runs WHERE status = 'running' AND device IS NOT NULL"
            ):
                for slot in dev.split(","):
                    on.setdefault(slot, []).append(json.loads(spec_text))
            sql = "SELECT id, spec, attempt FROM runs WHERE status = 'queued'"
            args: tuple[Any, ...] = ()
            if only is not None:
                sql += " AND id = ?"
                args = (only,)
            claims = []
            for run_id, spec_text, attempt in c.execute(sql + " ORDER BY id", args).fetchall():
                spec = json.loads(spec_text)
                candidates, need = slots_for(spec)
                free = [s for s in candidates if fits(s, on.get(s, []), spec)]
                if len(free) < need:
                    continue
                # Prefer the least loaded slots so several GPUs share the queue evenly.
                chosen = sorted(free, key=lambda s: (len(on.get(s, [])), candidates.index(s)))[:need]
                for s in chosen:
                    on.setdefault(s, []).append(spec)
                now = time.time()
                c.execute(
                    "UPDATE runs SET status = 'running', device = ?, host = ?, pid = NULL, heartbeat = ?, "
                    "started = ?, ended = NULL, error = NULL, outcome = NULL, attempt = attempt + 1 "
                    "WHERE id = ?",
                    (",".join(chosen), host, now, now, run_id),
                )
                claims.append((run_id, chosen, attempt + 1))
            if claims and handed is not None:
                pid = self._live_standby(c, host)
                if pid is not None:
                    c.execute("UPDATE runs SET pid = ? WHERE id = ?", (pid, claims[0][0]))
                    c.execute("DELETE FROM settings WHERE key = 'standby'")
                    handed.append(claims[0][0])
            return claims

        return self._write(fn) if self.has_queued() else []

    def has_queued(self, or_running: bool = False) -> bool:
        statuses = "('queued', 'running')" if or_running else "('queued')"
        sql = f"SELECT 1 FROM runs WHERE status IN {statuses} LIMIT 1"
        return self._read(lambda c: c.execute(sql).fetchone() is not None)

    # ----------------------------------------------------------------- the standby worker
    # One pre-started worker per workspace (see tuneassist.runs.worker), registered in `settings` as
    # 'host:pid' and handed the next claimed run inside the claim's own transaction.
    @staticmethod
    def _live_standby(c: sqlite3.Connection, host: str, clean: bool = True) -> int | None:
        row = c.execute("SELECT value FROM settings WHERE key = 'standby'").fetchone()
        if row is None:
            return None
        who, _, pid = str(row[0]).rpartition(":")
        if who == host and pid.isdigit() and pid_alive(int(pid)):
            return int(pid)
        if who == host and clean:  # it died without retiring
            c.execute("DELETE FROM settings WHERE key = 'standby'")
        return None

    def standby_registered(self) -> bool:
        """Whether a live standby worker of this machine waits for a run (or is still loading)."""
        return self._read(lambda c: self._live_standby(c, socket.gethostname(), clean=False) is not None)

    def register_standby(self, pid: int) -> bool:
        """Become the workspace's standby; False when a live one is registered already."""
        host = socket.gethostname()

        def fn(c: sqlite3.Connection) -> bool:
            if self._live_standby(c, host) is not None:
                return False
            c.execute(
                "INSERT INTO settings (key, value) VALUES ('standby', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (f"{host}:{pid}",),
            )
            return True

        return self._write(fn)

    def retire_standby(self, pid: int) -> bool:
        """Stop being the standby: True if still registered (now removed), False if a run was handed."""
        me = f"{socket.gethostname()}:{pid}"
        return self._write(
            lambda c: (
                c.execute("DELETE FROM settings WHERE key = 'standby' AND value = ?", (me,)).rowcount == 1
            )
        )

    def handed_run(self, pid: int) -> int | None:
        """The run handed to the standby with this pid on this machine, if any."""
        row = self._read(
            lambda c: c.execute(
                "SELECT id FROM runs WHERE status = 'running' AND pid = ? AND host = ? ORDER BY id LIMIT 1",
                (pid, socket.gethostname()),
            ).fetchone()
        )
        return None if row is None else int(row[0])

    # ----------------------------------------------------------------- metrics
    def metrics_since(
        self, run_id: int, last_step: int = -1, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Metric rows of a run with step > last_step, by step: the live readers' poll.

        One row per optimiser step (train_loss etc.); evaluations fill val_loss/val_acc of the row at their
        step. A worker commits a step's row only once a later step exists, so a row a reader has seen never
        changes afterwards (except when a resumed run redoes steps after its checkpoint: watch 'attempt').
        """
        sql = f"SELECT {', '.join(METRIC_FIELDS)} FROM metrics WHERE run_id = ? AND step > ? ORDER BY step"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._read(lambda c: c.execute(sql, (int(run_id), int(last_step))).fetchall())
        return [dict(r) for r in rows]

    def metrics(self, run_id: int) -> list[dict[str, Any]]:
        """All metric rows of a run, by step."""
        return self.metrics_since(run_id, -(2**62))

    def last_metric(self, run_id: int) -> dict[str, Any] | None:
        """The run's row with the highest step, or None."""
        sql = f"SELECT {', '.join(METRIC_FIELDS)} FROM metrics WHERE run_id = ? ORDER BY step DESC LIMIT 1"
        row = self._read(lambda c: c.execute(sql, (int(run_id),)).fetchone())
        return None if row is None else dict(row)

    def metric_count(self, run_id: int) -> int:
        return self._read(
            lambda c: c.execute("SELECT count(*) FROM metrics WHERE run_id = ?", (run_id,)).fetchone()[0]
        )


def _vanished(
    pid: int | None, run_host: str | None, heartbeat: float | None, now: float, timeout: float, host: str
) -> str | None:
    """Why a running run's worker counts as gone, or None while it looks alive."""
    if heartbeat is None or now - heartbeat > timeout:
        age = "never" if heartbeat is None else f"{now - heartbeat:.0f} s ago"
        who = f"worker process {pid}" if pid else "its worker"
        return f"{who} stopped sending heartbeats (last {age})"
    if pid and run_host == host and not pid_alive(pid):
        return f"worker process {pid} is gone (killed or crashed)"
    return None


def pid_alive(pid: int) -> bool:
    """Whether pid is a live (non-zombie) tuneassist worker on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else: cannot be ours, but do not guess
    proc = Path("/proc") / str(pid)
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return False
            cmdline = (proc / "cmdline").read_bytes()
        except PermissionError:
            return True  # cannot look: the heartbeat decides
        except (OSError, IndexError):
            return False  # it exited while we looked
        # pid reuse: a different program now has this pid
        return b"tuneassist.runs.worker" in cmdline
    return True


class MetricWriter:
    """Buffers a worker's metric rows and commits them in batches (every ~0.5 s or N rows).

    The training thread only appends a tuple to a deque (about a microsecond, no lock); a background
    thread merges and commits, so neither SQLite nor a busy database ever stalls training. A step's row
    is held back until a later step arrives, so an evaluation of that step still merges into it before
    any reader can see the row (readers polling `step > last_seen` never miss a value). While committing
    it also refreshes the run's summary columns (last step, best val loss/acc, images/s) used by `runs`.
    With attempt set, rows are written only while the run is still this attempt's (status running, same
    attempt); otherwise they are dropped and `lost_ownership` is set.
    """

    _TRAIN, _EVAL = 0, 1

    def __init__(
        self,
        store: Store,
        run_id: int,
        attempt: int | None = None,
        interval: float = 0.5,
        max_rows: int = 500,
        background: bool = True,
    ) -> None:
        self.store = store
        self.run_id = int(run_id)
        self.attempt = attempt
        self.interval = interval
        self.max_rows = max_rows
        self.lost_ownership = False
        self.rows_written = 0
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()  # append/popleft are atomic
        self._pending: dict[int, dict[str, Any]] = {}  # merged rows not yet committed (flush lock)
        self._late: list[dict[str, Any]] = []  # evaluations of steps already committed
        self._committed_max = -(2**62)
        self._max_seen = -(2**62)
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name=f"metrics-{run_id}", daemon=True)
            self._thread.start()

    # -- called from the training thread: no locks, no SQLite
    def add_train(
        self,
        step: int,
        epoch: float | None = None,
        lr: float | None = None,
        momentum: float | None = None,
        train_loss: float | None = None,
        images_per_s: float | None = None,
        wall: float | None = None,
    ) -> None:
        """A training step's values."""
        if self._error is not None:
            raise RuntimeError(f"metric writer failed: {self._error}") from self._error
        self._events.append((self._TRAIN, step, epoch, lr, momentum, train_loss, images_per_s, wall))
        if len(self._events) >= self.max_rows:
            self._wake.set()

    def add_eval(
        self,
        step: int,
        val_loss: float | None = None,
        val_acc: float | None = None,
        epoch: float | None = None,
        wall: float | None = None,
    ) -> None:
        """An evaluation belonging to a step's row (epoch/wall only fill a row that has no train values)."""
        if self._error is not None:
            raise RuntimeError(f"metric writer failed: {self._error}") from self._error
        self._events.append((self._EVAL, step, val_loss, val_acc, epoch, wall))

    # -- merging (under the flush lock)
    def _drain(self) -> None:
        events, pending = self._events, self._pending
        while events:
            ev = events.popleft()
            step = int(ev[1])
            row = pending.get(step)
            if row is None and step <= self._committed_max:
                if ev[0] == self._EVAL:  # an evaluation of an older step: update the stored row in place
                    self._late.append({"step": step, "val_loss": ev[2], "val_acc": ev[3]})
                continue
            if row is None:
                row = pending[step] = {"step": step}
            if ev[0] == self._TRAIN:
                for k, v in zip(_TRAIN_FIELDS, ev[2:], strict=True):
                    if v is not None:
                        row[k] = v
            else:
                for k, v in (("val_loss", ev[2]), ("val_acc", ev[3])):
                    if v is not None:
                        row[k] = v
                for k, v in (("epoch", ev[4]), ("wall", ev[5])):
                    if v is not None and row.get(k) is None:
                        row[k] = v
            if step > self._max_seen:
                self._max_seen = step

    def reset_after(self, step: int) -> None:
        """Drop every row past `step` (stored and buffered): a resumed run redoes those steps."""
        self.flush(final=True)
        with self._flush_lock:
            self._committed_max = min(self._committed_max, step)
            self._max_seen = min(self._max_seen, step)

            def fn(c: sqlite3.Connection) -> None:
                c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (self.run_id, step))
                _refresh_summary(c, self.run_id)

            self.store.write(fn)

    # -- flushing
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except BaseException as e:  # surfaced to the training thread on its next add
                self._error = e
                return

    def flush(self, final: bool = False) -> int:
        """Commit buffered rows (all of them when final, else all but the newest step). Returns the count."""
        with self._flush_lock:
            self._drain()
            if final:
                keep: dict[int, dict[str, Any]] = {}
                rows = sorted(self._pending.values(), key=lambda r: r["step"])
            else:
                newest = self._max_seen
                keep = {newest: self._pending[newest]} if newest in self._pending else {}
                rows = sorted((r for st, r in self._pending.items() if st != newest), key=lambda r: r["step"])
            late, self._late = self._late, []
            if not rows and not late:
                return 0
            self._pending = keep
            if self.lost_ownership:
                return 0
            written = self.store.write(lambda c: self._commit(c, rows, late))
            if written is None:
                self.lost_ownership = True
                return 0
            if rows:
                self._committed_max = max(self._committed_max, rows[-1]["step"])
            self.rows_written += written
            return written

    def _commit(
        self, c: sqlite3.Connection, rows: list[dict[str, Any]], late: list[dict[str, Any]]
    ) -> int | None:
        if self.attempt is not None:
            owner = c.execute("SELECT status, attempt FROM runs WHERE id = ?", (self.run_id,)).fetchone()
            if owner is None or owner[0] != "running" or owner[1] != self.attempt:
                return None
        cols = ", ".join(METRIC_FIELDS)
        marks = ", ".join("?" for _ in METRIC_FIELDS)
        # Upsert: a value already stored is only replaced by a non-null one.
        updates = ", ".join(f"{k} = COALESCE(excluded.{k}, {k})" for k in METRIC_FIELDS[1:])
        c.executemany(
            f"INSERT INTO metrics (run_id, {cols}) VALUES (?, {marks}) "
            f"ON CONFLICT(run_id, step) DO UPDATE SET {updates}",
            [(self.run_id, *(r.get(k) for k in METRIC_FIELDS)) for r in rows],
        )
        for r in late:
            c.execute(
                "UPDATE metrics SET val_loss = COALESCE(?, val_loss), val_acc = COALESCE(?, val_acc) "
                "WHERE run_id = ? AND step = ?",
                (r.get("val_loss"), r.get("val_acc"), self.run_id, r["step"]),
            )
        _update_summary(c, self.run_id, rows + late)
        return len(rows)

    def close(self) -> None:
        """Stop the background thread and commit everything left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush(final=True)
        if self._error is not None:
            raise RuntimeError(f"metric writer failed: {self._error}") from self._error


def _update_summary(c: sqlite3.Connection, run_id: int, rows: list[dict[str, Any]]) -> None:
    """Fold a batch into the run's summary columns (cheap `runs` listings without scanning metrics)."""
    stepped = [r for r in rows if r.get("train_loss") is not None or r.get("epoch") is not None]
    if stepped:
        last = max(stepped, key=lambda r: r["step"])
        c.execute(
            "UPDATE runs SET last_step = ?, last_epoch = COALESCE(?, last_epoch) "
            "WHERE id = ? AND (last_step IS NULL OR last_step <= ?)",
            (last["step"], last.get("epoch"), run_id, last["step"]),
        )
    train = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
    ips = [r["images_per_s"] for r in rows if r.get("images_per_s") is not None]
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    if train or ips:
        c.execute(
            "UPDATE runs SET last_train_loss = COALESCE(?, last_train_loss), "
            "images_per_s = COALESCE(?, images_per_s) WHERE id = ?",
            (train[-1] if train else None, ips[-1] if ips else None, run_id),
        )
    if losses:
        c.execute(
            "UPDATE runs SET best_val_loss = MIN(COALESCE(best_val_loss, ?1), ?1) WHERE id = ?2",
            (min(losses), run_id),
        )
    if accs:
        c.execute(
            "UPDATE runs SET best_val_acc = MAX(COALESCE(best_val_acc, ?1), ?1) WHERE id = ?2",
            (max(accs), run_id),
        )


def _refresh_summary(c: sqlite3.Connection, run_id: int) -> None:
    """Recompute the summary columns from the stored rows (after rows were dropped)."""
    c.execute(
        "UPDATE runs SET "
        "last_step = (SELECT MAX(step) FROM metrics WHERE run_id = ?1), "
        "last_epoch = (SELECT epoch FROM metrics WHERE run_id = ?1 ORDER BY step DESC LIMIT 1), "
        "last_train_loss = (SELECT train_loss FROM metrics WHERE run_id = ?1 AND train_loss IS NOT NULL "
        "  ORDER BY step DESC LIMIT 1), "
        "best_val_loss = (SELECT MIN(val_loss) FROM metrics WHERE run_id = ?1), "
        "best_val_acc = (SELECT MAX(val_acc) FROM metrics WHERE run_id = ?1), "
        "images_per_s = (SELECT images_per_s FROM metrics WHERE run_id = ?1 AND images_per_s IS NOT NULL "
        "  ORDER BY step DESC LIMIT 1) "
        "WHERE id = ?1",
        (run_id,),
    )


def elapsed(run: dict[str, Any], now: float | None = None) -> float | None:
    """Training time of a run over all its attempts (downtime between a loss and a resume excluded)."""
    if not run.get("started"):
        return None
    end = run.get("ended") or (now or time.time())
    if run["status"] == "queued":
        end = run["started"]
    return float(run.get("wall_base") or 0.0) + max(0.0, end - run["started"])


def fmt_time(seconds: float | None) -> str:
    """A run's elapsed time or ETA as h:mm:ss (m:ss under an hour): one format for the CLI and the TUI."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(max(0, seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ----------------------------------------------------------------------------- checkpoints, torch-free
_TORCH_DTYPE = re.compile(
    r"(u?int\d*|float\d*(_\w+)?|bfloat16|half|double|bool|complex\d*|cfloat|cdouble|chalf|bcomplex32|"
    r"bits\w+|q(u)?int\w+|long|short)"
)
_SAFE_BUILTINS = {"set", "frozenset", "bytearray", "complex", "slice"}


def _safe_global(module: str, name: str) -> bool:
    """Whether a pickle global is one a tensors-only checkpoint uses (torch's weights_only set, in kind)."""
    if (module, name) in (("collections", "OrderedDict"), ("torch._tensor", "_rebuild_from_type_v2")):
        return True
    if module in ("builtins", "__builtin__"):  # pickle protocol 2 writes the Python 2 name
        return name in _SAFE_BUILTINS
    if module == "torch._utils":
        return name.startswith("_rebuild_")
    if module in ("torch", "torch.cuda"):
        return (
            name.endswith(("Storage", "Tensor"))
            or name in ("Size", "device", "dtype")
            or _TORCH_DTYPE.fullmatch(name) is not None
        )
    return False


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint must not be loaded (truncated, damaged, or pickling more than tensors), or None.

    Torch-free, and it executes nothing: the zip archive's CRCs are checked and the pickle's opcodes are
    only listed, never run. The UI and `runs resume` use it to refuse a bad checkpoint at once with a
    clear reason; the worker's own load (torch.load weights_only=True) stays the real safety gate.
    """
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                return f"is damaged (bad checksum in {bad})"
            pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkls) != 1:
                return "is not a PyTorch checkpoint (no data.pkl inside)"
            data = zf.read(pkls[0])
    except FileNotFoundError:
        return "does not exist"
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
        return "is truncated or damaged (not a complete archive; a write was cut short)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    # Walk the opcodes with a shadow stack (values kept for strings only), as pickletools.dis does, so
    # STACK_GLOBAL's module and name are the real operands, not just the last strings seen.
    mark = object()
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    strings = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING")
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if not _safe_global(module, attr):
                    return f"holds a pickled object ({module}.{attr}), not just tensors"
            elif name == "STACK_GLOBAL":
                module, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                if not (isinstance(module, str) and isinstance(attr, str)):
                    return "holds a pickled object (a global it names indirectly), not just tensors"
                if not _safe_global(module, attr):
                    return f"holds a pickled object ({module}.{attr}), not just tensors"
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1] if stack else None
                continue
            before, after = op.stack_before, op.stack_after
            if pickletools.markobject in before or (name == "POP" and stack and stack[-1] is mark):
                while stack and stack[-1] is not mark:
                    stack.pop()
                if stack:
                    stack.pop()
                n_pop = before.index(pickletools.markobject) if pickletools.markobject in before else 0
            else:
                n_pop = len(before)
            top = stack[-1] if stack else None
            del stack[max(0, len(stack) - n_pop) :]
            if name in strings:
                stack.append(arg)
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg)))
            elif name == "DUP":
                stack.extend([top, top])
            else:
                stack.extend(mark if x is pickletools.markobject else None for x in after)
    except Exception as e:  # noqa: BLE001 - any parse failure means the pickle is damaged
        return f"is damaged (unreadable pickle: {type(e).__name__})"
    return None
