"""The options several commands take, defined once (`--workspace`, `--background`): each command
module states only its own options, and they read the same in every command's --help."""

from __future__ import annotations

import argparse

WORKSPACE_HELP = "folder holding the run store (default: $TUNEASSIST_HOME or the user data dir)"


def add_workspace(p: argparse.ArgumentParser, metavar: str | None = "DIR") -> None:
    # SUPPRESS: an absent option must not overwrite a top-level --workspace given before the command.
    p.add_argument("--workspace", default=argparse.SUPPRESS, metavar=metavar, help=WORKSPACE_HELP)


def add_background(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--background",
        action="store_true",
        help="run as a background job in the run store; print its id and return",
    )
