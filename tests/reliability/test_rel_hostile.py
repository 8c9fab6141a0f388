"""Hostile files and careless paths (issue 16): a shared profile, a shared workspace or a typo never
runs code, overwrites a file outside the workspace, destroys the store or loses a run.

Every test performs the attack for real (a crafted profile, planted symlinks, an export aimed at the
live database, /dev/zero, a FIFO, escape codes) and checks that it fails.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from relkit import run_main, subprocess_env

from tuneassist.profiles.schema import dumps_toml

# -- 1. profile export never turns profile text into code or keys --------------------------------------

_BREAKOUT = 'x"""\nimport os; os.system("echo PWNED > {marker}")\nr"""y'


def _profile(**over: object) -> dict[str, object]:
    d: dict[str, object] = {
        "name": "onecycle",
        "description": "benign",
        "data": "folder:/data/imgs",
        "model": "resnet20",
        "batch_size": 128,
        "epochs": 30,
        "lr_min": 0.08,
        "lr_max": 0.8,
        "momentum_max": 0.95,
        "momentum_min": 0.85,
        "weight_decay": 1e-4,
        "notes": "benign",
        "schedule": {"kind": "onecycle", "rise_fraction": 0.45, "final_div": 100.0, "steps_per_epoch": 87},
        "accuracy": {"expected": 92.0, "expected_source": "Smith 2018"},
    }
    d.update(over)
    return d


def _statements(source: str) -> list[tuple[str, ...]]:
    """The module body as (node type, names it binds or calls): what the template writes."""
    out: list[tuple[str, ...]] = []
    for node in ast.parse(source).body:
        names = sorted(
            {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            | {n.name for n in ast.walk(node) if isinstance(n, ast.FunctionDef | ast.alias)}  # type: ignore[misc]
        )
        out.append((type(node).__name__, *names))
    return out


def _yaml_keys(text: str) -> list[str]:
    """Every key line of the YAML (comments left out), indentation kept: its whole structure."""
    keys = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, _ = line.partition(":")
        assert sep, f"not a key: value line: {line!r}"
        keys.append(key)
    return keys


def test_profile_export_emits_profile_text_only_as_literals(
    tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned.txt"
    evil = _BREAKOUT.format(marker=marker)
    yaml_keys = "\ntrainer:\n  callbacks: [evil]\nx: 1\n\u2028y: 2\x85z: 3\r"
    hostile = _profile(
        name="n" + evil + yaml_keys,
        description=evil,
        notes=evil,
        data="folder:" + evil + yaml_keys,
        accuracy={"expected": 92.0, "expected_source": evil + yaml_keys + "\\"},
    )
    benign_path, hostile_path = tmp_path / "benign.toml", tmp_path / "inject.toml"
    benign_path.write_text(dumps_toml(_profile()))
    hostile_path.write_text(dumps_toml(hostile))

    exports = {}
    for which, path in (("benign", benign_path), ("hostile", hostile_path)):
        for fmt in ("pytorch", "lightning"):
            out = tmp_path / f"{which}.{fmt}"
            code, _, err = run_main(capsys, "profile", "export", str(path), "--format", fmt, "-o", str(out))
            assert code == 0, err
            exports[which, fmt] = out.read_text()

    # The script: the same statements as a benign profile's, the text inside the docstring as data.
    script = exports["hostile", "pytorch"]
    assert _statements(script) == _statements(exports["benign", "pytorch"])
    doc = ast.get_docstring(ast.parse(script), clean=False) or ""
    assert 'os.system(\\"echo PWNED' not in doc and "os.system(" in doc  # shown, escaped to one line
    assert "\n" not in doc.split("\n\n")[0] and "\x1b" not in script
    compile(script, "onecycle.py", "exec")
    # Running it (imports torch, prints the schedule) writes no marker.
    run = subprocess.run([sys.executable, str(tmp_path / "hostile.pytorch")], capture_output=True,
                         text=True, timeout=120, env=subprocess_env())  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not marker.exists(), "the exported script ran the profile's code"

    # The YAML: exactly the benign export's keys, in order; no line break inside any comment or value.
    yaml_text = exports["hostile", "lightning"]
    assert _yaml_keys(yaml_text) == _yaml_keys(exports["benign", "lightning"])
    for bad in ("\r", "\x85", "\u2028", "\u2029"):
        assert bad not in yaml_text
    try:
        import yaml
    except ImportError:
        pass
    else:
        assert set(yaml.safe_load(yaml_text)) == {"trainer", "optimizer", "lr_scheduler"}
        assert yaml.safe_load(yaml_text) == yaml.safe_load(exports["benign", "lightning"])
    # JSON: the values come back exactly.
    code, out, _ = run_main(capsys, "profile", "export", str(hostile_path), "--format", "json")
    assert code == 0 and json.loads(out)["accuracy"]["expected_source"] == evil + yaml_keys + "\\"
