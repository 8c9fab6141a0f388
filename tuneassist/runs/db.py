"""Opening the store's SQLite file safely, migrating it, and running transactions on it.

Workers (writers) and the CLI/TUI (readers) never talk to each other; they only meet in this file. So
it has to stay consistent when processes die at any moment (WAL, short transactions) and must never
fail with "database is locked" (busy timeout, BEGIN IMMEDIATE for every write, retries on top). A
foreign, truncated or newer file is refused before SQLite could write to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from tuneassist.errors import UserError
from tuneassist.runs import schema
from tuneassist.runs.schema import APPLICATION_ID, DB_NAME
from tuneassist.runs.workspace import check_trusted, resolve_workspace

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 10_000
RETRY_DEADLINE_S = 120.0


def _is_busy(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("database is locked" in msg or "busy" in msg)


class Database:
    """The workspace's database file plus its per-run folders; safe to share between threads.

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
        # Runs found lost that a read-only store cannot mark: their error and info["lost_reason"].
        self._lost_overlay: dict[int, tuple[str, str]] = {}
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
        check_trusted(ws, "workspace")
        check_trusted(ws / "runs", "run folder")
        if not self.db_path.exists():
            try:
                fd = os.open(self.db_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
            except FileExistsError:
                pass  # another process created it first: fine
            except OSError as e:
                msg = f"cannot create {self.db_path} ({e.strerror}); pass a writable --workspace DIR"
                raise UserError(msg) from None

    def _damaged(self, why: str) -> UserError:
        p = self.db_path
        return UserError(
            f"{p} {why}; it was left untouched: move it aside (mv {p} {p}.bad) to start a new store there, "
            "or pass another --workspace DIR"
        )

    def _no_run(self, run_id: int) -> UserError:
        return UserError(f"no run {run_id} in {self.workspace}; list runs with: tuneassist runs")

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
        if not header.startswith(SQLITE_MAGIC[: len(header)]) or len(header) < len(SQLITE_MAGIC):
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
            self._refuse_newer(version)
            for i in range(version, schema.SCHEMA_VERSION):
                for statement in schema.MIGRATIONS[i].split(";"):
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
        if app_id == APPLICATION_ID and version is not None:
            self._refuse_newer(version)
        if (app_id, version) == (APPLICATION_ID, schema.SCHEMA_VERSION):
            self._read(self._check_schema)
            return
        if self.read_only:
            raise UserError(
                f"{self.db_path} needs an upgrade to schema v{schema.SCHEMA_VERSION} but {self.workspace} is "
                "read-only; make it writable once (this tuneassist then migrates it)"
            )
        self._write(check_and_migrate)
        self._read(self._check_schema)

    def _refuse_newer(self, version: int) -> None:
        """A store written by a newer tuneassist is never touched (its layout may mean other things)."""
        if version > schema.SCHEMA_VERSION:
            raise UserError(
                f"{self.db_path} was written by a newer tuneassist (schema v{version}; this one knows up "
                f"to v{schema.SCHEMA_VERSION}); upgrade tuneassist or pass another --workspace DIR"
            )

    def _check_schema(self, con: sqlite3.Connection) -> None:
        """Refuse a store whose tables lack columns this version reads (a damaged file, or one from a
        development build under the same schema number) instead of failing later mid-command."""
        for table, expected in schema.expected_columns().items():
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

    def __enter__(self) -> Self:
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
        check_trusted(runs, "run folder")
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
