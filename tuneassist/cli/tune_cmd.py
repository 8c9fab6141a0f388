"""`tuneassist tune`: the whole checklist headless, accepting each recommendation (autopilot)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from tuneassist.cli.options import add_workspace, count, positive_int
from tuneassist.errors import UserError

if TYPE_CHECKING:
    from tuneassist.runs.store import Run, Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="autopilot: run the whole checklist and save a profile",
        description="Runs the LR range test, batch size, momentum and weight decay steps as background "
        "runs, accepts each recommendation, then the final 1cycle run beside the LR-only profile and the "
        "untuned baseline at the same epochs; saves the variant that validates best as a profile and "
        "prints how it compares. Ctrl-C stops waiting, never the runs; "
        "--resume continues the session.",
    )
    p.add_argument(
        "--data",
        default="synthetic",
        help="synthetic, cifar10, cifar100, folder:PATH or module:function (your (train, test) Datasets; "
        "needs --allow-import) (default: synthetic)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="side in pixels that a folder:PATH's images are resized to (default: the folder's most common "
        "size); the profile records it",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="read the data through DataLoader workers in every run, even when it fits on the device",
    )
    p.add_argument(
        "--model",
        default="simple3",
        help="simple3, resnet20/32/56/110, densenet40 or module:function (your own net; needs --allow-import)"
        " (default: %(default)s)",
    )
    p.add_argument(
        "--allow-import",
        action="store_true",
        help="allow --model module:function to import your module (every run imports it from the folder "
        "it is found in now)",
    )
    p.add_argument(
        "--train",
        default=None,
        metavar="MODULE:FUNCTION",
        help="run the whole checklist on your own training function(hp, report), your model on your data "
        "(see examples/cifar_style.py); needs --allow-import",
    )
    p.add_argument(
        "--budget",
        choices=("quick", "standard", "paper"),
        default="quick",
        help="how long each experiment trains (quick: minutes on a CPU)",
    )
    p.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        help="devices per run (TBS = per-device batch x N; default 1)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="the batch size you train with: the start TBS and the baseline's (default 128)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="the final run's epochs (default: the budget's; the baselines train as long)",
    )
    p.add_argument(
        "--time",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="fit the whole checklist in this wall time (e.g. 20m, 1.5h): plans each step's run length "
        "from the measured img/s",
    )
    p.add_argument(
        "--refine",
        type=count,
        default=None,
        help="final-length runs allowed to act on the final run's diagnosis (default: 0 quick, 1 otherwise)",
    )
    p.add_argument("--name", default=None, help="profile name (default: <data>-<model>-<budget>)")
    p.add_argument("--resume", default=None, metavar="SESSION", help="continue a session by id or name")
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the untuned baseline run (SGD, constant LR 0.01, momentum 0.9, no WD, the start batch)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_workspace(p)
    p.set_defaults(func=cmd_tune)


def _duration(text: str) -> float:
    from tuneassist.session import parse_duration

    try:
        return parse_duration(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Waiter:
    """Waits for runs in the store, showing one live line on a terminal."""

    def __init__(self, store: Store, quiet: bool) -> None:
        from tuneassist.cli.status import StatusLine

        self.store, self.quiet, self.tty = store, quiet, sys.stderr.isatty()
        self.status = StatusLine(sys.stderr)  # cut to the terminal's width, so it redraws in place

    def wait(self, run_ids: list[int], label: str) -> list[Run]:
        from tuneassist.session import ENDED

        t0 = time.monotonic()
        while True:
            runs = [self.store.get_run(r) for r in run_ids]
            if all(r.status in ENDED for r in runs):
                self.status.clear()
                return runs
            if self.tty and not self.quiet:
                done = sum(r.status in ENDED for r in runs)
                running = [r for r in runs if r.status == "running"]
                detail = ""
                if running:
                    last = self.store.last_metric(running[0].id)
                    total = running[0].info.get("total_steps")
                    if last and total:
                        detail = f" · run {running[0].id} step {last['step'] + 1}/{total}"
                el = time.monotonic() - t0
                line = f"{label}: {done}/{len(runs)} runs done{detail} · {int(el // 60)}:{int(el % 60):02d}"
                self.status.show(line)
            time.sleep(1.0)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _profile_name(args: argparse.Namespace, data: str, model: str, budget: str) -> str:
    """The profile's file name, checked before any run starts (the TUI's rule: `safe_filename`)."""
    from tuneassist.profiles.schema import safe_filename

    if args.name is None:
        return safe_filename(f"{data.replace('folder:', '')}-{model}-{budget}")
    if not args.name.strip() or safe_filename(args.name) != args.name.strip():
        raise UserError(
            f"profile name {args.name!r} may hold only letters, digits, '.', '-' and '_' (it names a file "
            f"in the workspace's profiles/); e.g. --name {safe_filename(args.name)}"
        )
    return args.name.strip()


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * float(v):.2f}%"


def _comparison(final: dict[str, Any]) -> dict[str, Any]:
    """The saved profile against the untuned baseline and the LR-only profile, in test points."""
    cmp = final.get("compare") or {}
    mine = cmp.get(final.get("variant") or "final") or {}
    out: dict[str, Any] = {"variant": final.get("variant"), "hparams": final.get("hparams")}
    for k in ("final", "lr_only", "baseline"):
        r = cmp.get(k)
        out[k] = None if r is None else {m: r.get(m) for m in ("outcome", "val_acc", "test_acc")}
        if (
            r
            and mine.get("test_acc") is not None
            and r.get("test_acc") is not None
            and k != final.get("variant")
        ):
            out[f"gain_vs_{k}_points"] = 100 * (float(mine["test_acc"]) - float(r["test_acc"]))
    return out


def _user_model_dir(args: argparse.Namespace) -> str | None:
    """For a module:function model (its name already checked): the user's consent and the module's
    folder, before the probe imports it (None for a built-in model)."""
    from tuneassist.usercode import consent_error, is_user_model, locate_module

    if not is_user_model(args.model):
        return None
    if not args.allow_import:
        raise consent_error(args.model)
    return str(locate_module(args.model)[0])


def _probe(
    args: argparse.Namespace, model_dir: str | None, side: int | None, quiet: bool
) -> dict[str, Any] | None:
    """The memory probe (the largest batch that fits at the side the runs train at), with a live line
    while it runs; None with --train (your function builds its own batches) or when it could not tell."""
    from tuneassist.cli.status import StatusLine
    from tuneassist.runs.probe_client import PROBE_SECONDS, probe_in_subprocess

    status = StatusLine(sys.stderr)

    def probing(elapsed: float) -> None:
        if not quiet:
            status.show(
                f"memory probe: the largest batch of {args.model} that fits · "
                f"{elapsed:.0f} s of {PROBE_SECONDS:.0f}"
            )

    probe = None if args.train else probe_in_subprocess(
        args.model, args.data, device="auto", allow_import=args.allow_import,
        model_dir=model_dir, on_wait=probing, image_size=side,
    )  # fmt: skip
    status.clear()
    if probe:
        _say(quiet, f"Memory probe: {probe['explanation']}")
    return probe


def _new_session(args: argparse.Namespace, store: Any, quiet: bool) -> tuple[Any, str]:
    """Probe memory, plan the checklist and create its session; returns it with the profile name."""
    from tuneassist.runs.launch import detect_gpus
    from tuneassist.session import TuningSession, estimate_train_size, expected_throughput

    if args.train:  # the function trains its own model: it names the runs' model too
        args.model = args.train
    name = _profile_name(args, args.data, args.model, args.budget)
    from tuneassist.dataref import folder_side, is_data_module
    from tuneassist.usercode import consent_error

    if is_data_module(args.data) and not args.allow_import:  # the user's Datasets: the same consent
        raise consent_error(args.data, "--data")
    side = args.image_size
    if side is None and args.data.startswith("folder:"):  # the size it is tuned at, in the profile
        side = folder_side(args.data.partition(":")[2])
    from tuneassist.spec import RunSpec

    # Checked once, before the consent question and the probe's minute: a malformed model name or a bad
    # --image-size is a one-line error at once.
    RunSpec(data=args.data, model=args.model, image_size=side).validate()
    model_dir = _user_model_dir(args)
    probe = _probe(args, model_dir, side, quiet)
    refine = args.refine if args.refine is not None else (0 if args.budget == "quick" else 1)
    ips, source = expected_throughput(store, args.model, bool(detect_gpus()))
    session = TuningSession.create(
        store,
        args.data,
        args.model,
        budget=args.budget,
        devices=args.devices,
        train_size=estimate_train_size(args.data),
        max_fit=probe["max_batch"] if probe else None,
        start_batch=args.batch_size,
        epochs=args.epochs,
        refine=refine,
        baseline=not args.no_baseline,
        allow_import=args.allow_import and (model_dir is not None or is_data_module(args.data)),
        model_dir=model_dir,
        train_fn=args.train,
        image_size=side,
        stream=args.stream,
        time_s=args.time,
        images_per_s=ips if args.time else None,
    )
    if args.time:
        _say(quiet, session.checklist.time_plan_text())
    secs = session.checklist.estimate_seconds(images_per_s=ips)
    _say(
        quiet,
        f"session {session.id}: {args.data} · {args.model} · budget {args.budget}; "
        f"about {secs['total'] / 60:.0f} min at {ips:,.0f} img/s ({source}). Ctrl-C stops waiting; the "
        f"runs go on (continue with: tuneassist tune --resume {session.id})",
    )
    return session, name


def _autopilot(session: Any, store: Any, quiet: bool) -> bool:
    """Advance the session, accepting each recommendation, until the checklist is done (True) or the
    user stops waiting (False); a failed or unusable step is a UserError naming the way on."""
    from tuneassist.advisor.checklist import STEP_TITLES
    from tuneassist.session import sharing_text

    waiter = Waiter(store, quiet)
    try:
        while True:
            turn = session.advance(accept=True)
            if turn.event == "done":
                return True
            title = STEP_TITLES[turn.step or "final"]
            if turn.event == "launched":
                _say(quiet, f"{title}: started runs {', '.join(map(str, turn.run_ids))}")
            elif turn.event == "more_runs":
                _say(quiet, f"{title}: {turn.message} (runs {', '.join(map(str, turn.run_ids))})")
            elif turn.event == "waiting":
                waiter.wait(turn.run_ids, title)
                timing = session.step_timing(turn.step or "final")
                if timing and timing["runs"] > 1:
                    _say(quiet, f"{title}: {sharing_text(timing)}")
            elif turn.event == "failed":
                raise UserError(
                    f"{turn.message}; see `tuneassist runs` and fix it, then "
                    f"`tuneassist tune --resume {session.id}`"
                )
            elif turn.event == "accepted":
                _say(quiet, turn.message)
            elif turn.event == "ready":  # read, but nothing usable to accept
                raise UserError(f"{title}: {turn.message}")
    except KeyboardInterrupt:
        _say(
            False, f"\nstopped waiting; the runs go on. Continue with: tuneassist tune --resume {session.id}"
        )
        return False


def _report(args: argparse.Namespace, session: Any, name: str) -> None:
    """Save the profile and say how it compares (JSON with --json)."""
    from tuneassist.advisor.checklist import STEP_TITLES

    cl = session.checklist
    path = session.save_profile(name)
    final = cl.final or {}
    lr = cl.decisions["lr_range"].value if "lr_range" in cl.decisions else None
    cmp = _comparison(final)
    summary = {
        "session": session.id,
        "profile": str(path),
        "steps": cl.summary(),
        "final": {k: final.get(k) for k in ("test_acc", "val_acc", "test_loss", "val_loss", "variant")},
        "baseline": cmp.get("baseline"),
        "lr_only": cmp.get("lr_only"),
        "comparison": cmp,
        "start_values": cl.start,
        "baseline_batch": cl.baseline_batch(),
        "lr_range": lr,
        "timing": {step: session.step_timing(step) for step in STEP_TITLES},  # how each step's runs ran
    }
    if args.json:
        print(json.dumps(summary, default=str))
        return
    print(cl.summary_text())
    line = f"\nSaved profile ({cmp['variant'] or 'final'}): test accuracy {_pct(final.get('test_acc'))}"
    for k, what in (("baseline", "untuned baseline"), ("lr_only", "LR-only profile")):
        r = cmp.get(k)
        if r and f"gain_vs_{k}_points" in cmp:
            line += f"; {what} {_pct(r.get('test_acc'))} ({cmp[f'gain_vs_{k}_points']:+.2f} points)"
    print(line)
    print(f"Profile saved: {path}\nRe-run it with: tuneassist train --profile {path}")


def cmd_tune(args: argparse.Namespace) -> int:
    from tuneassist.runs.store import Store
    from tuneassist.session import TuningSession

    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} must be at least 1 (the final run's length)")
    if args.refine is not None and args.refine < 0:
        raise UserError(f"--refine {args.refine} must be 0 or more")
    store = Store(getattr(args, "workspace", None))
    quiet = args.json
    if args.resume:
        session = TuningSession(store, int(store.get_session(args.resume)["id"]))
        name = _profile_name(args, session.checklist.data, session.checklist.model, session.checklist.budget)
        _say(quiet, f"resuming session {session.id} ({session.name})")
    else:
        session, name = _new_session(args, store, quiet)
    if not _autopilot(session, store, quiet):
        return 130
    _report(args, session, name)
    return 0
