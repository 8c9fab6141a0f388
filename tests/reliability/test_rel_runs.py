"""Runs queued at once on the CPU (one at a time, the default): some diverge, one runs out of memory.

One queue of real detached workers serves several checks: a diverged run keeps its curve and the
advisor reads it as evidence, an out-of-memory run ends `failed` with a one-line message, and under
that load every run ends (none lost, never two at once on the CPU) while a store read of the runs
table stays fast. The 20-run version of the load check is marked slow.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from relkit import kill_workers, run_main, tiny_spec

from tuneassist.advisor.checklist import Checklist
from tuneassist.advisor.diagnosis import diagnose
from tuneassist.runs.launch import launch_run
from tuneassist.runs.store import Store
from tuneassist.session import curves_from_store
from tuneassist.spec import RunSpec

ENDED = ("finished", "diverged", "failed", "cancelled", "lost")
FAKE_OOM_ABOVE = 40  # the simulated device fits batches up to 40


def run_queue(ws: Path, specs: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """Queue every spec at once, then watch the store as a UI would until all runs end.

    Returns the run ids, the statuses seen, the store size and the time each poll's read of the runs
    table took (the UI's responsiveness while workers write).
    """
    store = Store(ws)
    ids = [launch_run(store, RunSpec.from_dict(s)) for s in specs]
    reads: list[float] = []
    max_running = 0
    db_bytes = 0
    deadline = time.monotonic() + timeout
    while True:
        t0 = time.perf_counter()
        runs = store.list_runs()
        reads.append(time.perf_counter() - t0)
        max_running = max(max_running, sum(r.status == "running" for r in runs))
        db_bytes = max(db_bytes, sum(p.stat().st_size for p in ws.glob("tuneassist.db*")))
        if all(r.status in ENDED for r in runs):
            break
        assert time.monotonic() < deadline, [(r.id, r.status) for r in runs]
        time.sleep(0.2)
    runs = store.list_runs()
    return {
        "store": store,
        "ids": ids,
        "runs": {r.id: r for r in runs},
        "max_running": max_running,
        "db_bytes": db_bytes,
        "reads": reads,
    }


def _report(got: dict[str, Any], label: str) -> str:
    reads = sorted(got["reads"])
    p95 = reads[int(0.95 * (len(reads) - 1))]
    return (
        f"{label}: {len(got['ids'])} runs, store {got['db_bytes'] / 1024:.0f} KiB, runs-table read "
        f"median {1000 * statistics.median(reads):.1f} ms, p95 {1000 * p95:.1f} ms, "
        f"max {1000 * reads[-1]:.1f} ms over {len(reads)} polls"
    )


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    ws = tmp_path_factory.mktemp("queue") / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEASSIST_HOME", str(ws))
        mp.delenv("TUNEASSIST_MAX_PER_DEVICE", raising=False)
        mp.setenv("TUNEASSIST_FAKE_OOM_ABOVE", str(FAKE_OOM_ABOVE))  # inherited by every worker
        specs = {
            "range": tiny_spec(schedule="range_exp", steps=80, lr_min=1e-3, lr_max=1e3, eval_every=8,
                               eval_subset=30, test=False, checkpoint_every=0),
            "blowup": tiny_spec(schedule="constant", lr_min=1e4, lr_max=1e4, momentum_max=0.9,
                                momentum_min=0.9, epochs=3),
            "oom": tiny_spec(batch_size=64),
            "plain": tiny_spec(epochs=1, data="synthetic:200"),
        }  # fmt: skip
        try:
            got = run_queue(ws, list(specs.values()), timeout=240)
            got["by_name"] = dict(zip(specs, got["ids"], strict=True))
            got["ws"] = ws
            yield got
        finally:
            kill_workers(ws)


def test_queued_runs_all_end_one_at_a_time_and_the_store_stays_responsive(queue: dict[str, Any]) -> None:
    statuses = {name: queue["runs"][i].status for name, i in queue["by_name"].items()}
    assert statuses == {
        "range": "diverged", "blowup": "diverged", "oom": "failed", "plain": "finished"
    }  # fmt: skip
    assert queue["max_running"] == 1  # the default: one run at a time on the CPU
    runs = sorted(queue["runs"].values(), key=lambda r: r.started)
    for a, b in zip(runs, runs[1:], strict=False):
        assert b.started >= a.ended - 0.5, "a queued run started before the previous one ended"
    print("\n" + _report(queue, "queue"))
    assert max(queue["reads"]) < 1.0  # the UI never waits a second for the runs table


def test_diverged_runs_keep_their_curves_and_count_as_evidence(
    queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store: Store = queue["store"]
    rng, blow = queue["by_name"]["range"], queue["by_name"]["blowup"]
    for run_id in (rng, blow):
        run = store.get_run(run_id)
        assert run.status == "diverged", run
        assert run.error is None and run.outcome["outcome"] == "diverged"
        at = run.outcome["diverged_at_step"]
        rows = store.metrics(run_id)
        assert [r["step"] for r in rows] == list(range(at + 1)), "the curve up to the blow-up is kept"
        assert "Traceback" not in store.log_path(run_id).read_text()
    # The training run really went to NaN/inf: its last row has no finite loss (stored as NULL).
    assert store.metrics(blow)[-1]["train_loss"] is None

    # The advisor reads the diverged range test as evidence: the divergence point caps the max LR.
    curves = curves_from_store(store, rng)
    div_lr = store.get_run(rng).outcome["diverged_lr"]
    assert curves.outcome == "diverged" and curves.diverged_lr == div_lr
    cl = Checklist(data="synthetic:300", model="simple3", budget="quick")
    key = cl.propose("lr_range").candidates[0].key
    rec = cl.recommend("lr_range", {key: curves})
    assert rec.ok and rec.value is not None, rec.reason
    assert rec.detail["estimates"]["divergence"] <= div_lr
    assert rec.value["lr_max"] < div_lr and "diverges at" in rec.reason
    # ... and the diverged training run as a diagnosis, not a crash.
    c = curves_from_store(store, blow)
    d = diagnose(c.steps, c.train_loss, c.eval_steps, c.val_loss, c.val_acc, model="simple3")
    assert d.kind == "diverged" and "NaN/inf" in d.explanation

    monkeypatch.setenv("TUNEASSIST_HOME", str(queue["ws"]))
    code, out, err = run_main(capsys, "runs", "--status", "diverged")
    assert code == 0 and err == ""
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(rng), str(blow)], out


def test_out_of_memory_run_is_failed_with_the_batch_and_a_smaller_one(queue: dict[str, Any]) -> None:
    run = queue["runs"][queue["by_name"]["oom"]]
    assert run.status == "failed" and "\n" not in run.error
    assert run.error.startswith(
        "out of memory on cpu at batch size 64 (simulated by TUNEASSIST_FAKE_OOM_ABOVE); use --batch-size 32 "
        "or less (the largest that fits: python -m tuneassist.engine.probe --model simple3"
    ), run.error
    assert queue["store"].metric_count(run.id) == 0  # it failed at its first step


@pytest.mark.slow
def test_twenty_short_runs_queued_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    monkeypatch.setenv("TUNEASSIST_HOME", str(ws))
    monkeypatch.delenv("TUNEASSIST_MAX_PER_DEVICE", raising=False)
    specs = [tiny_spec(data="synthetic:200", steps=4, seed=i, checkpoint_every=0) for i in range(20)]
    try:
        got = run_queue(ws, specs, timeout=600)
    finally:
        kill_workers(ws)
    assert [got["runs"][i].status for i in got["ids"]] == ["finished"] * 20
    assert got["max_running"] == 1
    print("\n" + _report(got, "20 runs"))
    assert max(got["reads"]) < 1.0
