"""The run store: schema, workspace handling, damaged files, batching, liveness, concurrency."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tuneassist.errors import UserError
from tuneassist.runs import schema as store_mod
from tuneassist.runs.schema import EvalValues, TrainValues
from tuneassist.runs.store import SCHEMA_VERSION, MetricWriter, Store, resolve_workspace

CPU = (["cpu"], 1)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _running(store: Store, spec: dict | None = None, max_per_device: int = 8) -> tuple[int, int]:
    """A run claimed like a launcher would: (run id, attempt)."""
    run_id = store.add_run(spec or {"model": "simple3"}, "train")
    claims = store.claim_queued(lambda s: CPU, max_per_device, only=run_id)
    assert claims and claims[0][0] == run_id
    return run_id, claims[0][2]


# ----------------------------------------------------------------------------- workspace and schema
def test_workspace_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEASSIST_HOME", str(tmp_path / "env"))
    assert resolve_workspace(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_workspace(None) == tmp_path / "env"
    monkeypatch.delenv("TUNEASSIST_HOME")
    import platformdirs

    assert resolve_workspace(None) == Path(platformdirs.user_data_dir("tuneassist"))


def test_new_store_is_private_and_versioned(tmp_path: Path) -> None:
    ws = tmp_path / "a" / "ws"
    with Store(ws) as s:
        assert s.db_path == ws / "tuneassist.db"
        assert s.run_dir(3) == ws / "runs" / "3"
    assert stat.S_IMODE(ws.stat().st_mode) == 0o700
    assert stat.S_IMODE((ws / "tuneassist.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((ws / "runs" / "3").stat().st_mode) == 0o700
    con = sqlite3.connect(ws / "tuneassist.db")
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA application_id").fetchone()[0] == store_mod.APPLICATION_ID
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    index = con.execute("PRAGMA index_list(metrics)").fetchall()
    pk = [c[1] for c in con.execute("PRAGMA table_info(metrics)") if c[5]]
    assert pk == ["run_id", "step"] or index  # clustered primary key (run_id, step) is the index
    con.close()
    Store(ws).close()  # reopening an up-to-date store is a no-op


def test_migration_path_keeps_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path) as s:
        run_id = s.add_run({"model": "simple3"}, "train")
    extra = "ALTER TABLE runs ADD COLUMN note TEXT; UPDATE runs SET note = 'migrated'"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, extra])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store(tmp_path) as s:
        run = s.get_run(run_id)
        assert run.spec_data == {"model": "simple3"}
    con = sqlite3.connect(tmp_path / "tuneassist.db")
    assert con.execute("SELECT note FROM runs WHERE id = ?", (run_id,)).fetchone()[0] == "migrated"
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION + 1
    con.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    con = sqlite3.connect(tmp_path / "tuneassist.db")
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(UserError, match="newer tuneassist"):
        Store(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "header_only", "text", "foreign_sqlite", "foreign_app"])
def test_damaged_or_foreign_db_is_refused_and_untouched(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "tuneassist.db"
    if damage in ("truncated", "header_only"):
        with Store(tmp_path) as s:
            for i in range(300):  # enough pages that cutting the file loses some
                s.add_run({"model": "simple3", "pad": "x" * 500, "i": i}, "train")
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2 + 100] if damage == "truncated" else data[:60])
    elif damage == "text":
        db.write_text("these are my notes, not a database\n" * 50)
    else:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        if damage == "foreign_app":
            con.execute("PRAGMA application_id = 12345")
        con.commit()
        con.close()
    before = _digest(db)
    with pytest.raises(UserError) as err:
        Store(tmp_path)
    msg = str(err.value)
    assert str(db) in msg and "move it aside" in msg and "\n" not in msg
    assert _digest(db) == before
    # Through the CLI: one line on stderr, exit 2, no traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", "runs", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and str(db) in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert _digest(db) == before


def test_workspace_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Store(tmp_path / "f")


# ----------------------------------------------------------------------------- sessions and runs
def test_sessions_and_run_listing(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        sid = s.create_session("cifar-resnet", data="cifar10", model="resnet56", state={"step": "lr_find"})
        s.update_session(sid, state={"step": "momentum", "lr": [0.1, 1.0]})
        assert s.get_session("cifar-resnet")["state"] == {"step": "momentum", "lr": [0.1, 1.0]}
        assert s.get_session(sid)["model"] == "resnet56"
        a = s.add_run({"model": "simple3"}, "lr_find", session_id=sid)
        b = s.add_run({"model": "resnet20"}, "sweep:momentum")
        assert [r.id for r in s.list_runs(session="cifar-resnet")] == [a]
        assert [r.id for r in s.list_runs(status="queued")] == [a, b]
        assert s.get_run(b).kind == "sweep:momentum"
        with pytest.raises(UserError, match="no run 99"):
            s.get_run(99)
        with pytest.raises(UserError, match="unknown run status"):
            s.list_runs(status="done")
        with pytest.raises(UserError, match="no tuning session"):
            s.get_session("nope")


def test_cancel_by_status(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        queued = s.add_run({}, "train")
        assert s.request_cancel(queued) == "cancelled"
        running, attempt = _running(s)
        s.update_run(running, pid=None, heartbeat=time.time())
        assert s.request_cancel(running) == "running"
        assert s.get_run(running).cancel_requested
        s.update_run(running, status="finished")
        with pytest.raises(UserError, match="already ended"):
            s.request_cancel(running)


def test_claims_respect_slots_and_order(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        gpu = {"device": "cuda"}
        ids = [s.add_run(spec, "train") for spec in ({"device": "cpu"}, gpu, {"device": "cpu"}, gpu)]

        def slots(spec: dict) -> tuple[list[str], int]:
            return (["cpu"], 1) if spec["device"] == "cpu" else (["cuda:0", "cuda:1"], 1)

        claims = s.claim_queued(slots, 1)
        assert [(c[0], c[1]) for c in claims] == [
            (ids[0], ["cpu"]),
            (ids[1], ["cuda:0"]),
            (ids[3], ["cuda:1"]),
        ]
        assert s.get_run(ids[2], refresh=False).status == "queued"
        assert s.claim_queued(slots, 1) == []
        assert [c[0] for c in s.claim_queued(slots, 2)] == [ids[2]]


# ----------------------------------------------------------------------------- metric writer
def test_writer_merges_evals_and_holds_back_the_newest_step(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        run_id, attempt = _running(s)
        w = MetricWriter(s, run_id, attempt=attempt, background=False)
        for step in range(5):
            w.add_train(
                step,
                TrainValues(
                    epoch=step / 5,
                    lr=0.1,
                    momentum=0.9,
                    train_loss=2.0 - step / 10,
                    images_per_s=1e3,
                    wall=step,
                ),
            )
        assert w.flush() == 4  # step 4 stays buffered: an evaluation of it may still come
        assert [r["step"] for r in s.metrics_since(run_id, -1)] == [0, 1, 2, 3]
        w.add_eval(4, EvalValues(val_loss=1.5, val_acc=0.4, epoch=1.0))
        w.add_eval(1, EvalValues(val_loss=1.9, val_acc=0.2))  # an older, stored step: updated in place
        w.add_train(5, TrainValues(epoch=1.0, lr=0.1, train_loss=1.4))
        w.close()
        rows = {r["step"]: r for r in s.metrics(run_id)}
        assert sorted(rows) == [0, 1, 2, 3, 4, 5]
        assert rows[4]["val_loss"] == 1.5 and rows[4]["train_loss"] == pytest.approx(1.6)
        assert rows[4]["epoch"] == pytest.approx(0.8)  # the train row's epoch wins
        assert rows[1]["val_acc"] == 0.2 and rows[5]["val_loss"] is None
        run = s.get_run(run_id)
        assert run.last_step == 5 and run.best_val_loss == 1.5 and run.best_val_acc == 0.4
        assert run.last_train_loss == pytest.approx(1.4) and run.images_per_s == 1e3
        assert s.metrics_since(run_id, 3) == [rows[4], rows[5]]


def test_a_failed_commit_keeps_its_rows_for_the_next_flush(tmp_path: Path) -> None:
    """Seen under load: the workspace's disk filled by a checkpoint's temp file for a moment, the
    background commit failed, and the rows it held (steps 0-14) were gone from the run for good."""
    with Store(tmp_path) as s:
        run_id, attempt = _running(s)
        w = MetricWriter(s, run_id, attempt=attempt, background=False)
        for step in range(6):
            w.add_train(step, TrainValues(epoch=step / 6, train_loss=2.0 - step / 10))
        w.add_eval(2, EvalValues(val_loss=1.7, val_acc=0.3))
        real_write = s.write

        def disk_full(fn: object) -> object:
            raise sqlite3.OperationalError("database or disk is full")

        s.write = disk_full  # type: ignore[method-assign]
        with pytest.raises(sqlite3.OperationalError):
            w.flush()
        s.write = real_write  # type: ignore[method-assign]
        w.add_eval(0, EvalValues(val_loss=1.9, val_acc=0.1))
        w.close()
        rows = {r["step"]: r for r in s.metrics(run_id)}
        assert sorted(rows) == list(range(6))
        assert rows[2]["val_loss"] == 1.7 and rows[0]["val_acc"] == 0.1
        assert rows[5]["train_loss"] == pytest.approx(1.5)


def test_writer_reset_after_and_ownership(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        run_id, attempt = _running(s)
        w = MetricWriter(s, run_id, attempt=attempt, background=False)
        for step in range(10):
            w.add_train(step, TrainValues(epoch=step / 10, train_loss=1.0))
            if step % 5 == 4:
                w.add_eval(step, EvalValues(val_loss=1.0 - step / 100, val_acc=step / 10))
        w.flush(final=True)
        w.reset_after(5)
        assert [r["step"] for r in s.metrics(run_id)] == list(range(6))
        assert s.get_run(run_id).best_val_acc == 0.4 and s.get_run(run_id).last_step == 5
        # The run is taken over by a newer attempt: this writer's rows must not land.
        s.update_run(run_id, attempt=attempt + 1)
        w.add_train(6, TrainValues(train_loss=1.0))
        w.add_train(7, TrainValues(train_loss=1.0))
        assert w.flush(final=True) == 0 and w.lost_ownership
        assert s.metric_count(run_id) == 6


def test_background_writer_commits_within_its_interval(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        run_id, attempt = _running(s)
        w = MetricWriter(s, run_id, attempt=attempt, interval=0.1)
        for step in range(3):
            w.add_train(step, TrainValues(train_loss=1.0))
        deadline = time.monotonic() + 5
        while s.metric_count(run_id) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s.metric_count(run_id) == 2
        w.close()
        assert s.metric_count(run_id) == 3


# ----------------------------------------------------------------------------- liveness
def test_lost_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_TIMEOUT", "2")
    # A process that looks like a worker (its command line names the worker module).
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tuneassist.runs.worker"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        with Store(tmp_path) as s:
            alive, _ = _running(s)
            s.update_run(alive, pid=fake.pid, heartbeat=time.time())
            stale, _ = _running(s)
            s.update_run(stale, pid=fake.pid, heartbeat=time.time() - 3)
            reused, _ = _running(s)
            s.update_run(reused, pid=other.pid, heartbeat=time.time())
            dead = subprocess.Popen([sys.executable, "-c", "pass"])
            dead.wait()
            gone, _ = _running(s)
            s.update_run(gone, pid=dead.pid, heartbeat=time.time())
            assert sorted(s.refresh_lost()) == sorted([stale, reused, gone])
            assert s.get_run(alive).status == "running"
            assert "heartbeat" in s.get_run(stale).error and "is gone" in s.get_run(gone).error
            why = {i: s.get_run(i).info.get("lost_reason") for i in (stale, reused, gone)}
            assert why == {stale: "heartbeat", reused: "pid_reused", gone: "gone"}
            fake.kill()
            fake.wait()
            assert s.get_run(alive).status == "lost"  # read-time detection
            assert s.get_run(alive).info["lost_reason"] == "gone"
    finally:
        for p in (fake, other):
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------- concurrency (real processes)
_WRITER = textwrap.dedent(
    """
    import sys, time
    from tuneassist.runs.schema import EvalValues, TrainValues
    from tuneassist.runs.store import MetricWriter, Store
    ws, run_id, attempt, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    s = Store(ws)
    w = MetricWriter(s, run_id, attempt=attempt, interval=0.05, max_rows=64)
    for step in range(n):
        w.add_train(
            step, TrainValues(epoch=step / 100, lr=0.1, momentum=0.9, train_loss=1.0 + step, images_per_s=5.0)
        )
        if step % 50 == 49:
            w.add_eval(step, EvalValues(val_loss=float(step), val_acc=0.5))
            s.update_run(run_id, heartbeat=time.time())  # other writes interleave, like the heartbeat
        if step % 20 == 0:
            time.sleep(0.004)
    w.close()
    s.update_run(run_id, status="finished", ended=time.time())
    """
)
_READER = textwrap.dedent(
    """
    import json, sys, time
    from tuneassist.runs.store import Store
    ws, ids = sys.argv[1], [int(a) for a in sys.argv[2:]]
    s = Store(ws)
    seen = {i: {} for i in ids}
    last = {i: -1 for i in ids}
    done = False
    while not done:
        done = all(r.status == "finished" for r in s.list_runs(refresh=False) if r.id in ids)
        for i in ids:
            for r in s.metrics_since(i, last[i]):
                assert r["step"] not in seen[i], "a row was returned twice"
                seen[i][r["step"]] = r
                last[i] = r["step"]
        time.sleep(0.01)
    print(json.dumps({str(i): list(seen[i].values()) for i in ids}))
    """
)


def test_two_writers_two_readers_no_lock_errors_no_lost_rows(tmp_path: Path) -> None:
    n = 1500
    with Store(tmp_path) as s:
        runs = [_running(s) for _ in range(2)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, str(tmp_path), *(str(r) for r, _ in runs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(r), str(a), str(n)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r, a in runs
    ]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    outs = [r.communicate(timeout=120) for r in readers]
    with Store(tmp_path) as s:
        for (out, err), reader in zip(outs, readers, strict=True):
            assert reader.returncode == 0, err
            assert "locked" not in err
            seen = json.loads(out)
            for run_id, _ in runs:
                stored = s.metrics(run_id)
                assert len(stored) == n
                assert seen[str(run_id)] == stored  # every row, each once, with its evaluation merged
                assert sum(r["val_loss"] is not None for r in stored) == n // 50


_CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from tuneassist.runs.store import Store
    ws, at = sys.argv[1], float(sys.argv[2])
    s = Store(ws)
    time.sleep(max(0.0, at - time.time()))
    print(json.dumps([c[0] for c in s.claim_queued(lambda spec: (["cpu"], 1), 1)]))
    """
)


def test_slot_claims_are_race_free_across_processes(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        for _ in range(6):
            s.add_run({"device": "cpu"}, "train")
    at = time.time() + 1.5  # all claimers start together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(tmp_path), str(at)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    claimed = [c for p in procs for c in json.loads(p.communicate(timeout=60)[0])]
    assert claimed == [1]


# ----------------------------------------------------------------------------- the runs CLI on a stored run
def _finished_run(store: Store) -> int:
    from tuneassist.spec import RunSpec

    sid = store.create_session("demo")
    run_id, attempt = _running(store, RunSpec(epochs=2).to_dict())
    store.update_run(run_id, session_id=sid, info={"total_steps": 8, "steps_per_epoch": 4, "epochs": 2.0})
    w = MetricWriter(store, run_id, attempt=attempt, background=False)
    for step in range(8):
        w.add_train(step, TrainValues(step / 4, 0.05, 0.9, 2.0 - step / 10, 900.0, step * 0.5))
        if step % 4 == 3:
            w.add_eval(step, EvalValues(val_loss=1.9 - step / 20, val_acc=0.1 * step))
    w.close()
    end = {"type": "end", "outcome": "finished", "step": 8, "epoch": 2.0, "val_loss": 1.55, "val_acc": 0.7,
           "test_loss": 1.6, "test_acc": 0.65, "wall_time": 4.0, "images_per_s": 900.0,
           "reason": "reached the last step"}  # fmt: skip
    store.update_run(run_id, status="finished", ended=time.time(), outcome=end)
    return run_id


def test_runs_cli_list_export_cancel_watch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneassist.cli.main import main

    with Store(tmp_path) as s:
        done = _finished_run(s)
        queued = s.add_run({"model": "resnet20", "device": "cpu"}, "sweep:wd")
    ws = ["--workspace", str(tmp_path)]
    assert main(["runs", "cancel", str(queued), *ws]) == 0
    assert f"run {queued} cancelled" in capsys.readouterr().out
    with Store(tmp_path) as s:
        assert s.get_run(queued).status == "cancelled"
    assert main(["runs", *ws]) == 0
    table = capsys.readouterr().out
    assert "demo" in table and "2.00/2" in table and "1.55" in table and "70.0%" in table
    assert "onecycle lr 0.01:0.1 m 0.95:0.85 wd 0.0001 bs 128 2ep" in table and "wd ? bs ? ?ep" in table
    assert main(["--workspace", str(tmp_path), "runs", "--json", "--status", "finished"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["session"], r["step"], r["epoch"]) for r in rows] == [(done, "demo", 8, 2.0)]
    assert rows[0]["best_val_loss"] == pytest.approx(1.55) and rows[0]["hyperparameters"]["epochs"] == 2.0
    assert main(["runs", "--json", "--session", "demo", *ws]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [done]
    out = tmp_path / "m.jsonl"
    assert main(["runs", "export", str(done), "--format", "jsonl", "-o", str(out), *ws]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(8)) and lines[3]["val_acc"] == pytest.approx(0.3)
    assert main(["runs", "export", str(done), "--format", "csv", *ws]) == 0
    csv_text = capsys.readouterr().out
    assert (
        csv_text.splitlines()[0]
        == "run_id,step,epoch,lr,momentum,train_loss,val_loss,val_acc,images_per_s,wall"
    )
    assert main(["runs", "resume", str(done), *ws]) == 2
    assert "only lost or cancelled runs can be resumed" in capsys.readouterr().err
    assert main(["runs", "watch", "99", *ws]) == 2
    assert "no run 99" in capsys.readouterr().err
    # On a terminal, watch draws the curves and the progress line, then prints how the run ended.
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["runs", "watch", str(done), *ws]) == 0
    screen = capsys.readouterr().out
    assert f"run {done} finished  epoch 2.00/2  step 8/8 (100%)" in screen
    assert f"run {done} finished: 2 epochs (8 steps)" in screen and "test acc 65.0%" in screen
    assert "loss vs epoch" in screen or "no terminal plot" in screen


# ----------------------------------------------------------------------------- device slots (no GPU needed)
def test_device_slots_and_pinning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneassist.runs import launch, worker
    from tuneassist.spec import RunSpec

    monkeypatch.setenv(launch.GPU_ENV, "2,5")  # the GPUs a launcher saw (physical ids)
    assert launch.slots_for({"device": "auto"}) == (["cuda:2", "cuda:5"], 1)
    assert launch.slots_for({"device": "cuda", "devices": 2}) == (["cuda:2", "cuda:5"], 2)
    assert launch.slots_for({"device": "cuda:1"}) == (["cuda:5"], 1)
    assert launch.slots_for({"device": "cpu"}) == (["cpu"], 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5")
    spec = RunSpec(device="cuda:1")
    worker._select_device(spec, ["cuda:5"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5" and spec.device == "cuda"
    # A standby has torch loaded and sees the launcher's GPUs in order (2, 5): it names GPU 5 by index;
    # a two-GPU run's ranks are new processes and still get the variable.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    spec = RunSpec(device="cuda:1")
    worker._select_device(spec, ["cuda:5"], warm=True)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5" and spec.device == "cuda:1"
    spec = RunSpec(device="cuda", devices=2, batch_size=128)
    worker._select_device(spec, ["cuda:5", "cuda:2"], warm=True)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,2" and spec.device == "cuda"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    monkeypatch.setenv(launch.GPU_ENV, "")
    assert launch.slots_for({"device": "auto"}) == (["cpu"], 1)
    assert launch.slots_for({"device": "cuda"}) == (["cuda"], 1)
    spec = RunSpec(device="cuda")
    worker._select_device(spec, ["cuda"])  # GPUs unknown to the launcher: leave the choice to CUDA
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5" and spec.device == "cuda"
    with Store(tmp_path) as s:
        monkeypatch.delenv("TUNEASSIST_MAX_PER_DEVICE", raising=False)
        assert launch.max_per_device(s) is None  # nobody set one: packing by memory decides
        s.set_setting("max_per_device", "3")
        assert launch.max_per_device(s) == 3
        monkeypatch.setenv("TUNEASSIST_MAX_PER_DEVICE", "2")
        assert launch.max_per_device(s) == 2
        monkeypatch.setenv("TUNEASSIST_MAX_PER_DEVICE", "zero")
        with pytest.raises(UserError, match="positive integer"):
            launch.max_per_device(s)
        monkeypatch.setenv("TUNEASSIST_MAX_PER_DEVICE", "1")
        monkeypatch.setenv(launch.GPU_ENV, "0")
        with pytest.raises(UserError, match="needs 2 GPUs"):
            launch.launch_run(s, RunSpec(device="cuda", devices=2))
        assert s.list_runs() == []


def test_standby_is_handed_one_run_in_the_claim_and_retires_atomically(tmp_path: Path) -> None:
    # A stand-in standby: a live process whose command line names the worker module (as pid_alive checks).
    fake = [sys.executable, "-c", "import time; time.sleep(60)", "tuneassist.runs.worker", "--standby"]
    procs = [subprocess.Popen(fake), subprocess.Popen(fake)]
    try:
        with Store(tmp_path) as s:
            a, b = (p.pid for p in procs)
            assert not s.standby_registered() and s.register_standby(a)
            assert not s.register_standby(b)  # one standby per workspace
            assert s.standby_registered()
            ids = [s.add_run({"model": "simple3"}, "train") for _ in range(3)]
            handed: list[int] = []
            claims = s.claim_queued(lambda spec: CPU, 2, handed=handed)
            assert [c[0] for c in claims] == ids[:2] and handed == [ids[0]]
            assert s.get_run(ids[0], refresh=False).pid == a and s.get_run(ids[1], refresh=False).pid is None
            assert s.handed_run(a) == ids[0] and s.handed_run(b) is None
            assert not s.retire_standby(a)  # handed a run: it must run it, not leave
            assert not s.standby_registered()
            # A standby that died without retiring is cleared by the next registration or claim.
            assert s.register_standby(b)
            procs[1].kill()
            procs[1].wait()
            assert not s.standby_registered() and s.register_standby(a)
            assert s.retire_standby(a) and not s.standby_registered() and not s.retire_standby(a)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_standby_starts_only_beside_runs_that_leave_a_core_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneassist.runs import launch

    monkeypatch.setenv(launch.GPU_ENV, "")
    monkeypatch.setattr(launch, "cpu_cores", lambda: 4)
    with Store(tmp_path) as s:
        assert launch._spare_core(s)
        _running(s, {"model": "simple3", "num_threads": 2})
        assert launch._spare_core(s)
        _running(s, {"model": "simple3", "num_threads": 1})
        assert launch._spare_core(s)
        _running(s, {"model": "simple3"})  # all the cores, the default
        assert not launch._spare_core(s)
    with Store(tmp_path / "gpu") as s:
        run_id = s.add_run({"model": "resnet20"}, "train")
        s.claim_queued(lambda spec: (["cuda:0"], 1), 4, only=run_id)
        assert launch._spare_core(s)  # GPU runs leave the cores idle


def test_a_run_handed_to_a_loading_standby_keeps_its_heartbeat(tmp_path: Path) -> None:
    import threading

    from tuneassist.runs.worker import _beat_while_loading

    with Store(tmp_path) as s:
        run_id, _ = _running(s)
        s.update_run(run_id, pid=os.getpid(), heartbeat=time.time() - 100)  # handed to "us", long ago
        loaded = threading.Event()
        keeper = threading.Thread(target=_beat_while_loading, args=(s, os.getpid(), loaded))
        keeper.start()
        time.sleep(1.2)
        loaded.set()
        keeper.join()
        assert time.time() - s.get_run(run_id, refresh=False).heartbeat < 1.0


def test_runs_come_back_typed_with_the_stored_columns_kept(tmp_path: Path) -> None:
    """A run is a typed Run: the spec parsed once (None when this version cannot read it), empty
    outcome/info until there are some, progress and ETA derived in one place; `runs --json` still
    prints the spec and outcome exactly as stored."""
    from tuneassist.cli.runs_cmd import run_summary
    from tuneassist.runs.store import Run
    from tuneassist.spec import RunSpec

    with Store(tmp_path) as s:
        good = s.add_run(RunSpec(model="resnet20", epochs=2).to_dict(), "train")
        old = s.add_run({"model": "simple3", "from_the_future": 1}, "train")
        run = s.get_run(good)
        assert isinstance(run, Run) and run.status == "queued" and run.kind == "train"
        assert run.spec is not None and run.spec.model == "resnet20" and run.model == "resnet20"
        assert run.outcome == {} and run.info == {} and run_summary(run)["outcome"] is None
        assert run.progress == (0, None) and run.eta() is None and run.elapsed() is None
        assert (
            run.total_epochs == 2.0
            and run_summary(run)["spec"] == run.spec_data == RunSpec(model="resnet20", epochs=2).to_dict()
        )
        s.update_run(good, status="running", started=100.0, last_step=9, info={"total_steps": 40})
        run = s.get_run(good, refresh=False)
        assert run.progress == (10, 40) and run.elapsed(now=110.0) == 10.0
        stale = s.get_run(old)
        assert stale.spec is None and stale.spec_data == {"model": "simple3", "from_the_future": 1}
        assert [r.id for r in s.list_runs(refresh=False)] == [good, old]
        with pytest.raises(dataclasses.FrozenInstanceError):
            run.status = "finished"  # type: ignore[misc]
