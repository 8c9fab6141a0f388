"""Faults during runs: divergence, out of memory, a killed machine, a full or read-only disk.

Real detached workers train simple3 on a few hundred synthetic images on one CPU thread; each worker
start costs a few seconds (importing torch), so the tests share runs where they can.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    SPE,
    can_unshare_mounts,
    one_line_error,
    run_main,
    subprocess_env,
    tiny_spec,
    wait_for,
)

from tuneassist.advisor.checklist import Checklist
from tuneassist.advisor.diagnosis import diagnose
from tuneassist.runs.launch import launch_run
from tuneassist.runs.store import Store
from tuneassist.session import curves_from_store
from tuneassist.spec import RunSpec

ENDED = ("finished", "diverged", "failed", "cancelled", "lost")


def _ended(store: Store, *ids: int) -> bool:
    return all(store.get_run(i)["status"] in ENDED for i in ids)


# -- divergence -----------------------------------------------------------------------------------


def test_diverged_runs_keep_their_curves_and_count_as_evidence(
    ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TUNEASSIST_MAX_PER_DEVICE", "2")  # both on the CPU at once: one wait
    store = Store(ws)
    range_spec = tiny_spec(
        schedule="range_exp", steps=80, lr_min=1e-3, lr_max=1e3, eval_every=8, eval_subset=30, test=False,
        checkpoint_every=0,
    )  # fmt: skip
    blowup_spec = tiny_spec(
        schedule="constant", lr_min=1e4, lr_max=1e4, momentum_max=0.9, momentum_min=0.9, epochs=3
    )
    rng = launch_run(store, RunSpec.from_dict(range_spec), kind="lr_find")
    blow = launch_run(store, RunSpec.from_dict(blowup_spec))
    wait_for(lambda: _ended(store, rng, blow), 120, "both runs to end", store)

    for run_id in (rng, blow):
        run = store.get_run(run_id)
        assert run["status"] == "diverged", run
        assert run["error"] is None and run["outcome"]["outcome"] == "diverged"
        at = run["outcome"]["diverged_at_step"]
        rows = store.metrics(run_id)
        assert [r["step"] for r in rows] == list(range(at + 1)), "the curve up to the blow-up is kept"
        assert "Traceback" not in store.log_path(run_id).read_text()
    # The training run really went to NaN/inf: its last row has no finite loss, stored as NULL.
    assert store.metrics(blow)[-1]["train_loss"] is None

    # The advisor reads the diverged range test as evidence: the divergence point caps the max LR.
    curves = curves_from_store(store, rng)
    div_lr = store.get_run(rng)["outcome"]["diverged_lr"]
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

    code, out, err = run_main(capsys, "runs")
    assert code == 0 and err == ""
    assert sum(line.split()[2] == "diverged" for line in out.splitlines()[1:]) == 2, out


# -- out of memory ----------------------------------------------------------------------------------


def test_probe_backs_off_and_a_run_too_large_fails_naming_the_batch(
    ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device that fits 40 images (TUNEASSIST_FAKE_OOM_ABOVE raises torch.OutOfMemoryError where CUDA
    would): the probe backs off to 32; training at 64 stops with one line naming 64 and a batch that
    fits; at the probe's answer it trains; a background run records `failed` with the same line."""
    from tuneassist.engine.probe import probe_max_batch

    monkeypatch.setenv("TUNEASSIST_FAKE_OOM_ABOVE", "40")
    probe = probe_max_batch("simple3", 10, device="cpu", start=8, limit=256)
    assert probe.first_oom is not None and probe.largest_fit == 40 and probe.max_batch == 32

    base = ["train", "--data", "synthetic:300", "--model", "simple3", "--epochs", "1", "--device", "cpu",
            "--threads", "1"]  # fmt: skip
    code, _, err = run_main(capsys, *base, "--batch-size", "64")
    line = one_line_error(
        code, err, "out of memory on cpu at batch size 64", "--batch-size 32 or less", progress=True
    )
    assert "tuneassist.engine.probe --model simple3 --data synthetic:300" in line
    code, out, err = run_main(capsys, *base, "--batch-size", str(probe.max_batch))
    assert code == 0 and out.startswith("finished:"), err

    store = Store(ws)
    run_id = launch_run(store, RunSpec.from_dict(tiny_spec(batch_size=64)))  # the worker inherits the hook
    wait_for(lambda: _ended(store, run_id), 60, "the run to fail", store)
    run = store.get_run(run_id)
    assert run["status"] == "failed" and "\n" not in run["error"]
    assert run["error"].startswith("out of memory on cpu at batch size 64 (simulated by TUNEASSIST_FAKE_OOM_")
    assert "--batch-size 32 or less" in run["error"]
    code, out, _ = run_main(capsys, "runs")
    assert code == 0 and f"run {run_id} failed: out of memory on cpu at batch size 64" in out


# -- a killed machine -----------------------------------------------------------------------------


def test_reboot_leaves_lost_runs_that_resume_from_the_last_good_checkpoint(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(ws)
    run_id = launch_run(store, RunSpec.from_dict(tiny_spec(epochs=4)))
    wait_for(lambda: (store.get_run(run_id)["checkpoint_step"] or 0) >= SPE, 60, "a checkpoint", store)
    pid = store.get_run(run_id)["pid"]
    os.kill(pid, signal.SIGSTOP)  # freeze it, note what is committed, then the machine "reboots"
    committed = store.metrics(run_id)
    ckpt_step = store.get_run(run_id)["checkpoint_step"]
    assert committed and committed[-1]["step"] >= ckpt_step - 1
    os.killpg(pid, signal.SIGKILL)  # the worker leads its own session: its whole group goes
    # After the reboot its pid belongs to an unrelated process, and a checkpoint write was cut short.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.update_run(run_id, pid=stranger.pid)
        ckpt = store.checkpoint_path(run_id)
        good = ckpt.read_bytes()
        half = ckpt.with_name("checkpoint.pt.tmp")
        half.write_bytes(good[: len(good) // 2])
        lost_at = time.monotonic()
        wait_for(lambda: store.get_run(run_id)["status"] == "lost", 10, "the run to be lost", store)
        assert time.monotonic() - lost_at < 5
    finally:
        stranger.kill()
        stranger.wait()
    lost = store.get_run(run_id)
    assert f"tuneassist runs resume {run_id}" in lost["error"]
    assert store.metrics(run_id) == committed, "a committed metric row was lost"

    code, out, err = run_main(capsys, "runs", "resume", str(run_id))
    assert code == 0, err
    assert f"from its checkpoint at step {ckpt_step}" in out
    wait_for(lambda: _ended(store, run_id), 90, "the resumed run", store)
    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["attempt"] == 2, run
    rows = store.metrics(run_id)
    assert [r["step"] for r in rows] == list(range(4 * SPE))  # each step once, the epochs add up
    before = [r for r in committed if r["step"] < ckpt_step]
    assert rows[: len(before)] == before, "rows before the checkpoint were kept as they were"
    log = store.log_path(run_id).read_text()
    assert f"'start_step': {ckpt_step}" in log  # the complete checkpoint.pt, never the half .tmp
    assert not half.exists() and ckpt.read_bytes() != good  # replaced by later complete checkpoints

    # Nothing in the workspace is readable by other users: folders 0700, files 0600.
    for p in [ws, *ws.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} is {oct(mode)}"
    assert stat.S_IMODE(ws.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.db_path.stat().st_mode) == 0o600


# -- a full disk, a read-only folder ------------------------------------------------------------------

_SCENARIO = textwrap.dedent(
    """
    import json, os, resource, subprocess, sys, time
    from tuneassist.runs.store import Store
    ws, mode, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    store = Store(ws)
    run_id = store.add_run(spec, "train")
    run_dir = store.run_dir(run_id)

    def limit_file_size():  # a file-size cap: writes past it fail with EFBIG, for root too
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, resource.RLIM_INFINITY))

    worker = subprocess.Popen(
        [sys.executable, "-m", "tuneassist.runs.worker", "--workspace", ws, "--run", str(run_id)],
        preexec_fn=limit_file_size if mode == "efbig" else None,
    )
    if mode in ("erofs", "eacces"):  # the folder turns read-only once training is under way
        while store.get_run(run_id, refresh=False)["info"] is None and worker.poll() is None:
            time.sleep(0.01)
        if mode == "erofs":
            for cmd in (["mount", "--bind", str(run_dir), str(run_dir)],
                        ["mount", "-o", "remount,ro,bind", str(run_dir)]):
                subprocess.run(cmd, check=True)
        else:
            os.chmod(run_dir, 0o500)
    worker.wait(timeout=120)

    def tuneassist(*args):
        p = subprocess.run([sys.executable, "-m", "tuneassist.cli.main", *args, "--workspace", ws],
                           capture_output=True, text=True, timeout=60)
        return {"code": p.returncode, "out": p.stdout, "err": p.stderr}

    run = store.get_run(run_id)
    print(json.dumps({
        "run": {k: run[k] for k in ("id", "status", "error", "checkpoint_step", "info")},
        "steps": [r["step"] for r in store.metrics(run_id)],
        "files": sorted(os.listdir(run_dir)),
        "runs": tuneassist("runs"),
        "json": tuneassist("runs", "--json"),
    }))
    """
)


def _scenario(tmp_path: Path, mode: str) -> dict[str, Any]:
    """Run a worker whose checkpoint write hits the fault; returns what the store and the CLI show."""
    ws = tmp_path / "ws"
    ws.mkdir(mode=0o700)
    # 56 steps per epoch and a checkpoint after 2 epochs: time to make the folder read-only first.
    spec = tiny_spec(data="synthetic:2000", epochs=3, checkpoint_every=2, sync_every=8)
    cmd = [sys.executable, "-c", _SCENARIO, str(ws), mode, json.dumps(spec)]
    if mode == "enospc":  # the workspace on a 1 MiB file system: the ~1.2 MB checkpoint cannot fit
        cmd = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=1m,mode=0700 tmpfs "$1" && shift && '
               'exec "$@"', "sh", str(ws), *cmd]  # fmt: skip
    elif mode == "erofs":
        cmd = ["unshare", "-m", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def _disk_modes(tmp_path: Path) -> tuple[str, str | None]:
    """(disk-full mode, read-only mode) this machine can really produce."""
    if can_unshare_mounts(tmp_path / "probe"):
        return "enospc", "erofs"
    return "efbig", None if os.geteuid() == 0 else "eacces"


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_checkpoint_write_failure_stops_the_run_with_a_clear_error(tmp_path: Path, fault: str) -> None:
    full, read_only = _disk_modes(tmp_path)
    mode = full if fault == "disk full" else read_only
    if mode is None:
        pytest.skip("root without mount rights: no way to make a folder read-only for this process")
    got = _scenario(tmp_path, mode)
    run = got["run"]
    reason = {
        "enospc": "No space left on device",
        "efbig": "File too large",
        "erofs": "Read-only file system",
        "eacces": "Permission denied",
    }[mode]
    fix = "free some disk space there" if fault == "disk full" else "writable"
    assert run["status"] == "failed", got
    err = run["error"]
    assert "\n" not in err and err.startswith("cannot write checkpoint "), err
    assert reason in err and fix in err, err
    spe = run["info"]["steps_per_epoch"]
    assert got["steps"] == list(range(2 * spe)), "rows up to the failed checkpoint are kept"
    assert run["checkpoint_step"] is None
    assert "checkpoint.pt" not in got["files"] and "checkpoint.pt.tmp" not in got["files"]
    # The store stays readable and `runs` shows the failure in one line.
    assert got["runs"]["code"] == 0 and "Traceback" not in got["runs"]["err"], got["runs"]
    assert f"run {run['id']} failed: cannot write checkpoint" in got["runs"]["out"]
    listed = json.loads(got["json"]["out"])
    assert [(r["id"], r["status"]) for r in listed] == [(run["id"], "failed")]


def test_read_only_workspace_is_listed_not_changed(tmp_path: Path) -> None:
    """The whole workspace read-only (a read-only mount, or no write permission): the CLI lists and
    exports runs, shows a dead worker's run as lost without writing, and refuses changes in one line."""
    full, read_only = _disk_modes(tmp_path)
    if read_only is None:
        pytest.skip("root without mount rights: no way to make the workspace read-only for this process")
    ws = tmp_path / "ws"
    with Store(ws) as store:
        done = store.add_run(tiny_spec(), "train")
        store.update_run(done, status="finished", started=1.0, ended=2.0)
        dead = store.add_run(tiny_spec(), "train")
        store.update_run(dead, status="running", pid=2**22 + 7, heartbeat=1.0, device="cpu", started=1.0)
        store.add_run(tiny_spec(), "train")  # queued: listing must not try to start it
    script = textwrap.dedent(
        """
        import json, subprocess, sys
        ws = sys.argv[1]
        def tuneassist(*args):
            p = subprocess.run([sys.executable, "-m", "tuneassist.cli.main", "--workspace", ws, *args],
                               capture_output=True, text=True, timeout=60)
            return [p.returncode, p.stdout, p.stderr]
        print(json.dumps({
            "list": tuneassist("runs", "--json"),
            "table": tuneassist("runs"),
            "export": tuneassist("runs", "export", "1", "--format", "jsonl"),
            "cancel": tuneassist("runs", "cancel", "3"),
            "train": tuneassist("train", "--data", "synthetic:300", "--background"),
        }))
        """
    )
    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    if read_only == "erofs":
        mount = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", mount, "sh", str(ws), sys.executable, "-c", script, str(ws)]
    else:
        for p in [ws, *ws.rglob("*")]:
            p.chmod(0o500 if p.is_dir() else 0o400)
        cmd = [sys.executable, "-c", script, str(ws)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=240)
    finally:
        for p in [ws, *ws.rglob("*")]:
            p.chmod(0o700 if p.is_dir() else 0o600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout)
    code, out, err = got["list"]
    assert code == 0 and "read-only" in err, got["list"]
    rows = {r["id"]: r for r in json.loads(out)}
    assert [rows[i]["status"] for i in (1, 2, 3)] == ["finished", "lost", "queued"]
    assert "not recorded: the workspace is read-only" in rows[2]["error"]
    assert got["table"][0] == 0 and "finished" in got["table"][1]
    assert got["export"][0] == 0
    for name in ("cancel", "train"):
        code, _, err = got[name]
        one_line_error(code, err, "is read-only here", "make it writable")
    after = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    assert after == before  # nothing was written
