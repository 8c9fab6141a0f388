"""The checklist state machine, driven end to end by a simulated engine with known best values.

The simulator stands in for training (the state machine is pure): it turns each proposed RunSpec
into engine-shaped events whose curves encode a known optimum (max LR about 0.5 at TBS 128, TBS 256,
cyclical momentum, WD near 1e-3), so the test checks that the checklist finds it step by step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tuneassist.advisor.checklist import BUDGETS, STEPS, Checklist, RunCurves
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

N_TRAIN = 9000


def simulate(spec: RunSpec, seed: int = 0, flat: bool = False) -> list[dict]:
    """Engine-like events for `spec` (start, step, eval, end)."""
    rng = np.random.default_rng(seed)
    spe = N_TRAIN // spec.batch_size
    total = spec.steps if spec.steps is not None else max(1, round(spec.epochs * spe))
    ev: list[dict] = [{"type": "start", "total_steps": total, "steps_per_epoch": spe}]
    if spec.is_range_test:
        lrs = spec.lr_min * (spec.lr_max / spec.lr_min) ** (np.arange(total) / max(1, total - 1))
        lx = np.log10(lrs)
        m, d = math.log10(0.5), math.log10(1.5)
        if flat:
            loss = 2.3 + 0.02 * rng.standard_normal(total)
        else:
            loss = 2.3 - 1.8 / (1 + np.exp(-(lx - (m - 1.2)) / 0.3))
            at_m = 2.3 - 1.8 / (1 + np.exp(-1.2 / 0.3))
            loss = np.where(lx <= m, loss, at_m * (1 + 3 * ((lx - m) / (d - m)) ** 2))
            loss = loss + 0.03 * rng.standard_normal(total)
        for i in range(total):
            if not flat and lx[i] > d:
                ev.append(
                    {"type": "end", "outcome": "diverged", "diverged_lr": float(lrs[i]), "epoch": i / spe}
                )
                return ev
            ev.append(
                {
                    "type": "step",
                    "step": i,
                    "epoch": i / spe,
                    "lr": float(lrs[i]),
                    "train_loss": float(loss[i]),
                }
            )
            if spec.eval_every and (i + 1) % spec.eval_every == 0:
                ev.append(
                    {
                        "type": "eval",
                        "step": i + 1,
                        "epoch": (i + 1) / spe,
                        "val_loss": float(loss[i] + 0.1),
                        "val_acc": 0.5,
                    }
                )
        ev.append({"type": "end", "outcome": "finished", "diverged_lr": None, "epoch": total / spe})
        return ev

    # A 1cycle run: the final val loss depends on the distance from the known optimum.
    pen = 0.08 * abs(math.log2(spec.batch_size / 256))
    pen += 0.1 * abs(math.log10(max(spec.weight_decay, 1e-6) / 1.5e-3))
    mom = {(0.95, 0.85): 0.0, (0.9, 0.9): 0.05, (0.95, 0.95): 0.1, (0.97, 0.97): 0.15}
    key = (round(spec.momentum_max, 2), round(spec.momentum_min, 2))
    diverge = key == (0.99, 0.99)
    pen += mom.get(key, 0.0)
    lr_ok = 0.5 * spec.batch_size / 128
    pen += 0.1 * abs(math.log10(spec.lr_max / lr_ok))
    final = 1.0 + pen
    for i in range(total):
        frac = (i + 1) / total
        ev.append(
            {
                "type": "step",
                "step": i,
                "epoch": i / spe,
                "lr": spec.lr_max,
                "train_loss": final - 0.2 + 1.3 * math.exp(-4 * frac),
            }
        )
        if (i + 1) % (spec.eval_every or spe) == 0:  # the engine evaluates every epoch by default
            v = (
                math.nan
                if diverge and frac > 0.3
                else final + 1.3 * math.exp(-4 * frac) + 0.002 * rng.standard_normal()
            )
            ev.append(
                {"type": "eval", "step": i + 1, "epoch": (i + 1) / spe, "val_loss": v, "val_acc": 0.9 - pen}
            )
    out = "diverged" if diverge else "finished"
    end = {
        "type": "end",
        "outcome": out,
        "epoch": total / spe,
        "diverged_lr": None,
        "val_loss": final,
        "val_acc": 0.9 - pen,
        "test_loss": final,
        "test_acc": 0.88 - pen,
    }
    ev.append(end)
    return ev


def run_step(cl: Checklist, launched: list[str], flat_range: bool = False):
    prop = cl.propose()
    events = {}
    for cand in prop.candidates:
        run_id = f"r{len(launched) + 1}"
        launched.append(run_id)
        cl.attach_run(prop.step, cand.key, run_id)
        events[run_id] = simulate(cand.spec, seed=len(launched), flat=flat_range and prop.step == "lr_range")
    return prop, events


def drive(cl: Checklist, store: dict[str, list[dict]], launched: list[str], flat_first_range: bool = False):
    """The autopilot loop from the module docstring; returns the recommendations accepted."""
    accepted = []
    flat = flat_first_range
    while not cl.done:
        prop, events = run_step(cl, launched, flat_range=flat)
        flat = False
        store.update(events)
        curves = {k: RunCurves.from_events(store[rid], rid) for k, rid in cl.runs[prop.step].items()}
        rec = cl.recommend(prop.step, curves)
        json.dumps(rec.to_dict())
        if rec.needs_more_runs:
            cl.add_candidates(prop.step, rec.add)
            continue
        assert rec.ok, rec.reason
        cl.accept(rec)
        accepted.append(rec)
    return accepted


def test_quick_budget_fits_ten_minutes_on_cpu() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    est = cl.estimate_seconds(images_per_s=1500.0, overhead_s=5.0)
    assert est["total"] < 600, est
    runs = sum(len(cl.candidate_list(s)) for s in STEPS) + 1  # + the WD refinement
    assert runs <= 15
    spec = cl.final_spec()
    assert spec.epochs == BUDGETS["quick"].final_epochs and spec.test and spec.schedule == "onecycle"
    base = cl.baseline_spec()
    assert (base.schedule, base.lr_max, base.momentum_max, base.weight_decay) == ("constant", 0.01, 0.9, 0.0)
    assert base.epochs == spec.epochs and base.batch_size == 128  # the start batch, never a tuned one
    cl.values["batch_size"] = 256  # a tuned TBS does not move the baseline
    assert cl.baseline_spec().batch_size == 128 and cl.lr_only_spec().batch_size == 128


def test_paper_budget_uses_the_paper_epochs() -> None:
    assert Checklist(data="cifar10", model="resnet56", budget="paper").final_spec().epochs == 95
    assert Checklist(data="cifar10", model="densenet40", budget="paper").final_spec().epochs == 100
    cl = Checklist(data="cifar10", model="resnet20", budget="quick")
    assert cl.final_spec().epochs == 2  # capped by images: 120k / 45k
    assert cl.values["batch_size"] == 128 and cl.short_epochs() == pytest.approx(0.33)  # 15k / 45k
    assert Checklist(data="cifar10", model="resnet56", start_batch=512).values["batch_size"] == 512


def test_full_checklist_finds_the_known_optimum() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick", session_id="s1")
    store: dict[str, list[dict]] = {}
    launched: list[str] = []
    drive(cl, store, launched)
    assert cl.done and len(launched) == 16  # 1 + 3 TBS + 5 momentum + 3+1 WD + tuned, LR-only, baseline
    d = cl.decisions
    assert 0.2 <= d["lr_range"].value["lr_max"] <= 0.8 and d["lr_range"].value["tbs"] == 128
    assert d["batch_size"].value == 256
    lo, hi = cl.effective_lr()
    assert hi == pytest.approx(2 * d["lr_range"].value["lr_max"])  # linear scaling 128 -> 256
    assert "linear scaling" in d["batch_size"].reason
    assert d["momentum"].value == [0.95, 0.85]
    assert d["weight_decay"].value == pytest.approx(1e-3)
    assert "wd_refine" in cl.runs["weight_decay"]  # the refinement ran (3e-3, between 1e-3 and 1e-2)
    assert cl.final["test_acc"] is not None
    spec = cl.final_spec()
    assert (spec.batch_size, spec.momentum_max, spec.momentum_min, spec.weight_decay) == (
        256,
        0.95,
        0.85,
        1e-3,
    )
    text = cl.summary_text()
    assert "LR range test" in text and "Weight decay" in text and "1e-3" in text
    # The candidates column is as wide as its longest list: a cut at 34 characters read
    # "…, LR-only profile, un" + "tuned profile" from the chosen column.
    assert "tuned profile, LR-only profile, untuned baseline " in text
    prov = cl.provenance()
    assert prov["session"] == "s1" and len(prov["runs"]) == 16 and len(prov["decisions"]) == 5
    assert cl.final["variant"] == "final" and set(cl.final["compare"]) == {"final", "lr_only", "baseline"}


def test_state_survives_a_json_round_trip_mid_session() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    store: dict[str, list[dict]] = {}
    launched: list[str] = []
    for _ in range(2):
        prop, events = run_step(cl, launched)
        store.update(events)
        rec = cl.recommend(prop.step, {k: store[r] for k, r in cl.runs[prop.step].items()})
        cl.accept(rec)
    cl2 = Checklist.from_dict(json.loads(json.dumps(cl.to_dict())))
    assert cl2.current_step == "momentum" and cl2.values == cl.values
    assert cl2.decisions["batch_size"].value == cl.decisions["batch_size"].value
    assert [c.spec for c in cl2.propose().candidates] == [c.spec for c in cl.propose().candidates]
    drive(cl2, store, launched)
    assert cl2.done


def test_changing_an_earlier_value_marks_later_decisions_stale() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    drive(cl, {}, [])
    cl.override("lr_range", (0.05, 0.5), reason="from an older range test")
    assert [cl.decisions[s].stale for s in STEPS] == [False, True, True, True, True]
    assert cl.current_step == "batch_size" and not cl.done
    assert "batch_size" not in cl.runs  # the old runs no longer fit: they are re-proposed
    prop = cl.propose()
    assert {c.spec.lr_max for c in prop.candidates} == {0.25, 0.5, 1.0}  # TBS 64, 128, 256: linear scaling
    assert any(h["event"] == "stale" for h in cl.history)
    # Re-deciding with the same value keeps later decisions as they are.
    cl2 = Checklist(data="synthetic", model="simple3", budget="quick")
    drive(cl2, {}, [])
    cl2.override("weight_decay", cl2.decisions["weight_decay"].value)
    assert not cl2.decisions["final"].stale


def test_range_test_that_cannot_be_read_is_retried() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    store: dict[str, list[dict]] = {}
    launched: list[str] = []
    prop, events = run_step(cl, launched, flat_range=True)
    store.update(events)
    rec = cl.recommend("lr_range", {k: store[r] for k, r in cl.runs["lr_range"].items()})
    assert rec.needs_more_runs and not rec.ok and "flat" in rec.detail["failure"]
    assert cl.propose().candidates == []  # recommend() is pure: it asks, the caller adds
    cl.add_candidates("lr_range", rec.add)
    prop2 = cl.propose()
    assert [c.key for c in prop2.candidates] == ["range2"]
    assert prop2.candidates[0].spec.lr_max > prop.candidates[0].spec.lr_max
    prop2, events = run_step(cl, launched)
    store.update(events)
    rec = cl.recommend("lr_range", {k: store[r] for k, r in cl.runs["lr_range"].items()})
    assert rec.ok and not rec.needs_more_runs and rec.value["lr_max"] > 0


def test_overrides_are_checked() -> None:
    cl = Checklist(data="synthetic", model="simple3")
    for step, bad in [
        ("lr_range", (1.0, 0.1)),
        ("lr_range", (-1.0, 0.1)),
        ("batch_size", 0),
        ("batch_size", 12.5),
        ("momentum", 1.2),
        ("momentum", (0.85, 0.95)),
        ("weight_decay", -1e-4),
        ("final", {}),
    ]:
        with pytest.raises(UserError):
            cl.override(step, bad)
    assert cl.override("momentum", 0.9).value == [0.9, 0.9]
    assert cl.override("batch_size", 64).label == "64"


def test_unknown_inputs_are_user_errors() -> None:
    with pytest.raises(UserError):
        Checklist(data="synthetic", model="vgg16")
    with pytest.raises(UserError):
        Checklist(data="mnist", model="simple3")
    with pytest.raises(UserError):
        Checklist(data="synthetic", model="simple3", budget="huge")
    cl = Checklist(data="synthetic", model="simple3")
    with pytest.raises(UserError):
        cl.attach_run("momentum", "nope", "r1")
    with pytest.raises(UserError):
        cl.recommend("momentum", {})


def test_edited_candidates() -> None:
    cl = Checklist(data="synthetic", model="resnet20", budget="quick")
    cl.set_candidates("weight_decay", [1e-4, 3e-5])
    assert [c.value for c in cl.propose("weight_decay").candidates] == [1e-4, 3e-5]
    with pytest.raises(UserError):
        cl.set_candidates("weight_decay", [-1])


def test_edited_lr_range_candidate() -> None:
    """An edited range test is kept as [low, high], so the candidates (and the TUI) can read it."""
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    cl.set_candidates("lr_range", [(1e-5, 1.0)])
    (cand,) = cl.candidate_list("lr_range")
    assert cand.value == [1e-5, 1.0] and cand.label == "1e-5 → 1.0"
    assert (cand.spec.lr_min, cand.spec.lr_max, cand.spec.schedule) == (1e-5, 1.0, "range_exp")
    assert "LR grows 1e-5 → 1.0" in cl.propose("lr_range").explanation
    cl.set_candidates("lr_range", [{"lr_min": 1e-4, "lr_max": 3.0}])
    assert cl.candidate_list("lr_range")[0].value == [1e-4, 3.0]
    cl2 = Checklist.from_dict(json.loads(json.dumps(cl.to_dict())))
    assert cl2.candidate_list("lr_range")[0].spec.lr_max == 3.0
    # A session saved while the range was stored as a dict still loads and reads.
    cl2.candidates["lr_range"] = [{"key": "range", "value": {"lr_min": 1e-3, "lr_max": 2.0, "tbs": 64}}]
    assert cl2.candidate_list("lr_range")[0].value == [1e-3, 2.0]
    with pytest.raises(UserError):
        cl.set_candidates("lr_range", [(1.0, 0.1)])


def test_run_curves_from_engine_events() -> None:
    events = [
        {"type": "start", "total_steps": 4, "steps_per_epoch": 2},
        {"type": "step", "step": 0, "epoch": 0.0, "lr": 0.1, "train_loss": 2.0},
        {"type": "step", "step": 1, "epoch": 0.5, "lr": 0.2, "train_loss": None},
        {"type": "eval", "step": 2, "epoch": 1.0, "val_loss": 1.5, "val_acc": 0.4},
        {"type": "end", "outcome": "diverged", "diverged_lr": 0.2},
    ]
    c = RunCurves.from_events(events, "r9")
    assert c.steps == [0, 1] and math.isnan(c.train_loss[1]) and c.eval_epochs == [1.0]
    assert c.outcome == "diverged" and c.diverged_lr == 0.2 and c.steps_per_epoch == 2
    assert c.eval_lrs() == [0.2]


def test_expected_throughput_prefers_what_this_machine_measured(tmp_path: Path) -> None:
    from tuneassist.runs.store import Store
    from tuneassist.session import expected_throughput

    store = Store(tmp_path / "ws")
    small, source = expected_throughput(store, "simple3", on_gpu=False)
    big, _ = expected_throughput(store, "resnet110", on_gpu=False)
    assert source == "assumed for simple3 on the CPU" and small > 15 * big  # cost scales the guess
    assert expected_throughput(store, "mynets:build", on_gpu=True)[0] > small  # a GPU is faster
    for ips in (400.0, 500.0, 900.0):
        rid = store.add_run({"model": "simple3"})
        store.update_run(rid, images_per_s=ips, status="finished")
    store.add_run({"model": "resnet20"})  # another model, never measured
    assert expected_throughput(store, "simple3", on_gpu=False) == (500.0, "measured on 3 runs")
    assert expected_throughput(store, "resnet20", on_gpu=False)[1].startswith("assumed")


def test_two_session_objects_never_overwrite_each_other(tmp_path: Path) -> None:
    """Two windows on one session, each holding its own copy: changes merge, none is lost or doubled."""
    from tuneassist.runs.store import Store
    from tuneassist.session import TuningSession

    store = Store(tmp_path / "ws")
    a = TuningSession.create(store, "synthetic:300", "simple3", budget="quick", train_size=270)
    b = TuningSession(store, a.id)
    a.override("lr_range", [0.01, 0.1])
    b.override("batch_size", 32)  # b's copy predates a's change: it re-reads and applies it again
    assert b.checklist.decisions["lr_range"].label == "0.01 → 0.1"
    assert a.sync() is True and set(a.checklist.decisions) == {"lr_range", "batch_size"}
    assert a.sync() is False  # nothing new since
    a.override("batch_size", 32)  # the same decision again: recorded once
    fresh = TuningSession(store, a.id)
    assert [h for h in fresh.checklist.history if h.get("event") == "replaced"] == []
    assert fresh.rev == a.rev and fresh.checklist.decisions["batch_size"].value == 32


def test_step_timing_says_how_the_runs_shared_the_devices(tmp_path: Path) -> None:
    from tuneassist.runs.store import Store
    from tuneassist.session import TuningSession, sharing_text

    store = Store(tmp_path / "ws")
    s = TuningSession.create(store, "synthetic:300", "simple3", budget="quick", train_size=270)
    assert s.step_timing("momentum") is None
    ids = {}
    for label, (start, end) in {"0.9": (100, 130), "0.95": (100, 140), "0.97": (130, 160)}.items():
        ids[label] = store.add_run({"model": "simple3"})
        store.update_run(ids[label], status="finished", started=start, ended=end)
    ids["0.99"] = store.add_run({"model": "simple3"})  # still queued: not counted
    s.checklist.runs["momentum"] = ids
    t = s.step_timing("momentum")
    # Two at once from 100 to 130; the third starts as the first ends (an end frees its slot first).
    assert t == {"runs": 3, "wall_s": 60.0, "run_s": 100.0, "most_at_once": 2}
    assert sharing_text(t) == "3 runs in 1:00, up to 2 at once (their run times add up to 1:40)"


def test_the_eta_after_the_range_test_uses_the_speed_it_measured(tmp_path: Path) -> None:
    """The start-up ETA of a user's net is a guess from its cost; once the range test ran, the rest is
    timed at the speed it measured: 10x the speed, a tenth of the time (bar the per-run start-up)."""
    from tuneassist.runs.store import Store, fmt_time
    from tuneassist.session import TuningSession

    store = Store(tmp_path / "ws")
    s = TuningSession.create(store, "synthetic:300", "simple3", budget="quick", train_size=270)
    slow, fast = store.add_run({"model": "simple3"}), store.add_run({"model": "simple3"})
    store.update_run(slow, images_per_s=100.0, status="finished")
    store.update_run(fast, images_per_s=1000.0, status="finished")
    assert s.eta_from([]) == ""
    text = s.eta_from([slow, fast])
    assert text.startswith("Measured 1,000 img/s on the range test")
    assert text.endswith(f"the rest takes about {fmt_time(s.checklist.estimate_seconds(1000.0)['total'])}.")
    at_slow = s.checklist.estimate_seconds(images_per_s=100.0, overhead_s=0)["total"]
    at_fast = s.checklist.estimate_seconds(images_per_s=1000.0, overhead_s=0)["total"]
    assert at_fast == pytest.approx(at_slow / 10)


def _final_events(val_acc: float, test_acc: float, falling: bool = False) -> list[dict]:
    """A final-length run: evaluations (still falling steadily when `falling`) and its end."""
    evals = [
        {
            "type": "eval",
            "step": s,
            "epoch": s / 70,
            "val_loss": (2.0 - s / 500) if falling else 1.0 + 1 / s,
            "val_acc": val_acc,
        }
        for s in range(70, 701, 70)
    ]
    end = {"type": "end", "outcome": "finished", "epoch": 10.0, "val_loss": 1.0}
    return [{"type": "start", "num_classes": 10}, *evals, {**end, "val_acc": val_acc, "test_acc": test_acc}]


def _tuned(**kw) -> Checklist:
    cl = Checklist(data="synthetic", model="simple3", budget="quick", **kw)
    cl.override("lr_range", (0.03, 0.3))
    cl.override("batch_size", 256)
    cl.override("momentum", (0.9, 0.9))
    cl.override("weight_decay", 1e-2)
    return cl


def test_final_step_judges_the_profile_against_what_the_user_would_have_run() -> None:
    """Beside the tuned run: the LR-only profile (every later step at its start value) and the untuned
    baseline at the user's batch; the profile keeps the tuned variant that validates best."""
    cl = _tuned()
    keys = [c.key for c in cl.propose("final").candidates]
    assert keys == ["final", "lr_only", "baseline"]
    specs = {c.key: c.spec for c in cl.propose("final").candidates}
    assert (specs["lr_only"].batch_size, specs["lr_only"].weight_decay, specs["lr_only"].momentum_max) == (
        128,
        1e-3,
        0.95,
    )
    assert specs["lr_only"].lr_max == pytest.approx(0.3)  # the range test's LR at its own TBS
    assert (specs["baseline"].schedule, specs["baseline"].batch_size) == ("constant", 128)
    assert len({s.epochs for s in specs.values()}) == 1  # the same budget for all three
    curves = {
        "final": _final_events(0.80, 0.79),
        "lr_only": _final_events(0.84, 0.835),  # the later steps lost points
        "baseline": _final_events(0.78, 0.775),
    }
    rec = cl.recommend("final", curves)
    assert rec.ok and rec.value["variant"] == "lr_only"
    assert "did not earn their place" in rec.reason and "untuned baseline" in rec.reason
    assert set(rec.value["compare"]) == {"final", "lr_only", "baseline"}  # what the reason compares
    cl.accept(rec)
    prof = cl.profile_spec()
    assert (prof.batch_size, prof.weight_decay, prof.momentum_max) == (128, 1e-3, 0.95)
    # When the tuned run validates best, the tuned values stay.
    cl2 = _tuned()
    rec2 = cl2.recommend("final", {**curves, "final": _final_events(0.86, 0.85)})
    cl2.accept(rec2)
    assert rec2.value["variant"] == "final" and cl2.profile_spec().batch_size == 256


def test_final_step_acts_on_its_diagnosis_when_refine_allows() -> None:
    cl = _tuned(refine=1, baseline=False)
    curves = {"final": _final_events(0.80, 0.79, falling=True), "lr_only": _final_events(0.70, 0.7)}
    cl.attach_run("final", "final", "r1")
    cl.attach_run("final", "lr_only", "r2")
    rec = cl.recommend("final", curves)
    assert rec.needs_more_runs and rec.value["diagnosis"] == "underfitting"
    assert [c.key for c in cl.propose("final").candidates] == []  # pure: nothing added yet
    cl.add_candidates("final", rec.add)
    (refine,) = cl.propose("final").candidates
    assert refine.key == "refine1" and refine.spec.lr_max == pytest.approx(2 * cl.final_spec().lr_max)
    curves["refine1"] = _final_events(0.83, 0.82)
    rec = cl.recommend("final", curves)
    assert not rec.needs_more_runs and rec.value["variant"] == "refine1"  # one refinement, then it stops
    cl.accept(rec)
    assert cl.profile_spec().lr_max == pytest.approx(refine.spec.lr_max)
    assert _tuned().recommend("final", curves).needs_more_runs is False  # refine=0: no extra run


def test_a_time_budget_is_split_over_the_steps_and_fits() -> None:
    """`tune --time`: range test first, then half of the rest to the sweeps and half to the final step,
    within three quarters of the time at the stated speed (the rest is for evaluations and start-up)."""
    cl = Checklist(data="synthetic", model="simple3", budget="quick", time_s=600, images_per_s=1000)
    plan = cl.time_plan()
    n = cl.n_train
    imgs = plan["range_images"] + plan["sweep_runs"] * plan["short_epochs"] * n
    imgs += plan["final_runs"] * plan["final_epochs"] * n
    assert plan["fits"] and imgs <= 0.75 * 600 * 1000 * 1.01
    assert cl.final_epochs() == plan["final_epochs"] >= 1 and cl.short_epochs() == plan["short_epochs"]
    assert cl.final_spec().epochs == plan["final_epochs"]
    assert "Time budget 10 min" in cl.time_plan_text()
    # Twice the time: longer final runs; a stated --epochs is kept and the sweeps get the rest.
    assert Checklist(data="synthetic", model="simple3", time_s=1200, images_per_s=1000).final_epochs() > 6
    fixed = Checklist(data="synthetic", model="simple3", time_s=1200, images_per_s=1000, epochs=3)
    assert fixed.final_epochs() == 3 and fixed.short_epochs() == BUDGETS["quick"].short_epochs
    tight = Checklist(data="cifar10", model="resnet20", time_s=60, images_per_s=300)
    assert not tight.time_plan()["fits"] and "does not fit" in tight.time_plan_text()


def test_losing_to_the_untuned_baseline_earns_one_refinement_even_on_quick() -> None:
    """Real CIFAR-10, resnet20, 2 epochs: the tuned run underfit (the LR read too low) and validated 5
    points below the untuned baseline. With refine=0 the step still tries the diagnosis's remedy once."""
    cl = _tuned()
    assert cl.refine == 0
    curves = {
        "final": _final_events(0.535, 0.531, falling=True),
        "lr_only": _final_events(0.520, 0.528, falling=True),
        "baseline": _final_events(0.583, 0.577),
    }
    rec = cl.recommend("final", curves)
    assert rec.needs_more_runs and rec.add[0]["key"] == "refine1"
    assert rec.add[0]["value"]["hparams"]["lr_max"] == pytest.approx(2 * cl.final_spec().lr_max)
    cl.add_candidates("final", rec.add)
    curves["refine1"] = _final_events(0.56, 0.55, falling=True)  # better, still below the baseline
    rec = cl.recommend("final", curves)
    assert not rec.needs_more_runs and rec.value["variant"] == "refine1"  # once only
    assert "untuned baseline: val 58.3%" in rec.reason  # and it says so
    assert rec.value["val_acc"] < rec.value["compare"]["baseline"]["val_acc"] == pytest.approx(0.583)


def test_a_long_candidate_list_is_cut_after_a_whole_item() -> None:
    from tuneassist.advisor.explain import _clip_list

    assert _clip_list("0.99, 0.97, 0.95", 16) == "0.99, 0.97, 0.95"
    long = "tuned profile, LR-only profile, untuned baseline"
    assert _clip_list(long, 34) == "tuned profile, LR-only profile,…"
    assert _clip_list("averyveryverylongname", 10) == "averyvery…"
