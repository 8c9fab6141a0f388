"""Untrusted files: profiles, stores and checkpoints never execute code; the workspace is private;
`serve` stays on localhost unless told otherwise.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from relkit import one_line_error, run_main, tiny_spec

from tuneassist.errors import UserError
from tuneassist.runs.schema import TrainValues
from tuneassist.runs.store import MetricWriter, Store

# -- `module:function` models --------------------------------------------------------------------------

_EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")
def build(num_classes):
    raise SystemExit("never called in these tests")
"""


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module in the current directory that leaves a marker file when imported; returns the marker."""
    marker = tmp_path / "IMPORTED"
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "evilnet.py").write_text(_EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.chdir(code_dir)  # where the engine looks for user modules, as a user would run it
    monkeypatch.syspath_prepend(str(code_dir))
    yield marker
    sys.modules.pop("evilnet", None)


def test_module_models_are_imported_only_with_allow_import(
    evil_module: Path, ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data", "synthetic:300", "--device", "cpu", "--epochs", "1"]
    for cmd in ("train", "lr-find"):
        code, _, err = run_main(capsys, cmd, "--model", "evilnet:build", *data[:4])
        one_line_error(code, err, "evilnet:build", "--allow-import")
    profile = tmp_path / "evil.toml"
    profile.write_text(
        'name = "evil"\ndata = "synthetic:300"\nmodel = "evilnet:build"\nbatch_size = 32\nepochs = 1\n'
        "lr_min = 0.01\nlr_max = 0.1\nmomentum_max = 0.95\nmomentum_min = 0.85\nweight_decay = 1e-4\n"
    )
    code, out, _ = run_main(capsys, "profile", "show", str(profile))
    assert code == 0 and 'model = "evilnet:build"' in out
    code, out, _ = run_main(capsys, "profile", "export", str(profile), "--format", "pytorch")
    assert code == 0 and "evilnet" in out
    code, _, err = run_main(capsys, "train", "--profile", str(profile), "--device", "cpu")
    one_line_error(code, err, "'evilnet:build', which imports and runs Python code", "--allow-import")
    # A store that names the module (a run and a session of someone else's workspace) is read safely.
    with Store(ws) as store:
        run_id = store.add_run(tiny_spec(model="evilnet:build", allow_import=True), "train")
        store.update_run(run_id, status="finished", started=1.0, ended=2.0)
    from tuneassist.session import TuningSession

    session = TuningSession.create(Store(ws), data="synthetic:300", model="evilnet:build")
    assert TuningSession(Store(ws), session.id).checklist.model == "evilnet:build"
    for argv in (["runs"], ["runs", "--json"], ["runs", "export", str(run_id), "--format", "csv"]):
        assert run_main(capsys, *argv)[0] == 0
    assert not evil_module.exists() and "evilnet" not in sys.modules, "the module was imported"

    # The module really does what the checks above kept from happening.
    import importlib

    importlib.import_module("evilnet")
    assert evil_module.read_text() == "imported"


# -- checkpoints ---------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this runs exec(code): what a crafted checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint the engine wrote (one epoch of simple3 in this process)."""
    from tuneassist.engine.train import train
    from tuneassist.spec import RunSpec

    path = tmp_path_factory.mktemp("ckpt") / "real.pt"
    train(RunSpec.from_dict(tiny_spec(epochs=1, test=False)), checkpoint_path=path)
    return path


def _cancelled_run(store: Store) -> int:
    run_id = store.add_run(tiny_spec(), "train")
    assert store.request_cancel(run_id) == "cancelled"  # a stopped run the user wants to resume
    store.run_dir(run_id)
    return run_id


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
@pytest.mark.parametrize("kind", ["pickled object", "truncated", "pickled object, protocol 4"])
def test_resume_refuses_a_bad_checkpoint_and_loads_nothing(
    kind: str, ws: Path, tmp_path: Path, real_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from tuneassist.engine.train import load_checkpoint

    marker = tmp_path / "PWNED"
    store = Store(ws)
    run_id = _cancelled_run(store)
    ckpt = store.checkpoint_path(run_id)
    if kind == "truncated":
        good = real_checkpoint.read_bytes()
        ckpt.write_bytes(good[: len(good) * 2 // 3])
        needle = "is truncated or damaged"
    else:
        payload = {"version": 1, "model": {"w": torch.zeros(2)}, "step": 8, "extra": _Evil(marker)}
        torch.save(payload, ckpt, pickle_protocol=4 if "4" in kind else 2)
        needle = "holds a pickled object (" + ("builtins" if "4" in kind else "__builtin__") + ".exec)"

    code, out, err = run_main(capsys, "runs", "resume", str(run_id))
    one_line_error(code, err, str(ckpt), needle, f"tuneassist runs resume {run_id} --from-start")
    assert store.get_run(run_id).status == "cancelled"  # nothing was queued
    # The worker's own gate (torch.load weights_only=True) refuses it too.
    with pytest.raises(UserError, match="it was not loaded") as exc:
        load_checkpoint(ckpt)
    assert "\n" not in str(exc.value)
    assert not marker.exists(), "the checkpoint's code ran"
    if kind != "truncated":  # and the file really is a weapon: unpickled without the gate, it fires
        torch.load(ckpt, weights_only=False)
        assert marker.read_text() == "pwned"


def test_resume_from_start_sets_the_bad_checkpoint_aside(
    ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TUNEASSIST_HEARTBEAT_TIMEOUT", "600")
    store = Store(ws)
    run_id = _cancelled_run(store)
    store.checkpoint_path(run_id).write_bytes(b"PK\x03\x04 cut short")
    # The CPU is busy with another run (a live process), so the resumed run waits in the queue.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tuneassist.runs.worker"])
    try:
        busy = store.add_run(tiny_spec(), "train")
        store.update_run(busy, status="running", device="cpu", pid=holder.pid, host=socket.gethostname(),
                         heartbeat=time.time(), started=time.time())  # fmt: skip
        code, out, err = run_main(capsys, "runs", "resume", str(run_id), "--from-start")
    finally:
        holder.kill()
        holder.wait()
    assert code == 0 and "from the start (no checkpoint)" in out, err
    run = store.get_run(run_id, refresh=False)
    assert run.status == "queued" and not run.resume and run.checkpoint_step is None
    assert not store.checkpoint_path(run_id).exists()
    assert store.checkpoint_path(run_id).with_name("checkpoint.pt.bad").read_bytes().startswith(b"PK")


# -- a private workspace ---------------------------------------------------------------------------------


def test_workspace_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ws = tmp_path / "deep" / "ws"
        with Store(ws) as store:
            run_id = store.add_run(tiny_spec(), "train")
            store.run_dir(run_id)
            w = MetricWriter(store, run_id, background=False)
            w.add_train(0, TrainValues(train_loss=1.0))
            w.close()
            files = [ws, ws / "runs", store.run_dir(run_id), *ws.glob("tuneassist.db*")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    finally:
        os.umask(old)
    assert modes.pop("ws") == 0o700 and modes.pop("runs") == 0o700 and modes.pop(str(run_id)) == 0o700
    assert modes and all(m == 0o600 for m in modes.values()), modes  # the database and its -wal/-shm


# -- `tuneassist serve` ------------------------------------------------------------------------------------


def test_serve_binds_localhost_by_default_and_explains_the_tunnel(capsys: pytest.CaptureFixture[str]) -> None:
    from tuneassist.cli.main import build_parser
    from tuneassist.cli.tui_cmd import serve_banner

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    local = serve_banner(args.host, args.port, "gpu-box")
    assert local[0].startswith("serving tuneassist at http://127.0.0.1:8000")
    assert local[1].startswith("from your machine: ssh -N -L 8000:127.0.0.1:8000 gpu-box")
    assert "then open http://localhost:8000" in local[1]
    wide = serve_banner("0.0.0.0", 9000, "gpu-box")
    assert wide[1].startswith("warning: bound to 0.0.0.0, beyond localhost: anyone who can reach port 9000")
    assert "SSH tunnel" in wide[1]  # and it says how to do it safely instead
    code, _, err = run_main(capsys, "serve", "--port", "70000")
    one_line_error(code, err, "port 70000 is not a TCP port")
