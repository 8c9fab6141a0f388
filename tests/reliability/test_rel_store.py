"""The run store under concurrent windows, and stores this version cannot read as they are."""

from __future__ import annotations

import json
import math
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from relkit import one_line_error, run_main, subprocess_env, tiny_spec

from tuneassist.runs.schema import EvalValues, TrainValues
from tuneassist.runs.store import MetricWriter, Store
from tuneassist.session import TuningSession

# -- two windows and the CLI on one workspace -------------------------------------------------------

_WINDOW = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from tuneassist.runs.store import Store
    from tuneassist.session import TuningSession
    ws, sid, sync, me = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    session = TuningSession(Store(ws), sid)  # both windows show the same finished range test
    (sync / me).touch()
    while len(list(sync.glob("window*"))) < 2:
        time.sleep(0.001)
    rec = session.recommend("lr_range")
    session.accept(rec)  # both press `a` on the same recommendation ...
    ids = session.launch()  # ... and `r` on the next step
    print(json.dumps({"ids": ids, "value": rec.value}))
    """
)

_CLI_LOOP = textwrap.dedent(
    """
    import contextlib, io, sys
    from pathlib import Path
    from tuneassist.cli.main import main
    ws, stop = sys.argv[1], Path(sys.argv[2])
    calls = 0
    while not stop.exists() or calls < 5:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--workspace", ws, "runs", "--json"])
        assert code == 0 and "locked" not in err.getvalue(), err.getvalue()
        calls += 1
    print(calls)
    """
)


def _store_range_test(store: Store, session_id: int) -> int:
    spec = tiny_spec(schedule="range_exp", steps=120, lr_min=1e-4, lr_max=10.0, test=False)
    run_id = store.add_run(spec, "lr_range:range", session_id=session_id)
    writer = MetricWriter(store, run_id, background=False)
    m, d = math.log10(0.5), math.log10(1.5)
    diverged_lr = None
    for i in range(120):
        lr = 1e-4 * (10.0 / 1e-4) ** (i / 119)
        lx = math.log10(lr)
        if lx > d:
            diverged_lr = lr
            break
        loss = 2.3 - 1.8 / (1 + math.exp(-(lx - (m - 1.2)) / 0.3))
        if lx > m:
            at_m = 2.3 - 1.8 / (1 + math.exp(-1.2 / 0.3))
            loss = at_m * (1 + 3 * ((lx - m) / (d - m)) ** 2)
        writer.add_train(
            i, TrainValues(epoch=i / 8, lr=lr, momentum=0.9, train_loss=loss + 0.01 * math.sin(7 * i))
        )
        if (i + 1) % 5 == 0:
            writer.add_eval(i, EvalValues(val_loss=loss + 0.1, val_acc=0.5))
    writer.close()
    outcome = {"outcome": "diverged", "diverged_lr": diverged_lr, "step": i, "epoch": i / 8}
    info = {"steps_per_epoch": 8}
    store.update_run(run_id, status="diverged", outcome=outcome, info=info, ended=time.time())
    return run_id


def test_two_windows_accepting_and_launching_the_same_step_record_it_once(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_TIMEOUT", "600")
    store = Store(ws)
    # The CPU is busy with another run (a live process): whatever the windows launch stays queued.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "tuneassist.runs.worker"]
    )
    try:
        busy = store.add_run(tiny_spec(), "train")
        store.update_run(busy, status="running", device="cpu", pid=holder.pid, host=socket.gethostname(),
                         heartbeat=time.time(), started=time.time())  # fmt: skip
        session = TuningSession.create(store, data="synthetic:300", model="simple3", budget="quick")
        key = session.checklist.propose("lr_range").candidates[0].key
        session.checklist.attach_run("lr_range", key, str(_store_range_test(store, session.id)))
        session.save()
        assert session.recommend("lr_range").ok

        sync = tmp_path / "sync"
        sync.mkdir()
        env = subprocess_env(TUNEASSIST_HEARTBEAT_TIMEOUT="600")
        pipes: dict[str, Any] = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        reader = subprocess.Popen([sys.executable, "-c", _CLI_LOOP, str(ws), str(sync / "done")], **pipes)
        windows = [
            subprocess.Popen(
                [sys.executable, "-c", _WINDOW, str(ws), str(session.id), str(sync), f"window{i}"], **pipes
            )
            for i in (1, 2)
        ]
        outs = [w.communicate(timeout=120) for w in windows]
        (sync / "done").touch()
        r_out, r_err = reader.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    for w, (_, err) in zip(windows, outs, strict=True):
        assert w.returncode == 0 and "locked" not in err, err[-3000:]
    assert reader.returncode == 0 and int(r_out) >= 5, r_err[-3000:]
    got = [json.loads(out) for out, _ in outs]
    assert got[0]["value"] == got[1]["value"]
    assert sorted(got[0]["ids"]) == sorted(got[1]["ids"]) and got[0]["ids"], got  # launched once

    final = TuningSession(Store(ws), session.id)
    cl = final.checklist
    assert cl.decisions["lr_range"].value == got[0]["value"]
    assert not any(h.get("event") == "replaced" and h.get("step") == "lr_range" for h in cl.history)
    step_runs = [r for r in store.list_runs(session=session.id) if r.kind.startswith("batch_size:")]
    assert sorted(r.id for r in step_runs) == sorted(int(i) for i in cl.runs["batch_size"].values())
    assert sorted(got[0]["ids"]) == sorted(r.id for r in step_runs)
    assert all(r.status == "queued" for r in step_runs)


# -- stores this version cannot read as they are ------------------------------------------------------


def test_store_from_a_newer_version_is_refused_in_one_line_untouched(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Store(ws).close()
    con = sqlite3.connect(ws / "tuneassist.db")
    con.execute("UPDATE schema_version SET version = 7")
    con.commit()
    con.close()
    before = (ws / "tuneassist.db").read_bytes()
    for argv in (["runs"], ["runs", "--json"], ["train", "--background"], ["runs", "resume", "1"]):
        code, out, err = run_main(capsys, *argv)
        one_line_error(code, err, "written by a newer tuneassist (schema v7", "upgrade tuneassist")
    assert (ws / "tuneassist.db").read_bytes() == before


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("ALTER TABLE runs DROP COLUMN wall_base", "table runs lacks wall_base"),
        ("DROP TABLE metrics", "table metrics is missing"),
        ("DROP TABLE schema_version", "schema_version table is missing"),
    ],
)
def test_store_with_a_different_schema_is_refused_never_misread(
    ws: Path, capsys: pytest.CaptureFixture[str], damage: str, needle: str
) -> None:
    """Same version number, other tables (a development build, a hand-edited file): refused at open."""
    with Store(ws) as s:
        s.add_run(tiny_spec(), "train")
    con = sqlite3.connect(ws / "tuneassist.db")
    con.execute(damage)
    con.commit()
    con.close()
    code, out, err = run_main(capsys, "runs")
    one_line_error(code, err, needle, "it was left untouched")
    assert out == ""


def test_runs_stored_by_an_older_version_still_list_and_export(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older spec lacks settings added since (devices, eval_subset ...): read with their defaults."""
    old_spec = {k: v for k, v in tiny_spec().items() if k not in ("devices", "eval_subset", "num_threads")}
    with Store(ws) as s:
        run_id = s.add_run(old_spec, "train")
        s.update_run(run_id, status="finished", started=1.0, ended=2.0)
        w = MetricWriter(s, run_id, background=False)
        w.add_train(0, TrainValues(epoch=0.0, lr=0.01, train_loss=2.3))
        w.close()
    code, out, err = run_main(capsys, "runs", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["status"] == "finished" and row["hyperparameters"]["batch_size"] == 32
    code, out, err = run_main(capsys, "runs", "export", str(run_id), "--format", "jsonl")
    assert code == 0 and json.loads(out)["train_loss"] == 2.3, err
