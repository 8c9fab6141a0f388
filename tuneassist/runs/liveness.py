"""Liveness, claims and the standby worker: who runs what, and noticing a worker that vanished.

A run's status changes in one transaction each (claimed, handed to the standby, cancelled, marked
lost), so two launchers, a worker and a reader can race on it and the store still never shows a run
owned twice or lost while its worker lives.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from tuneassist.errors import UserError
from tuneassist.hardware import process_alive
from tuneassist.runs.db import Database
from tuneassist.runs.packing import Fits, count_limit
from tuneassist.runs.workspace import heartbeat_timeout

# Why a run was marked lost, kept in its `info` as "lost_reason" (the `error` sentence says it to the
# user): its heartbeat stopped, its worker process is gone, or the process id now runs another program.
LostReason = Literal["heartbeat", "gone", "pid_reused"]


class Liveness(Database):
    """The store's liveness checks and the transactions that move a run between owners."""

    def refresh_lost(self, run_ids: Sequence[int] | None = None) -> list[int]:
        """Mark running runs whose worker vanished (pid gone, heartbeat too old) as lost; return their ids.

        The reason is also kept as `info["lost_reason"]` (a LostReason), so code need not parse `error`."""
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
        reasons: dict[int, LostReason] = {}
        for r in rows:
            gone = _vanished(r["pid"], r["host"], r["heartbeat"], now, timeout, host)
            if gone:
                hint = f"log: {self.log_path(r['id'])}; resume it with: tuneassist runs resume {r['id']}"
                reasons[r["id"]], why = gone
                dead[r["id"]] = (r["attempt"], f"{why} ({hint})")
        if not dead:
            return []
        if self.read_only:
            note = f" (not recorded: the workspace {self.read_only_why})"
            self._lost_overlay.update({i: (why + note, reasons[i]) for i, (_, why) in dead.items()})
            return list(dead)

        def mark(c: sqlite3.Connection) -> list[int]:
            lost = []
            for run_id, (attempt, why) in dead.items():
                n = c.execute(
                    "UPDATE runs SET status = 'lost', ended = ?, error = ?, "
                    "info = CASE WHEN json_valid(COALESCE(info, '{}')) "
                    "THEN json_set(COALESCE(info, '{}'), '$.lost_reason', ?) ELSE info END "
                    "WHERE id = ? AND status = 'running' AND attempt = ?",
                    (time.time(), why, reasons[run_id], run_id, attempt),
                ).rowcount
                if n:
                    lost.append(run_id)
            return lost

        try:
            return self._write(mark)
        except UserError as e:  # e.g. the disk is full: readers still see the run as lost
            self._lost_overlay.update(
                {i: (f"{why} (not recorded: {e})", reasons[i]) for i, (_, why) in dead.items()}
            )
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
                raise self._no_run(run_id)
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

    def requeue_for_resume(self, run_id: int, keep_checkpoint: bool) -> int:
        """Queue a lost or cancelled run again (the worker resumes it); returns the step it goes on from.

        Without keep_checkpoint the run starts over from step 0 and its checkpoint columns are cleared.
        """

        def fn(c: sqlite3.Connection) -> int:
            row = c.execute(
                "SELECT status, checkpoint_step FROM runs WHERE id = ?", (int(run_id),)
            ).fetchone()
            if row is None:
                raise self._no_run(run_id)
            status, step = row
            if status not in ("lost", "cancelled"):
                hint = "it is still going" if status in ("queued", "running") else "start a new run instead"
                raise UserError(
                    f"run {run_id} is {status}; only lost or cancelled runs can be resumed ({hint})"
                )
            keep = int(keep_checkpoint)
            c.execute(
                "UPDATE runs SET status = 'queued', resume = ?, cancel_requested = 0, pid = NULL, "
                "ended = NULL, error = NULL, outcome = NULL, info = CASE WHEN json_valid(info) "
                "THEN json_remove(info, '$.lost_reason') ELSE info END, "
                "checkpoint_step = CASE WHEN ? THEN checkpoint_step END, "
                "checkpoint_epoch = CASE WHEN ? THEN checkpoint_epoch END WHERE id = ?",
                (keep, keep, keep, run_id),
            )
            return int(step or 0) if keep_checkpoint else 0

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


def _vanished(
    pid: int | None, run_host: str | None, heartbeat: float | None, now: float, timeout: float, host: str
) -> tuple[LostReason, str] | None:
    """Why a running run's worker counts as gone (a reason and its sentence), or None while it looks alive."""
    if heartbeat is None or now - heartbeat > timeout:
        age = "never" if heartbeat is None else f"{now - heartbeat:.0f} s ago"
        who = f"worker process {pid}" if pid else "its worker"
        return "heartbeat", f"{who} stopped sending heartbeats (last {age})"
    if pid and run_host == host and not pid_alive(pid):
        reason: LostReason = "pid_reused" if process_alive(pid) else "gone"
        return reason, f"worker process {pid} is gone (killed or crashed)"
    return None


def pid_alive(pid: int) -> bool:
    """Whether pid is a live (non-zombie) tuneassist worker on this machine: alive as
    tuneassist.hardware.process_alive says, and (where /proc shows it) still running the worker."""
    if not process_alive(pid):
        return False
    proc = Path("/proc") / str(pid)
    if proc.is_dir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except PermissionError:
            return True  # cannot look: the heartbeat decides
        except OSError:
            return False  # it exited while we looked
        if not cmdline:
            # Empty while the kernel sets up an exec: read right after Popen returns, a just-spawned
            # worker shows this about 3 times in 100 (measured), and must not be lost for it. A kernel
            # thread has none either, but never runs a run: the heartbeat decides then.
            return True
        # pid reuse: a different program now has this pid
        return b"tuneassist.runs.worker" in cmdline
    return True
