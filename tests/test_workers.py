"""Background runs end to end: real launcher and worker processes, the real engine, tiny synthetic data.

Each test starts real detached workers that import torch and train simple3 on a few hundred synthetic
images (8 steps of 32 per epoch) on the CPU with one thread each: the file takes about a minute, most
of it the workers importing torch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import SPE, tiny_spec
from testkit import wait_for as _wait

from tuneassist.runs.store import Store


def _spec(**over: Any) -> dict[str, Any]:
    """The shared tiny run, three epochs long."""
    return tiny_spec(**{"epochs": 3, **over})


@pytest.fixture
def env(ws: Path) -> dict[str, str]:
    """Environment for launchers (workers inherit it): `ws`'s short heartbeat timeout, the repo importable;
    `ws` kills every worker (and the standby) at the end."""
    return dict(os.environ)


_LAUNCH = textwrap.dedent(
    """
    import json, sys
    from tuneassist.runs.launch import launch_run
    from tuneassist.runs.store import Store
    from tuneassist.spec import RunSpec
    store = Store(sys.argv[1])
    print(json.dumps([launch_run(store, RunSpec.from_dict(json.loads(a))) for a in sys.argv[2:]]))
    """
)


def _launch(ws: Path, env: dict[str, str], *specs: dict[str, Any]) -> list[int]:
    """Launch runs from a separate, short-lived process (as the CLI or the UI would)."""
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(ws), *(json.dumps(s) for s in specs)],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _check_complete_curve(store: Store, run_id: int, epochs: int, spe: int) -> list[dict[str, Any]]:
    """Every optimiser step has exactly one row with its train loss; one evaluation per epoch."""
    run = store.get_run(run_id)
    assert run.status == "finished", run
    assert run.outcome["outcome"] == "finished" and run.outcome["epoch"] == pytest.approx(epochs)
    rows = store.metrics(run_id)
    total = epochs * spe
    assert [r["step"] for r in rows] == list(range(total))
    assert all(r["train_loss"] is not None and r["lr"] is not None for r in rows)
    evals = [r["step"] for r in rows if r["val_loss"] is not None]
    assert evals == [e * spe - 1 for e in range(1, epochs + 1)]  # after each epoch
    walls = [r["wall"] for r in rows]
    assert walls == sorted(walls)
    assert run.last_step == total - 1 and run.best_val_loss == min(
        r["val_loss"] for r in rows if r["val_loss"]
    )
    return rows


def test_cli_background_run_survives_its_launcher_and_the_queue_advances(
    tmp_path: Path, env: dict[str, str]
) -> None:
    ws = tmp_path / "ws"
    env["TUNEASSIST_STANDBY"] = "1"  # the default for users (off elsewhere in the suite)

    def train(epochs: int) -> str:
        return " ".join(
            [sys.executable, "-m", "tuneassist.cli.main", "--workspace", str(ws), "train",
             "--data", "synthetic:300", "--model", "simple3", "--batch-size", "32", "--epochs", str(epochs),
             "--device", "cpu", "--threads", "1", "--background"]
        )  # fmt: skip

    # Two launches from one shell in its own process group, then the whole group gets SIGKILL, like a
    # terminal that dies: the workers live in their own sessions and must not notice.
    log = tmp_path / "launcher.out"
    with open(log, "w") as out:
        shell = subprocess.Popen(
            ["sh", "-c", f"{train(3)} && {train(1)} && exec sleep 60"],
            start_new_session=True, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    store = Store(ws)
    try:
        _wait(lambda: log.read_text().count("watch it:") == 2, 30, "two launches", store)
        first, second = (r.id for r in store.list_runs(refresh=False))
        _wait(lambda: store.get_run(first).pid, 30, "the first worker", store)
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    out = log.read_text()
    assert f"run {first} (train) started on cpu" in out, out
    assert store.get_run(first).device == "cpu"  # the slot the line names
    assert f"run {second} (train) queued" in out and f"tuneassist runs watch {second}" in out
    assert store.get_run(first).status == "running" and store.get_run(second).status == "queued"
    # Follow the first run with the CLI (not a terminal: progress lines, no plot).
    watch = subprocess.Popen(
        [sys.executable, "-m", "tuneassist.cli.main", "runs", "watch", str(first), "--workspace", str(ws),
         "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip

    def both_done() -> bool:
        runs = store.list_runs()
        assert sum(r.status == "running" for r in runs) <= 1, "two CPU runs at once"
        assert not any(r.status in ("failed", "lost") for r in runs), runs
        return all(r.status == "finished" for r in runs)

    _wait(both_done, 90, "both runs to finish", store)
    wout, werr = watch.communicate(timeout=30)
    assert watch.returncode == 0, werr
    assert f"run {first} running" in wout
    assert [line.split()[:2] for line in wout.splitlines() if line.startswith("epoch ")] == [
        ["epoch", "1.00"], ["epoch", "2.00"], ["epoch", "3.00"]
    ]  # fmt: skip
    assert f"run {first} finished: 3 epochs (24 steps)" in wout and "val acc" in wout
    _check_complete_curve(store, first, 3, SPE)
    _check_complete_curve(store, second, 1, SPE)
    r1, r2 = store.get_run(first), store.get_run(second)
    assert r2.started >= r1.ended - 0.5  # the second waited for the CPU slot
    # It ran in the standby worker that loaded torch while the first one trained (pid in both logs).
    standby = (ws / "standby.log").read_text()
    pid = re.search(r"pid (\d+)", store.log_path(second).read_text()).group(1)
    assert f"standby {pid} ready" in standby, standby
    listing = _cli(env, "runs", "--workspace", str(ws), "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [(r["id"], r["status"], r["step"], r["total_steps"]) for r in rows] == [
        (first, "finished", 24, 24),
        (second, "finished", 8, 8),
    ]
    assert rows[0]["best_val_acc"] is not None and rows[0]["images_per_s"] > 0
    table = _cli(env, "runs", "--workspace", str(ws))
    assert "onecycle lr 0.01:0.1" in table.stdout and "3.00/3" in table.stdout and "finished" in table.stdout


def _until_checkpoint(store: Store, run_id: int) -> int:
    """Wait for the run's first checkpoint, then freeze its worker at once (SIGSTOP); returns the pid."""
    _wait(lambda: store.get_run(run_id).checkpoint_step, 60, "a checkpoint", store)
    pid = store.get_run(run_id).pid
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_sigkilled_worker_becomes_lost_and_resume_completes_it(tmp_path: Path, env: dict[str, str]) -> None:
    ws = tmp_path / "ws"
    (run_id,) = _launch(ws, env, _spec(epochs=4))
    store = Store(ws)
    pid = _until_checkpoint(store, run_id)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _wait(lambda: store.get_run(run_id).status == "lost", 10, "the run to be lost", store)
    assert time.monotonic() - killed <= 3 + 1  # within the heartbeat timeout
    lost = store.get_run(run_id)
    assert "resume" in lost.error and lost.checkpoint_step % SPE == 0
    assert lost.info["lost_reason"] in ("gone", "heartbeat")  # killed: never a reused process id
    assert lost.checkpoint_step < 4 * SPE  # killed mid-run
    res = _cli(env, "runs", "resume", str(run_id), "--workspace", str(ws))
    assert res.returncode == 0, res.stderr
    assert f"from its checkpoint at step {lost.checkpoint_step}" in res.stdout
    _wait(lambda: store.get_run(run_id).status not in ("queued", "running"), 90, "the resumed run", store)
    rows = _check_complete_curve(store, run_id, 4, SPE)  # the epochs add up: 4, each step once
    run = store.get_run(run_id)
    assert run.attempt == 2 and run.error is None
    assert f"'start_step': {lost.checkpoint_step}" in store.log_path(run_id).read_text()
    # The export holds the same complete curve.
    out = tmp_path / "m.csv"
    exp = _cli(
        env, "runs", "export", str(run_id), "--format", "csv", "--output", str(out), "--workspace", str(ws)
    )
    assert exp.returncode == 0, exp.stderr
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[:3] == ["run_id", "step", "epoch"] and len(lines) == len(rows) + 1


def test_frozen_worker_is_lost_by_heartbeat_and_never_clobbers_the_run(
    tmp_path: Path, env: dict[str, str]
) -> None:
    ws = tmp_path / "ws"
    (run_id,) = _launch(ws, env, _spec(epochs=4))
    store = Store(ws)
    pid = _until_checkpoint(store, run_id)  # alive but silent: only the heartbeat can tell
    checkpoint = store.checkpoint_path(run_id)
    mtime = checkpoint.stat().st_mtime_ns
    try:
        stopped = time.monotonic()
        _wait(lambda: store.get_run(run_id).status == "lost", 10, "the heartbeat timeout", store)
        assert time.monotonic() - stopped >= 2 and "heartbeat" in store.get_run(run_id).error
        assert store.get_run(run_id).info["lost_reason"] == "heartbeat"
        # Cancel the lost run, then let the frozen worker go on: it must see the run is no longer its own.
        cancel = _cli(env, "runs", "cancel", str(run_id), "--workspace", str(ws))
        assert cancel.returncode == 0 and f"run {run_id} cancelled" in cancel.stdout
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait(lambda: not _alive(pid), 30, "the stale worker to exit", store)
    run = store.get_run(run_id)
    assert run.status == "cancelled" and run.outcome == {}
    assert "no longer ours" in store.log_path(run_id).read_text()
    assert checkpoint.stat().st_mtime_ns == mtime  # it wrote nothing after losing the run
    assert store.metrics(run_id)[-1]["step"] < 4 * SPE - 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


_READER = textwrap.dedent(
    """
    import json, sys, time
    from tuneassist.runs.store import Store
    ws, ids = sys.argv[1], [int(a) for a in sys.argv[2:]]
    s = Store(ws)
    seen = {i: {} for i in ids}
    last = {i: -1 for i in ids}
    statuses = set()
    while True:
        runs = {r.id: r for r in s.list_runs()}
        statuses |= {(i, runs[i].status) for i in ids}
        done = all(runs[i].status not in ("queued", "running") for i in ids)
        for i in ids:
            for r in s.metrics_since(i, last[i]):
                assert r["step"] not in seen[i], "a row was returned twice"
                seen[i][r["step"]] = r
                last[i] = r["step"]
        if done:
            break
        time.sleep(0.02)
    print(json.dumps({"rows": {str(i): list(seen[i].values()) for i in ids}, "statuses": sorted(statuses)}))
    """
)


def test_two_workers_and_two_readers_share_the_store(tmp_path: Path, env: dict[str, str]) -> None:
    ws = tmp_path / "ws"
    env = {**env, "TUNEASSIST_MAX_PER_DEVICE": "2"}
    # Evaluate every 2 steps so evaluations and step rows interleave densely with the readers' polls.
    a, b = _launch(ws, env, _spec(epochs=3, eval_every=2), _spec(epochs=40, eval_every=2, seed=1))
    readers = [
        subprocess.Popen([sys.executable, "-c", _READER, str(ws), str(a), str(b)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]  # fmt: skip
    store = Store(ws)
    assert store.get_run(a).status == "running" and store.get_run(b).status == "running"
    _wait(lambda: store.get_run(a).status == "finished", 60, "run a", store)
    # Cancel the long run through the CLI: it stops gracefully and keeps its metrics and a checkpoint.
    cancel = _cli(env, "runs", "cancel", str(b), "--workspace", str(ws))
    assert cancel.returncode == 0, cancel.stderr
    assert f"run {b} cancelled" in cancel.stdout and f"tuneassist runs resume {b}" in cancel.stdout
    outs = [r.communicate(timeout=60) for r in readers]
    run_b = store.get_run(b)
    assert run_b.status == "cancelled" and run_b.outcome["outcome"] == "cancelled"
    assert store.checkpoint_path(b).exists() and run_b.checkpoint_step == run_b.outcome["step"]
    for (out, err), reader in zip(outs, readers, strict=True):
        assert reader.returncode == 0, err
        assert "locked" not in err
        got = json.loads(out)
        for run_id in (a, b):
            # No lost rows, and every evaluation merged into its row before a reader could see the row.
            assert got["rows"][str(run_id)] == store.metrics(run_id)
        assert [a, "running"] in got["statuses"] and [b, "running"] in got["statuses"]
    rows_a = store.metrics(a)
    assert [r["step"] for r in rows_a] == list(range(3 * SPE))
    assert [r["step"] for r in rows_a if r["val_loss"] is not None] == list(range(1, 3 * SPE, 2))
    rows_b = store.metrics(b)
    assert [r["step"] for r in rows_b] == list(range(run_b.outcome["step"]))
    assert rows_b[-1]["val_loss"] is not None  # the evaluation at the cancel point
    jsonl = _cli(env, "runs", "export", str(b), "--format", "jsonl", "--workspace", str(ws))
    assert [json.loads(line) for line in jsonl.stdout.splitlines()] == [{"run_id": b, **r} for r in rows_b]


def test_failed_run_keeps_its_error(tmp_path: Path, env: dict[str, str]) -> None:
    ws = tmp_path / "ws"
    with Store(ws) as store:
        # A spec this version cannot read (e.g. written by a newer tuneassist): the worker fails cleanly.
        bad = store.add_run({**_spec(), "warp_drive": True}, "train")
    subprocess.run(
        [sys.executable, "-m", "tuneassist.runs.worker", "--workspace", str(ws), "--run", str(bad)],
        env=env, timeout=60, check=False,
    )  # fmt: skip
    store = Store(ws)
    run = store.get_run(bad)
    assert run.status == "failed" and "warp_drive" in run.error and "\n" not in run.error
    assert "failed: unknown run setting" in store.log_path(bad).read_text()
    listing = _cli(env, "runs", "--workspace", str(ws))
    assert f"run {bad} failed: unknown run setting(s) warp_drive" in listing.stdout
    watch = _cli(env, "runs", "watch", str(bad), "--workspace", str(ws))
    assert watch.returncode == 1 and f"run {bad} failed" in watch.stdout
    res = _cli(env, "runs", "resume", str(bad), "--workspace", str(ws))
    assert res.returncode == 2 and "only lost or cancelled runs can be resumed" in res.stderr
    assert "Traceback" not in res.stderr + watch.stderr + listing.stderr
