"""A user's `module:function` model: nothing imports it without consent, and every worker imports the
file the launcher found, whatever directory the worker starts in.

Each module here writes a marker file naming itself when it is imported, so "imported nothing" and
"imported that file" are facts on disk, not guesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from itertools import count
from pathlib import Path

import pytest
from test_tui_screens import wait_for

from tuneassist.advisor.checklist import Checklist
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec
from tuneassist.usercode import locate_module, prepare_spec

_counter = count()

NET = """
    import os, pathlib
    pathlib.Path(os.environ["NET_MARKER"]).write_text(__file__)

    def build(num_classes):
        from torch import nn
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
"""


def _net(folder: Path, name: str, body: str = NET) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"{name}.py"
    f.write_text(textwrap.dedent(body))
    return f


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    m = tmp_path / "imported.txt"
    monkeypatch.setenv("NET_MARKER", str(m))
    return m


def test_locate_module_reads_no_code(tmp_path: Path, marker: Path) -> None:
    name = f"locnets_{next(_counter)}"
    f = _net(tmp_path / "a", name)
    assert locate_module(f"{name}:build", tmp_path / "a") == ((tmp_path / "a").resolve(), f.resolve())
    pkg = tmp_path / "b" / f"pkg_{name}"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise SystemExit('never run')\n")
    folder, found = locate_module(f"pkg_{name}.nets:build", tmp_path / "b")
    assert (folder, found) == ((tmp_path / "b").resolve(), pkg.resolve())
    with pytest.raises(UserError, match=f"cannot find module 'nope_{name}'.*run from the folder") as e:
        locate_module(f"nope_{name}:build", tmp_path)
    assert "\n" not in str(e.value)
    assert not marker.exists() and name not in sys.modules


def test_prepare_spec_needs_consent_and_records_the_folder(tmp_path: Path, marker: Path) -> None:
    name = f"prepnets_{next(_counter)}"
    _net(tmp_path, name)
    assert RunSpec().allow_import is False  # off by default everywhere
    with pytest.raises(UserError, match=f"--model {name}:build imports your code; add --allow-import"):
        prepare_spec(RunSpec(model=f"{name}:build"), tmp_path)
    spec = prepare_spec(RunSpec(model=f"{name}:build", allow_import=True), tmp_path)
    assert spec.model_dir == str(tmp_path.resolve())
    kept = prepare_spec(RunSpec(model=f"{name}:build", allow_import=True, model_dir="/elsewhere"), tmp_path)
    assert kept.model_dir == "/elsewhere"  # a resumed run keeps the folder it was launched with
    assert prepare_spec(RunSpec(model="simple3"), tmp_path).model_dir is None
    assert not marker.exists()


def test_checklist_runs_carry_the_consent_and_the_folder() -> None:
    cl = Checklist(data="synthetic", model="mynets:build", allow_import=True, model_dir="/w/nets")
    spec = cl.propose("lr_range").candidates[0].spec
    assert (spec.allow_import, spec.model_dir) == (True, "/w/nets")
    again = Checklist.from_dict(json.loads(json.dumps(cl.to_dict())))
    assert (again.allow_import, again.model_dir) == (True, "/w/nets")
    assert (
        Checklist(data="synthetic", model="mynets:build").propose("lr_range").candidates[0].spec.allow_import
        is False
    )


def test_build_model_imports_the_recorded_folder_not_the_current_one(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from tuneassist.engine.models import build_model

    name = f"dirnets_{next(_counter)}"
    good = _net(tmp_path / "launched", name)
    _net(tmp_path / "other", name, "raise SystemExit('the wrong file')\n")
    monkeypatch.chdir(tmp_path / "other")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(UserError, match="add --allow-import"):
        build_model(f"{name}:build", 3)  # no consent by default
    assert not marker.exists()
    model = build_model(f"{name}:build", 3, allow_import=True, model_dir=str(tmp_path / "launched"))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    assert marker.read_text() == str(good)
    with pytest.raises(UserError, match="folder is gone"):
        build_model("gone_nets:build", 3, allow_import=True, model_dir=str(tmp_path / "missing"))


def test_tune_without_allow_import_exits_2_in_one_line(tmp_path: Path, marker: Path) -> None:
    name = f"tunenets_{next(_counter)}"
    _net(tmp_path, name)
    for cmd in (["tune"], ["train", "--epochs", "1"], ["lr-find"]):
        r = subprocess.run(
            [sys.executable, "-m", "tuneassist", *cmd, "--model", f"{name}:build", "--data", "synthetic:64"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 2, (cmd, r.stderr)
        assert (
            r.stderr.strip()
            == f"error: --model {name}:build imports your code; add --allow-import to confirm"
        )
    assert not marker.exists()  # nothing was imported


def test_run_queued_in_one_directory_and_started_from_another_imports_the_same_module(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is queued from launched/ (its worker not started), then `tuneassist runs` run from
    other/, which holds another file of the same name, starts it: the worker imports launched/'s."""
    import tuneassist.runs.launch as launch
    from tuneassist.runs.store import Store

    name = f"qnets_{next(_counter)}"
    good = _net(tmp_path / "launched", name)
    _net(tmp_path / "other", name, NET.replace("write_text(__file__)", "write_text('WRONG ' + __file__)"))
    ws = tmp_path / "ws"
    store = Store(ws)
    monkeypatch.chdir(tmp_path / "launched")
    monkeypatch.setattr(launch, "advance_queue", lambda store: [])  # queue it only
    spec = RunSpec(data="synthetic:64", model=f"{name}:build", allow_import=True, epochs=1, batch_size=32,
                   device="cpu", test=False)  # fmt: skip
    rid = launch.launch_run(store, spec)
    stored = store.get_run(rid)
    assert stored.status == "queued" and stored.spec_data["model_dir"] == str(
        (tmp_path / "launched").resolve()
    )
    assert not marker.exists()
    env = {**os.environ, "TUNEASSIST_HOME": str(ws), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "tuneassist", "runs"], cwd=tmp_path / "other", env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 180
    while store.get_run(rid).status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    run = store.get_run(rid)
    assert run.status == "finished", (
        run.status,
        run.error,
        store.log_path(rid).read_text()[-2000:],
    )
    assert marker.read_text() == str(good)


def test_start_screen_asks_before_a_module_model_and_names_the_file(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textual.widgets import Input

    from tuneassist.runs.store import Store
    from tuneassist.tui.app import TuneApp
    from tuneassist.tui.checklist import ChecklistScreen
    from tuneassist.tui.dialogs import ConfirmDialog

    name = f"tuinets_{next(_counter)}"
    f = _net(tmp_path / "nets", name)
    monkeypatch.chdir(tmp_path / "nets")
    ws = tmp_path / "ws"

    async def main() -> tuple[list[str], bool]:
        app = TuneApp(workspace=ws, manage_queue=False, poll_seconds=0.2)
        shown = []
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            for answer in ("n", "y"):
                app.screen.query_one("#custom", Input).value = f"{name}:build"
                await pilot.press("ctrl+n")
                await pilot.pause(0.2)
                assert isinstance(app.screen, ConfirmDialog)
                shown.append(app.screen.message)
                await pilot.press(answer)
                await pilot.pause(0.2)
                if answer == "n":
                    imported_after_no = marker.exists()
            await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen), 120, "the session", app)
        return shown, imported_after_no

    shown, imported_after_no = asyncio.run(main())
    assert all(str(f.resolve()) in m and "Import it?" in m for m in shown), shown
    sessions = [s for s in Store(ws).list_sessions() if "checklist" in (s.get("state") or {})]
    assert len(sessions) == 1  # "n" created nothing
    cl = sessions[0]["state"]["checklist"]
    assert cl["allow_import"] is True and cl["model_dir"] == str((tmp_path / "nets").resolve())
    assert not imported_after_no and name not in sys.modules  # "n": nothing; the UI process: never
    # "y": the memory probe's own process imported the net, from the folder the session records.
    assert marker.read_text() == str(f.resolve()) and isinstance(cl["max_fit"], int)


def test_start_screen_takes_a_training_function_and_user_data_with_one_consent(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textual.widgets import Input

    from tuneassist.runs.store import Store
    from tuneassist.tui.app import TuneApp
    from tuneassist.tui.dialogs import ConfirmDialog

    name = f"tuitrain_{next(_counter)}"
    more = "\n    def train(hp, report):\n        pass\n\n    def data():\n        pass\n"
    f = _net(tmp_path / "code", name, NET + more)
    monkeypatch.chdir(tmp_path / "code")
    ws = tmp_path / "ws"

    async def main() -> str:
        app = TuneApp(workspace=ws, manage_queue=False, poll_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            app.screen.query_one("#data", Input).value = f"{name}:data"
            app.screen.query_one("#train", Input).value = f"{name}:train"
            await pilot.press("ctrl+n")
            await pilot.pause(0.2)
            assert isinstance(app.screen, ConfirmDialog)
            shown = app.screen.message
            await pilot.press("y")
            await pilot.pause(0.2)
        return shown

    shown = asyncio.run(main())
    assert f"Training function {name}:train imports and runs {f.resolve()}" in shown, shown
    assert f"Data {name}:data imports and runs {f.resolve()}" in shown and "Import it?" in shown
    (session,) = [s for s in Store(ws).list_sessions() if "checklist" in (s.get("state") or {})]
    cl = session["state"]["checklist"]
    assert cl["train_fn"] == cl["model"] == f"{name}:train" and cl["data"] == f"{name}:data"
    assert cl["allow_import"] is True and cl["model_dir"] == str((tmp_path / "code").resolve())
    assert not marker.exists() and name not in sys.modules  # the UI process imported nothing
    spec = prepare_spec(Checklist.from_dict(cl)._spec())  # as the launcher records it, for the workers
    assert spec.data_module_dir == str((tmp_path / "code").resolve()) and spec.train_fn == f"{name}:train"


def test_start_screen_size_field_sets_the_sessions_image_size(tmp_path: Path) -> None:
    from textual.widgets import Input

    from tuneassist.runs.store import Store
    from tuneassist.tui.app import TuneApp
    from tuneassist.tui.checklist import ChecklistScreen

    ws = tmp_path / "ws"

    async def main() -> str:
        app = TuneApp(workspace=ws, manage_queue=False, poll_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            app.screen.query_one("#image-size", Input).value = "48"
            await pilot.pause(0.2)
            refused = str(app.screen.query_one("#estimate").render())
            app.screen.query_one("#data", Input).value = f"folder:{tmp_path / 'imgs'}"
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: isinstance(app.screen, ChecklistScreen), 120, "the session", app)
        return refused

    refused = asyncio.run(main())
    assert "--image-size 48: synthetic is 32x32" in refused  # said in the form, before anything is made
    (session,) = [s for s in Store(ws).list_sessions() if "checklist" in (s.get("state") or {})]
    cl = Checklist.from_dict(session["state"]["checklist"])
    assert cl.image_size == 48 and cl._spec().image_size == 48
