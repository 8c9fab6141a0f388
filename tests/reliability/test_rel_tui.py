"""The TUI on a read-only workspace (a real read-only bind mount): it opens, says so, shows the runs,
and refuses a launch in one line instead of crashing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from relkit import can_unshare_mounts, subprocess_env

from tuneassist.runs.store import Store
from tuneassist.session import TuningSession

APP_SCRIPT = textwrap.dedent(
    """
    import asyncio, io, json, sys
    from rich.console import Console
    from tuneassist.tui.app import TuneApp

    def text(app):
        w, h = app.size
        c = Console(width=w, height=h, file=io.StringIO(), force_terminal=True, record=True)
        c.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
        return c.export_text()

    async def main():
        app = TuneApp(workspace=sys.argv[1], manage_queue=False, poll_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.5)
            first = text(app)
            await pilot.press("r")  # launch the range test: must be refused, not crash
            await pilot.pause(0.5)
            toasts = [n.message for n in app._notifications]
            print(json.dumps({"screen": first, "toasts": toasts, "read_only": app.store.read_only}))

    asyncio.run(main())
    """
)


def test_tui_on_a_read_only_workspace_says_so(tmp_path: Path) -> None:
    if not can_unshare_mounts(tmp_path / "probe"):
        pytest.skip("no mount rights here: cannot make a read-only mount")
    ws = tmp_path / "ws"
    store = Store(ws)
    TuningSession.create(store, "synthetic:300", "simple3", budget="quick", train_size=270)
    store.close()
    mount = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    cmd = ["unshare", "-m", "sh", "-c", mount, "sh", str(ws), sys.executable, "-c", APP_SCRIPT, str(ws)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["read_only"]
    assert "READ-ONLY · session 1: synthetic:300" in got["screen"]
    assert "1 LR range" in got["screen"]  # the checklist is shown as it was
    assert any("is read-only here" in t and "nothing can be started" in t for t in got["toasts"])
    refused = [t for t in got["toasts"] if "read-only" in t and t != got["toasts"][0]]
    assert refused and all("\n" not in t and "Traceback" not in t for t in refused), got["toasts"]
