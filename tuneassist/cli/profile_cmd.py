"""`tuneassist profile list|show|export`: shipped and saved hyperparameter profiles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuneassist.cli.options import add_workspace
from tuneassist.errors import UserError, printable


def profile_dirs(workspace: str | None) -> list[Path | None]:
    """Saved profiles (the workspace) first, then the shipped ones; an earlier folder wins a name."""
    from tuneassist.profiles import shipped_profiles_dir
    from tuneassist.runs.store import resolve_workspace

    return [resolve_workspace(workspace) / "profiles", shipped_profiles_dir()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="list, show and export hyperparameter profiles")
    ps = p.add_subparsers(dest="profile_command", metavar="ACTION", parser_class=type(p))
    ls = ps.add_parser("list", help="shipped and saved profiles")
    ls.add_argument(
        "--json", action="store_true", help="print every profile, with its file and errors, as JSON"
    )
    ls.set_defaults(func=cmd_list)
    sh = ps.add_parser("show", help="a profile's TOML")
    sh.add_argument("name", help="profile name or path to a .toml file")
    sh.add_argument("--json", action="store_true", help="print the profile's values and its file as JSON")
    sh.set_defaults(func=cmd_show)
    ex = ps.add_parser("export", help="as a PyTorch script, a LightningModule mixin or JSON")
    ex.add_argument("name", help="profile name or path to a .toml file")
    ex.add_argument(
        "--format",
        choices=("pytorch", "lightning", "json"),
        default="pytorch",
        help="a PyTorch snippet, Lightning YAML or JSON (default: pytorch)",
    )
    ex.add_argument("--output", "-o", default=None, help="write to this file (default: stdout)")
    ex.set_defaults(func=cmd_export)
    for parser in (p, ls, sh, ex):
        add_workspace(parser)
    p.set_defaults(func=cmd_list, json=False)


def cmd_list(args: argparse.Namespace) -> int:
    from tuneassist.profiles import list_profiles

    entries = list_profiles(profile_dirs(getattr(args, "workspace", None)))
    if getattr(args, "json", False):
        print(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "path": str(e.path),
                        "error": e.error,
                        "shadowed": e.shadowed,
                        "profile": None if e.profile is None else json.loads(_export(e.profile, "json")),
                    }
                    for e in entries
                ]
            )
        )
        return 0
    if not entries:
        print("no profiles yet; `tuneassist tune` saves one")
        return 0
    print(f"{'name':<30} {'model':<10} {'data':<12} {'LR':<12} {'M':<10} {'WD':<8} {'TBS':>5} {'ep':>4}  acc")
    for e in entries:
        if e.profile is None:
            print(f"{printable(e.name):<30} broken: {printable(e.error)}")
            continue
        p = e.profile
        acc = p.measured_accuracy if p.measured_accuracy is not None else p.expected_accuracy
        accs = "" if acc is None else f"{acc:.1f}%" + ("" if p.measured_accuracy is not None else " (paper)")
        print(
            f"{printable(p.name)[:30]:<30} {printable(p.model):<10} {printable(p.data)[:12]:<12} "
            f"{f'{p.lr_min:g}-{p.lr_max:g}':<12} "
            f"{f'{p.momentum_max:g}-{p.momentum_min:g}':<10} {p.weight_decay:<8g} {p.batch_size:>5} "
            f"{p.epochs:>4}  {accs}{'  (shadowed)' if e.shadowed else ''}"
        )
    return 0


def _export(profile: object, fmt: str) -> str:
    from tuneassist.profiles import export_profile

    return export_profile(profile, fmt)  # type: ignore[arg-type]


def cmd_show(args: argparse.Namespace) -> int:
    from tuneassist.profiles import find_profile

    p = find_profile(args.name, profile_dirs(getattr(args, "workspace", None)))
    if getattr(args, "json", False):
        out = {
            "name": p.name,
            "path": None if p.path is None else str(p.path),
            "needs_import": p.needs_import,
            "profile": json.loads(_export(p, "json")),
        }
        print(json.dumps(out))
        return 0
    if p.path is not None:
        print(f"# {printable(p.path)}")
        from tuneassist.profiles.files import read_profile_text

        try:  # read as it was checked: a regular file, at most 1 MiB
            text = read_profile_text(p.path)
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"profile {p.path} cannot be read again ({exc}); check the file") from None
        print(printable(text, keep="\n\t"), end="")
    else:
        print(_export(p, "json"))
    if p.needs_import:
        print(
            f"# note: model {p.model} imports Python code; train it with --allow-import only if you trust it"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tuneassist.profiles import find_profile

    p = find_profile(args.name, profile_dirs(getattr(args, "workspace", None)))
    text = _export(p, args.format)
    if args.output:
        from tuneassist.fsafe import write_file
        from tuneassist.runs.store import check_export_target

        out = Path(args.output)
        check_export_target(getattr(args, "workspace", None), out)
        try:
            write_file(out, lambda f: f.write(text))
        except OSError as exc:
            raise UserError(f"cannot write {out}: {exc.strerror}; choose another --output path") from exc
        print(f"wrote {printable(out)}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0
