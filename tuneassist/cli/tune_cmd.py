"""`tuneassist tune`: the whole checklist headless, accepting each recommendation (autopilot)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from tuneassist.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="autopilot: run the whole checklist and save a profile",
        description="Runs the LR range test, batch size, momentum and weight decay steps as background "
        "runs, accepts each recommendation, then the final 1cycle run and a baseline at the same epochs; "
        "prints a summary and saves the result as a profile. Ctrl-C stops waiting, never the runs; "
        "--resume continues the session.",
    )
    p.add_argument("--data", default="synthetic", help="synthetic, cifar10, cifar100 or folder:PATH")
    p.add_argument("--model", default="simple3")
    p.add_argument(
        "--budget",
        choices=("quick", "standard", "paper"),
        default="quick",
        help="how long each experiment trains (quick: minutes on a CPU)",
    )
    p.add_argument("--devices", type=int, default=1, help="devices per run (TBS = per-device batch x N)")
    p.add_argument("--name", default=None, help="profile name (default: <data>-<model>-<budget>)")
    p.add_argument("--resume", default=None, metavar="SESSION", help="continue a session by id or name")
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the baseline run (SGD, constant LR 0.01, momentum 0.9, no WD)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_tune)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "profile"


class Waiter:
    """Waits for runs in the store, showing one live line on a terminal."""

    def __init__(self, store: Any, quiet: bool) -> None:
        self.store, self.quiet, self.tty = store, quiet, sys.stderr.isatty()

    def wait(self, run_ids: list[int], label: str) -> list[dict[str, Any]]:
        from tuneassist.session import ENDED

        t0 = time.monotonic()
        while True:
            runs = [self.store.get_run(r) for r in run_ids]
            if all(r["status"] in ENDED for r in runs):
                if self.tty and not self.quiet:
                    print("\r" + " " * 110 + "\r", end="", file=sys.stderr)
                return runs
            if self.tty and not self.quiet:
                done = sum(r["status"] in ENDED for r in runs)
                running = [r for r in runs if r["status"] == "running"]
                detail = ""
                if running:
                    last = self.store.last_metric(running[0]["id"])
                    total = (running[0].get("info") or {}).get("total_steps")
                    if last and total:
                        detail = f" · run {running[0]['id']} step {last['step'] + 1}/{total}"
                el = time.monotonic() - t0
                line = f"{label}: {done}/{len(runs)} runs done{detail} · {int(el // 60)}:{int(el % 60):02d}"
                print("\r" + line[:110].ljust(110), end="", file=sys.stderr, flush=True)
            time.sleep(1.0)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def cmd_tune(args: argparse.Namespace) -> int:
    from tuneassist.advisor.checklist import STEP_TITLES
    from tuneassist.runs.launch import detect_gpus, launch_run
    from tuneassist.runs.store import Store
    from tuneassist.session import TuningSession, estimate_train_size, expected_throughput, sharing_text

    store = Store(getattr(args, "workspace", None))
    quiet = args.json
    if args.resume:
        session = TuningSession(store, int(store.get_session(args.resume)["id"]))
        _say(quiet, f"resuming session {session.id} ({session.name})")
    else:
        from tuneassist.runs.probe_client import probe_in_subprocess

        probe = probe_in_subprocess(args.model, args.data, device="auto", timeout=120)
        if probe:
            _say(quiet, f"Memory probe: {probe['explanation']}")
        session = TuningSession.create(
            store,
            args.data,
            args.model,
            budget=args.budget,
            devices=args.devices,
            train_size=estimate_train_size(args.data),
            max_fit=probe["max_batch"] if probe else None,
        )
        ips, source = expected_throughput(store, args.model, bool(detect_gpus()))
        secs = session.checklist.estimate_seconds(images_per_s=ips)
        est = secs["total"] + (0 if args.no_baseline else secs.get("final", 0))  # + the baseline
        _say(
            quiet,
            f"session {session.id}: {args.data} · {args.model} · budget {args.budget}; "
            f"about {est / 60:.0f} min at {ips:,.0f} img/s ({source}). Ctrl-C stops waiting; the runs go on "
            f"(continue with: tuneassist tune --resume {session.id})",
        )
    cl = session.checklist
    waiter = Waiter(store, quiet)
    try:
        while not cl.done:
            step = cl.current_step
            assert step is not None
            title = STEP_TITLES[step]
            if cl.propose(step).candidates:
                ids = session.launch(step)
                _say(quiet, f"{title}: started runs {', '.join(map(str, ids))}")
            waiter.wait(list(session.step_runs(step).values()), title)
            timing = session.step_timing(step)
            if timing and timing["runs"] > 1:
                _say(quiet, f"{title}: {sharing_text(timing)}")
            failed = session.failed_runs(step)
            if failed and len(failed) == len(session.step_runs(step)):
                why = failed[0].get("error") or failed[0]["status"]
                raise UserError(
                    f"every run of step {title!r} ended {failed[0]['status']} ({why}); "
                    f"see `tuneassist runs` and fix it, then `tuneassist tune --resume {session.id}`"
                )
            rec = session.recommend(step)
            assert rec is not None
            if rec.needs_more_runs:
                _say(quiet, f"{title}: {rec.reason}")
                continue
            if not rec.ok:
                raise UserError(f"{title}: {rec.reason}")
            session.accept(rec)
            _say(quiet, f"{title}: {rec.label} — {rec.reason}")
    except KeyboardInterrupt:
        _say(
            False, f"\nstopped waiting; the runs go on. Continue with: tuneassist tune --resume {session.id}"
        )
        return 130

    baseline: dict[str, Any] | None = None
    if not args.no_baseline:
        spec = cl.baseline_spec()
        rid = launch_run(store, spec, kind="baseline", session_id=session.id)
        _say(
            quiet,
            f"Baseline (SGD, LR {spec.lr_max:g} constant, momentum {spec.momentum_max:g}, "
            f"WD {spec.weight_decay:g}, {spec.epochs:g} epochs): run {rid}",
        )
        run = waiter.wait([rid], "Baseline")[0]
        baseline = {
            "run": rid,
            "status": run["status"],
            **{k: (run.get("outcome") or {}).get(k) for k in ("test_acc", "val_acc", "test_loss")},
        }

    name = args.name or _slug(f"{cl.data.replace('folder:', '')}-{cl.model}-{cl.budget}")
    path = session.save_profile(name)
    final = cl.final or {}
    summary = {
        "session": session.id,
        "profile": str(path),
        "steps": cl.summary(),
        "final": {k: final.get(k) for k in ("test_acc", "val_acc", "test_loss", "val_loss")},
        "baseline": baseline,
        "timing": {step: session.step_timing(step) for step in STEP_TITLES},  # how each step's runs ran
    }
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    print(cl.summary_text())
    fa, ba = final.get("test_acc"), (baseline or {}).get("test_acc")
    if fa is not None:
        line = f"\nTuned 1cycle run: test accuracy {100 * fa:.2f}%"
        if ba is not None:
            verdict = "better" if fa > ba else "not better"
            line += (
                f"; baseline at the same epochs: {100 * ba:.2f}% ({verdict}, {100 * (fa - ba):+.2f} points)"
            )
        print(line)
    print(f"Profile saved: {path}\nRe-run it with: tuneassist train --profile {path}")
    return 0
