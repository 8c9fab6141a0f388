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

from tuneassist.runs.launch import launch_run
from tuneassist.runs.store import Store
from tuneassist.spec import RunSpec

ENDED = ("finished", "diverged", "failed", "cancelled", "lost")


def _ended(store: Store, *ids: int) -> bool:
    return all(store.get_run(i).status in ENDED for i in ids)


# -- out of memory ----------------------------------------------------------------------------------


def test_run_too_large_for_memory_fails_naming_the_batch_and_one_that_fits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device that fits 40 images: TUNEASSIST_FAKE_OOM_ABOVE raises torch.OutOfMemoryError in the training
    step, where CUDA would. Training at 64 stops with one line naming 64 and a batch that fits; that one
    trains. (The probe's back-off: tests/test_probe.py; a background run's `failed`: test_rel_runs.py.)"""
    monkeypatch.setenv("TUNEASSIST_FAKE_OOM_ABOVE", "40")
    base = ["train", "--data", "synthetic:300", "--model", "simple3", "--epochs", "1", "--device", "cpu",
            "--threads", "1"]  # fmt: skip
    code, _, err = run_main(capsys, *base, "--batch-size", "64")
    line = one_line_error(
        code, err, "out of memory on cpu at batch size 64", "--batch-size 32 or less", progress=True
    )
    assert "tuneassist.engine.probe --model simple3 --data synthetic:300" in line
    code, out, err = run_main(capsys, *base, "--batch-size", "32")
    assert code == 0 and out.startswith("finished:"), err


# -- a killed machine -----------------------------------------------------------------------------


def test_reboot_leaves_lost_runs_that_resume_from_the_last_good_checkpoint(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(ws)
    run_id = launch_run(store, RunSpec.from_dict(tiny_spec(epochs=4)))
    wait_for(lambda: (store.get_run(run_id).checkpoint_step or 0) >= SPE, 60, "a checkpoint", store)
    pid = store.get_run(run_id).pid
    os.kill(pid, signal.SIGSTOP)  # freeze it, note what is committed, then the machine "reboots"
    committed = store.metrics(run_id)
    ckpt_step = store.get_run(run_id).checkpoint_step
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
        wait_for(lambda: store.get_run(run_id).status == "lost", 10, "the run to be lost", store)
        assert time.monotonic() - lost_at < 5
    finally:
        stranger.kill()
        stranger.wait()
    lost = store.get_run(run_id)
    assert f"tuneassist runs resume {run_id}" in lost.error
    assert store.metrics(run_id) == committed, "a committed metric row was lost"

    code, out, err = run_main(capsys, "runs", "resume", str(run_id))
    assert code == 0, err
    assert f"from its checkpoint at step {ckpt_step}" in out
    wait_for(lambda: _ended(store, run_id), 90, "the resumed run", store)
    run = store.get_run(run_id)
    assert run.status == "finished" and run.attempt == 2, run
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
        preexec_fn=limit_file_size if mode == "efbig" else None, stdout=subprocess.DEVNULL,
    )
    if mode in ("erofs", "eacces"):  # the folder turns read-only once training is under way
        while not store.get_run(run_id, refresh=False).info and worker.poll() is None:
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
        "run": {k: getattr(run, k) for k in ("id", "status", "error", "checkpoint_step", "info")},
        "steps": [r["step"] for r in store.metrics(run_id)],
        "files": sorted(os.listdir(run_dir)),
        "runs": tuneassist("runs"),
    }))
    """
)


def _scenario(root: Path, mode: str) -> subprocess.Popen[str]:
    """Start a worker whose checkpoint write hits the fault (in a private mount namespace for the real
    ENOSPC/EROFS modes); its stdout is what the store and the CLI then show, as JSON."""
    ws = root / mode / "ws"
    ws.mkdir(parents=True, mode=0o700)
    # 16 steps (a few seconds) before the first checkpoint: time to make the folder read-only first.
    spec = tiny_spec(data="synthetic:600", epochs=2, checkpoint_every=1, sync_every=8)
    cmd = [sys.executable, "-c", _SCENARIO, str(ws), mode, json.dumps(spec)]
    if mode == "enospc":  # the workspace on a 1 MiB file system: the ~1.2 MB checkpoint cannot fit
        cmd = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=1m,mode=0700 tmpfs "$1" && shift && '
               'exec "$@"', "sh", str(ws), *cmd]  # fmt: skip
    elif mode == "erofs":
        cmd = ["unshare", "-m", *cmd]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )


def _disk_modes(root: Path) -> tuple[str, str | None]:
    """(disk-full mode, read-only mode) this machine can really produce."""
    if can_unshare_mounts(root / "probe"):
        return "enospc", "erofs"
    return "efbig", None if os.geteuid() == 0 else "eacces"


@pytest.fixture(scope="module")
def disk_faults(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """Both scenarios at once (each worker uses one thread): fault -> (mode, result)."""
    root = tmp_path_factory.mktemp("disk")
    full, read_only = _disk_modes(root)
    procs = {"disk full": (full, _scenario(root, full))}
    if read_only is not None:
        procs["read-only"] = (read_only, _scenario(root, read_only))
    results: dict[str, tuple[str | None, dict[str, Any]]] = {"read-only": (None, {})}
    for fault, (mode, proc) in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results[fault] = (mode, json.loads(out.splitlines()[-1]))
    return results


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_checkpoint_write_failure_stops_the_run_with_a_clear_error(
    disk_faults: dict[str, tuple[str | None, dict[str, Any]]], fault: str
) -> None:
    mode, got = disk_faults[fault]
    if mode is None:
        pytest.skip("root without mount rights: no way to make a folder read-only for this process")
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
    assert got["steps"] == list(range(spe)), "rows up to the failed checkpoint are kept"
    assert run["checkpoint_step"] is None
    assert "checkpoint.pt" not in got["files"] and "checkpoint.pt.tmp" not in got["files"]
    # The store stays readable and `runs` shows the failure in one line.
    assert got["runs"]["code"] == 0 and "Traceback" not in got["runs"]["err"], got["runs"]
    assert f"run {run['id']} failed: cannot write checkpoint" in got["runs"]["out"]


_LIST_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from tuneassist.runs.schema import TrainValues
    from tuneassist.runs.store import MetricWriter, Store
    ws, fill = sys.argv[1], sys.argv[2] == "fill"
    if not os.path.exists(os.path.join(ws, "tuneassist.db")):  # made here: on the tiny file system
        with Store(ws) as store:
            done = store.add_run({"model": "simple3", "data": "synthetic:300"}, "train")
            store.update_run(done, status="finished", started=1.0, ended=2.0)
            w = MetricWriter(store, done, background=False)
            w.add_train(0, TrainValues(epoch=0.0, lr=0.01, train_loss=2.3))
            w.close()
            dead = store.add_run({"model": "simple3"}, "train")  # its worker is gone, not yet marked lost
            store.update_run(dead, status="running", pid=2**22 + 7, heartbeat=1.0, device="cpu", started=1.0)
            store.add_run({"model": "simple3"}, "train")  # queued: listing must not try to start it
    if sys.argv[2] == "setup-only":
        sys.exit(0)
    if fill:
        with open(os.path.join(ws, "filler"), "wb") as f:
            try:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
            except OSError:
                pass  # ENOSPC: the disk is full
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


@pytest.mark.parametrize("fault", ["read-only", "full disk"])
def test_unwritable_workspace_is_listed_not_changed(tmp_path: Path, fault: str) -> None:
    """The whole workspace read-only (a read-only mount, or no write permission) or on a full disk: the
    CLI lists and exports runs, shows a dead worker's run as lost without writing it, and refuses changes
    in one line saying why."""
    full, read_only = _disk_modes(tmp_path)
    mode = read_only if fault == "read-only" else ("enospc" if full == "enospc" else None)
    if mode is None:
        pytest.skip("no mount rights here: cannot make a read-only mount or a tiny file system")
    ws = tmp_path / "ws"
    ws.mkdir(mode=0o700)
    script = [sys.executable, "-c", _LIST_SCRIPT, str(ws)]
    before: dict[Path, bytes] = {}
    if mode == "enospc":
        mount = 'mount -t tmpfs -o size=1m,mode=0700 tmpfs "$1" && shift && exec "$@"'
        cmd = ["unshare", "-m", "sh", "-c", mount, "sh", str(ws), *script, "fill"]
    else:
        subprocess.run([*script, "setup-only"], env=subprocess_env(), check=True, capture_output=True)
        before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
        if mode == "erofs":
            mount = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
            cmd = ["unshare", "-m", "sh", "-c", mount, "sh", str(ws), *script, "list"]
        else:
            for p in [ws, *ws.rglob("*")]:
                p.chmod(0o500 if p.is_dir() else 0o400)
            cmd = [*script, "list"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=240)
    finally:
        for p in [ws, *ws.rglob("*")]:
            p.chmod(0o700 if p.is_dir() else 0o600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.splitlines()[-1])
    why, fix = ("is on a full disk", "free some space") if mode == "enospc" else ("is read-only", "writable")
    code, out, err = got["list"]
    assert code == 0 and why in err, got["list"]
    rows = {r["id"]: r for r in json.loads(out)}
    assert [rows[i]["status"] for i in (1, 2, 3)] == ["finished", "lost", "queued"]
    assert f"(not recorded: the workspace {why}" in rows[2]["error"]
    assert got["table"][0] == 0 and "finished" in got["table"][1]
    assert got["export"][0] == 0 and '"train_loss": 2.3' in got["export"][1]
    for name in ("cancel", "train"):
        code, _, err = got[name]
        one_line_error(code, err, why, fix)
    if before:
        assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == before  # nothing written
