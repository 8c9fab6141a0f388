"""The `tuneassist` entry point: argument parsing and error handling, nothing heavy.

Every command module is imported here, but none of them imports torch at module level, so
`tuneassist --help` stays fast; the engine loads only inside the command that trains.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Sequence

from tuneassist import __version__
from tuneassist.errors import UserError, printable


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem and where to look for the fix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {printable(message)}; see `{printable(self.prog)} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from tuneassist.cli import train_cmd

    parser = OneLineParser(
        prog="tuneassist",
        description="Tune CNN hyperparameters with Smith's checklist: LR range test, batch size, "
        "momentum, weight decay, then one 1cycle run.",
    )
    parser.add_argument("--version", action="version", version=f"tuneassist {__version__}")
    parser.add_argument(
        "--workspace",
        default=argparse.SUPPRESS,
        help="folder holding the run store (default: $TUNEASSIST_HOME or the user data dir)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    train_cmd.register(sub)
    for name in ("runs_cmd", "profile_cmd", "tune_cmd", "tui_cmd"):
        try:
            module = __import__(f"tuneassist.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"tuneassist.cli.{name}":
                raise
            continue
        module.register(sub)
        if name == "tui_cmd":  # no command: open the assistant
            parser.set_defaults(default_func=module.open_tui_here)
    return parser


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(:.*)?$")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--wd -1e-4` -> `--wd=-1e-4`: argparse would read the value as an unknown option.

    The value then reaches the option's own check, which names the real problem (negative WD).
    """
    out: list[str] = []
    for tok in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and NEGATIVE_NUMBER.match(tok):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings the user should read (e.g. images resized) as one `warning:` line, not file:line + source."""
    print(f"warning: {printable(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    if not os.environ.get("TUNEASSIST_DEBUG"):
        warnings.showwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    func = getattr(args, "func", None)
    try:
        if func is None:
            default = getattr(args, "default_func", None) or parser.get_default("default_func")
            if default is None:
                parser.print_help()
                return 0
            return int(default(args) or 0)
        return int(func(args) or 0)
    except UserError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # last resort: one line, the traceback only on request
        if os.environ.get("TUNEASSIST_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {printable(exc)} "
            "(TUNEASSIST_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
