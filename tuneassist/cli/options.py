"""The options several commands take, defined once (`--workspace`, `--background`), and the value
types of every command's options: each command module states only its own options, they read the same
in every command's --help, and a value is refused by the same rule whichever command takes it."""

from __future__ import annotations

import argparse
import math

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


# -- option value types: argparse turns their ArgumentTypeError into its one-line usage error


def number(text: str) -> float:
    """A finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def value_range(text: str) -> tuple[float, float]:
    """'a:b', or a single value 'a' (meaning a:a)."""
    parts = text.split(":")
    if len(parts) > 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a value or a range like 0.1:1")
    vals = [number(p) for p in parts]
    return (vals[0], vals[-1])


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """A whole number from 1 (a batch, a device count, a step count, a side in pixels)."""
    v = _whole(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive whole number")
    return v


def count(text: str) -> int:
    """A whole number from 0 (how many extra runs)."""
    v = _whole(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or a positive whole number")
    return v


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    v = number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return v
