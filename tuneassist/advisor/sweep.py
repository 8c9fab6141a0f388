"""Choosing momentum, weight decay or batch size from a few short runs, and the grids to try.

The paper's rule: run short trainings, one per candidate value, and compare validation loss early in
training. Here the comparison is made at one decision point (a fraction of the shortest curve, so
runs still in progress are compared at equal progress), on the mean of the evaluations nearest to it
(one evaluation is too noisy).

Whether two candidates differ is judged on paired differences: the candidates of a sweep share the
seed, the data order and the evaluation steps, so much of each curve's jitter is common to all of
them and cancels in the difference at the same step. A gap that holds at each of the evaluations
around the decision point is real even when each curve alone jitters by more; the test is the mean
paired difference against its standard error (a t-test over those evaluations). Curves that do not
share evaluation points fall back to each curve's own jitter. Differences inside the noise, or below
a floor of half a percent, are ties. A noise figure larger than the whole spread of the candidates
is a broken estimate (one wild curve), not a tie: it is replaced by the pooled figure of the other
pairs, or the curves' own jitter. Ties go to val accuracy when it separates the tied candidates
(the paper found accuracy easier to read for DenseNet). When neither metric can order them, the
evidence cannot move the value: the start value (the one the sweep began from) is kept when it is
among the tied, and only otherwise does a stated prior per hyperparameter pick, never a candidate
worse than another tied one on both metrics (DESIGN.md §6: evidence, then priors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from tuneassist.advisor.diagnosis import diagnose
from tuneassist.advisor.grids import (
    Rescaled,
    batch_size_candidates,
    model_kind,
    momentum_candidates,
    refine_between,
    rescale_lr_for_batch,
    weight_decay_grid,
)
from tuneassist.advisor.numfmt import acc_digits, fmt_acc, fmt_num, fmt_sci
from tuneassist.advisor.sweep_noise import (
    PAIR_WINDOW,
    Gap,
    gap_words,
    jitter_threshold,
    trailing_gaps,
    window_mean,
)

# The candidate grids and the LR rescaling rule live in `grids`; they are re-exported here, beside the
# ranking that reads them.
__all__ = [
    "PARAM_LABELS",
    "DecidedBy",
    "Rescaled",
    "SweepCandidate",
    "SweepResult",
    "SweepRow",
    "TieRule",
    "batch_size_candidates",
    "model_kind",
    "momentum_candidates",
    "rank_sweep",
    "refine_between",
    "rescale_lr_for_batch",
    "same_value",
    "tie_rule_for",
    "value_label",
    "weight_decay_grid",
]

PARAM_LABELS = {"weight_decay": "WD", "momentum": "Momentum", "batch_size": "TBS"}


def same_value(a: Any, b: Any) -> bool:
    """Whether two candidate values are the same (floats compared loosely; momentum pairs elementwise)."""
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        aa = list(a) if isinstance(a, list | tuple) else [a, a]
        bb = list(b) if isinstance(b, list | tuple) else [b, b]
        return len(aa) == len(bb) and all(same_value(x, y) for x, y in zip(aa, bb, strict=True))
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    except (TypeError, ValueError):
        return a == b


# ---------------------------------------------------------------------------------------------
# Ranking


def value_label(param: str, value: Any) -> str:
    """How a candidate value reads in tables: WD 3e-5, momentum 0.95–0.85 / 0.9, TBS 512."""
    if param == "momentum":
        hi, lo = (value, value) if isinstance(value, int | float) else (float(value[0]), float(value[1]))
        return f"{fmt_num(hi)}–{fmt_num(lo)}" if hi != lo else fmt_num(hi)
    if param == "batch_size":
        return str(int(value))
    if param == "weight_decay" and isinstance(value, int | float):
        return fmt_sci(float(value))
    if isinstance(value, int | float):
        return fmt_num(float(value))
    return str(value)


@dataclass
class TieRule:
    """Which of several tied candidates to take, and the sentence that says why."""

    prefer: str  # 'larger' | 'smaller' | 'cyclical' (cyclical first, then the lower momentum)
    reason: str

    def key(self, value: Any) -> tuple[float, float]:
        if self.prefer == "cyclical":
            hi, lo = (value, value) if isinstance(value, int | float) else (float(value[0]), float(value[1]))
            return (1.0 if hi > lo else 0.0, -hi)
        v = float(value if isinstance(value, int | float) else value[0])
        return (v, 0.0) if self.prefer == "larger" else (-v, 0.0)


def tie_rule_for(param: str, model: str | None = None) -> TieRule:
    """The stated tie-break rule for a hyperparameter (and net)."""
    model = model or ""
    if param == "weight_decay":
        if model.startswith("densenet"):
            return TieRule(
                "smaller",
                "the smaller value is preferred, as the paper found for DenseNet (its "
                "dense connections already regularise)",
            )
        if model_kind(model) == "shallow":
            return TieRule(
                "larger", "the larger value is preferred: shallow nets need more regularisation (the paper)"
            )
        return TieRule(
            "larger",
            "the larger value is preferred as the paper advises for ResNets (it kept 1e-4 over a tied 3e-5)",
        )
    if param == "momentum":
        return TieRule(
            "cyclical",
            "cyclical momentum is preferred, then the lower value: the paper found "
            "cyclical 0.95–0.85 steadier than constant momentum at large LR",
        )
    if param == "batch_size":
        return TieRule(
            "larger",
            "the larger TBS is preferred: faster per epoch, it allows a larger LR and "
            "gave smoother curves in the paper",
        )
    return TieRule("larger", "the larger value is preferred")


@dataclass
class SweepCandidate:
    """One short run of a sweep: its value and its validation curve (train curve optional)."""

    value: Any
    steps: Sequence[float]
    val_loss: Sequence[float | None]
    val_acc: Sequence[float | None] | None = None
    epochs: Sequence[float] | None = None  # epoch of each evaluation: the axis when TBS differs
    train_steps: Sequence[float] | None = None
    train_loss: Sequence[float | None] | None = None
    diverged: bool = False
    label: str | None = None
    run_id: int | str | None = None  # the store's run id
    num_classes: int | None = None  # so a run near chance reads "not learning", not a good fit


@dataclass
class SweepRow:
    label: str
    value: Any
    val_loss: float | None  # mean of the evaluations around the decision point
    val_acc: float | None
    diagnosis: str | None
    tie: bool  # within noise of the leader (shown as ≈)
    status: str  # 'ok' | 'diverged' | 'no data'
    rank: int | None
    winner: bool = False
    run_id: int | str | None = None  # the store's run id


# Why the winner won, for code and tests (the sentence says it to the user): the only usable curve, a
# gap larger than the noise on `metric`, val accuracy separating a val-loss tie, the other tied
# candidates trailing on both metrics, the start value kept, or the tie rule's prior.
DecidedBy = Literal[
    "no_usable_curve", "only_usable", "gap", "accuracy", "trails_both", "start_value", "prior"
]


@dataclass
class SweepResult:
    param: str
    winner: Any
    winner_label: str | None
    metric: str  # 'val_loss' | 'val_acc' (what decided)
    axis: str  # 'step' | 'epoch'
    decision_at: float | None
    noise: float | None  # tie threshold on the deciding metric
    rows: list[SweepRow]
    tie_rule: str  # the tie rule's reason sentence (its direction is `tie_prefer`)
    explanation: str
    decided_by: DecidedBy
    tie_prefer: str  # TieRule.prefer: 'larger' | 'smaller' | 'cyclical'
    trails_both: list[str] = field(default_factory=list)  # tied labels out for trailing on both metrics
    runner_gap: Gap | None = None  # the runner-up's gap on `metric`, when a gap decided

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["runner_gap"] = None if self.runner_gap is None else self.runner_gap._asdict()
        d["winner"] = list(self.winner) if isinstance(self.winner, tuple) else self.winner
        for r in d["rows"]:
            if isinstance(r["value"], tuple):
                r["value"] = list(r["value"])
        return d


def _as_candidate(c: SweepCandidate | Mapping[str, Any]) -> SweepCandidate:
    if isinstance(c, SweepCandidate):
        return c
    known = set(SweepCandidate.__dataclass_fields__)
    return SweepCandidate(**{k: v for k, v in c.items() if k in known})


@dataclass
class _Sweep:
    """A sweep made ready to rank: the candidates' curves on one axis, their states, and (once there is a
    usable curve) the decision point and each candidate's window means there."""

    param: str
    name: str  # how the hyperparameter reads in a sentence: 'WD', 'Momentum', 'TBS'
    rule: TieRule
    start: Any
    window: int
    cands: list[SweepCandidate]
    labels: list[str]
    axis: str  # 'step' | 'epoch'
    xs: list[np.ndarray]
    ys: list[np.ndarray]
    accs: list[np.ndarray | None]
    status: list[str]  # 'ok' | 'diverged' | 'no data'
    diag: list[str | None]
    ok: list[int]  # the candidates with a usable curve
    shortest: float = 0.0  # where the shortest usable curve ends
    at: float = 0.0  # the decision point
    where: str = ""  # the decision point in words: 'step 126'
    loss_at: dict[int, float] = field(default_factory=dict)
    acc_at: dict[int, float] = field(default_factory=dict)
    acc_ok: bool = False  # every usable candidate recorded a finite val accuracy

    def rows(self, ties: set[int], order: list[int], winner: int | None) -> list[SweepRow]:
        rank = {i: r + 1 for r, i in enumerate(order)}
        return [
            SweepRow(
                label=self.labels[i],
                value=self.cands[i].value,
                val_loss=self.loss_at.get(i),
                val_acc=self.acc_at.get(i),
                diagnosis=self.diag[i],
                tie=i in ties and i != winner,
                status=self.status[i],
                rank=rank.get(i),
                winner=i == winner,
                run_id=self.cands[i].run_id,
            )
            for i in range(len(self.cands))
        ]

    def result(self, winner: int, metric: str, thr: float | None, ties: set[int], order: list[int], expl: str,
               why: _Pick | DecidedBy, gap: Gap | None = None) -> SweepResult:  # fmt: skip
        by, trails = (why.by, why.trails) if isinstance(why, _Pick) else (why, [])
        return SweepResult(self.param, self.cands[winner].value, self.labels[winner], metric, self.axis,
                           self.at, thr, self.rows(ties, order, winner), self.rule.reason, expl, by,
                           self.rule.prefer, trails, gap)  # fmt: skip

    def num(self, i: int, acc: bool) -> str:
        return fmt_acc(self.acc_at[i]) if acc else f"{self.loss_at[i]:.3g}"

    def acc_series(self) -> list[np.ndarray]:
        return [a if a is not None else np.array([]) for a in self.accs]

    def gaps(
        self, series: list[np.ndarray], at_: dict[int, float], lead: int, idx: list[int], higher: bool
    ) -> dict[int, Gap]:
        """The tie test: how far each candidate in `idx` trails `lead` on `series`, against the noise."""
        return trailing_gaps(
            self.xs,
            series,
            at_,
            lead,
            idx,
            higher=higher,
            at=self.at,
            k=max(self.window, PAIR_WINDOW),
            upto=self.shortest,
            jitter_thr=lambda: jitter_threshold(
                self.xs, series, self.ok, self.shortest, self.window, at_[lead]
            ),
        )


def _by_epoch(cands: list[SweepCandidate]) -> bool:
    """Steps mean different amounts of data when the batch size differs: compare by epoch then."""
    if not all(c.epochs is not None and len(c.epochs) == len(c.steps) and len(c.steps) for c in cands):
        return False
    per_epoch = [float(c.steps[-1]) / float(c.epochs[-1]) for c in cands if float(c.epochs[-1]) > 0]  # type: ignore[index]
    return bool(per_epoch) and max(per_epoch) > 1.01 * min(per_epoch)


def _statuses(cands: list[SweepCandidate], ys: list[np.ndarray]) -> list[str]:
    status = []
    for c, y in zip(cands, ys, strict=True):
        if len(y) == 0:
            status.append("no data")
        elif c.diverged or not np.all(np.isfinite(y)):
            status.append("diverged")
        else:
            status.append("ok")
    return status


def _diagnoses(cands: list[SweepCandidate], status: list[str]) -> list[str | None]:
    """Each usable candidate's diagnosis (shown in its row)."""
    diag: list[str | None] = []
    for c, s in zip(cands, status, strict=True):
        if s == "diverged":
            diag.append("diverged")
        elif s == "no data":
            diag.append(None)
        else:
            d = diagnose(
                [] if c.train_steps is None else c.train_steps,
                [] if c.train_loss is None else c.train_loss,
                c.steps,
                c.val_loss,
                c.val_acc,
                num_classes=c.num_classes,
            )
            diag.append(d.kind)
    return diag


def _prepare(
    param: str,
    candidates: Sequence[SweepCandidate | Mapping[str, Any]],
    rule: TieRule,
    start: Any,
    window: int,
) -> _Sweep:
    """The candidates' curves on one axis (epochs when the batch size differs), with their states."""
    cands = [_as_candidate(c) for c in candidates]
    labels = [c.label or value_label(param, c.value) for c in cands]
    use_epochs = _by_epoch(cands)
    xs = [np.asarray(c.epochs if use_epochs else c.steps, dtype=float).ravel() for c in cands]
    ys = [np.asarray(c.val_loss, dtype=float).ravel() for c in cands]
    accs = [
        np.asarray(c.val_acc, dtype=float).ravel()
        if c.val_acc is not None and len(c.val_acc) == len(c.steps)
        else None
        for c in cands
    ]
    status = _statuses(cands, ys)
    ok = [i for i, s in enumerate(status) if s == "ok"]
    axis = "epoch" if use_epochs else "step"
    name = PARAM_LABELS.get(param, param)
    return _Sweep(param, name, rule, start, window, cands, labels, axis, xs, ys, accs, status,
                  _diagnoses(cands, status), ok)  # fmt: skip


def _decision_point(sw: _Sweep, decision_fraction: float) -> None:
    """Compare at a fraction of the shortest curve, so runs still in progress are compared at equal
    progress, on the mean of the `window` evaluations nearest that point."""
    sw.shortest = shortest = min(float(sw.xs[i][-1]) for i in sw.ok)
    sw.at = at = decision_fraction * shortest
    sw.where = f"{sw.axis} {int(round(at)) if sw.axis == 'step' else fmt_num(round(at, 2))}"
    sw.loss_at = {
        i: v for i in sw.ok if (v := window_mean(sw.xs[i], sw.ys[i], at, sw.window, shortest)) is not None
    }
    sw.acc_ok = all(sw.accs[i] is not None and np.all(np.isfinite(sw.accs[i])) for i in sw.ok)  # type: ignore[arg-type]
    if sw.acc_ok:
        sw.acc_at = {
            i: v
            for i in sw.ok
            if (v := window_mean(sw.xs[i], sw.accs[i], at, sw.window, shortest)) is not None  # type: ignore[arg-type]
        }


def _dominated(sw: _Sweep, i: int, tied: list[int]) -> bool:
    """Worse than another tied candidate on both val loss and val accuracy."""
    if i not in sw.acc_at:
        return False
    return any(
        j != i and j in sw.acc_at and sw.loss_at[j] < sw.loss_at[i] and sw.acc_at[j] > sw.acc_at[i]
        for j in tied
    )


class _Pick(NamedTuple):
    """A tie's winner, the clause that says how it was chosen, and the same in fields."""

    winner: int
    how: str
    by: DecidedBy  # 'trails_both' | 'start_value' | 'prior'
    trails: list[str]  # the tied labels out for trailing on both metrics


def _tie_pick(sw: _Sweep, tied: list[int]) -> _Pick:
    """The prior: the winner of a tie the evidence cannot break, and the clause that says how it was chosen.

    First out: a candidate that trails another tied one on both metrics (weak evidence, but
    evidence). Then the start value stays when it is left; only then does the prior pick."""
    labels = sw.labels
    keep = [i for i in tied if not _dominated(sw, i, tied)] or tied
    out = [labels[i] for i in tied if i not in keep]
    trail = f"{' and '.join(out)} trail{'s' if len(out) == 1 else ''} on both metrics" if out else ""
    if len(keep) == 1:
        return _Pick(keep[0], f"neither metric separates them alone, but {trail}", "trails_both", out)
    for i in keep:
        if sw.start is not None and same_value(sw.cands[i].value, sw.start):
            why = f"not enough evidence at this budget to move from the start value {labels[i]}; it stays"
            return _Pick(i, f"{why} ({trail})" if trail else why, "start_value", out)
    pick = max(keep, key=lambda i: sw.rule.key(sw.cands[i].value))
    return _Pick(
        pick,
        f"the evidence cannot order them{f' ({trail})' if trail else ''}, so a prior breaks the tie: "
        f"{sw.rule.reason}",
        "prior",
        out,
    )


def _no_usable_curve(sw: _Sweep, bad: list[str]) -> SweepResult:
    """No candidate trained to a usable validation curve: no value."""
    expl = (
        f"No {sw.name} recommended: no candidate trained to a usable validation curve"
        f"{' (all diverged)' if bad and len(bad) == len(sw.cands) else ''}; lower the max LR and re-run."
    )
    rows = sw.rows(set(), [], None)
    return SweepResult(
        sw.param, None, None, "val_loss", sw.axis, None, None, rows, sw.rule.reason, expl, "no_usable_curve",
        sw.rule.prefer,
    )  # fmt: skip


def _only_usable(sw: _Sweep, bad_note: str) -> SweepResult:
    i = sw.ok[0]
    expl = (
        f"{sw.name} {sw.labels[i]}: the only candidate with a usable curve (val loss {sw.loss_at[i]:.3g} at "
        f"{sw.where}).{bad_note}"
    )
    return sw.result(i, "val_loss", None, set(), [i], expl, "only_usable")


def _words(by_acc: bool) -> tuple[str, str, str]:
    """(what was compared, its best, the metric that decided) in the sentence's words."""
    return ("val accuracy", "highest", "val_acc") if by_acc else ("val loss", "lowest", "val_loss")


def _clear_lead(sw: _Sweep, order: list[int], g: dict[int, Gap], by_acc: bool, bad_note: str) -> SweepResult:
    """The leader is ahead of every other candidate by more than the noise."""
    lead, runner = order[0], order[1]
    what, best_word, decided_by = _words(by_acc)
    expl = (
        f"{sw.name} {sw.labels[lead]}: {best_word} {what} at {sw.where} ({sw.num(lead, by_acc)} vs "
        f"{sw.num(runner, by_acc)} for {sw.labels[runner]}; {gap_words(g[runner], by_acc)})."
        f"{bad_note}"
    )
    return sw.result(lead, decided_by, g[runner].thr, set(), order, expl, "gap", g[runner])


def _accuracy_decides(
    sw: _Sweep, group: list[int], order: list[int], tied_txt: str, thr: float, bad_note: str
) -> SweepResult:
    """Val loss does not separate the leaders: val accuracy decides when it can, else the prior."""
    lead, labels = order[0], sw.labels
    ties = set(group)
    a_order = sorted(group, key=lambda i: -sw.acc_at[i])
    a_lead = a_order[0]
    ag = sw.gaps(sw.acc_series(), sw.acc_at, a_lead, a_order, higher=True)
    a_group = [i for i in a_order if i == a_lead or ag[i].gap <= ag[i].thr]
    names = ", ".join(labels[i] for i in group)
    if len(a_group) == 1:
        runner = a_order[1]
        dg = acc_digits([sw.acc_at[a_lead], sw.acc_at[runner]])
        expl = (
            f"{sw.name} {labels[a_lead]}: val loss did not separate {names} at {sw.where} "
            f"({sw.num(lead, False)} vs {tied_txt}, within noise {thr:.2g}), so val accuracy decided: "
            f"{fmt_acc(sw.acc_at[a_lead], dg)} vs {fmt_acc(sw.acc_at[runner], dg)} for {labels[runner]}"
            f" ({gap_words(ag[runner], True)}).{bad_note}"
        )
        order2 = a_order + [i for i in order if i not in group]
        return sw.result(a_lead, "val_acc", ag[runner].thr, ties, order2, expl, "accuracy", ag[runner])
    tp = _tie_pick(sw, a_group)
    pick, how = tp.winner, tp.how
    dg = acc_digits([sw.acc_at[i] for i in a_group])
    acc_txt = ", ".join(f"{fmt_acc(sw.acc_at[i], dg)} for {labels[i]}" for i in a_group)
    expl = (
        f"{sw.name} {labels[pick]}: val loss ties at {sw.where} ({sw.num(lead, False)} for {labels[lead]} vs "
        f"{tied_txt}, within noise {thr:.2g}) and val accuracy does too ({acc_txt}); {how}."
        f"{bad_note}"
    )
    order2 = [pick] + [i for i in order if i != pick]
    return sw.result(pick, "val_loss", thr, ties, order2, expl, tp)


def _tie(
    sw: _Sweep, group: list[int], order: list[int], tied_txt: str, thr: float, by_acc: bool, bad_note: str
) -> SweepResult:
    """The deciding metric ties the leaders and nothing else can order them: the prior picks."""
    lead, labels = order[0], sw.labels
    what, best_word, decided_by = _words(by_acc)
    tp = _tie_pick(sw, group)
    pick, how = tp.winner, tp.how
    if pick == lead:
        expl = (
            f"{sw.name} {labels[lead]}: {best_word} {what} at {sw.where} ({sw.num(lead, by_acc)} vs "
            f"{tied_txt}, a tie within noise {thr:.2g}; {how}).{bad_note}"
        )
    else:
        expl = (
            f"{sw.name} {labels[pick]}: {what} at {sw.where} within noise of the {best_word} "
            f"({sw.num(pick, by_acc)} vs {sw.num(lead, by_acc)} for {labels[lead]}, a tie within noise "
            f"{thr:.2g}); {how}.{bad_note}"
        )
    order2 = [pick] + [i for i in order if i != pick]
    return sw.result(pick, decided_by, thr, set(group), order2, expl, tp)


def rank_sweep(
    param: str,
    candidates: Sequence[SweepCandidate | Mapping[str, Any]],
    *,
    model: str | None = None,
    decision_fraction: float = 0.9,
    window: int = 3,
    metric: str = "auto",
    tie_rule: TieRule | None = None,
    start: Any = None,
) -> SweepResult:
    """Rank a sweep's short runs and pick the value to use, with the sentence that says why.

    metric: 'auto' (val loss, then val accuracy when the loss ties), 'val_loss', or 'val_acc'.
    start: the value in use before the sweep; kept when the evidence cannot separate it from the best.
    """
    if metric not in ("auto", "val_loss", "val_acc"):
        raise ValueError("metric must be 'auto', 'val_loss' or 'val_acc'")
    if not 0 < decision_fraction <= 1:
        raise ValueError("decision_fraction must be in (0, 1]")
    sw = _prepare(param, candidates, tie_rule or tie_rule_for(param, model), start, window)
    bad = [sw.labels[i] for i, s in enumerate(sw.status) if s == "diverged"]
    bad_note = f" {', '.join(bad)} diverged." if bad else ""
    if not sw.ok:
        return _no_usable_curve(sw, bad)
    _decision_point(sw, decision_fraction)
    if len(sw.ok) == 1:
        return _only_usable(sw, bad_note)

    by_acc = metric == "val_acc"
    if by_acc and not sw.acc_ok:
        raise ValueError("metric 'val_acc' needs val_acc for every candidate")
    if by_acc:
        order = sorted(sw.ok, key=lambda i: -sw.acc_at[i])
        g = sw.gaps(sw.acc_series(), sw.acc_at, order[0], order, higher=True)
    else:
        order = sorted(sw.ok, key=lambda i: sw.loss_at[i])
        g = sw.gaps(sw.ys, sw.loss_at, order[0], order, higher=False)
    lead = order[0]
    group = [i for i in order if i == lead or g[i].gap <= g[i].thr]
    if len(group) == 1:
        return _clear_lead(sw, order, g, by_acc, bad_note)

    others = [i for i in group if i != lead]
    tied_txt = " and ".join(f"{sw.num(i, by_acc)} for {sw.labels[i]}" for i in others)
    thr = max(g[i].thr for i in others)
    # Say why a candidate outside the tie is out (the tie rule might otherwise seem to favour it).
    out_note = "".join(
        f" {sw.labels[i]} is out ({sw.num(i, by_acc)}): {gap_words(g[i], by_acc)}."
        for i in order
        if i not in group
    )
    if not by_acc and metric == "auto" and sw.acc_ok:
        return _accuracy_decides(sw, group, order, tied_txt, thr, out_note + bad_note)
    return _tie(sw, group, order, tied_txt, thr, by_acc, out_note + bad_note)
