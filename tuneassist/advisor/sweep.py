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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from tuneassist.advisor.diagnosis import diagnose
from tuneassist.advisor.grids import model_kind
from tuneassist.advisor.grids import weight_decay_grid as weight_decay_grid  # re-exported: the grids
from tuneassist.advisor.lr_range import fmt_num, fmt_sci, robust_sigma, round_sig

PARAM_LABELS = {"weight_decay": "WD", "momentum": "Momentum", "batch_size": "TBS"}
# Ties (curves without shared evaluation points): differences below this many standard deviations of
# the difference of two window means.
TIE_SIGMAS = 2.0
# Ties, either way: never finer than this fraction of the leader's value (identical-looking curves).
TIE_FLOOR = 0.005
# Paired comparison: this many evaluations around the decision point (at least `window`).
PAIR_WINDOW = 5
# Two-sided 95% quantiles of Student's t by degrees of freedom (numpy has no t distribution).
_T95 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}

# ---------------------------------------------------------------------------------------------
# Candidate grids


def refine_between(a: float, b: float) -> float:
    """One value between two good WDs: the log-midpoint at one significant digit (1e-4, 1e-5 -> 3e-5).

    With 0 as one end there is no log-midpoint; the value half a decade below the other end is used.
    """
    lo, hi = sorted((float(a), float(b)))
    if lo < 0 or hi <= 0 or lo == hi:
        raise ValueError(f"refine_between needs two different non-negative values, got {a} and {b}")
    mid = hi / math.sqrt(10) if lo == 0 else math.sqrt(lo * hi)
    v = round_sig(mid, 1)
    if v in (lo, hi):
        v = round_sig(mid, 2)
    return v


def momentum_candidates(model: str | None = None) -> list[tuple[float, float]]:
    """(max, min) momentum pairs: constant 0.99, 0.97, 0.95, 0.9 and cyclical 0.95–0.85.

    For DenseNet the paper found lower values better, so cyclical 0.9–0.85 is added.
    """
    out = [(0.99, 0.99), (0.97, 0.97), (0.95, 0.95), (0.9, 0.9), (0.95, 0.85)]
    if model is not None and model.startswith("densenet"):
        out.append((0.9, 0.85))
    return out


def batch_size_candidates(
    start: int, max_fit: int | None = None, devices: int = 1, *, train_size: int | None = None
) -> list[int]:
    """Total batch sizes to compare, ascending: half, the start value and double.

    Compared at equal epochs, as the final run's budget is stated in epochs: a doubled TBS halves the
    final run's steps, which the short runs show. A TBS must split evenly over the devices, fit each
    device (`max_fit` per device, from the memory probe; None: no known limit), be at least 16 and
    leave at least 20 steps per epoch.
    """
    if devices < 1:
        raise ValueError("devices must be at least 1")
    cap = max_fit * devices if max_fit is not None else 1 << 20
    if train_size is not None:
        cap = min(cap, train_size // 20)
    sizes = [t for t in (start // 2, start, start * 2) if 16 <= t <= cap and t % devices == 0]
    return sorted(set(sizes) | {start})


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


class Rescaled(NamedTuple):
    lr: float
    reason: str


def rescale_lr_for_batch(lr: float, old_tbs: int, new_tbs: int) -> Rescaled:
    """Linear scaling rule: the LR moves with the TBS, so the gradient noise per step stays the same."""
    if old_tbs <= 0 or new_tbs <= 0:
        raise ValueError("batch sizes must be positive")
    if old_tbs == new_tbs:
        return Rescaled(lr, f"TBS unchanged at {new_tbs}; LR stays {fmt_num(lr)}")
    f = new_tbs / old_tbs
    new = lr * f
    return Rescaled(
        new,
        f"LR {fmt_num(lr)} → {fmt_num(new)} (x{f:.3g}) as TBS goes {old_tbs} → {new_tbs}: linear scaling "
        "rule (k times the batch averages away k times the gradient noise, so it can take k times the step; "
        "Goyal et al. 2017)",
    )


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
    run_id: str | None = None
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
    run_id: str | None = None


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
    tie_rule: str
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
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


def _jitter(x: np.ndarray, y: np.ndarray, upto: float) -> float | None:
    """Noise of one curve from its second differences (a straight trend cancels out)."""
    ys = y[x <= upto]
    ys = ys[len(ys) // 4 :]  # the first quarter falls fast: curvature, not noise
    if len(ys) < 5:
        return None
    d2 = ys[:-2] - 2 * ys[1:-1] + ys[2:]
    return robust_sigma(d2) / math.sqrt(6.0)


def _near(x: np.ndarray, y: np.ndarray, at: float, k: int, upto: float) -> float | None:
    keep = (x <= upto * (1 + 1e-9)) & np.isfinite(y)
    xs, ys = x[keep], y[keep]
    if len(xs) == 0:
        return None
    idx = np.argsort(np.abs(xs - at), kind="stable")[:k]
    return float(np.mean(ys[idx]))


def _t95(df: int) -> float:
    """Two-sided 95% t quantile; past the table, 1.96 + 2.4/df is within 0.01 of the exact value."""
    return _T95[df] if df in _T95 else 1.96 + 2.4 / df


def _window_idx(x: np.ndarray, at: float, k: int, upto: float) -> np.ndarray:
    """Indices of the k evaluations nearest `at`, at or before `upto`, in step order."""
    keep = np.nonzero(x <= upto * (1 + 1e-9))[0]
    near = keep[np.argsort(np.abs(x[keep] - at), kind="stable")[:k]]
    return np.sort(near)


def _paired(
    xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, at: float, k: int, upto: float
) -> np.ndarray | None:
    """ya - yb at the k evaluations of curve a nearest `at` that curve b recorded too (same step or
    epoch); None when the two do not share at least 4 of them."""
    idx = _window_idx(xa, at, k, upto)
    if len(idx) < 4:
        return None
    diffs = []
    for i in idx:
        j = int(np.argmin(np.abs(xb - xa[i]))) if len(xb) else -1
        if j < 0 or not math.isclose(float(xb[j]), float(xa[i]), rel_tol=1e-6, abs_tol=1e-9):
            return None
        diffs.append(float(ya[i]) - float(yb[j]))
    d = np.asarray(diffs)
    return d if np.all(np.isfinite(d)) else None


class Gap(NamedTuple):
    """How far one candidate trails the leader, and the noise that gap must exceed to count."""

    gap: float  # positive: worse than the leader
    thr: float
    paired: int  # evaluations compared pairwise (0: the curves' own jitter was used)
    broken: float | None = None  # the first noise figure, when it exceeded the candidates' spread


def _mend_broken(
    gaps: dict[int, Gap], values: list[float], jitter_thr: Callable[[], float]
) -> dict[int, Gap]:
    """Replace paired noise figures larger than the whole spread of three or more candidates.

    Candidates that share seed and data order have their common jitter cancel in paired
    differences, so a paired figure above the spread of all of them comes from one wild curve (its
    own swings), not from noise the others share: it is a broken estimate, and it must not turn a
    gap into a tie. It is replaced by the median of the sound paired figures, else the curves' own
    jitter, else the tie floor.
    """
    spread = max(values) - min(values) if values else 0.0
    if spread <= 0 or len(values) < 3:
        return gaps
    sound = [g.thr for g in gaps.values() if g.paired and g.thr <= spread]
    out = {}
    for i, g in gaps.items():
        if not g.paired or g.thr <= spread:
            out[i] = g
            continue
        thr = float(np.median(sound)) if sound else jitter_thr()
        if thr > spread:
            thr = TIE_FLOOR * max(abs(v) for v in values)
        out[i] = Gap(g.gap, thr, g.paired, broken=g.thr)
    return out


def _gap_words(g: Gap, acc: bool) -> str:
    """'the gap is larger than the noise 0.056', saying when it was read on paired differences."""

    def fmt(v: float) -> str:
        return f"{v * 100:.2g} points" if acc else f"{v:.2g}"

    mended = (
        f" (the paired figure {fmt(g.broken)} exceeded the spread of all candidates: a broken estimate)"
        if g.broken is not None
        else ""
    )
    if g.paired:
        return (
            f"the gap, {fmt(g.gap)} on average over {g.paired} paired evaluations, is larger than the "
            f"noise {fmt(g.thr)}{mended}"
        )
    return f"the gap is larger than the noise {fmt(g.thr)}{mended}"


def _fmt_acc(a: float | None) -> str:
    if a is None:
        return "—"
    return f"{a * 100:.1f}%" if a <= 1.0 else f"{a:.1f}%"


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
    rule = tie_rule or tie_rule_for(param, model)
    P = PARAM_LABELS.get(param, param)
    cands = [_as_candidate(c) for c in candidates]
    labels = [c.label or value_label(param, c.value) for c in cands]

    # Steps mean different amounts of data when the batch size differs: compare by epoch then.
    use_epochs = False
    if all(c.epochs is not None and len(c.epochs) == len(c.steps) and len(c.steps) for c in cands):
        per_epoch = [float(c.steps[-1]) / float(c.epochs[-1]) for c in cands if float(c.epochs[-1]) > 0]  # type: ignore[index]
        use_epochs = bool(per_epoch) and max(per_epoch) > 1.01 * min(per_epoch)
    axis = "epoch" if use_epochs else "step"
    xs = [np.asarray(c.epochs if use_epochs else c.steps, dtype=float).ravel() for c in cands]
    ys = [np.asarray(c.val_loss, dtype=float).ravel() for c in cands]
    accs = [
        np.asarray(c.val_acc, dtype=float).ravel()
        if c.val_acc is not None and len(c.val_acc) == len(c.steps)
        else None
        for c in cands
    ]

    status = []
    for c, y in zip(cands, ys, strict=True):
        if len(y) == 0:
            status.append("no data")
        elif c.diverged or not np.all(np.isfinite(y)):
            status.append("diverged")
        else:
            status.append("ok")
    ok = [i for i, s in enumerate(status) if s == "ok"]

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

    def rows_with(
        loss_at: dict[int, float],
        acc_at: dict[int, float],
        ties: set[int],
        order: list[int],
        winner: int | None,
    ) -> list[SweepRow]:
        rank = {i: r + 1 for r, i in enumerate(order)}
        return [
            SweepRow(
                label=labels[i],
                value=cands[i].value,
                val_loss=loss_at.get(i),
                val_acc=acc_at.get(i),
                diagnosis=diag[i],
                tie=i in ties and i != winner,
                status=status[i],
                rank=rank.get(i),
                winner=i == winner,
                run_id=cands[i].run_id,
            )
            for i in range(len(cands))
        ]

    bad = [labels[i] for i, s in enumerate(status) if s == "diverged"]
    bad_note = f" {', '.join(bad)} diverged." if bad else ""
    if not ok:
        expl = (
            f"No {P} recommended: no candidate trained to a usable validation curve"
            f"{' (all diverged)' if bad and len(bad) == len(cands) else ''}; lower the max LR and re-run."
        )
        return SweepResult(
            param,
            None,
            None,
            "val_loss",
            axis,
            None,
            None,
            rows_with({}, {}, set(), [], None),
            rule.reason,
            expl,
        )

    shortest = min(float(xs[i][-1]) for i in ok)
    at = decision_fraction * shortest
    where = f"{axis} {int(round(at)) if axis == 'step' else fmt_num(round(at, 2))}"
    loss_at = {i: v for i in ok if (v := _near(xs[i], ys[i], at, window, shortest)) is not None}
    acc_ok = all(accs[i] is not None and np.all(np.isfinite(accs[i])) for i in ok)  # type: ignore[arg-type]
    acc_at: dict[int, float] = {}
    if acc_ok:
        acc_at = {i: v for i in ok if (v := _near(xs[i], accs[i], at, window, shortest)) is not None}  # type: ignore[arg-type]

    def threshold(series: list[np.ndarray], idx: list[int], ref: float) -> float:
        sig = [s for i in idx if (s := _jitter(xs[i], series[i], shortest)) is not None]
        sigma = float(np.median(sig)) if sig else 0.0
        return max(TIE_SIGMAS * sigma * math.sqrt(2.0 / window), TIE_FLOOR * abs(ref))

    pair_k = max(window, PAIR_WINDOW)

    def gaps(
        series: list[np.ndarray], at_: dict[int, float], lead: int, idx: list[int], higher: bool
    ) -> dict[int, Gap]:
        """How far each candidate trails `lead`, judged on paired differences where the curves share
        their evaluation points, else on the window means against the curves' own jitter."""
        ref = at_[lead]
        out: dict[int, Gap] = {}
        unpaired_thr: float | None = None
        for i in idx:
            if i == lead:
                continue
            d = _paired(xs[i], series[i], xs[lead], series[lead], at, pair_k, shortest)
            if d is not None:
                worse = -d if higher else d
                n = len(d)
                se = float(np.std(d, ddof=1)) / math.sqrt(n)
                out[i] = Gap(float(np.mean(worse)), max(_t95(n - 1) * se, TIE_FLOOR * abs(ref)), n)
            else:
                if unpaired_thr is None:
                    unpaired_thr = threshold(series, ok, ref)
                trail = (ref - at_[i]) if higher else (at_[i] - ref)
                out[i] = Gap(trail, unpaired_thr, 0)
        return _mend_broken(out, [at_[i] for i in idx], lambda: threshold(series, ok, ref))

    if len(ok) == 1:
        i = ok[0]
        expl = (
            f"{P} {labels[i]}: the only candidate with a usable curve (val loss {loss_at[i]:.3g} at {where})."
            f"{bad_note}"
        )
        return SweepResult(
            param,
            cands[i].value,
            labels[i],
            "val_loss",
            axis,
            at,
            None,
            rows_with(loss_at, acc_at, set(), [i], i),
            rule.reason,
            expl,
        )

    by_acc = metric == "val_acc"
    if by_acc and not acc_ok:
        raise ValueError("metric 'val_acc' needs val_acc for every candidate")
    acc_series = [a if a is not None else np.array([]) for a in accs]
    if by_acc:
        order = sorted(ok, key=lambda i: -acc_at[i])
        lead = order[0]
        g = gaps(acc_series, acc_at, lead, order, higher=True)
    else:
        order = sorted(ok, key=lambda i: loss_at[i])
        lead = order[0]
        g = gaps(ys, loss_at, lead, order, higher=False)
    group = [i for i in order if i == lead or g[i].gap <= g[i].thr]

    def num(i: int, acc: bool) -> str:
        return _fmt_acc(acc_at[i]) if acc else f"{loss_at[i]:.3g}"

    def dominated(i: int, tied: list[int]) -> bool:
        """Worse than another tied candidate on both val loss and val accuracy."""
        if i not in acc_at:
            return False
        return any(j != i and j in acc_at and loss_at[j] < loss_at[i] and acc_at[j] > acc_at[i] for j in tied)

    def tie_pick(tied: list[int]) -> tuple[int, str]:
        """The winner of a tie the evidence cannot break, and the clause that says how it was chosen.

        First out: a candidate that trails another tied one on both metrics (weak evidence, but
        evidence). Then the start value stays when it is left; only then does the prior pick."""
        keep = [i for i in tied if not dominated(i, tied)] or tied
        out = [labels[i] for i in tied if i not in keep]
        trail = f"{' and '.join(out)} trail{'s' if len(out) == 1 else ''} on both metrics" if out else ""
        if len(keep) == 1:
            return keep[0], f"neither metric separates them alone, but {trail}"
        for i in keep:
            if start is not None and same_value(cands[i].value, start):
                why = f"not enough evidence at this budget to move from the start value {labels[i]}; it stays"
                return i, f"{why} ({trail})" if trail else why
        pick = max(keep, key=lambda i: rule.key(cands[i].value))
        return (
            pick,
            f"the evidence cannot order them{f' ({trail})' if trail else ''}, so a prior breaks the tie: "
            f"{rule.reason}",
        )

    what = "val accuracy" if by_acc else "val loss"
    best_word = "highest" if by_acc else "lowest"
    decided_by = "val_acc" if by_acc else "val_loss"

    if len(group) == 1:
        runner = order[1]
        thr = g[runner].thr
        expl = (
            f"{P} {labels[lead]}: {best_word} {what} at {where} ({num(lead, by_acc)} vs "
            f"{num(runner, by_acc)} for {labels[runner]}; {_gap_words(g[runner], by_acc)})."
            f"{bad_note}"
        )
        return SweepResult(
            param,
            cands[lead].value,
            labels[lead],
            decided_by,
            axis,
            at,
            thr,
            rows_with(loss_at, acc_at, set(), order, lead),
            rule.reason,
            expl,
        )

    others = [i for i in group if i != lead]
    tied_txt = " and ".join(f"{num(i, by_acc)} for {labels[i]}" for i in others)
    ties = set(group)
    thr = max(g[i].thr for i in others)
    # Say why a candidate outside the tie is out (the tie rule might otherwise seem to favour it).
    out_note = "".join(
        f" {labels[i]} is out ({num(i, by_acc)}): {_gap_words(g[i], by_acc)}." for i in order if i not in ties
    )
    bad_note = out_note + bad_note

    # Loss does not separate the leaders: let val accuracy decide when it can.
    if not by_acc and metric == "auto" and acc_ok:
        a_order = sorted(group, key=lambda i: -acc_at[i])
        a_lead = a_order[0]
        ag = gaps(acc_series, acc_at, a_lead, a_order, higher=True)
        a_group = [i for i in a_order if i == a_lead or ag[i].gap <= ag[i].thr]
        names = ", ".join(labels[i] for i in group)
        if len(a_group) == 1:
            runner = a_order[1]
            a_thr = ag[runner].thr
            expl = (
                f"{P} {labels[a_lead]}: val loss did not separate {names} at {where} ({num(lead, False)} "
                f"vs {tied_txt}, within noise {thr:.2g}), so val accuracy decided: "
                f"{_fmt_acc(acc_at[a_lead])} vs {_fmt_acc(acc_at[runner])} for {labels[runner]}"
                f" ({_gap_words(ag[runner], True)}).{bad_note}"
            )
            order2 = a_order + [i for i in order if i not in group]
            return SweepResult(
                param,
                cands[a_lead].value,
                labels[a_lead],
                "val_acc",
                axis,
                at,
                a_thr,
                rows_with(loss_at, acc_at, ties, order2, a_lead),
                rule.reason,
                expl,
            )
        pick, how = tie_pick(a_group)
        acc_txt = ", ".join(f"{_fmt_acc(acc_at[i])} for {labels[i]}" for i in a_group)
        expl = (
            f"{P} {labels[pick]}: val loss ties at {where} ({num(lead, False)} for {labels[lead]} vs "
            f"{tied_txt}, within noise {thr:.2g}) and val accuracy does too ({acc_txt}); {how}."
            f"{bad_note}"
        )
        order2 = [pick] + [i for i in order if i != pick]
        return SweepResult(
            param,
            cands[pick].value,
            labels[pick],
            "val_loss",
            axis,
            at,
            thr,
            rows_with(loss_at, acc_at, ties, order2, pick),
            rule.reason,
            expl,
        )

    pick, how = tie_pick(group)
    if pick == lead:
        expl = (
            f"{P} {labels[lead]}: {best_word} {what} at {where} ({num(lead, by_acc)} vs {tied_txt}, "
            f"a tie within noise {thr:.2g}; {how}).{bad_note}"
        )
    else:
        expl = (
            f"{P} {labels[pick]}: {what} at {where} within noise of the {best_word} ({num(pick, by_acc)} vs "
            f"{num(lead, by_acc)} for {labels[lead]}, a tie within noise {thr:.2g}); {how}.{bad_note}"
        )
    order2 = [pick] + [i for i in order if i != pick]
    return SweepResult(
        param,
        cands[pick].value,
        labels[pick],
        decided_by,
        axis,
        at,
        thr,
        rows_with(loss_at, acc_at, ties, order2, pick),
        rule.reason,
        expl,
    )
