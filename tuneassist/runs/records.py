"""Settings, sessions and runs: the store's records, handed to readers as typed rows (`Run`).

Every run a reader gets comes through `_to_run`, after the liveness check (a run whose worker
vanished reads as lost, even in a store this process cannot write).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from tuneassist.errors import UserError
from tuneassist.runs.liveness import Liveness
from tuneassist.runs.rows import Run, loads, session_dict
from tuneassist.runs.schema import METRIC_FIELDS, STATUSES


def _row_id(rid: int | None) -> int:
    """The id SQLite gave the row an INSERT just made (a cursor's lastrowid is None only before one)."""
    if rid is None:
        raise RuntimeError("the run store's INSERT gave no row id")
    return rid

class Records(Liveness):
    """Reading and writing the settings, sessions, runs and metric rows."""

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
        return session_dict(row)

    def list_sessions(self) -> list[dict[str, Any]]:
        rows = self._read(lambda c: c.execute("SELECT * FROM sessions ORDER BY id").fetchall())
        return [session_dict(r) for r in rows]

    def session_rev(self, session_id: int) -> int | None:
        """The session's saved revision, read in SQL without decoding its state (asked on every UI
        poll); None when there is no such session."""
        row = self._read(
            lambda c: c.execute(
                "SELECT CASE WHEN json_valid(state) THEN json_extract(state, '$.rev') END "
                "FROM sessions WHERE id = ?",
                (int(session_id),),
            ).fetchone()
        )
        return None if row is None else int(row[0] or 0)

    def swap_session_state(self, session_id: int, rev: int, state: dict[str, Any]) -> bool:
        """Replace the session's state if its saved revision is still `rev`, in one write transaction
        (compare-and-swap: two windows can never overwrite each other's decisions); False otherwise."""
        text = json.dumps(state)

        def swap(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT state FROM sessions WHERE id = ?", (int(session_id),)).fetchone()
            current = json.loads(row[0] or "{}") if row else {}
            if int(current.get("rev") or 0) != rev:
                return False
            c.execute("UPDATE sessions SET state = ? WHERE id = ?", (text, int(session_id)))
            return True

        return bool(self._write(swap))

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
            return _row_id(rid), True

        run_id, inserted = self._write(fn)
        if inserted:
            self._folder_or_undo(run_id)
        return run_id

    def add_tracked_run(self, spec: dict[str, Any], info: dict[str, Any], kind: str = "track") -> int:
        """Store a run that the user's own process trains and logs (`tuneassist.track`): running from the
        start, attempt 1, no device slot and no worker pid (no worker runs it: its liveness is its
        heartbeat, so a script that dies shows `lost` after the heartbeat timeout)."""
        spec_text, info_text = json.dumps(spec), json.dumps(info)

        def fn(c: sqlite3.Connection) -> int:
            now = time.time()
            return _row_id(
                c.execute(
                    "INSERT INTO runs (kind, spec, status, host, heartbeat, attempt, created, started, info) "
                    "VALUES (?, ?, 'running', ?, ?, 1, ?, ?, ?)",
                    (kind, spec_text, socket.gethostname(), now, now, now, info_text),
                ).lastrowid
            )

        run_id = self._write(fn)
        self._folder_or_undo(run_id)
        return run_id

    def _folder_or_undo(self, run_id: int) -> None:
        """Make a just-inserted run's folder; when that fails, take the run back out (no run without
        its folder) and say why in one line."""
        try:
            self._new_run_dir(run_id)
        except BaseException as e:
            self._write(lambda c: c.execute("DELETE FROM runs WHERE id = ?", (run_id,)))
            if isinstance(e, OSError):
                folder = self.workspace / "runs" / str(run_id)
                raise UserError(
                    f"cannot create the run folder {folder} ({e.strerror}); make {self.workspace} writable"
                ) from None
            raise

    def _to_run(self, row: sqlite3.Row) -> Run:
        """A stored row as a Run: JSON columns decoded, and shown lost when found lost but not recorded
        (read-only store, full disk)."""
        d = dict(row)
        for k in ("spec", "outcome", "info"):
            d[k] = loads(d[k])
        d["cancel_requested"] = bool(d["cancel_requested"])
        d["resume"] = bool(d["resume"])
        lost = self._lost_overlay.get(d["id"])
        if lost is not None and d["status"] == "running":
            d["status"] = "lost"
            d["error"], reason = lost
            info = d["info"] if isinstance(d["info"], dict) else {}
            d["info"] = {**info, "lost_reason": reason}
        return Run.from_columns(d)

    def get_run(self, run_id: int, refresh: bool = True) -> Run:
        """One run (spec/outcome/info decoded); UserError when there is none."""
        if refresh:
            self.refresh_lost([run_id])
        ok = -(2**63) <= int(run_id) < 2**63  # beyond SQLite's integers: no such run, not an overflow
        row = (
            self._read(lambda c: c.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone())
            if ok
            else None
        )
        if row is None:
            raise self._no_run(run_id)
        return self._to_run(row)

    def list_runs(
        self,
        session: int | str | None = None,
        status: str | Sequence[str] | None = None,
        refresh: bool = True,
    ) -> list[Run]:
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
        return [self._to_run(r) for r in rows]

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
