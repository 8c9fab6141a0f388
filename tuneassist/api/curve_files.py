"""Range-test curves from files other tools wrote (torch-lr-finder, Lightning, CSV, tuneassist's own),
read into the curve `range_test` returns, with one-line errors naming the format expected."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneassist.advisor.lr_range import suggest_lr
from tuneassist.api.checks import finite_or_none
from tuneassist.api.lr_range_test import RangeTestResult
from tuneassist.errors import UserError

MAX_CURVE_BYTES = 64 << 20


def _read_text(path: Path) -> str:
    """A curve file's text, from a regular file of at most MAX_CURVE_BYTES; UserError naming the fix."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give the CSV or JSON file of a range test") from None
    except OSError as e:
        raise UserError(
            f"{path}: cannot open it ({e.strerror}); check the path and its permissions"
        ) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{path} is a folder; give the CSV or JSON file of a range test")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path} is not a regular file; save the curve to a CSV or JSON file first")
        if st.st_size > MAX_CURVE_BYTES:
            raise UserError(
                f"{path} is larger than {MAX_CURVE_BYTES >> 20} MiB, too large for a range test's curve; "
                "give the file of one range test"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_CURVE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); give a CSV or JSON text file") from None


_LOSS_KEYS = ("loss", "train_loss", "losses")
_LR_KEYS = ("lr", "lrs", "learning_rate")
FORMAT_HINT = (
    'give a JSON {"lr": [...], "loss": [...]} (torch-lr-finder\'s history, Lightning\'s lr_finder.results), '
    "a CSV with lr,loss[,val_loss] columns, or tuneassist's lr-find --json"
)


def _pick(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _numbers(values: Any, what: str, where: str) -> list[float]:
    if not isinstance(values, list | tuple):
        raise UserError(f"{where}: {what!r} is not a list of numbers; {FORMAT_HINT}")
    out = []
    for v in values:
        if v is None or v == "":
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise UserError(f"{where}: {what!r} holds {str(v)[:40]!r}, not a number; {FORMAT_HINT}") from None
    return out


def _curve_from_mapping(d: Mapping[str, Any], where: str) -> dict[str, list[float]]:
    if isinstance(d.get("curve"), Mapping):  # tuneassist's lr-find --json or RangeTestResult.to_dict()
        d = d["curve"]
    elif isinstance(d.get("history"), Mapping):  # a saved LRFinder.__dict__ or {"history": ...}
        d = d["history"]
    elif isinstance(d.get("results"), Mapping):  # {"results": lr_finder.results}
        d = d["results"]
    lrs, losses = _pick(d, _LR_KEYS), _pick(d, _LOSS_KEYS)
    if lrs is None or losses is None:
        keys = ", ".join(sorted(map(str, d))[:8]) or "none"
        raise UserError(f"{where}: no 'lr' and 'loss' lists (keys: {keys}); {FORMAT_HINT}")
    curve = {"lr": _numbers(lrs, "lr", where), "train_loss": _numbers(losses, "loss", where)}
    val = d.get("val_loss")
    if val is not None:
        vl = _numbers(val, "val_loss", where)
        vlr = _numbers(d["val_lr"], "val_lr", where) if d.get("val_lr") is not None else curve["lr"]
        pairs = [(a, b) for a, b in zip(vlr, vl, strict=False) if math.isfinite(b)]
        curve["val_lr"], curve["val_loss"] = [p[0] for p in pairs], [p[1] for p in pairs]
    return curve


def _curve_from_rows(rows: Sequence[Mapping[str, Any]], where: str) -> dict[str, list[float]]:
    if not rows:
        raise UserError(f"{where}: no rows; {FORMAT_HINT}")
    keys = {k.strip().lower() if isinstance(k, str) else k: k for k in rows[0]}
    lr_key = next((keys[k] for k in _LR_KEYS if k in keys), None)
    loss_key = next((keys[k] for k in _LOSS_KEYS if k in keys), None)
    if lr_key is None or loss_key is None:
        cols = ", ".join(str(k) for k in rows[0] if k is not None)[:80] or "none"
        raise UserError(f"{where}: no lr and loss columns (found: {cols}); {FORMAT_HINT}")
    val_key = keys.get("val_loss")
    lrs, losses, val_lrs, val_losses = [], [], [], []
    for i, r in enumerate(rows):
        try:
            lr = float(r[lr_key])
        except (TypeError, ValueError):
            raise UserError(
                f"{where}: row {i + 1} has lr {r.get(lr_key)!r}, not a number; {FORMAT_HINT}"
            ) from None
        raw = r.get(loss_key)
        if raw not in (None, ""):
            try:
                losses.append(float(raw))
            except (TypeError, ValueError):
                raise UserError(
                    f"{where}: row {i + 1} has loss {raw!r}, not a number; {FORMAT_HINT}"
                ) from None
            lrs.append(lr)
        if val_key is not None and r.get(val_key) not in (None, ""):
            try:
                val_losses.append(float(r[val_key]))
            except (TypeError, ValueError):
                raise UserError(f"{where}: row {i + 1} has val_loss {r[val_key]!r}, not a number") from None
            val_lrs.append(lr)
    curve = {"lr": lrs, "train_loss": losses}
    if val_losses:
        curve["val_lr"], curve["val_loss"] = val_lrs, val_losses
    return curve


def read_curve(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """A range test's curve from a file any tool wrote: {"lr", "train_loss"[, "val_lr", "val_loss"]}.

    Reads JSON ({"lr": [...], "loss": [...]}: torch-lr-finder's `history`, Lightning's
    `lr_finder.results`; tuneassist's `lr-find --json`), JSON lines (`runs export --format jsonl`) and
    CSV with lr and loss (or train_loss) columns and an optional val_loss column (`runs export`).
    Raises UserError naming the problem and the format it expects.
    """
    p = Path(path)
    text = _read_text(p)
    where = str(p)
    stripped = text.lstrip()
    if not stripped:
        raise UserError(f"{where} is empty; {FORMAT_HINT}")
    if stripped[0] in "{[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            try:  # JSON lines: one row per line
                data = [json.loads(ln) for ln in lines]
            except json.JSONDecodeError:
                raise UserError(
                    f"{where}: not valid JSON ({e.msg} at line {e.lineno}); {FORMAT_HINT}"
                ) from None
        if isinstance(data, Mapping):
            curve = _curve_from_mapping(data, where)
        elif isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
            curve = _curve_from_rows(data, where)
        else:
            raise UserError(f"{where}: JSON of the wrong shape; {FORMAT_HINT}")
    else:
        try:
            dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
        curve = _curve_from_rows(rows, where)
    if len(curve["lr"]) != len(curve["train_loss"]):
        raise UserError(
            f"{where}: {len(curve['lr'])} LRs but {len(curve['train_loss'])} losses; each LR needs its loss"
        )
    if not curve["lr"]:
        raise UserError(f"{where}: the curve has no points; {FORMAT_HINT}")
    return curve


def read_range_test(path: str | os.PathLike[str]) -> RangeTestResult:
    """`read_curve` and the advisor's reading of it, as `range_test` returns it (what `lr-read` prints)."""
    curve = read_curve(path)
    try:
        suggestion = suggest_lr(
            curve["lr"], curve["train_loss"], curve.get("val_lr") or None, curve.get("val_loss") or None
        )
    except ValueError as e:  # LRs that fall, or are not positive: not a range test
        raise UserError(f"{path}: {e}; give the curve of one range test, LR rising") from None
    lossy: dict[str, list[float | None]] = {
        "lr": list(curve["lr"]),
        "train_loss": [finite_or_none(v) for v in curve["train_loss"]],
        "val_lr": list(curve.get("val_lr", [])),
        "val_loss": [finite_or_none(v) for v in curve.get("val_loss", [])],
    }
    return RangeTestResult(
        suggestion=suggestion, curve=lossy, steps=len(curve["lr"]), stopped="read from file"
    )
