"""The `tuneassist` entry point: argument parsing and error handling, nothing heavy.

Every command module is imported here, but none of them imports torch at module level, so
`tuneassist --help` stays fast; the engine loads only inside the command that trains.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import threading
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
    from tuneassist.cli.options import add_workspace

    parser = OneLineParser(
        prog="tuneassist",
        description="Tune CNN hyperparameters with Smith's checklist: LR range test, batch size, "
        "momentum, weight decay, then one 1cycle run.",
    )
    parser.add_argument("--version", action="version", version=f"tuneassist {__version__}")
    add_workspace(parser, metavar=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    train_cmd.register(sub)
    for name in ("lr_read_cmd", "runs_cmd", "profile_cmd", "tune_cmd", "tui_cmd"):
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
    for i, tok in enumerate(argv):
        if tok == "--":  # the rest is positional (`runs watch -- -1`): leave it as it is
            out.extend(argv[i:])
            break
        if out and out[-1].startswith("--") and "=" not in out[-1] and NEGATIVE_NUMBER.match(tok):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings the user should read (e.g. images resized) as one `warning:` line, not file:line + source."""
    print(f"warning: {printable(message)}", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM in a foreground command: unwinds like Ctrl-C (the same clean-ups run), exit 143."""


_sigterm: list[int] = []  # set once SIGTERM arrived: the exit code is 143 whoever caught the interrupt


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    _sigterm.append(signum)
    raise Terminated


# OS errors the user can act on: one line and exit 2, with the fix.
_OS_FIXES = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some space in your quota",
    errno.EFBIG: "free some space or write somewhere else",
    errno.ENAMETOOLONG: "use a shorter file or folder name",
    errno.EROFS: "use a writable location",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.ELOOP: "check the path's symbolic links",
    errno.EIO: "check the disk",
}


def _os_error_line(exc: OSError) -> str | None:
    fix = _OS_FIXES.get(exc.errno or 0)
    if fix is None:
        return None
    what = exc.strerror or str(exc)
    if exc.filename is None:
        return f"cannot write the output ({what}); {fix}, or send it elsewhere"
    return f"{printable(exc.filename)}: {what}; {fix}"


def _silence_stdout() -> None:
    """After a failed write to stdout, send what is still buffered nowhere (no second error at exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    if not os.environ.get("TUNEASSIST_DEBUG"):
        warnings.showwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    func = getattr(args, "func", None)
    foreground = func is not None and getattr(args, "command", None) not in ("tui", "serve")
    old_term = signal.getsignal(signal.SIGTERM)
    if foreground and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if func is None:
            default = getattr(args, "default_func", None) or parser.get_default("default_func")
            if default is None:
                parser.print_help()
                return 0
            return int(default(args) or 0)
        _sigterm.clear()
        code = int(func(args) or 0)
        sys.stdout.flush()  # a full disk behind `> file` shows here, inside the handlers below
        return 143 if _sigterm else code  # a command that stopped on SIGTERM by itself (tune: 'stopped …')
    except UserError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return UserError.exit_code
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception as exc:  # last resort: one line, the traceback only on request
        if os.environ.get("TUNEASSIST_DEBUG"):
            raise
        line = _os_error_line(exc) if isinstance(exc, OSError) else None
        if line is not None:  # a full disk, a name too long ...: the user's to fix
            if exc.filename is None:  # type: ignore[attr-defined]
                _silence_stdout()
            print(f"error: {line}", file=sys.stderr)
            return UserError.exit_code
        print(
            f"error: unexpected {type(exc).__name__}: {printable(exc)} "
            "(TUNEASSIST_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if foreground and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
