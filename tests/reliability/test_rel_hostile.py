"""Hostile files and careless paths (issue 16): a shared profile, a shared workspace or a typo never
runs code, overwrites a file outside the workspace, destroys the store or loses a run.

Every test performs the attack for real (a crafted profile, planted symlinks, an export aimed at the
live database, /dev/zero, a FIFO, escape codes) and checks that it fails.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from relkit import cli, one_line_error, run_main, subprocess_env, wait_for

from tuneassist.profiles.schema import dumps_toml

# -- 1. profile export never turns profile text into code or keys --------------------------------------

_BREAKOUT = 'x"""\nimport os; os.system("echo PWNED > {marker}")\nr"""y'


def _profile(**over: object) -> dict[str, object]:
    d: dict[str, object] = {
        "name": "onecycle",
        "description": "benign",
        "data": "folder:/data/imgs",
        "model": "resnet20",
        "batch_size": 128,
        "epochs": 30,
        "lr_min": 0.08,
        "lr_max": 0.8,
        "momentum_max": 0.95,
        "momentum_min": 0.85,
        "weight_decay": 1e-4,
        "notes": "benign",
        "schedule": {"kind": "onecycle", "rise_fraction": 0.45, "final_div": 100.0, "steps_per_epoch": 87},
        "accuracy": {"expected": 92.0, "expected_source": "Smith 2018"},
    }
    d.update(over)
    return d


def _statements(source: str) -> list[tuple[str, ...]]:
    """The module body as (node type, names it binds or calls): what the template writes."""
    out: list[tuple[str, ...]] = []
    for node in ast.parse(source).body:
        names = sorted(
            {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            | {n.name for n in ast.walk(node) if isinstance(n, ast.FunctionDef | ast.alias)}  # type: ignore[misc]
        )
        out.append((type(node).__name__, *names))
    return out


def test_profile_export_emits_profile_text_only_as_literals(
    tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned.txt"
    evil = _BREAKOUT.format(marker=marker)
    yaml_keys = "\ntrainer:\n  callbacks: [evil]\nx: 1\n\u2028y: 2\x85z: 3\r"
    hostile = _profile(
        name="n" + evil + yaml_keys,
        description=evil,
        notes=evil,
        data="folder:" + evil + yaml_keys + "end",  # written exactly: no whitespace at its ends
        accuracy={"expected": 92.0, "expected_source": evil + yaml_keys + "\\"},
    )
    benign_path, hostile_path = tmp_path / "benign.toml", tmp_path / "inject.toml"
    benign_path.write_text(dumps_toml(_profile()))
    hostile_path.write_text(dumps_toml(hostile))

    exports = {}
    for which, path in (("benign", benign_path), ("hostile", hostile_path)):
        for fmt in ("pytorch", "lightning"):
            out = tmp_path / f"{which}.{fmt}"
            code, _, err = run_main(capsys, "profile", "export", str(path), "--format", fmt, "-o", str(out))
            assert code == 0, err
            exports[which, fmt] = out.read_text()

    # Both exports are Python modules (the script; the LightningModule mixin): the same statements as a
    # benign profile's, the text inside the docstring as data, and running them writes no marker.
    for fmt in ("pytorch", "lightning"):
        script = exports["hostile", fmt]
        assert _statements(script) == _statements(exports["benign", fmt]), fmt
        doc = ast.get_docstring(ast.parse(script), clean=False) or ""
        assert 'os.system(\\"echo PWNED' not in doc and "os.system(" in doc  # shown, escaped to one line
        assert "\n" not in doc.split("\n\n")[0] and "\x1b" not in script
        for bad in ("\r", "\x85", "\u2028", "\u2029"):
            assert bad not in script, (fmt, bad)
        compile(script, "onecycle.py", "exec")
        # Running it (imports torch, prints the schedule) writes no marker.
        run = subprocess.run([sys.executable, str(tmp_path / f"hostile.{fmt}")], capture_output=True,
                             text=True, timeout=120, env=subprocess_env())  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert not marker.exists(), f"the exported {fmt} module ran the profile's code"
    # JSON: the values come back exactly.
    code, out, _ = run_main(capsys, "profile", "export", str(hostile_path), "--format", "json")
    assert code == 0 and json.loads(out)["accuracy"]["expected_source"] == evil + yaml_keys + "\\"


# -- 2. a planted run folder, planted symlinks, a workspace others can write -----------------------------


def test_planted_run_folder_and_symlinks_never_redirect_a_run(tmp_path: Path, ws: Path) -> None:
    """The issue's reproduction: runs/1 made before the store, its checkpoint temp file and log
    symlinked to the victim's files; a real background run must touch neither."""
    from tuneassist.runs.store import Store

    victim1, victim2 = tmp_path / "victim1", tmp_path / "victim2"
    victim1.write_text("precious 1\n")
    victim2.write_text("precious 2\n")
    planted = ws / "runs" / "1"
    planted.mkdir(parents=True)
    (planted / "checkpoint.pt.tmp").symlink_to(victim1)
    (planted / "worker.log").symlink_to(victim2)
    env = subprocess_env(TUNEASSIST_HOME=str(ws), TUNEASSIST_STANDBY="0")
    r = cli("train", "--data", "synthetic:300", "--epochs", "1", "--background", "--device", "cpu", env=env)
    assert r.returncode == 0, r.stderr
    assert "moved it aside" in r.stderr and r.stderr.count("\n") == 1, r.stderr  # one warning line
    with Store(ws) as store:
        run = wait_for(lambda: store.get_run(1).status not in ("queued", "running") and store.get_run(1),
                       120, "the run to end", store)  # fmt: skip
        assert run.status == "finished", run
    assert victim1.read_text() == "precious 1\n" and victim2.read_text() == "precious 2\n"
    fresh = ws / "runs" / "1"
    assert not fresh.is_symlink() and (fresh / "worker.log").is_file()
    assert not (fresh / "worker.log").is_symlink() and (fresh / "checkpoint.pt").is_file()
    (aside,) = (ws / "runs").glob("1.stale-*")  # the planted folder, kept for inspection
    assert (aside / "worker.log").is_symlink()


def test_run_files_are_never_opened_through_a_symlink(tmp_path: Path, ws: Path) -> None:
    """Links planted inside a run's own folder: the checkpoint replaces its temp link instead of
    writing through it; the log refuses to open (ELOOP) rather than append to the target."""
    import errno

    import torch

    from tuneassist.engine.checkpoint import save_checkpoint as _save_checkpoint
    from tuneassist.fsafe import open_new

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt.tmp").symlink_to(victim)
    _save_checkpoint(run_dir / "checkpoint.pt", {"w": torch.zeros(2)})
    assert victim.read_text() == "precious\n"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["w"].shape == (2,)
    (run_dir / "worker.log").symlink_to(victim)
    with pytest.raises(OSError) as exc:
        open_new(run_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert exc.value.errno == errno.ELOOP and victim.read_text() == "precious\n"


def test_workspace_others_can_write_is_refused_naming_the_fix(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneassist.runs.store import Store

    Store(ws).close()
    os.chmod(ws, 0o777)
    for argv in (["runs"], ["train", "--data", "synthetic:300", "--epochs", "1", "--background"]):
        code, _, err = run_main(capsys, *argv)
        one_line_error(code, err, f"workspace {ws} is writable by other users", f"chmod go-w {ws}")
    os.chmod(ws, 0o700)
    (ws / "runs").mkdir(mode=0o700, exist_ok=True)
    os.chmod(ws / "runs", 0o757)
    code, _, err = run_main(capsys, "runs")
    one_line_error(code, err, f"run folder {ws / 'runs'} is writable by other users", "chmod go-w")
    os.chmod(ws / "runs", 0o700)
    if os.geteuid() == 0:  # a workspace that belongs to someone else
        os.chown(ws, 12345, -1)
        code, _, err = run_main(capsys, "runs")
        one_line_error(code, err, f"workspace {ws} is owned by another user (uid 12345)", "--workspace DIR")
        os.chown(ws, 0, -1)
    assert run_main(capsys, "runs")[0] == 0


# -- 3. exports never write over the store or a run's files ---------------------------------------------


def test_exports_refuse_the_store_its_wal_and_run_files(
    tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relkit import tiny_spec

    from tuneassist.runs.schema import TrainValues
    from tuneassist.runs.store import MetricWriter, Store

    with Store(ws) as store:
        run_id = store.add_run(tiny_spec(), "train")
        w = MetricWriter(store, run_id, background=False)
        for step in range(5):
            w.add_train(step, TrainValues(train_loss=1.0))
        w.close()
        (store.run_dir(run_id) / "checkpoint.pt").write_bytes(b"ckpt")
        before = store.metrics(run_id)
        db = store.db_path
        os.link(db, tmp_path / "db-hardlink")
        (tmp_path / "db-symlink").symlink_to(db)
        targets = [
            db,  # the reproduction: -o $TUNEASSIST_HOME/tuneassist.db
            Path(str(db) + "-wal"),
            Path(str(db) + "-shm"),
            ws / "runs" / str(run_id) / "checkpoint.pt",
            ws / "runs" / str(run_id) / "new.csv",
            ws / "runs" / ".." / "tuneassist.db",
            tmp_path / "db-hardlink",
            tmp_path / "db-symlink",
        ]
        sizes = {p: p.stat().st_size for p in [db, ws / "runs" / str(run_id) / "checkpoint.pt"]}
        profile = tmp_path / "p.toml"
        profile.write_text(dumps_toml(_profile()))
        for target in targets:
            for argv in (
                ["runs", "export", str(run_id), "--format", "csv", "-o", str(target)],
                ["profile", "export", str(profile), "--format", "json", "-o", str(target)],
            ):
                code, _, err = run_main(capsys, *argv)
                one_line_error(code, err, "run store", str(target))
        assert {p: p.stat().st_size for p in sizes} == sizes
        assert store.metrics(run_id) == before and store.get_run(run_id).status == "queued"
        assert not (ws / "runs" / str(run_id) / "new.csv").exists()
        # Elsewhere: a temp file renamed over the target, so a file hard-linked to it keeps its text.
        out, other = tmp_path / "out.csv", tmp_path / "other"
        other.write_text("precious\n")
        os.link(other, out)
        code, _, err = run_main(capsys, "runs", "export", str(run_id), "--format", "csv", "-o", str(out))
        assert code == 0, err
        assert other.read_text() == "precious\n" and out.read_text().startswith("run_id,step")
        assert not list(tmp_path.glob(".*.tmp"))


# -- 5. lr-find shows its failure advice -----------------------------------------------------------------


def test_lr_find_that_finds_no_range_prints_the_advice(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        capsys, "lr-find", "--data", "synthetic:300", "--steps", "5", "--device", "cpu", "--threads", "1"
    )
    assert code == 0, err
    assert "No LR range suggested" in out and "Confidence: low." in out
    assert "Next: tuneassist lr-find --data synthetic:300 --model simple3" in out
    assert "Traceback" not in err and "unexpected" not in err


# -- 6. a missing checkpoint is refused like a damaged one ----------------------------------------------


def test_resume_with_a_missing_checkpoint_is_refused_and_keeps_the_curve(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relkit import SPE, tiny_spec

    from tuneassist.runs.launch import cancel_run, launch_run
    from tuneassist.runs.store import Store
    from tuneassist.spec import RunSpec

    with Store(ws) as store:
        run_id = launch_run(store, RunSpec.from_dict(tiny_spec(epochs=40)))
        wait_for(lambda: (store.get_run(run_id).checkpoint_step or 0) >= 2 * SPE, 120, "2 checkpoints", store)
        assert cancel_run(store, run_id, wait=60) == "cancelled"
        run = store.get_run(run_id)
        rows = store.metrics(run_id)
        assert run.checkpoint_step and len(rows) > run.checkpoint_step // 4 > 0
        store.checkpoint_path(run_id).unlink()
        code, out, err = run_main(capsys, "runs", "resume", str(run_id))
        one_line_error(code, err, "is missing", f"step {run.checkpoint_step}", "--from-start")
        after = store.get_run(run_id)
        assert after.status == "cancelled" and after.checkpoint_step == run.checkpoint_step
        assert store.metrics(run_id) == rows


# -- 7. profiles are read only from regular files, at most 1 MiB ---------------------------------------


def test_profile_reads_refuse_devices_fifos_and_huge_files(tmp_path: Path, ws: Path) -> None:
    """Each in a real subprocess with a timeout: /dev/zero used to grow to gigabytes, a FIFO to hang."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.toml"
    with open(huge, "w") as f:  # valid TOML all the way: a comment line after line
        f.write(dumps_toml(_profile()))
        f.write(("# " + "x" * 1000 + "\n") * 1100)
    env = subprocess_env(TUNEASSIST_HOME=str(ws))
    cases = {
        "/dev/zero": "is a device or socket, not a regular file",
        str(fifo): "is a FIFO, not a regular file",
        str(huge): "larger than 1 MiB",
    }
    for path, needle in cases.items():
        for argv in (
            ["profile", "show", path],
            ["profile", "export", path],
            ["train", "--profile", path, "--device", "cpu"],
        ):
            r = cli(*argv, env=env, timeout=60)
            one_line_error(
                r.returncode, r.stderr, f"profile {path} {needle}" if "MiB" not in needle else needle
            )
    assert fifo.exists() and not list(ws.glob("runs/*"))


# -- 8. no escape code from a file, a store or an argument reaches the terminal ----------------------------

_ESC = "\x1b[2J\x1b]0;owned\x07\u202e\x9b"


def test_terminal_escapes_in_names_paths_and_errors_are_shown_escaped(
    tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relkit import tiny_spec

    from tuneassist.runs.store import Store

    (ws / "profiles").mkdir(parents=True)
    (ws / "profiles" / "esc.toml").write_text(
        dumps_toml(_profile(name="evil" + _ESC, data="folder:/d" + _ESC, notes=_ESC))
    )
    (ws / "profiles" / "broken.toml").write_text(f'name = "x"\n# {_ESC}\n')
    with Store(ws) as store:
        run_id = store.add_run(tiny_spec(), "train")
        store.update_run(run_id, status="failed", error="boom" + _ESC, started=1.0, ended=2.0)
        store.write(
            lambda c: c.execute("UPDATE runs SET spec = json_set(spec, '$.data', ?)", ("folder:/d" + _ESC,))
        )
    bad_path = str(tmp_path / "x\x01.toml")
    for argv in (
        ["profile", "list"],
        ["profile", "show", "esc"],
        ["profile", "show", bad_path],
        ["profile", "export", "esc", "-o", str(tmp_path / ("o" + _ESC))],
        ["runs"],
        ["runs", "watch", str(run_id)],
        ["--workspace", str(ws / ("w" + _ESC)), "runs", "--bogus" + _ESC],
    ):
        code, out, err = run_main(capsys, *argv)
        for ch in ("\x1b", "\x07", "\x01", "\u202e", "\x9b"):
            assert ch not in out + err, (argv, out, err)
        assert any(e in out + err for e in ("\\x1b[2J", "\\u001b[2J", "\\x01")), (argv, out, err)


# -- 9. the assistant without a terminal exits at once ---------------------------------------------------


@pytest.mark.parametrize("how", ["stdin /dev/null, stdout a pipe", "stdout not a tty", "TERM=dumb"])
def test_tui_without_a_terminal_exits_2_in_one_line(how: str, ws: Path) -> None:
    import pty

    env = subprocess_env(TUNEASSIST_HOME=str(ws))
    env.pop("TEXTUAL_DRIVER", None)
    master, slave = pty.openpty()
    try:
        if how.startswith("stdin"):  # cron / nohup: `tuneassist </dev/null >log`
            kw: dict[str, object] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE}
            argv: list[str] = []
        elif how == "stdout not a tty":  # `tuneassist tui | tee log`
            kw, argv = {"stdin": slave, "stdout": subprocess.PIPE}, ["tui"]
        else:  # a real terminal that cannot draw
            env["TERM"] = "dumb"
            kw, argv = {"stdin": slave, "stdout": slave}, []
        r = subprocess.run([sys.executable, "-m", "tuneassist.cli.main", *argv], stderr=subprocess.PIPE,
                           text=True, env=env, timeout=60, **kw)  # type: ignore[call-overload]  # fmt: skip
    finally:
        os.close(master)
        os.close(slave)
    assert r.stderr.strip() == "error: the assistant needs a terminal; use `tuneassist tune` or `runs`"
    assert r.returncode == 2


# -- also wrong: careless paths and signals, each one line and exit 2 (or 143) ---------------------------


def test_careless_paths_end_in_one_line_exit_2(tmp_path: Path, ws: Path) -> None:
    from relkit import tiny_spec

    from tuneassist.runs.store import Store

    with Store(ws) as store:
        run_id = store.add_run(tiny_spec(), "train")
    env = subprocess_env(TUNEASSIST_HOME=str(ws))
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "tuneassist.cli.main", "runs", "export", str(run_id),
                            "--format", "csv"], stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                           timeout=60)  # fmt: skip
    one_line_error(r.returncode, r.stderr, "No space left on device", "free some disk space")
    r = cli("train", "--data", "folder:" + "a" * 300, "--epochs", "1", "--device", "cpu", env=env)
    one_line_error(r.returncode, r.stderr, "File name too long", "shorter")
    r = cli("runs", env=subprocess_env(TUNEASSIST_HOME="~nosuchuser/ws"))
    one_line_error(r.returncode, r.stderr, "no user 'nosuchuser'", "full path")
    (tmp_path / "dirdb" / "tuneassist.db").mkdir(parents=True)
    r = cli("runs", env=subprocess_env(TUNEASSIST_HOME=str(tmp_path / "dirdb")))
    one_line_error(r.returncode, r.stderr, "tuneassist.db is a folder, not a database", "mv ")
    r = cli("runs", "watch", "--", "-1", env=env)
    one_line_error(r.returncode, r.stderr, "'-1' is not a run id")
    # A relative TUNEASSIST_HOME is the folder it names from here, and listing does not create it.
    r = subprocess.run([sys.executable, "-m", "tuneassist.cli.main", "runs"], capture_output=True, text=True,
                       env=subprocess_env(TUNEASSIST_HOME="rel"), cwd=tmp_path, timeout=60)  # fmt: skip
    assert r.returncode == 0 and f"no runs in {tmp_path / 'rel'};" in r.stdout, r
    rel_env = subprocess_env(TUNEASSIST_HOME="rel")
    r = subprocess.run([sys.executable, "-m", "tuneassist.cli.main", "profile", "list"],
                       capture_output=True, text=True, env=rel_env, cwd=tmp_path, timeout=60)  # fmt: skip
    assert r.returncode == 0, r
    assert not (tmp_path / "rel").exists()


def test_sigterm_to_foreground_train_is_one_line_and_exit_143(ws: Path) -> None:
    import select
    import signal

    cmd = [sys.executable, "-m", "tuneassist.cli.main", "train", "--data", "synthetic:300", "--epochs", "100",
           "--device", "cpu", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(TUNEASSIST_HOME=str(ws)))  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout, proc.stderr], [], [], 120)  # training has begun
        assert ready, "no output from train"
        time.sleep(1.0)  # in the training loop, not halfway through printing its first line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err, err


def test_validation_split_is_stratified_and_a_useless_one_is_named(tmp_path: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from tuneassist.engine.data import DataWarning, Split, load_dataset, split_validation

    y = torch.tensor([0] * 990 + [1] * 10)
    x = torch.zeros(1000, 3, 2, 2, dtype=torch.uint8)
    for seed in range(5):  # every class gives its share, whatever the seed
        train, val = split_validation(Split(x, y), 0.1, seed=seed)
        ty, vy = train.y, val.y
        assert (int((vy == 0).sum()), int((vy == 1).sum())) == (99, 1) and len(ty) == 900
    rng = np.random.default_rng(0)

    def folder(name: str, n_train: dict[str, int]) -> str:
        for split, counts in (("train", n_train), ("test", dict.fromkeys(n_train, 2))):
            for cls, n in counts.items():
                (tmp_path / name / split / cls).mkdir(parents=True)
                for i in range(n):
                    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                    Image.fromarray(img).save(tmp_path / name / split / cls / f"{i}.png")
        return f"folder:{tmp_path / name}"

    skewed = folder("skewed", {"common": 40, "rare": 1})  # the 10,000 : 1, scaled down
    with pytest.warns(DataWarning) as rec:
        load_dataset(skewed, data_dir=tmp_path / "cache", val_fraction=0.1)
    (msg,) = [str(w.message) for w in rec]
    assert "has no image of 1 of 2 classes (e.g. 'rare')" in msg and "--val-fraction" in msg
    small = folder("small", {"a": 20, "b": 20})
    with pytest.warns(DataWarning, match=r"has only 4 images, too few .* raise --val-fraction \(now 0.1\)"):
        load_dataset(small, data_dir=tmp_path / "cache", val_fraction=0.1)


def test_a_gpu_the_machine_lacks_or_absurd_epochs_are_refused_before_queueing(
    ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneassist.runs import launch

    monkeypatch.setenv(launch.GPU_ENV, "0")  # the launcher sees one GPU
    bg = ["--data", "synthetic:300", "--epochs", "1", "--background"]
    code, out, err = run_main(capsys, "train", *bg, "--device", "cuda:7")
    one_line_error(
        code, err, "--device cuda:7: this machine shows 1 GPU(s), cuda:0 to cuda:0", "--device cpu"
    )
    assert out == "", out  # no "started" or "queued" line: nothing was launched
    if not any(Path(d).exists() for d in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        monkeypatch.setenv(launch.GPU_ENV, "")
        code, _, err = run_main(capsys, "train", *bg, "--device", "cuda:7")
        one_line_error(code, err, "this machine has no GPU", "--device cpu")
    code, _, err = run_main(capsys, "train", "--data", "synthetic:300", "--epochs", "1e9", "--device", "cpu")
    one_line_error(code, err, "epochs 1e+09 is more than 10,000")
    from tuneassist.runs.store import Store

    with Store(ws) as store:
        assert store.list_runs() == []


def test_image_folder_with_a_looping_link_and_both_val_and_test_loads_with_one_warning_each(
    tmp_path: Path,
) -> None:
    import numpy as np
    from PIL import Image

    from tuneassist.engine.data import DataWarning, load_dataset

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(6):
                img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
    (root / "train" / "a" / "loop.png").symlink_to(root / "train" / "a" / "loop.png")
    (root / "train" / "loopdir").symlink_to(root / "train" / "loopdir")
    with pytest.warns(DataWarning) as rec:
        ds = load_dataset(f"folder:{root}", data_dir=tmp_path / "cache", val_fraction=0.25)
    msgs = sorted(str(w.message) for w in rec if "validation split" not in str(w.message))
    assert len(msgs) == 2, msgs
    both, skipped = msgs
    assert "has both test/ and val/" in both and "val/ is not used" in both
    assert (
        skipped.startswith("skipped 1 entry of") and "loop.png: Too many levels of symbolic links" in skipped
    )
    assert ds.classes == ["a", "b"] and len(ds.train.y) + len(ds.val.y) == 12


def test_run_folder_removed_during_a_run_comes_back_private(ws: Path) -> None:
    import shutil
    import stat

    from relkit import SPE, tiny_spec

    from tuneassist.runs.launch import launch_run
    from tuneassist.runs.store import Store
    from tuneassist.spec import RunSpec

    with Store(ws) as store:
        run_id = launch_run(store, RunSpec.from_dict(tiny_spec(epochs=60)))
        wait_for(lambda: (store.get_run(run_id).checkpoint_step or 0) >= SPE, 120, "a checkpoint", store)
        shutil.rmtree(ws / "runs")  # `rm -rf runs/` while the worker trains
        wait_for(lambda: store.get_run(run_id).status not in ("queued", "running"), 180, "the end", store)
        run = store.get_run(run_id)
        assert run.status == "finished", run
        for d in (ws / "runs", ws / "runs" / str(run_id)):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        assert stat.S_IMODE((ws / "runs" / str(run_id) / "checkpoint.pt").stat().st_mode) == 0o600
