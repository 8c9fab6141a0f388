"""Bad input: exit code 2 and one line naming the problem and the fix, never a traceback.

Profiles and image folders through the real CLI (in this process), then hypothesis fuzzing of the
profile loader and of the CLI's argument parsing with real sub-commands, flags and junk values.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import string
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from relkit import one_line_error, run_main

from tuneassist.errors import UserError
from tuneassist.profiles import (
    load_profile,
    loads_profile,
    profile_from_dict,
    profile_to_runspec,
    save_profile,
)
from tuneassist.profiles.schema import REQUIRED, TABLE_KEYS, TOP_KEYS

GOOD: dict[str, Any] = {
    "name": "fuzz",
    "data": "synthetic:300",
    "model": "simple3",
    "batch_size": 32,
    "epochs": 2,
    "lr_min": 0.05,
    "lr_max": 0.5,
    "momentum_max": 0.95,
    "momentum_min": 0.85,
    "weight_decay": 1e-4,
    "schedule": {"kind": "onecycle", "rise_fraction": 0.45, "final_div": 100.0},
}
GOOD_TOML = "\n".join(
    [f"{k} = {v!r}".replace("'", '"') for k, v in GOOD.items() if k != "schedule"]
    + ["[schedule]", 'kind = "onecycle"', "rise_fraction = 0.45", "final_div = 100.0"]
)


def _with(key: str, line: str) -> str:
    out = [ln for ln in GOOD_TOML.splitlines() if not ln.startswith(f"{key} =")]
    return "\n".join([line, *out] if line else out) + "\n"


# -- profiles through the CLI -----------------------------------------------------------------------

BAD_PROFILES = [
    ("malformed TOML", GOOD_TOML.replace('model = "simple3"', "model = simple3"), "not valid TOML"),
    ("unknown key", _with("lr_max", "lr_maximum = 0.5"), "unknown key 'lr_maximum'"),
    ("wrong type", _with("lr_max", 'lr_max = "0.5"'), "key 'lr_max' is '0.5' (str)"),
    ("LR 0", _with("lr_min", "lr_min = 0"), "lr_min is 0; it must be a positive number"),
    ("LR negative", _with("lr_max", "lr_max = -1.0"), "lr_max is -1.0"),
    ("momentum 1", _with("momentum_max", "momentum_max = 1.0"), "momentum_max is 1.0; it must be in [0, 1)"),
    ("momentum < 0", _with("momentum_min", "momentum_min = -0.5"), "momentum_min is -0.5"),
    ("WD < 0", _with("weight_decay", "weight_decay = -1e-4"), "use 0 or a positive value"),
    ("epochs 0", _with("epochs", "epochs = 0"), "epochs 0 must be at least 1"),
    ("batch float", _with("batch_size", "batch_size = 12.5"), "must be a positive integer"),
    ("batch 0", _with("batch_size", "batch_size = 0"), "batch_size 0 must be a positive integer"),
    ("min > max", _with("lr_min", "lr_min = 0.9"), "lr_min 0.9 is larger than lr_max 0.5"),
    ("unknown model", _with("model", 'model = "vgg16"'), "unknown model 'vgg16'"),
    ("unknown data", _with("data", 'data = "imagenet"'), "unknown data set 'imagenet'"),
    ("missing key", _with("weight_decay", ""), "missing key 'weight_decay'"),
    ("not UTF-8", None, "not UTF-8"),
]


@pytest.mark.parametrize("case, text, needle", BAD_PROFILES, ids=[c[0] for c in BAD_PROFILES])
@pytest.mark.parametrize("command", ["train", "show", "export"])
def test_bad_profile_is_exit_2_and_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str | None, needle: str, command: str
) -> None:
    path = tmp_path / "p.toml"
    if text is None:
        path.write_bytes(GOOD_TOML.replace("fuzz", "caf\xe9").encode("latin-1"))
    else:
        path.write_text(text, encoding="utf-8")
    argv = {
        "train": ["train", "--profile", str(path), "--device", "cpu"],
        "show": ["profile", "show", str(path)],
        "export": ["profile", "export", str(path), "--format", "json"],
    }[command]
    code, out, err = run_main(capsys, *argv)
    one_line_error(code, err, needle, str(path))
    assert out == ""


def test_the_good_profile_used_above_is_good(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(GOOD_TOML, encoding="utf-8")
    assert profile_to_runspec(load_profile(path)).lr_max == 0.5


# -- image folders ------------------------------------------------------------------------------------


def _img(path: Path, size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode).save(path)


def _folder(root: Path, classes: dict[str, int], test: dict[str, int] | None = None) -> Path:
    for split, per in (("train", classes), ("test", test or {c: 2 for c in classes})):
        for cls, n in per.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _img(root / split / cls / f"{i}.png", seed=hash((split, cls, i)) % 1000)
    return root


FOLDER_ERRORS = [
    ("empty folder", lambda r: r.mkdir(), "has no train/ directory"),
    ("class without images", lambda r: _folder(r, {"cat": 4, "dog": 0}), "class 'dog' has no images"),
    ("one class", lambda r: _folder(r, {"cat": 4}), "only one class (cat); a classifier needs at least two"),
    (
        "only corrupt files in a class",
        lambda r: (_folder(r, {"cat": 4, "dog": 0}), (r / "train/dog/x.png").write_bytes(b"\x89PNG junk")),
        "class 'dog' has no readable images",
    ),
]


@pytest.mark.parametrize("case, make, needle", FOLDER_ERRORS, ids=[c[0] for c in FOLDER_ERRORS])
def test_bad_image_folder_is_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, make: Any, needle: str
) -> None:
    root = tmp_path / "data"
    make(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped-file warning of the corrupt case (checked below)
        code, _, err = run_main(
            capsys, "train", "--data", f"folder:{root}", "--data-dir", str(tmp_path / "c"), "--device", "cpu"
        )
    one_line_error(code, err, needle, str(root), progress=True)


def test_mixed_sizes_modes_and_a_corrupt_file_train_with_one_warning_each(tmp_path: Path) -> None:
    """Grayscale and RGBA become RGB; other sizes are resized to 32x32 with a warning naming the
    majority size and an odd file; an unreadable file is skipped with a warning naming it."""
    from tuneassist.engine.data import DataWarning, load_dataset

    root = _folder(tmp_path / "data", {"cat": 6, "dog": 6})
    _img(root / "train/cat/photo.jpg", size=(500, 375))
    _img(root / "train/dog/gray.png", mode="L")
    _img(root / "train/dog/alpha.png", mode="RGBA")
    (root / "train/dog/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(DataWarning) as rec:
        ds = load_dataset(f"folder:{root}", data_dir=tmp_path / "c", val_fraction=0.1)
    msgs = sorted(
        str(w.message) for w in rec if "validation split" not in str(w.message)
    )  # 1 image: a warning
    assert len(msgs) == 2 and all("\n" not in m for m in msgs), msgs
    resized, skipped = msgs
    assert resized.startswith(f"resized 1 image(s) in {root}") and "to 32x32" in resized
    assert f"most are 32x32, but e.g. {root / 'train/cat/photo.jpg'} is 500x375" in resized
    assert skipped.startswith(f"skipped 1 unreadable image file(s) in {root}")
    assert str(root / "train/dog/broken.png") in skipped
    assert ds.train.x.shape[1:] == (3, 32, 32) and len(ds.train.y) + len(ds.val.y) == 15


# -- fuzzing the profile loader -----------------------------------------------------------------------

_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    # No subnormals: train() run in this process sets torch's flush-denormal mode, which hypothesis detects.
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", "simple3", "resnet56", "mod:fn", "a.b:c", "synthetic:0", "folder:", "cifar10"]),
    st.datetimes(timezones=st.just(UTC)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_keys = st.sampled_from([*TOP_KEYS, *TABLE_KEYS, "lr_maximum", ""]) | st.text(max_size=10)
_table_keys = st.sampled_from(sorted({k for t in TABLE_KEYS.values() for k in t} | {"decisions"}))


def _check_profile_result(fn: Any, *args: Any) -> None:
    """Either a profile that runs and saves, or one UserError line; anything else is a bug."""
    try:
        prof = fn(*args)
    except UserError as exc:
        msg = str(exc)
        assert "\n" not in msg.strip() and msg.startswith("profile"), msg
        return
    spec = profile_to_runspec(prof, allow_import=True)
    assert math.isfinite(spec.lr_max) and spec.lr_min <= spec.lr_max and spec.batch_size >= 1
    with tempfile.TemporaryDirectory() as d:
        again = load_profile(save_profile(prof, Path(d) / "p.toml"))
    assert again.to_dict() == prof.to_dict()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.one_of(
            st.tuples(st.just("set"), _keys, _values),
            st.tuples(st.just("del"), st.sampled_from(REQUIRED), st.none()),
            st.tuples(st.just("table"), st.sampled_from(sorted(TABLE_KEYS)), st.tuples(_table_keys, _values)),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_profile_values(edits: list[tuple[str, Any, Any]]) -> None:
    raw: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in GOOD.items()}
    for op, key, value in edits:
        if op == "set":
            raw[key] = value
        elif op == "del":
            raw.pop(key, None)
        else:
            table = raw.setdefault(key, {})
            if isinstance(table, dict):
                table[value[0]] = value[1]
    _check_profile_result(profile_from_dict, raw)


_toml_bits = st.sampled_from(list(string.printable) + ["é", "\x00", "\x7f", "[[", "]]", '"""', "'''", "nan"])


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutation=st.tuples(
        st.integers(0, len(GOOD_TOML)), st.integers(0, 20), st.lists(_toml_bits, max_size=12).map("".join)
    ),
    nesting=st.integers(0, 2000),
)
def test_fuzz_profile_text(mutation: tuple[int, int, str], nesting: int) -> None:
    at, cut, insert = mutation
    text = GOOD_TOML[:at] + insert + GOOD_TOML[at + cut :]
    if nesting > 1900:  # deeply nested arrays: a parser that recursed would blow the stack
        text = "x = " + "[" * 100_000 + "]" * 100_000 + "\n" + text
    _check_profile_result(loads_profile, text)


# -- fuzzing the CLI's argument parsing -----------------------------------------------------------------


class _ReachedTheEngine(BaseException):
    """Raised where validation is over and the engine or a worker would start: parsing succeeded."""


# Commands whose every path ends in an error, output, or the engine/worker hooks below (not the TUI,
# not the web server, nothing added later that could start real work unnoticed).
SAFE_COMMANDS = ("train", "lr-find", "runs", "profile", "tune")


def _grammar() -> dict[tuple[str, ...], tuple[list[tuple[str, Any]], list[str]]]:
    """Every sub-command of SAFE_COMMANDS with its flags and positionals, read from the real parser."""
    import argparse

    from tuneassist.cli.main import build_parser

    parser = build_parser()
    out: dict[tuple[str, ...], tuple[list[tuple[str, Any]], list[str]]] = {}

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        flags, positionals = [], []
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, (*path, name))
            elif a.option_strings:
                if not isinstance(a, argparse._HelpAction | argparse._VersionAction):
                    flags.append((a.option_strings[-1], a.choices if a.nargs != 0 else None, a.nargs == 0))
            else:
                positionals.append(a.dest)
        if path and path[0] in SAFE_COMMANDS:
            out[path] = ([(f, (c, z)) for f, c, z in flags], positionals)

    walk(parser, ())
    return out


GRAMMAR = _grammar()
JUNK = ["", "0", "1", "-1", "7", "0.5", "1e-4", "1e309", "nan", "inf", "-inf", "abc", ":", "1:2:3", "0.1:1",
        "1:0.1", "99999999999999999999", "-99999999999999999999", "synthetic", "synthetic:0", "synthetic:300",
        "folder:", "cifar10", "simple3", "resnet20", "mod:fn", "os:system", "über", "--", "-", "-x", "--nope",
        "\udcff", "1.5", "0x10", "1_000", " 3", "cpu", "cuda:7", "quick", "csv"]  # fmt: skip


@st.composite
def _argv(draw: st.DrawFn, tmp: Path) -> list[str]:
    path = draw(st.sampled_from(sorted(GRAMMAR)))
    flags, positionals = GRAMMAR[path]
    safe_paths = [str(tmp / "ws"), str(tmp / "a-file"), str(tmp / "no" / "such" / "dir"), str(tmp)]
    argv = list(path)
    for _ in positionals:
        argv.append(draw(st.sampled_from([*JUNK, "1", "2", "cifar10-resnet56-1cycle"])))
    for flag, (choices, is_switch) in draw(st.lists(st.sampled_from(flags), max_size=6)) if flags else []:
        argv.append(flag)
        if is_switch:
            continue
        if flag in ("--workspace", "--output", "--data-dir"):  # anything that writes stays in tmp
            argv.append(draw(st.sampled_from(safe_paths)))
        elif choices:
            argv.append(draw(st.sampled_from([*choices, *JUNK[:4]])))
        else:
            argv.append(draw(st.sampled_from(JUNK)))
    if path == ("tune",) and "--resume" not in argv:
        argv += ["--resume", draw(st.sampled_from(JUNK))]  # a new autopilot session would start runs
    if draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(JUNK)))
    if draw(st.integers(0, 9)) == 0:
        argv = ["--workspace", draw(st.sampled_from(safe_paths)), *argv]
    return argv


def test_fuzz_cli_grammar_covers_the_commands() -> None:
    assert {("train",), ("lr-find",), ("runs", "resume"), ("profile", "export"), ("tune",)} <= set(GRAMMAR)


@pytest.fixture
def cli_fuzz_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tuneassist.engine.train as engine_train
    import tuneassist.runs.launch as launch
    import tuneassist.runs.probe_client as probe_client

    def reached(*a: Any, **k: Any) -> None:
        raise _ReachedTheEngine

    monkeypatch.setattr(engine_train, "train", reached)
    monkeypatch.setattr(launch, "spawn_worker", reached)
    monkeypatch.setattr(probe_client, "probe_in_subprocess", reached)
    monkeypatch.chdir(tmp_path)  # `-o 7` and the like write to the working directory
    return tmp_path


def _main_with_real_streams(argv: list[str]) -> tuple[int | str, str, str]:
    """main(argv) with stdout/stderr set up as Python sets them for a UTF-8 terminal (stdout strict,
    stderr backslashreplace), so an unprintable argument fails here exactly when it would for real."""
    from tuneassist.cli.main import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    code: int | str
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except _ReachedTheEngine:
            code = "engine"
        out.flush()
        err.flush()
    texts = [s.buffer.getvalue().decode("utf-8") for s in (out, err)]  # type: ignore[attr-defined]
    return code, texts[0], texts[1]


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_cli_arguments_exit_0_or_2_never_a_traceback(cli_fuzz_env: Path, data: st.DataObject) -> None:
    fresh = Path(tempfile.mkdtemp(dir=cli_fuzz_env))  # nothing left over from earlier examples
    (fresh / "a-file").write_text("not a folder")
    argv = data.draw(_argv(fresh))
    old = os.environ.get("TUNEASSIST_HOME")
    os.environ["TUNEASSIST_HOME"] = str(fresh / "home")
    try:
        code, out, err = _main_with_real_streams(argv)
    finally:
        if old is None:
            os.environ.pop("TUNEASSIST_HOME", None)
        else:
            os.environ["TUNEASSIST_HOME"] = old
    if code == "engine":
        return  # valid input got as far as training or a worker: not this test's business
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err and "unexpected" not in err, (argv, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)


def test_unexpected_stays_visible_to_the_fuzzer(
    cli_fuzz_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fuzz assertions are not vacuous: a crash inside a command surfaces as exit 1 'unexpected'."""
    import tuneassist.cli.runs_cmd as runs_cmd

    def boom(*a: Any, **k: Any) -> None:
        raise ZeroDivisionError("planted")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs_cmd, "open_store", boom)
        mp.setattr(runs_cmd, "open_existing_store", boom)  # `runs` on a workspace not made yet
        code, _, err = run_main(capsys, "runs")
    assert code == 1 and "unexpected ZeroDivisionError" in err


def test_datetime_values_are_refused_not_crashing() -> None:
    raw = {**GOOD, "epochs": datetime(2020, 1, 1, tzinfo=UTC)}
    with pytest.raises(UserError, match="epochs"):
        profile_from_dict(raw)
