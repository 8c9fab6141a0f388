"""Profiles: the shipped ones, TOML round trips, every validation error, listing, exports."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tuneassist.advisor.checklist import Checklist
from tuneassist.errors import UserError
from tuneassist.profiles import (
    Profile,
    export_profile,
    find_profile,
    list_profiles,
    load_profile,
    loads_profile,
    profile_from_checklist,
    profile_from_runspec,
    profile_to_runspec,
    save_profile,
    shipped_profiles_dir,
)
from tuneassist.profiles.schema import dumps_toml
from tuneassist.spec import RunSpec

SHIPPED = Path(__file__).resolve().parents[1] / "tuneassist" / "profiles" / "builtin"

GOOD = """\
name = "t"
data = "synthetic"
model = "simple3"
batch_size = 128
epochs = 3
lr_min = 0.02
lr_max = 0.2
momentum_max = 0.95
momentum_min = 0.85
weight_decay = 5e-4

[schedule]
kind = "onecycle"
rise_fraction = 0.45
final_div = 100.0
"""


def with_line(key: str, line: str, text: str = GOOD) -> str:
    """GOOD with the line starting `key =` replaced (or `line` appended when the key is new)."""
    out, done = [], False
    for ln in text.splitlines():
        if ln.split("=")[0].strip() == key and not done:
            if line:
                out.append(line)
            done = True
        else:
            out.append(ln)
    if not done:
        out.insert(0, line)
    return "\n".join(out) + "\n"


# -- shipped profiles ------------------------------------------------------------------------------


def test_shipped_profiles_all_load_with_the_papers_values() -> None:
    assert shipped_profiles_dir() == SHIPPED
    entries = list_profiles([SHIPPED])
    assert len(entries) >= 4 and all(e.error is None for e in entries), [e.error for e in entries]
    by = {e.name: e.profile for e in entries}
    assert all(e.path.stem == e.name for e in entries)
    r = by["cifar10-resnet56-1cycle"]
    assert (r.lr_min, r.lr_max, r.weight_decay, r.batch_size, r.epochs, r.expected_accuracy) == (
        0.08,
        0.8,
        1e-4,
        512,
        95,
        92.0,
    )
    d = by["cifar10-densenet40-1cycle"]
    assert (d.lr_min, d.lr_max, d.momentum_max, d.momentum_min, d.weight_decay, d.batch_size, d.epochs) == (
        0.1,
        4.0,
        0.9,
        0.85,
        1e-6,
        256,
        100,
    )
    assert d.expected_range == (91.5, 92.2)
    c = by["cifar100-resnet56-1cycle"]
    assert (c.data, c.lr_min, c.lr_max, c.epochs, c.expected_accuracy) == ("cifar100", 0.09, 0.9, 100, 66.3)
    s = by["synthetic-simple3-1cycle"]
    assert s.data == "synthetic" and s.model == "simple3" and s.expected_accuracy is None
    for p in by.values():
        assert p.provenance.source == "paper" or p.data == "synthetic"
        profile_to_runspec(p)  # every shipped profile is a valid run


# -- round trips ---------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    spec = RunSpec(data="cifar10", model="resnet20", lr_min=0.1, lr_max=1.0, weight_decay=3e-5, epochs=30.0)
    prof = profile_from_runspec(
        spec, "my run", description='quote " and\nnewline, ünïcode', measured_accuracy=91.25
    )
    path = save_profile(prof, tmp_path)
    assert path == tmp_path / "my-run.toml"
    back = load_profile(path)
    assert back.to_dict() == prof.to_dict() and back.path == path
    assert back.epochs == 30 and isinstance(back.epochs, int)
    assert back.provenance.tuneassist_version and back.provenance.created
    spec2 = profile_to_runspec(back)
    for f in (
        "data",
        "model",
        "lr_min",
        "lr_max",
        "momentum_max",
        "momentum_min",
        "weight_decay",
        "batch_size",
    ):
        assert getattr(spec2, f) == getattr(spec, f)


def test_toml_writer_output_is_read_back_exactly() -> None:
    d = {
        "a": 1,
        "b": 1e-6,
        "c": 100.0,
        "s": 'x"\\\n\t\x7fé',
        "t": True,
        "l": ["r1", "r2"],
        "tab": {"k": 0.5, "arr": [1.5, 2.0]},
        "prov": {
            "x": "y",
            "decisions": [{"step": "lr_range", "reason": "r"}, {"step": "final", "reason": "s"}],
        },
    }
    import tomllib

    assert tomllib.loads(dumps_toml(d)) == d


def test_save_refuses_an_invalid_profile(tmp_path: Path) -> None:
    prof = loads_profile(GOOD)
    prof.lr_max = -1.0
    with pytest.raises(UserError, match="lr_max"):
        save_profile(prof, tmp_path / "bad.toml")
    assert not (tmp_path / "bad.toml").exists()


# -- validation: one clear error per problem -------------------------------------------------------

BAD_CASES = [
    ("malformed", GOOD.replace('model = "simple3"', "model = simple3"), "line 3"),
    ("unknown key", with_line("lr_mx", "lr_mx = 0.5"), "did you mean 'lr_max'"),
    ("unknown table key", GOOD.replace("final_div = 100.0", "final_dv = 100.0"), "did you mean 'final_div'"),
    ("missing key", with_line("lr_max", ""), "missing key 'lr_max'"),
    ("string LR", with_line("lr_max", 'lr_max = "0.2"'), "key 'lr_max' is '0.2' (str)"),
    ("float batch", with_line("batch_size", "batch_size = 128.0"), "positive integer"),
    ("bool batch", with_line("batch_size", "batch_size = true"), "key 'batch_size' is True"),
    ("bad bool", with_line("nesterov", 'nesterov = "yes"'), "true or false"),
    ("zero LR", with_line("lr_min", "lr_min = 0"), "lr_min is 0; it must be a positive number"),
    ("negative LR", with_line("lr_max", "lr_max = -0.2"), "lr_max is -0.2"),
    (
        "momentum 1",
        with_line("momentum_max", "momentum_max = 1.0"),
        "momentum_max is 1.0; it must be in [0, 1)",
    ),
    ("negative momentum", with_line("momentum_min", "momentum_min = -0.1"), "momentum_min is -0.1"),
    ("negative WD", with_line("weight_decay", "weight_decay = -1e-4"), "use 0 or a positive value"),
    ("short epochs", with_line("epochs", "epochs = 0.5"), "epochs 0.5 must be at least 1"),
    ("zero batch", with_line("batch_size", "batch_size = 0"), "batch_size 0 must be a positive integer"),
    ("LR reversed", with_line("lr_min", "lr_min = 0.5"), "lr_min 0.5 is larger than lr_max 0.2"),
    ("momentum reversed", with_line("momentum_min", "momentum_min = 0.97"), "momentum_min 0.97 is larger"),
    ("unknown model", with_line("model", 'model = "vgg16"'), "unknown model 'vgg16'"),
    ("bad import model", with_line("model", 'model = "my-nets:build"'), "not a valid module:function"),
    ("unknown data", with_line("data", 'data = "mnist"'), "unknown data set 'mnist'"),
    ("empty name", with_line("name", 'name = " "'), "key 'name' is empty"),
    ("devices split", with_line("devices", "devices = 3"), "does not split evenly over 3 devices"),
    ("rise fraction", GOOD.replace("rise_fraction = 0.45", "rise_fraction = 0.7"), "rise_fraction 0.7"),
    ("final div", GOOD.replace("final_div = 100.0", "final_div = 0.5"), "final_div 0.5 must be >= 1"),
    ("schedule kind", GOOD.replace('kind = "onecycle"', 'kind = "step"'), "schedule.kind 'step'"),
    ("accuracy", GOOD + "\n[accuracy]\nexpected = 120.0\n", "accuracy.expected 120.0"),
    ("range reversed", GOOD + "\n[accuracy]\nexpected_range = [92.0, 91.0]\n", "is reversed"),
    ("range shape", GOOD + "\n[accuracy]\nexpected_range = [92.0]\n", "two percentages"),
    ("runs", GOOD + '\n[provenance]\nruns = "r1"\n', "provenance.runs must be a list"),
    (
        "decision key",
        GOOD + '\n[[provenance.decisions]]\nstep = "lr_range"\nwhy = "x"\n',
        "unknown key 'why'",
    ),
    ("table type", with_line("accuracy", "accuracy = 91.0"), "'accuracy' must be a table"),
]


@pytest.mark.parametrize(("case", "text", "needle"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_each_validation_error_names_the_key_and_fix(
    tmp_path: Path, case: str, text: str, needle: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_profile(path)
    msg = str(err.value)
    assert needle in msg, msg
    assert msg.startswith(f"profile {path}:") and "\n" not in msg.strip()


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_profile(tmp_path / "missing.toml")
    with pytest.raises(UserError, match="is a folder"):
        load_profile(tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(UserError, match="not UTF-8"):
        load_profile(tmp_path / "latin1.toml")


def test_import_models_are_flagged_never_imported(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(with_line("model", 'model = "no_such_module_xyz.nets:build"'), encoding="utf-8")
    prof = load_profile(path)  # loads although the module does not exist: nothing is imported
    assert prof.needs_import and "no_such_module_xyz" not in sys.modules
    with pytest.raises(UserError, match="imports and runs Python code"):
        profile_to_runspec(prof)
    assert profile_to_runspec(prof, allow_import=True).allow_import
    assert json.loads(export_profile(prof, "json"))["needs_import"] is True


# -- listing and finding -----------------------------------------------------------------------------


def test_list_and_find(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "t.toml").write_text(GOOD, encoding="utf-8")
    (work / "broken.toml").write_text("name = ", encoding="utf-8")
    (work / "cifar10-resnet56-1cycle.toml").write_text(
        GOOD.replace('name = "t"', 'name = "cifar10-resnet56-1cycle"'), encoding="utf-8"
    )
    entries = list_profiles([work, tmp_path / "nope", SHIPPED])
    by = {(e.path.parent.name, e.name): e for e in entries}
    assert by[("work", "broken")].profile is None and "not valid TOML" in by[("work", "broken")].error
    assert by[("builtin", "cifar10-resnet56-1cycle")].shadowed  # the workspace one wins
    assert not by[("work", "cifar10-resnet56-1cycle")].shadowed
    assert find_profile("cifar10-resnet56-1cycle", [work, SHIPPED]).model == "simple3"
    assert find_profile("t", [work]).name == "t"
    assert find_profile(str(SHIPPED / "cifar10-densenet40-1cycle.toml"), []).model == "densenet40"
    with pytest.raises(UserError, match="available: .*cifar100-resnet56-1cycle"):
        find_profile("nothing-like-it", [SHIPPED])
    with pytest.raises(UserError, match="not valid TOML"):
        find_profile("broken", [work])


def test_profile_from_a_finished_checklist() -> None:
    cl = Checklist(data="synthetic", model="simple3", budget="quick", session_id="s7")
    cl.override("lr_range", (0.03, 0.3), reason="range test r1")
    cl.override("batch_size", 128)
    cl.override("momentum", (0.95, 0.85))
    cl.override("weight_decay", 1e-3)
    cl.attach_run("final", "final", "r9")
    evals = [
        {"type": "eval", "step": s, "epoch": s / 70, "val_loss": 1.0 + 1 / s, "val_acc": 0.8}
        for s in range(70, 701, 70)
    ]
    end = {
        "type": "end",
        "outcome": "finished",
        "epoch": 10.0,
        "val_loss": 1.0,
        "val_acc": 0.81,
        "test_acc": 0.805,
    }
    cl.accept(cl.recommend("final", {"final": [*evals, end]}))
    assert cl.done
    prof = profile_from_checklist(cl, "synthetic-tuned")
    assert (prof.lr_min, prof.lr_max, prof.batch_size, prof.weight_decay, prof.epochs) == (
        0.03,
        0.3,
        128,
        1e-3,
        cl.final_epochs(),  # the quick budget's final run length
    )
    assert cl.final_epochs() == 8
    assert prof.measured_accuracy == pytest.approx(80.5) and prof.measured_val_accuracy == pytest.approx(81.0)
    assert prof.measured_run == "r9" and prof.provenance.session == "s7" and prof.provenance.budget == "quick"
    steps = [d["step"] for d in prof.provenance.decisions]
    assert steps == ["lr_range", "batch_size", "momentum", "weight_decay", "final"]
    assert loads_profile(prof.to_toml()).to_dict() == prof.to_dict()


# -- exports -----------------------------------------------------------------------------------------


def short_profile(**kw: object) -> Profile:
    prof = loads_profile(GOOD)
    prof.steps_per_epoch = 7
    for k, v in kw.items():
        setattr(prof, k, v)
    return prof


def test_every_shipped_profile_exports_in_every_format() -> None:
    for e in list_profiles([SHIPPED]):
        code = export_profile(e.profile, "pytorch")
        compile(code, f"{e.name}.py", "exec")
        assert "OneCycleLR" in code and "torch.optim.SGD" in code and "three_phase=True" in code
        d = json.loads(export_profile(e.profile, "json"))
        assert d["onecycle_lr"]["max_lr"] == e.profile.lr_max
        assert d["onecycle_lr"]["div_factor"] == pytest.approx(e.profile.lr_max / e.profile.lr_min)
        lightning = export_profile(e.profile, "lightning")
        compile(lightning, f"{e.name}_lightning.py", "exec")
        assert "self.trainer.estimated_stepping_batches" in lightning and '"interval": "step"' in lightning
        assert f"MAX_LR = {e.profile.lr_max!r}" in lightning and "three_phase=True" in lightning
        assert f'TRAINER_KWARGS = {{"max_epochs": {int(e.profile.epochs)}' in lightning
    with pytest.raises(UserError, match="unknown export format"):
        export_profile(short_profile(), "onnx")


def test_folder_data_takes_its_steps_from_the_loader_or_the_trainer() -> None:
    """Neither Python export needs the profile to know the data's size: the script reads len(loader),
    the Lightning mixin the trainer's estimated_stepping_batches."""
    prof = short_profile(data="folder:/data/x", steps_per_epoch=None)
    code = export_profile(prof, "pytorch")
    compile(code, "x.py", "exec")
    assert "STEPS_PER_EPOCH = None" in code and "len(train_loader)" in code
    compile(export_profile(prof, "lightning"), "x_lightning.py", "exec")


def reference_onecycle(prof: Profile, total: int) -> tuple[np.ndarray, np.ndarray]:
    """The schedule the profile means, written out independently: linear between OneCycleLR's knots."""
    r = prof.rise_fraction
    knots = [0.0, r * total - 1, 2 * r * total - 2, total - 1.0]
    lrs = [prof.lr_min, prof.lr_max, prof.lr_min, prof.lr_min / prof.final_div]
    moms = [prof.momentum_max, prof.momentum_min, prof.momentum_max, prof.momentum_max]
    steps = np.arange(total)
    return np.interp(steps, knots, lrs), np.interp(steps, knots, moms)


def run_snippet(prof: Profile, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    torch = pytest.importorskip("torch")
    ns: dict = {}
    exec(compile(export_profile(prof, "pytorch"), "snippet.py", "exec"), ns)
    opt, sched = ns["make_optimizer"](torch.nn.Linear(1, 1), steps_per_epoch)
    lrs, moms = [], []
    for _ in range(sched.total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert opt.param_groups[0]["weight_decay"] == prof.weight_decay
    return np.array(lrs), np.array(moms)


def test_pytorch_snippet_reproduces_the_schedule() -> None:
    prof = short_profile(epochs=3, final_div=25.0, rise_fraction=0.4)
    lrs, moms = run_snippet(prof, 7)
    assert len(lrs) == 21
    ref_lr, ref_m = reference_onecycle(prof, 21)
    np.testing.assert_allclose(lrs, ref_lr, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(moms, ref_m, rtol=1e-9)
    assert lrs[0] == pytest.approx(prof.lr_min) and lrs.max() == pytest.approx(prof.lr_max, rel=0.05)


def test_pytorch_snippet_matches_the_engine_schedule() -> None:
    schedules = pytest.importorskip("tuneassist.engine.schedules")
    prof = short_profile(epochs=5)
    lrs, moms = run_snippet(prof, 7)
    sched = schedules.build_schedule(profile_to_runspec(prof), len(lrs))
    np.testing.assert_allclose(lrs, [sched.lr(i) for i in range(len(lrs))], rtol=1e-9)
    np.testing.assert_allclose(moms, [sched.momentum(i) for i in range(len(lrs))], rtol=1e-9)


def test_pytorch_snippet_runs_as_a_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "snippet.py"
    path.write_text(
        export_profile(short_profile(wd_exclude_bn_bias=True, nesterov=True), "pytorch"), encoding="utf-8"
    )
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("lr ") >= 5 and "momentum" in out


def test_advisor_and_profiles_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import tuneassist.advisor, tuneassist.advisor.lr_range, tuneassist.advisor.diagnosis\n"
        "import tuneassist.advisor.sweep, tuneassist.advisor.checklist\n"
        "import tuneassist.profiles, tuneassist.profiles.schema, tuneassist.profiles.export\n"
        "print(sorted(m for m in ('torch', 'textual', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
