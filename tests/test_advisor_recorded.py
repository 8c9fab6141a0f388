"""The advisor's rules on real curves recorded from the engine (tests/fixtures/curves/*.json).

How the fixtures were made is in each file's header and in benchmarks/record_curves.py. The checks
here are judged against the recorded numbers by simple, independent readings (a running median of
the training loss, paired differences between sweep candidates), not against the advisor's own
output, so a wrong rule fails.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuneassist.advisor.checklist import Checklist, RunCurves
from tuneassist.advisor.diagnosis import diagnose
from tuneassist.advisor.lr_range import suggest_lr
from tuneassist.advisor.sweep import SweepCandidate, rank_sweep

FIXTURES = Path(__file__).parent / "fixtures" / "curves"
NAMES = ("range_simple3", "range_resnet20", "wd_sweep_simple3", "overfit_simple3", "diverge_simple3")


@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _run(name: str, i: int = 0) -> dict[str, Any]:
    return _load(name)["runs"][i]


def _events(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The fixture back as engine events (what the store hands the advisor)."""
    ev: list[dict[str, Any]] = [{"type": "start", **run["start"]}]
    s, e = run["steps"], run["evals"]
    ev += [
        {"type": "step", "step": a, "lr": b, "train_loss": c}
        for a, b, c in zip(s["step"], s["lr"], s["train_loss"], strict=True)
    ]
    ev += [
        {"type": "eval", "step": a, "epoch": b, "val_loss": c, "val_acc": d}
        for a, b, c, d in zip(e["step"], e["epoch"], e["val_loss"], e["val_acc"], strict=True)
    ]
    ev.append({"type": "end", **run["end"]})
    return ev


def _curves(name: str, i: int = 0) -> RunCurves:
    return RunCurves.from_events(_events(_run(name, i)))


def _suggest(name: str) -> Any:
    c = _curves(name)
    return suggest_lr(
        c.lrs,
        c.train_loss,
        c.eval_lrs(),
        c.val_loss,
        diverged_at_lr=c.diverged_lr if c.outcome == "diverged" else None,
    )


def _falling_region(c: RunCurves) -> dict[str, float]:
    """An independent reading of a range test: a running median of the training loss (a twelfth of
    the steps wide); where the fall began (10% of it done), where the minimum is, and where the
    curve has turned back up by half the fall."""
    lr = np.asarray(c.lrs)
    y = np.asarray(c.train_loss, dtype=float)
    n = len(y)
    k = max(5, n // 12) | 1
    h = k // 2
    med = np.array([np.median(y[max(0, i - h) : i + h + 1]) for i in range(n)])
    start = float(np.median(y[:k]))
    i_min = int(np.argmin(med))
    fall = start - float(med[i_min])
    up = [i for i in range(i_min, n) if med[i] > med[i_min] + 0.5 * fall]
    return {
        "start": start,
        "fall": fall,
        "began": float(lr[int(np.argmax(med <= start - 0.1 * fall))]),
        "lr_min": float(lr[i_min]),
        "turn": float(lr[up[0]]) if up else float("inf"),
        "med": med,  # type: ignore[dict-item]
        "lr": lr,  # type: ignore[dict-item]
    }


def _fallen_fraction(region: dict[str, Any], at_lr: float) -> float:
    j = min(int(np.searchsorted(region["lr"], at_lr)), len(region["lr"]) - 1)
    return (region["start"] - float(region["med"][j])) / region["fall"]


# -- the fixtures themselves -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_fixtures_are_small_and_say_how_they_were_made(name: str) -> None:
    path = FIXTURES / f"{name}.json"
    assert path.stat().st_size < 60_000
    h = _load(name)["header"]
    assert h["command"].startswith("python benchmarks/record_curves.py")
    assert h["torch"] and h["date"] and h["what"]
    for run in _load(name)["runs"]:
        assert run["spec"]["device"] == "cpu" and run["steps"]["step"] and run["end"]["outcome"]
        assert all(len(v) == len(run["steps"]["step"]) for v in run["steps"].values())


# -- LR range tests ----------------------------------------------------------------------------


def test_simple3_range_test_reading() -> None:
    c = _curves("range_simple3")
    assert c.outcome == "diverged" and c.diverged_lr is not None
    s = _suggest("range_simple3")
    region = _falling_region(c)
    assert s.max_lr is not None and s.min_lr is not None and s.failure is None, s.explanation
    # Below the blow-up, with the margin the rule promises.
    assert s.max_lr <= c.diverged_lr / 1.5
    # On the floor past the end of the descent (where 1cycle trains best, benchmarks/lr_rule.py): after
    # the fall began, before the curve turns back up, where the loss still holds most of its fall.
    assert region["began"] < s.max_lr < region["turn"]
    assert _fallen_fraction(region, s.max_lr) > 0.6
    assert s.max_lr >= s.estimates["descent_end"]
    assert s.min_lr == pytest.approx(s.max_lr / 10, rel=0.3)
    assert s.estimates["val_min"] is not None  # the recorded validation curve was read
    assert s.confidence in ("medium", "high")


def test_resnet20_range_test_reading() -> None:
    c = _curves("range_resnet20")
    s = _suggest("range_resnet20")
    region = _falling_region(c)
    assert s.max_lr is not None and s.failure is None, s.explanation
    assert region["began"] < s.max_lr < region["turn"]
    assert _fallen_fraction(region, s.max_lr) > 0.75
    # The training loss never blew up (BatchNorm in train mode), but the validation loss did:
    # above 100x its minimum from this LR on. The max LR must stay clear of it.
    lrs, vl = np.asarray(c.eval_lrs()), np.asarray(c.val_loss)
    val_blowup = float(lrs[np.argmax(vl > 100 * vl.min())])
    assert s.max_lr <= val_blowup / 1.5
    # Before that the recorded val loss has a clear minimum (2.25 at LR 0.048, from 2.73 at the start).
    i = int(np.argmin(vl))
    assert 1e-3 < lrs[i] < 0.2 and vl[i] < 0.85 * vl[0]
    # A ResNet takes a far larger LR than the shallow net (the paper: ~0.01 vs up to 3).
    assert s.max_lr > 5 * _suggest("range_simple3").max_lr


def test_resnet20_range_test_reads_the_validation_curve() -> None:
    s = _suggest("range_resnet20")
    assert s.estimates["val_min"] is not None
    assert 1e-3 <= s.estimates["val_min"] <= 0.2
    assert "no validation curve" not in s.explanation


def test_resnet20_range_test_sees_the_validation_blowup() -> None:
    s = _suggest("range_resnet20")
    assert s.estimates["divergence"] is not None and s.estimates["divergence"] <= 5.0
    assert "no divergence" not in s.explanation


def test_checklist_reads_the_recorded_range_test() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    rec = cl.recommend("lr_range", {"range": _events(_run("range_simple3"))})
    s = _suggest("range_simple3")
    assert rec.ok and not rec.needs_more_runs
    assert rec.value["lr_max"] == s.max_lr and rec.value["lr_min"] == s.min_lr
    assert rec.detail["estimates"]["divergence"] is not None and rec.detail["failure"] is None


# -- weight-decay sweep ------------------------------------------------------------------------


def _wd_candidates() -> list[SweepCandidate]:
    out = []
    for i, run in enumerate(_load("wd_sweep_simple3")["runs"]):
        c = _curves("wd_sweep_simple3", i)
        out.append(
            SweepCandidate(
                value=run["value"],
                steps=c.eval_steps,
                val_loss=c.val_loss,
                val_acc=c.val_acc,
                epochs=c.eval_epochs,
                train_steps=c.steps,
                train_loss=c.train_loss,
                diverged=c.outcome == "diverged",
            )
        )
    return out


def test_wd_sweep_picks_a_grid_value_and_says_why() -> None:
    res = rank_sweep("weight_decay", _wd_candidates(), model="simple3")
    assert res.winner in (1e-2, 1e-3, 1e-4)
    assert res.winner_label in res.explanation and res.explanation.startswith(f"WD {res.winner_label}")
    assert all(r.status == "ok" for r in res.rows)
    assert sorted(r.rank for r in res.rows if r.rank is not None) == [1, 2, 3]
    # The numbers behind it are the recorded ones: mean of the 3 evaluations nearest step 126.
    row = {r.value: r for r in res.rows}
    vl = _curves("wd_sweep_simple3", 2).val_loss  # WD 1e-4
    assert row[1e-4].val_loss == pytest.approx(np.mean(vl[-3:]), rel=1e-3)
    if any(r.tie for r in res.rows):
        assert "tie" in res.explanation or "did not separate" in res.explanation


def test_wd_sweep_through_the_checklist() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    keys = [c["key"] for c in cl.default_candidates("weight_decay")]
    assert keys == ["wd1e-2", "wd1e-3", "wd1e-4"]
    curves = {k: _events(_run("wd_sweep_simple3", i)) for i, k in enumerate(keys)}
    rec = cl.recommend("weight_decay", curves)
    assert rec.ok and rec.value in (1e-2, 1e-3, 1e-4) and rec.reason
    assert len(rec.rows) == 3


def test_wd_sweep_recorded_evidence() -> None:
    """What the recorded sweep shows, read without the advisor: WD 1e-2 trails WD 1e-4 at each of the
    last 5 evaluations, on val loss and on val accuracy (same seed and data order for all three)."""
    cands = _wd_candidates()
    assert [c.value for c in cands] == [1e-2, 1e-3, 1e-4]
    last = slice(-5, None)
    gap = np.asarray(cands[0].val_loss[last]) - np.asarray(cands[2].val_loss[last])
    assert np.all(gap > 0.05) and gap.mean() > 0.1
    assert np.all(np.asarray(cands[0].val_acc[last]) < np.asarray(cands[2].val_acc[last]))
    gap3 = np.asarray(cands[0].val_loss[last]) - np.asarray(cands[1].val_loss[last])
    assert (gap3 > 0).sum() == 4 and gap3.mean() > 0.1


def test_wd_sweep_does_not_pick_the_consistently_worst_value() -> None:
    res = rank_sweep("weight_decay", _wd_candidates(), model="simple3")
    assert res.winner != 1e-2, res.explanation


# -- diagnosis ----------------------------------------------------------------------------------


def test_overfitting_run_is_diagnosed_overfitting() -> None:
    c = _curves("overfit_simple3")
    spec = _run("overfit_simple3")["spec"]
    # The recorded curve really overfits: train loss near zero, val loss well above its best.
    assert c.train_loss[-1] < 0.3 and c.val_loss[-1] > 1.5 * min(c.val_loss)
    d = diagnose(
        c.steps,
        c.train_loss,
        c.eval_steps,
        c.val_loss,
        c.val_acc,
        lr_max=spec["lr_max"],
        weight_decay=spec["weight_decay"],
        batch_size=32,
    )
    assert d.kind == "overfitting", d.explanation
    # The remedy adds WD: the run had none, so the change holds the value to add.
    assert spec["weight_decay"] == 0 and list(d.change) == ["weight_decay"] and d.change["weight_decay"] > 0
    assert d.evidence["gap"] is not None and d.evidence["gap"] > 2.0
    assert d.evidence["val_min_step"] < c.eval_steps[-1] / 2


def test_diverged_run_is_diagnosed_diverged() -> None:
    c = _curves("diverge_simple3")
    spec = _run("diverge_simple3")["spec"]
    assert c.outcome == "diverged"
    d = diagnose(
        c.steps, c.train_loss, c.eval_steps, c.val_loss, c.val_acc, lr_max=spec["lr_max"]
    )
    assert d.kind == "diverged", d.explanation
    assert spec["lr_max"] == 3.0 and d.change == {"lr_max": pytest.approx(1 / 3)}  # to 1.0 (from 3.0)


def test_diverged_run_evidence_names_the_recorded_best() -> None:
    c = _curves("diverge_simple3")
    d = diagnose(c.steps, c.train_loss, c.eval_steps, c.val_loss, c.val_acc)
    assert d.evidence["val_min"] == pytest.approx(min(c.val_loss))


def test_diverged_candidate_is_excluded_from_a_sweep() -> None:
    good, bad = _wd_candidates()[1], _curves("diverge_simple3")
    bad_cand = SweepCandidate(
        value=1e-5, steps=bad.eval_steps, val_loss=bad.val_loss, val_acc=bad.val_acc, diverged=True
    )
    res = rank_sweep("weight_decay", [good, bad_cand], model="simple3")
    assert res.winner == good.value
    (bad_row,) = [r for r in res.rows if r.value == 1e-5]
    assert bad_row.status == "diverged" and bad_row.rank is None


def _store_curves(run: dict[str, Any]) -> RunCurves:
    """A fixture read back from the run store (tune's own view of its runs)."""
    e = run["evals"]
    return RunCurves(
        steps=run["steps"]["step"],
        lrs=run["steps"]["lr"],
        train_loss=[np.nan if v is None else v for v in run["steps"]["train_loss"]],
        eval_steps=e["step"],
        eval_epochs=e["epoch"],
        val_loss=e["val_loss"],
        val_acc=e["val_acc"],
        outcome=run["end"]["outcome"],
        end=run["end"],
        num_classes=run["start"]["num_classes"],
    )


def test_recorded_tbs_sweep_moves_from_the_start_only_on_evidence() -> None:
    """tune's TBS step on synthetic (64, 128 start, 256 at equal epochs): 64 led clearly, and 128 led 256.
    Judged independently: 64's val loss is below 128's at each of the last four evaluations by epoch."""
    runs = _load("tbs_sweep_simple3")["runs"]
    by_tbs = {r["spec"]["batch_size"]: r for r in runs}
    ep = {t: np.asarray(r["evals"]["epoch"]) for t, r in by_tbs.items()}
    vl = {t: np.asarray(r["evals"]["val_loss"]) for t, r in by_tbs.items()}
    assert np.all(
        vl[64][-4:] < np.interp(ep[64][-4:], ep[128], vl[128])
    )  # the independent reading: 64 ahead of the start value
    cands = [
        SweepCandidate(
            value=t, steps=r["evals"]["step"], val_loss=r["evals"]["val_loss"], val_acc=r["evals"]["val_acc"],
            epochs=r["evals"]["epoch"], num_classes=10,
        )
        for t, r in sorted(by_tbs.items())
    ]  # fmt: skip
    res = rank_sweep("batch_size", cands, start=128)
    assert res.axis == "epoch" and res.winner == 64 and "larger than the noise" in res.explanation
    # Drop the clear leader: between 128 (start) and 256 the start stays unless 256 is ahead.
    res2 = rank_sweep("batch_size", cands[1:], start=128)
    assert res2.winner == 128


def test_recorded_final_step_keeps_the_variant_that_validates_best() -> None:
    """The final step: tuned, LR-only and the untuned baseline at 8 epochs. The profile keeps the one with
    the best val accuracy (an independent argmax), and beats the untuned baseline on test."""
    runs = _load("final_step_simple3")["runs"]
    cl = Checklist(data="synthetic", model="simple3", budget="quick")
    keys = {"final": 0, "lr_only": 1, "baseline": 2}
    cl.override("lr_range", (0.003, 0.03))  # as tune read it; the runs below hold their own values
    cl.override("batch_size", runs[0]["spec"]["batch_size"])
    cl.override("momentum", (0.95, 0.85))
    cl.override("weight_decay", runs[0]["spec"]["weight_decay"])
    rec = cl.recommend("final", {k: _store_curves(runs[i]) for k, i in keys.items()})
    best = max(("final", "lr_only"), key=lambda k: runs[keys[k]]["end"]["val_acc"])
    assert rec.ok and rec.value["variant"] == best
    mine = runs[keys[best]]["end"]["test_acc"]
    assert mine > runs[keys["baseline"]]["end"]["test_acc"] + 0.03  # the target: +3 points
    assert rec.value["diagnosis"] != "good_fit" or runs[keys[best]]["end"]["val_acc"] > 0.2
