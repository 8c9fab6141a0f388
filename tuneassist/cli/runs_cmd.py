"""`tuneassist runs`: list, watch, cancel, resume and export background runs; `--background` launching.

Everything here only reads and writes the run store; the runs themselves live in detached worker
processes, so quitting `runs watch` (or losing the SSH connection) never touches a run. No torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneassist.cli.options import add_workspace, seconds
from tuneassist.curves import Curves, finite_points
from tuneassist.errors import UserError, printable
from tuneassist.runs.launch import advance_queue, cancel_run, export_run, launch_run, resume_run
from tuneassist.runs.store import ACTIVE, STATUSES, Run, Store, fmt_time
from tuneassist.spec import RunSpec
from tuneassist.text import g, pct

_ENDED_OK = ("finished", "cancelled", "diverged")


# ----------------------------------------------------------------------------- helpers
def open_store(args: argparse.Namespace) -> Store:
    """The store of --workspace / $TUNEASSIST_HOME / the user data dir."""
    return Store(getattr(args, "workspace", None))


def open_existing_store(args: argparse.Namespace) -> Store | None:
    """The store, or None when there is none yet: a command that only reads never makes a workspace."""
    from tuneassist.runs.store import DB_NAME, resolve_workspace

    ws = resolve_workspace(getattr(args, "workspace", None))
    if not (ws / DB_NAME).exists() and not (ws.exists() and not ws.is_dir()):
        return None
    return open_store(args)


def _ws_flag(args: argparse.Namespace) -> str:
    ws = getattr(args, "workspace", None)
    return f" --workspace {ws}" if ws else ""


def hyperparameters(spec: dict[str, Any]) -> str:
    """The key hyperparameters in one compact string (missing ones, e.g. from an older spec, as '?')."""

    def g(key: str) -> str:
        v = spec.get(key)
        return f"{v:g}" if isinstance(v, int | float) else "?"

    sched = spec.get("schedule") or "?"
    same_lr = spec.get("lr_min") == spec.get("lr_max") or sched in ("constant", "step")
    lr = g("lr_max") if same_lr else f"{g('lr_min')}:{g('lr_max')}"
    mom = g("momentum_max")
    if spec.get("momentum_max") != spec.get("momentum_min"):
        mom += f":{g('momentum_min')}"
    length = f"{spec['steps']}st" if spec.get("steps") else f"{g('epochs')}ep"
    return f"{sched} lr {lr} m {mom} wd {g('weight_decay')} bs {spec.get('batch_size') or '?'} {length}"


def run_summary(run: Run, sessions: dict[int, str] | None = None) -> dict[str, Any]:
    """A run as the JSON row of `tuneassist runs --json` (spec and outcome exactly as stored)."""
    spec = run.spec_data
    sid = run.session_id
    return {
        "id": run.id,
        "session_id": sid,
        "session": (sessions or {}).get(sid) if sid is not None else None,
        "kind": run.kind,
        "status": run.status,
        "device": run.device,
        "model": run.model,
        "data": run.data,
        "hyperparameters": {
            k: spec.get(k)
            for k in (
                "schedule",
                "lr_min",
                "lr_max",
                "momentum_max",
                "momentum_min",
                "weight_decay",
                "batch_size",
                "epochs",
                "steps",
            )
        },
        "step": run.outcome.get("step", None if run.last_step is None else run.last_step + 1),
        "total_steps": run.info.get("total_steps"),
        "epoch": run.epoch,
        "best_val_loss": run.best_val_loss,
        "best_val_acc": run.best_val_acc,
        "images_per_s": run.images_per_s,
        "elapsed_s": run.elapsed(),
        "created": run.created,
        "started": run.started,
        "ended": run.ended,
        "checkpoint_step": run.checkpoint_step,
        "lost_reason": run.info.get("lost_reason"),  # why a lost run is lost (runs.liveness.LostReason)
        "error": run.error,
        "outcome": run.outcome or None,  # null until the run ends (every stored outcome has keys)
        "spec": run.spec_data,
    }


def _table(rows: list[list[str]], header: list[str], width: int | None = None) -> str:
    """Columns padded to their widest cell. With `width`, the table is made to fit it rather than
    wrap (a wrapped table is unreadable): long headers shortened, then the least needed columns
    dropped and long cells cut with an ellipsis, in FIT_STEPS' order."""
    header, rows = list(header), [list(r) for r in rows]

    def widths() -> list[int]:
        return [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def total() -> int:
        return sum(widths()) + 2 * (len(header) - 1)

    if width is not None:
        for i, h in enumerate(header):
            if total() > width:
                header[i] = FIT_SHORT.get(h, h)
        for how, name, least in FIT_STEPS:
            if total() <= width or name not in header:
                continue
            i = header.index(name)
            if how == "drop":
                header.pop(i)
                for r in rows:
                    r.pop(i)
            else:  # cut the column's cells to what is left, but not below `least`
                room = max(least, widths()[i] - (total() - width))
                for r in rows:
                    r[i] = r[i] if len(r[i]) <= room else r[i][: room - 1] + "…"
    cols = widths()
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, cols, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, cols, strict=True)).rstrip())
    return "\n".join(lines)


# How `tuneassist runs` fits a narrow terminal: shorter headers first, then the least needed columns go
# and long cells are cut, in this order (`runs --json` and `runs watch ID` still show everything).
FIT_SHORT = {"BEST VAL LOSS": "VAL LOSS", "BEST VAL ACC": "VAL ACC", "HYPERPARAMETERS": "HYPERPARAMS"}
FIT_STEPS = (
    ("drop", "SESSION", 0),
    ("drop", "IMG/S", 0),
    ("drop", "DATA", 0),
    ("drop", "ELAPSED", 0),
    ("cut", "HYPERPARAMS", 32),
    ("drop", "MODEL", 0),
    ("cut", "HYPERPARAMS", 16),
    ("cut", "KIND", 8),
)


# ----------------------------------------------------------------------------- launching (for lr-find/train)
def launch_background(args: argparse.Namespace, spec: RunSpec, kind: str) -> int:
    """Queue `spec` as a background run, start it if its device is free, print its id and how to watch it."""
    store = open_store(args)
    session = getattr(args, "session_id", None)
    session_id = None if session is None else store.get_session(session)["id"]
    run_id = launch_run(store, spec, kind=kind, session_id=session_id)
    run = store.get_run(run_id)
    flag = _ws_flag(args)
    if getattr(args, "json", False):
        print(json.dumps({"run_id": run_id, "status": run.status, "device": run.device}))
        return 0
    if run.status == "running":
        where = f"started on {run.device} (worker pid {run.pid})"
    elif run.status == "queued":
        busy = [r.id for r in store.list_runs(status="running", refresh=False)]
        where = "queued: its device is busy" + (f" with run {', '.join(map(str, busy))}" if busy else "")
    else:
        where = f"{run.status}: {run.error or ''}".rstrip(": ")
    print(f"run {run_id} ({kind}) {where}.")
    print(f"  watch it:   tuneassist runs watch {run_id}{flag}")
    print(f"  all runs:   tuneassist runs{flag}")
    print(f"  log:        {store.log_path(run_id)}")
    return 0


# ----------------------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    store = open_existing_store(args)
    if store is None:  # listing reads: it never makes a workspace (a typo leaves no folder behind)
        from tuneassist.runs.store import resolve_workspace

        ws = printable(resolve_workspace(getattr(args, "workspace", None)))
        print("[]" if args.json else f"no runs in {ws}; start one with: tuneassist train --background")
        return 0
    statuses = None
    if args.status:
        statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    runs = store.list_runs(session=args.session, status=statuses)
    if any(r.status == "queued" for r in runs) and not store.read_only:
        advance_queue(store)  # a lost run may have freed a slot: let the queue move
        runs = store.list_runs(session=args.session, status=statuses, refresh=False)
    sessions = {s["id"]: s["name"] or str(s["id"]) for s in store.list_sessions()}
    if store.read_only:
        note = f"note: {store.workspace} {store.read_only_why}; runs can be listed, not changed"
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps([run_summary(r, sessions) for r in runs], indent=1))
        return 0
    if not runs:
        what = "matching runs" if (statuses or args.session) else "runs"
        print(f"no {what} in {printable(store.workspace)}; start one with: tuneassist train --background")
        return 0
    header = ["ID", "SESSION", "STATUS", "KIND", "MODEL", "DATA", "HYPERPARAMETERS", "EPOCH",
              "BEST VAL LOSS", "BEST VAL ACC", "IMG/S", "ELAPSED"]  # fmt: skip
    rows = []
    for r in runs:
        total = r.total_epochs
        ep = "-" if r.epoch is None else f"{r.epoch:.2f}"
        if total:
            ep += f"/{total:.3g}"
        rows.append(
            [
                str(r.id),
                printable(sessions.get(r.session_id, "-") if r.session_id is not None else "-"),
                r.status,
                printable(r.kind),
                printable(r.model),
                printable(r.data),
                printable(hyperparameters(r.spec_data)),
                ep,
                g(r.best_val_loss),
                pct(r.best_val_acc),
                "-" if r.images_per_s is None else f"{r.images_per_s:,.0f}",
                fmt_time(r.elapsed()),
            ]
        )
    from tuneassist.cli.status import term_width

    fit = term_width(sys.stdout) if sys.stdout.isatty() else None  # a pipe or file gets every column
    print(_table(rows, header, fit))
    bad = [r for r in runs if r.status in ("failed", "lost") and r.error]
    for r in bad[-3:]:
        print(f"run {r.id} {r.status}: {printable(r.error)}")
    return 0


def describe_end(run: Run, flag: str = "") -> str:
    """One line saying how a run ended and what to do next."""
    rid, status, out = run.id, run.status, run.outcome
    if status in ("failed", "lost"):
        hint = f"; resume it with: tuneassist runs resume {rid}{flag}" if status == "lost" else ""
        return f"run {rid} {status}: {printable(run.error)}{hint}"
    parts = [f"run {rid} {status}"]
    if out:
        parts.append(
            f"{out.get('epoch', 0):.3g} epochs ({out.get('step')} steps) in {fmt_time(out.get('wall_time'))}"
        )
        if out.get("val_loss") is not None:
            parts.append(f"val loss {out['val_loss']:.4f}, val acc {pct(out.get('val_acc'))}")
        if out.get("test_acc") is not None:
            parts.append(f"test acc {pct(out['test_acc'])}")
        if out.get("reason"):
            parts.append(str(out["reason"]))
    text = ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "")
    if status == "cancelled":
        text += f" (resume it with: tuneassist runs resume {rid}{flag})"
    return text


def _last(xs: list[float]) -> float | None:
    """The newest value, None when there is none (or it is missing: NaN)."""
    return xs[-1] if xs and math.isfinite(xs[-1]) else None


def _progress_line(run: Run, curves: Curves) -> str:
    total = run.total_steps
    if run.status == "queued":
        return f"run {run.id} queued: waiting for a free device slot"
    if curves.last_step < 0:
        return f"run {run.id} {run.status} on {run.device}: starting (loading data and model)"
    step = curves.last_step + 1
    share = f" ({100 * step / total:.0f}%)" if total else ""
    eta = ""
    el = run.elapsed()
    if total and el and step:
        eta = f"  ETA {fmt_time(el / step * (total - step))}"
    loss, lr = _last(curves.train_loss), _last(curves.lrs)
    text = (
        f"run {run.id} {run.status}  epoch {curves.epochs_done():.2f}/{g(run.total_epochs)}  "
        f"step {step}/{total or '?'}{share}  train loss {g(loss)}  lr {g(lr)}"
    )
    if curves.eval_steps:
        text += f"  val loss {g(curves.val_loss[-1])}  val acc {pct(curves.val_acc[-1])}"
    ips = _last(curves.images_per_s)
    if ips:
        text += f"  {ips:,.0f} img/s"
    return text + f"  {fmt_time(el)}{eta}"


def _plot(run: Run, curves: Curves) -> str:
    from tuneassist.cli.termplot import plot_lines

    if run.kind == "lr_find" or run.schedule.startswith("range_"):
        return plot_lines(
            {
                "train loss": finite_points(curves.lrs, curves.train_loss),
                "val loss": finite_points(curves.eval_lrs(), curves.val_loss),
            },
            title=f"run {run.id}: loss vs learning rate",
            xlabel="learning rate (log)",
            ylabel="loss",
            logx=True,
        )
    return plot_lines(
        {
            "train loss": finite_points(curves.epochs, curves.train_loss),
            "val loss": finite_points(curves.eval_epochs, curves.val_loss),
        },
        title=f"run {run.id} ({run.model} on {run.data}): loss vs epoch",
        xlabel="epoch",
        ylabel="loss",
    )


def cmd_watch(args: argparse.Namespace) -> int:
    store = open_store(args)
    run_id = args.run_id
    run = store.get_run(run_id)
    flag = _ws_flag(args)
    live = sys.stdout.isatty() and not args.no_plot
    curves = Curves.for_run(run)
    attempt = run.attempt
    shown_status = None
    printed_eval = -1
    plot_note: str | None = None
    try:
        while True:
            run = store.get_run(run_id)
            if run.attempt != attempt:  # resumed: steps past the checkpoint were redone
                attempt = run.attempt
                curves = Curves.for_run(run)
                printed_eval = -1
            ended = run.status not in ACTIVE
            if ended:  # a complete, final read (evaluations stored after the last poll included)
                curves = Curves.for_run(run)
            curves.note_run(run)
            curves.add_rows(store.metrics_since(run_id, curves.last_step))
            if live:
                screen = ""
                if curves.last_step >= 0 and plot_note is None:
                    try:
                        screen = _plot(run, curves)
                    except Exception as e:  # a plotting problem must not stop the watch: progress goes on
                        plot_note = f"(no terminal plot: {type(e).__name__}: {e})"
                screen = screen or plot_note or ""
                sys.stdout.write("\x1b[H\x1b[J" + screen + "\n" + _progress_line(run, curves) + "\n")
                if not ended:
                    sys.stdout.write("Ctrl-C stops watching; the run keeps going.\n")
                sys.stdout.flush()
            else:
                if run.status != shown_status:
                    print(_progress_line(run, curves), flush=True)
                for i, step in enumerate(curves.eval_steps):
                    if step <= printed_eval:
                        continue
                    print(
                        f"epoch {curves.eval_epochs[i]:.2f}  step {step}  "
                        f"train loss {g(curves.eval_train_loss[i])}  "
                        f"val loss {g(curves.val_loss[i])}  val acc {pct(curves.val_acc[i])}",
                        flush=True,
                    )
                    printed_eval = step
            shown_status = run.status
            if ended:
                print(describe_end(run, flag), flush=True)
                return 0 if run.status in _ENDED_OK else 1
            if run.status == "queued" and not store.read_only:
                advance_queue(store)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print(f"\nstopped watching; run {run_id} keeps going (tuneassist runs watch {run_id}{flag})")
        return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    store = open_store(args)
    status = cancel_run(store, args.run_id, wait=0 if args.no_wait else args.timeout)
    run = store.get_run(args.run_id)
    flag = _ws_flag(args)
    if getattr(args, "json", False):
        print(json.dumps({"id": args.run_id, "status": run.status, "stopping": status == "running",
                          "error": run.error}))  # fmt: skip
        return 0
    if status == "running":
        print(
            f"cancel requested: run {args.run_id} stops at its next check and keeps its metrics "
            f"(tuneassist runs watch {args.run_id}{flag})"
        )
    else:
        print(describe_end(run, flag))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    store = open_store(args)
    res = resume_run(store, args.run_id, from_start=args.from_start)
    flag = _ws_flag(args)
    if getattr(args, "json", False):
        print(json.dumps({"id": args.run_id, "status": res["status"], "from_step": res.get("from_step"),
                          "checkpoint": bool(res.get("checkpoint"))}))  # fmt: skip
        return 0
    where = (
        f"from its checkpoint at step {res['from_step']}"
        if res["checkpoint"]
        else "from the start (no checkpoint)"
    )
    state = "running" if res["status"] == "running" else f"{res['status']} (waits for a free device)"
    print(f"run {args.run_id} resumes {where}: {state}")
    print(f"  watch it:   tuneassist runs watch {args.run_id}{flag}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "tensorboard":
        target = getattr(args, "dir", None) or args.output
        if not target:
            raise UserError(
                f"--format tensorboard writes a folder; e.g. tuneassist runs export {args.run_id} "
                "--format tensorboard tb/"
            )
        n = export_run(open_store(args), args.run_id, "tensorboard", target)
        where = Path(target).expanduser() / f"run-{args.run_id}"
        print(f"wrote {n} rows of run {args.run_id} to {printable(where)}; view with: tensorboard --logdir "
              f"{printable(target)}", file=sys.stderr)  # fmt: skip
        return 0
    store = open_store(args)
    n = export_run(store, args.run_id, args.format, args.output)
    if args.output:
        print(f"wrote {n} rows of run {args.run_id} to {args.output}", file=sys.stderr)
    return 0


class _FormatAction(argparse.Action):
    """`--format csv|jsonl` or `--format tensorboard DIR`: the folder follows its format (a positional
    after an option would be lost to argparse's matching of `ID` first)."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: Any = None
    ) -> None:
        fmt, *rest = values
        if fmt not in EXPORT_FORMATS:
            parser.error(f"--format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
        if len(rest) > (1 if fmt == "tensorboard" else 0):
            extra = rest[1:] if fmt == "tensorboard" else rest
            parser.error(f"--format {fmt}: unexpected {' '.join(extra)!r} (only tensorboard takes a DIR)")
        ns.format, ns.dir = fmt, (rest[0] if rest else None)


EXPORT_FORMATS = ("csv", "jsonl", "tensorboard")


def _run_id(text: str) -> int:
    """A run id as `tuneassist runs` lists them (SQLite cannot even look up ids of 2^63 and more)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (a number from `tuneassist runs`)")
    return v


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.add_argument(
        "--status", default=None, help=f"only these statuses, comma-separated ({', '.join(STATUSES)})"
    )
    p.add_argument("--session", default=None, help="only runs of this tuning session (id or name)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `runs` (list by default) with watch/cancel/resume/export."""
    p = subparsers.add_parser(
        "runs",
        help="list background runs; watch, cancel, resume or export one",
        description="Background runs live in detached worker processes and the run store; this lists "
        "them (default) and follows, cancels, resumes or exports one.",
    )
    add_workspace(p)
    _list_options(p)
    p.set_defaults(func=cmd_list)
    sub = p.add_subparsers(dest="runs_action", metavar="ACTION")

    ls = sub.add_parser("list", help="list runs (the default)")
    add_workspace(ls)
    _list_options(ls)
    ls.set_defaults(func=cmd_list)

    _one_run(
        sub, "watch", "follow a run live; Ctrl-C stops watching, never the run", cmd_watch,
        _opt("--interval", type=seconds, default=1.0, help="seconds between redraws (1)"),
        _opt("--no-plot", action="store_true", help="progress lines only, no terminal plot"),
    )  # fmt: skip
    _one_run(
        sub, "cancel", "stop a run gracefully (metrics and a checkpoint are kept)", cmd_cancel,
        _opt("--no-wait", action="store_true", help="return at once instead of waiting for it to stop"),
        _opt("--timeout", type=seconds, default=60.0, help="seconds to wait for it to stop (60)"),
        _opt("--json", action="store_true", help="print the run's id and status as JSON"),
    )  # fmt: skip
    _one_run(
        sub, "resume", "continue a lost or cancelled run from its last checkpoint", cmd_resume,
        _opt("--from-start", action="store_true",
             help="train from step 0, setting the checkpoint aside (when it is damaged or untrusted)"),
        _opt("--json", action="store_true", help="print the run's id, status and start step as JSON"),
    )  # fmt: skip
    _one_run(
        sub, "export", "write a run's metrics as CSV or JSON lines, or TensorBoard event files in DIR",
        cmd_export,
        _opt("--format", nargs="+", action=_FormatAction, required=True, metavar=("FORMAT", "DIR"),
             help="csv, jsonl (one row per line), or tensorboard DIR (event files in DIR/run-ID)"),
        _opt("--output", "-o", default=None, metavar="FILE", help="file to write (default: stdout)"),
    )  # fmt: skip


def _opt(*flags: str, **kw: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One option of a `runs ACTION ID` parser, as `add_argument` takes it."""
    return flags, kw


def _one_run(
    sub: argparse._SubParsersAction,
    name: str,
    help: str,
    func: Callable[[argparse.Namespace], int],
    *options: tuple[tuple[str, ...], dict[str, Any]],
) -> argparse.ArgumentParser:
    """A `runs ACTION ID [options] [--workspace DIR]` parser: every action on one run reads its id
    the same way."""
    p = sub.add_parser(name, help=help)
    p.add_argument("run_id", type=_run_id, metavar="ID", help="run id, as `tuneassist runs` lists it")
    for flags, kw in options:
        p.add_argument(*flags, **kw)
    add_workspace(p)
    p.set_defaults(func=func)
    return p


__all__ = ["register", "launch_background", "open_store", "UserError"]
