"""A tuning session: the advisor's checklist wired to the run store.

The checklist (advisor) decides what to run and what the curves mean; the store holds the runs.
This module is the glue both front ends share, the headless autopilot (`tuneassist tune`) and the
TUI, so a session started in one can be continued in the other. It never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from tuneassist.advisor.checklist import STEP_TITLES, STEPS, Checklist, Recommendation
from tuneassist.curves import Curves
from tuneassist.dataref import after_holdout, parse_data
from tuneassist.errors import UserError
from tuneassist.runs.launch import launch_run
from tuneassist.runs.store import Run, Store, fmt_time

T = TypeVar("T")


class SessionConflict(Exception):
    """Another window saved the session after we read it: re-read, then apply the change again."""


ENDED = ("finished", "diverged", "failed", "cancelled", "lost")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def estimate_train_size(data: str, val_fraction: float = 0.1) -> int | None:
    """Training images after the validation hold-out, without decoding anything (None: unknown).

    The checklist sizes its runs by this, and the UI process cannot load the data (torch).
    """
    try:
        kind, arg = parse_data(data)
    except UserError:
        return None
    if kind == "synthetic" and arg is not None:
        try:
            n = int(arg)
        except ValueError:
            return None
    elif kind == "folder":
        root = Path(str(arg)).expanduser()
        if (root / "train").is_dir():
            n = sum(1 for f in (root / "train").glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif root.is_dir():  # a single root of class folders: its test split comes out of each class
            from tuneassist.dataref import folder_test_count

            per_class = [
                sum(1 for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                for d in root.iterdir()
                if d.is_dir() and not d.name.startswith(".")
            ]
            n = sum(c - folder_test_count(c) for c in per_class)
            if n < 1:
                return None
        else:
            return None
    else:  # a built-in set: callers read its size from the table (tuneassist.dataref)
        return None
    return after_holdout(n, val_fraction)


def parse_duration(text: str) -> float:
    """A time budget typed as '20m', '90s', '1.5h' or plain minutes, in seconds (both front ends)."""
    t = text.strip().lower()
    unit = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(t[-1:])
    try:
        v = float(t[:-1] if unit else t) * (unit or 60.0)
    except ValueError:
        raise UserError(f"time {text!r} is not a duration; use e.g. 20m, 90s or 1.5h") from None
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"time {text!r} must be a positive duration, e.g. 20m")
    return v


# Forward multiply-accumulates per 32x32 image, in millions: training speed scales about inversely.
MODEL_MMACS = {
    "simple3": 12,
    "resnet20": 41,
    "resnet32": 69,
    "resnet56": 125,
    "resnet110": 253,
    "densenet40": 270,
}
UNKNOWN_MMACS = 125  # a user's own net: assume ResNet-56's cost
# Images/s x MMACs, calibrated on simple3 (~1,000 img/s) and resnet20 (~300) on 2 CPU cores with
# channels_last; the GPU figure is the paper's target, ResNet-56 at 25k img/s (an epoch in 2 s).
CPU_SPEED, GPU_SPEED, GPU_CAP = 12_500.0, 3_100_000.0, 60_000.0


def expected_throughput(store: Store | None, model: str, on_gpu: bool) -> tuple[float, str]:
    """Training images/s to base ETAs on, and where the figure comes from.

    The median of this workspace's recent runs of the same model when there are any (the machine
    measured itself); otherwise a guess from the model's cost, so a ResNet-110 session does not
    promise a simple3's speed.
    """
    if store is not None:
        try:
            runs = [r for r in store.list_runs(refresh=False) if r.model == model]
        except (UserError, OSError):
            runs = []
        vals = [float(r.images_per_s) for r in runs[-8:] if r.images_per_s]
        if vals:
            vals.sort()
            return vals[len(vals) // 2], f"measured on {len(vals)} run{'s' if len(vals) > 1 else ''}"
    cost = MODEL_MMACS.get(model, UNKNOWN_MMACS)
    ips = min(GPU_CAP, GPU_SPEED / cost) if on_gpu else CPU_SPEED / cost
    return ips, f"assumed for {model} on {'a GPU' if on_gpu else 'the CPU'}"


def sharing(runs: Sequence[Run | None]) -> dict[str, float] | None:
    """How runs shared the devices: wall time from the first start to the last end, their own run times
    added up (what one after another would roughly have taken), and the most at once. Ended runs only
    (None, a screen's placeholder for a run gone from the store, counts as none)."""
    spans = [(float(r.started), float(r.ended)) for r in runs if r is not None and r.started and r.ended]
    if not spans:
        return None
    # An end before a start at the same moment: a run that ends frees its slot for the next.
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    wall = max(b for _, b in spans) - min(a for a, _ in spans)
    return {"runs": len(spans), "wall_s": wall, "run_s": sum(b - a for a, b in spans), "most_at_once": most}


def sharing_text(t: dict[str, float]) -> str:
    """'5 runs in 0:52, up to 4 at once (their run times add up to 2:40)'."""
    if t["runs"] == 1:
        return f"1 run in {fmt_time(t['wall_s'])}"
    return (
        f"{t['runs']:.0f} runs in {fmt_time(t['wall_s'])}, up to {t['most_at_once']:.0f} at once "
        f"(their run times add up to {fmt_time(t['run_s'])})"
    )


def curves_from_store(store: Store, run_id: int) -> Curves:
    """A run's curves (as the advisor reads them) from its stored row and metric rows."""
    return Curves.from_rows(store.metrics(run_id), store.get_run(run_id))


@dataclass
class Advance:
    """What one turn of `TuningSession.advance` did, for the front end to say and wait on."""

    step: str | None
    event: str  # done | to_start | launched | waiting | failed | more_runs | accepted | ready
    run_ids: list[int] = field(default_factory=list)
    rec: Recommendation | None = None
    message: str = ""


@dataclass
class StepState:
    """Where one checklist step stands, for display."""

    step: str
    title: str
    status: str  # pending | running | ready (runs ended, no decision) | done | stale | failed
    value_label: str | None
    runs: dict[str, int]


class TuningSession:
    """One session's checklist, persisted in the store after every change."""

    def __init__(self, store: Store, session_id: int) -> None:
        self.store = store
        self.id = session_id
        self.reload()

    def reload(self) -> None:
        """Read the session as it is in the store now (another window or the CLI may have changed it)."""
        row = self.store.get_session(self.id)
        state = row["state"]  # decoded by the store: {} when it holds none
        if "checklist" not in state:
            raise UserError(f"session {self.id} holds no checklist; create a new one with tuneassist tune")
        self.name = row.get("name") or f"session {self.id}"
        self.checklist = Checklist.from_dict(state["checklist"])
        self.rev = int(state.get("rev") or 0)

    def stored_rev(self) -> int:
        """The revision in the store, read in SQL without decoding the state: asked on every UI poll."""
        rev = self.store.session_rev(self.id)
        if rev is None:
            self.store.get_session(self.id)  # the one-line "no session N" error
        return rev or 0

    def sync(self) -> bool:
        """Reload when someone else saved since we read; True when the session changed."""
        if self.stored_rev() == self.rev:
            return False
        self.reload()
        return True

    @classmethod
    def create(
        cls,
        store: Store,
        data: str,
        model: str,
        budget: str = "quick",
        devices: int = 1,
        name: str | None = None,
        **checklist_kw: Any,
    ) -> TuningSession:
        cl = Checklist(data=data, model=model, budget=budget, devices=devices, **checklist_kw)
        sid = store.create_session(name=name or f"{data} · {model}", data=data, model=model, state={})
        cl.session_id = str(sid)
        store.update_session(sid, state={"checklist": cl.to_dict()})
        return cls(store, sid)

    @classmethod
    def latest(cls, store: Store) -> TuningSession | None:
        """The most recent session that holds a checklist (what `tuneassist` reopens)."""
        for row in reversed(store.list_sessions()):
            if "checklist" in row["state"]:
                return cls(store, int(row["id"]))
        return None

    def save(self) -> None:
        """Write the checklist unless someone else saved since we read it (then SessionConflict).

        Compare-and-swap on a revision number, in one write transaction: two windows (or a window
        and `tune`) can never overwrite each other's decisions or detach each other's runs.
        """
        state = {"checklist": self.checklist.to_dict(), "rev": self.rev + 1}
        if not self.store.swap_session_state(self.id, self.rev, state):
            raise SessionConflict(f"session {self.id} was changed elsewhere")
        self.rev += 1

    def _change(self, fn: Callable[[], T]) -> T:
        """Apply a change and save it; if another window saved first, re-read and apply it again.

        Changes are safe to repeat: decisions are idempotent and launching reuses an identical
        queued or running run.
        """
        for _ in range(10):
            try:
                result = fn()
                self.save()
                return result
            except SessionConflict:
                self.reload()
        raise UserError(f"session {self.id} keeps changing in another window; try again")

    # -- runs of a step ------------------------------------------------------------------------
    def step_runs(self, step: str) -> dict[str, int]:
        return {k: int(v) for k, v in (self.checklist.runs.get(step) or {}).items()}

    def launch(self, step: str | None = None) -> list[int]:
        """Start (queue) every proposed run of the step that has no run yet; returns their ids."""
        cl = self.checklist
        step = step or cl.current_step
        if step is None:
            return []
        return self._change(lambda: self._launch(step))

    def _launch(self, step: str) -> list[int]:
        cl = self.checklist
        prop = cl.propose(step)
        if not prop.candidates:  # all started already (by another window too): those are the runs
            return [r for r in self.step_runs(step).values() if self._active(r)]
        seed = self.seed_for(step)
        ids = []
        try:
            for cand in prop.candidates:
                spec = replace(cand.spec, seed=seed) if seed else cand.spec
                run_id = launch_run(self.store, spec, kind=f"{step}:{cand.label}", session_id=self.id)
                cl.attach_run(step, cand.key, str(run_id))
                ids.append(run_id)
        except UserError:
            if ids:
                self.save()  # runs started before a failure stay attached
            raise
        return ids

    def _active(self, run_id: int) -> bool:
        return self.store.get_run(run_id, refresh=False).status in ("queued", "running")

    def seed_for(self, step: str) -> int:
        """The seed of the step's runs: 0, or the seed of its latest re-run."""
        seeds = [
            int(h.get("seed", 0))
            for h in self.checklist.history
            if h.get("event") == "rerun" and h.get("step") == step
        ]
        return seeds[-1] if seeds else 0

    def rerun(self, step: str) -> list[int]:
        """Run the step's candidates again with a new seed: is the reading noise or signal?

        The previous runs stay in the store (and in the history); the step's decision, if any, stays
        until a new recommendation is accepted. A range test re-runs only its latest range.
        """
        return self._change(lambda: self._rerun(step))

    def _rerun(self, step: str) -> list[int]:
        cl = self.checklist
        active = [
            r for r in self.step_runs(step).values() if self.store.get_run(r).status in ("queued", "running")
        ]
        if active:
            raise UserError(
                f"runs {', '.join(map(str, active))} of {STEP_TITLES[step]} are still going; "
                "wait for them or cancel them first"
            )
        seed = 1 + max(
            [
                int(h.get("seed", 0))
                for h in cl.history
                if h.get("event") == "rerun" and h.get("step") == step
            ],
            default=0,
        )
        if step == "lr_range":
            self.set_candidates(step, [cl.candidate_list(step)[-1].value], save=False)
        elif step in cl.runs:
            cl.history.append({"event": "runs_superseded", "step": step, "runs": dict(cl.runs.pop(step))})
        cl.history.append({"event": "rerun", "step": step, "seed": seed})
        return self._launch(step)

    def set_candidates(self, step: str, values: list[Any], save: bool = True) -> None:
        """Replace the values a step tries (the user edited the proposal); forgets the step's runs."""
        if save:
            self._change(lambda: self.set_candidates(step, values, save=False))
            return
        cl = self.checklist
        if step == "lr_range":
            # Keep the range as [low, high]: that is the form the checklist builds its range-test spec from.
            if not values:
                raise UserError("give one LR range low:high, e.g. 1e-4:10")
            norm = cl.normalise(step, values[-1])
            cl.candidates[step] = [{"key": "range", "value": [norm["lr_min"], norm["lr_max"]]}]
            cl.forget_runs(step)
        else:
            cl.set_candidates(step, values)

    def runs_ended(self, step: str) -> bool:
        runs = self.step_runs(step)
        if not runs:
            return False
        return all(self.store.get_run(r).status in ENDED for r in runs.values())

    def step_timing(self, step: str) -> dict[str, float] | None:
        """How the step's ended runs shared the devices (see `sharing`)."""
        return sharing([self.store.get_run(r, refresh=False) for r in self.step_runs(step).values()])

    def failed_runs(self, step: str) -> list[Run]:
        runs = [self.store.get_run(r) for r in self.step_runs(step).values()]
        return [r for r in runs if r.status in ("failed", "lost", "cancelled")]

    def recommend(self, step: str | None = None) -> Recommendation | None:
        """The advisor's reading of the step's runs, or None while they are still going."""
        step = step or self.checklist.current_step
        if step is None or not self.runs_ended(step):
            return None
        curves = {k: curves_from_store(self.store, r) for k, r in self.step_runs(step).items()}
        return self.checklist.recommend(step, curves)  # pure: runs it asks for come in `rec.add`

    def advance(self, accept: bool = False, start: bool = True) -> Advance:
        """One turn of the checklist loop, the same for `tune` and the TUI: start the current step's
        runs (`start`; the TUI leaves that to the user's key), or report them still going, or read
        them, adding and starting the runs the reading asks for (WD refinement, a range-test retry, a
        refinement of the final run), and take the recommendation when `accept` (the autopilot)."""
        cl = self.checklist
        step = cl.current_step
        if step is None:
            return Advance(None, "done")
        title = STEP_TITLES[step]
        if cl.propose(step).candidates:
            if not start:
                return Advance(step, "to_start")
            return Advance(step, "launched", self.launch(step), message=f"{title}: started runs")
        runs = list(self.step_runs(step).values())
        if not self.runs_ended(step):
            return Advance(step, "waiting", runs)
        failed = self.failed_runs(step)
        if failed and len(failed) == len(runs):
            why = failed[0].error or failed[0].status
            return Advance(
                step,
                "failed",
                runs,
                message=f"every run of step {title!r} ended {failed[0].status} ({why})",
            )
        rec = self.recommend(step)
        if rec is None:
            return Advance(step, "waiting", runs)
        if rec.needs_more_runs and not failed:
            ids = self._change(lambda: self._add_and_launch(step, rec.add))
            return Advance(step, "more_runs", ids, rec, rec.reason)
        if accept and rec.ok and not rec.needs_more_runs:
            self.accept(rec)
            msg = f"{title}: {rec.label} — {rec.reason}"
            if step == "lr_range":
                msg += " " + (self.replan_from(runs) if cl.time_s else self.eta_from(runs))
            return Advance(step, "accepted", runs, rec, msg)
        return Advance(step, "ready", runs, rec, rec.reason)

    def _measured_speed(self, run_ids: list[int]) -> float | None:
        """The fastest training img/s these runs measured (None when none did)."""
        measured = [
            float(r.images_per_s) for i in run_ids if (r := self.store.get_run(i, refresh=False)).images_per_s
        ]
        return max(measured) if measured else None

    def replan_from(self, run_ids: list[int]) -> str:
        """A time budget was planned on a guessed speed (a user's net has no measurement yet): plan the
        rest again on the img/s the range test measured, and say how the time is split now."""
        ips = self._measured_speed(run_ids)
        if ips is not None:

            def set_speed() -> None:
                self.checklist.images_per_s = ips

            self._change(set_speed)
        return self.checklist.time_plan_text()

    def eta_from(self, run_ids: list[int]) -> str:
        """The start-up ETA was a guess from the model's cost (a user's net can be 14x off): say what
        the rest takes at the speed the range test measured."""
        ips = self._measured_speed(run_ids)
        if ips is None:
            return ""
        secs = self.checklist.estimate_seconds(images_per_s=ips)["total"]
        return f"Measured {ips:,.0f} img/s on the range test: the rest takes about {fmt_time(secs)}."

    def allow_refine(self) -> None:
        """Let the final step run one more final-length run that acts on its diagnosis (the TUI's key;
        `tune --refine N`): the next turn of `advance` adds and starts it."""
        if self.checklist.current_step != "final":
            raise UserError(
                "a refinement acts on the final run's diagnosis: finish the final step's runs first"
            )

        def more() -> None:
            self.checklist.refine += 1

        self._change(more)

    def _add_and_launch(self, step: str, add: list[dict[str, Any]]) -> list[int]:
        self.checklist.add_candidates(step, add)
        return self._launch(step)

    def accept(self, rec: Recommendation) -> None:
        self._change(lambda: self.checklist.accept(rec))

    def override(self, step: str, value: Any, reason: str = "set by the user") -> None:
        self._change(lambda: self.checklist.override(step, value, reason))

    # -- display -------------------------------------------------------------------------------
    def steps(self) -> list[StepState]:
        cl = self.checklist
        out = []
        for step in STEPS:
            runs = self.step_runs(step)
            d = cl.decisions.get(step)
            label = d.label if d else None
            stale = bool(d and d.stale)
            statuses = [self.store.get_run(r, refresh=False).status for r in runs.values()]
            if d and stale:
                status = "stale"
            elif d:
                status = "done"
            elif any(s in ("queued", "running") for s in statuses):
                status = "running"
            elif statuses and all(s in ENDED for s in statuses):
                status = "failed" if all(s in ("failed", "lost") for s in statuses) else "ready"
            else:
                status = "pending"
            out.append(StepState(step, STEP_TITLES[step], status, label, runs))
        return out

    def save_profile(self, name: str, directory: Path | None = None) -> Path:
        from tuneassist.profiles import profile_from_checklist, save_profile

        profile = profile_from_checklist(self.checklist, name)
        directory = directory or (self.store.workspace / "profiles")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.toml"
        save_profile(profile, path)
        return path
