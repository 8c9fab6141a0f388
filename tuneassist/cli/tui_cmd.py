"""`tuneassist` (no command) and `tuneassist tui`: the terminal UI; `tuneassist serve`: the same in a browser.

No torch here, nor in the app: the UI starts fast and holds no CUDA context.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import socket
import sys

from tuneassist.cli.options import add_workspace
from tuneassist.errors import UserError

DEFAULT_PORT = 8000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tui",
        help="open the terminal UI (the default when no command is given)",
        description="The guided checklist with live plots, the runs and the profiles. It opens the last "
        "session; quitting leaves runs running, and opening it again shows them live.",
    )
    add_workspace(p)
    p.add_argument("--session", default=None, metavar="ID", help="open this session (id or name)")
    p.set_defaults(func=open_tui_here)

    s = subparsers.add_parser(
        "serve",
        help="serve the terminal UI in a web browser (needs textual-serve)",
        description="Serves the same app through textual-serve, bound to localhost by default: reach it "
        "from your machine through an SSH tunnel.",
    )
    add_workspace(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: local only)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    s.set_defaults(func=serve)


NO_TERMINAL = "the assistant needs a terminal; use `tuneassist tune` or `runs`"


def check_terminal() -> None:
    """From cron, nohup or a pipe (stdin or stdout not a terminal) or with TERM=dumb, the app would hang
    drawing escape codes into a log: refuse in one line instead. A Textual driver chosen in the
    environment (textual-serve's web driver) draws elsewhere, so it needs none."""
    if os.environ.get("TEXTUAL_DRIVER"):
        return
    streams = (sys.stdin, sys.stdout)
    tty = all(s is not None and hasattr(s, "isatty") and s.isatty() for s in streams)
    if not tty or os.environ.get("TERM", "") == "dumb":
        raise UserError(NO_TERMINAL)


def open_tui_here(args: argparse.Namespace) -> int:
    """`tuneassist` / `tuneassist tui` from the command line: the app, once a terminal is there."""
    check_terminal()
    return open_tui(args)


def open_tui(args: argparse.Namespace) -> int:
    """Run the app in this terminal (`tuneassist` with no command, or `tuneassist tui`)."""
    from tuneassist.tui.app import TuneApp

    workspace = getattr(args, "workspace", None)
    session = getattr(args, "session", None)
    session_id = None
    if session is not None:
        from tuneassist.runs.store import Store

        with Store(workspace) as store:
            session_id = int(store.get_session(session)["id"])
    app = TuneApp(workspace=workspace, session_id=session_id)
    app.run()
    return 0


def serve_command(args: argparse.Namespace) -> str:
    """The command textual-serve starts for each browser connection."""
    cmd = [sys.executable, "-m", "tuneassist.cli.main"]
    workspace = getattr(args, "workspace", None)
    if workspace:
        cmd += ["--workspace", str(workspace)]
    cmd.append("tui")
    return shlex.join(cmd)


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve_banner(host: str, port: int, server_name: str | None = None) -> list[str]:
    """What `serve` prints before serving: where it listens and how to reach it safely.

    Local-only (the default) is reached through an SSH tunnel; any other address is reachable by anyone
    who can reach the port, and the served UI can start and cancel runs, so that gets a warning.
    """
    server_name = server_name or socket.gethostname()
    url_host = f"[{host}]" if ":" in host else host
    lines = [f"serving tuneassist at http://{url_host}:{port} (Ctrl-C stops serving; runs keep going)"]
    if host in LOCAL_HOSTS:
        lines.append(
            f"from your machine: ssh -N -L {port}:{url_host}:{port} {server_name}   "
            f"then open http://localhost:{port}"
        )
    else:
        lines.append(
            f"warning: bound to {host}, beyond localhost: anyone who can reach port {port} can drive your "
            "runs; prefer the default 127.0.0.1 and an SSH tunnel"
        )
    return lines


def serve(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UserError(f"port {args.port} is not a TCP port; use 1-65535, e.g. --port {DEFAULT_PORT}")
    if importlib.util.find_spec("textual_serve") is None:
        raise UserError("textual-serve is not installed; pip install textual-serve")
    from textual_serve.server import Server

    for line in serve_banner(args.host, args.port):
        print(line)
    Server(serve_command(args), host=args.host, port=args.port, title="tuneassist").serve()
    return 0
