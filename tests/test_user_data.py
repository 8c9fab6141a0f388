"""`--data module:function`: the user's own (train, test) torch Datasets (issue 13 item 3).

One parser names it (tuneassist.dataref), the consent rule of tuneassist.usercode guards it (imported only
with --allow-import, and only in the engine: the UI process never imports it, nor torch), its classes and
size come from the data, and it goes through the resident or the streamed path like any other data set.
The shipped example, examples/my_data.py, is run as a user would run it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import run_main

from tuneassist.dataref import is_data_module, parse_data
from tuneassist.errors import UserError
from tuneassist.spec import RunSpec
from tuneassist.usercode import prepare_spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = "examples.my_data:datasets"
_counter = itertools.count()
pytestmark = pytest.mark.filterwarnings("ignore:.*the validation split has only")  # small on purpose


def test_one_parser_names_it_and_the_built_in_names_stay_reserved() -> None:
    assert parse_data(EXAMPLE) == ("module", EXAMPLE)
    assert parse_data("mydata:datasets") == ("module", "mydata:datasets")
    assert is_data_module("pkg.sub:fn") and not is_data_module("folder:x") and not is_data_module("cifar10")
    for bad in ("cifar10:x", "synthetic:", "my-data:fn", "mydata:", ":fn"):
        with pytest.raises(UserError):
            parse_data(bad)
    RunSpec(data=EXAMPLE).validate()
    with pytest.raises(UserError, match="gives its own image size|is 32x32"):
        RunSpec(data=EXAMPLE, image_size=64).validate()


def test_consent_first_then_the_folder_it_was_found_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(
        UserError, match=r"^--data examples.my_data:datasets imports your code; add --allow-import"
    ):
        prepare_spec(RunSpec(data=EXAMPLE))
    spec = prepare_spec(RunSpec(data=EXAMPLE, allow_import=True))
    assert spec.data_module_dir == str(REPO) and spec.model_dir is None
    with pytest.raises(UserError, match="cannot find module 'nosuchdata' for --data nosuchdata:fn"):
        prepare_spec(RunSpec(data="nosuchdata:fn", allow_import=True))


def test_the_ui_process_imports_neither_torch_nor_the_users_module() -> None:
    code = (
        "import sys\n"
        "from tuneassist.cli.main import build_parser\n"
        "from tuneassist.spec import RunSpec\n"
        "from tuneassist.usercode import prepare_spec\n"
        f"spec = prepare_spec(RunSpec(data={EXAMPLE!r}, allow_import=True).validate())\n"
        "assert spec.data_module_dir, spec\n"
        "bad = [m for m in ('torch', 'examples.my_data') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


def test_train_runs_the_shipped_example_and_refuses_without_consent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    rc, out, err = run_main(capsys, "train", "--data", EXAMPLE, "--steps", "5")
    assert rc == 2 and "--allow-import" in err and len(err.strip().splitlines()) == 1, err
    rc, out, err = run_main(capsys, "train", "--data", EXAMPLE, "--allow-import", "--epochs", "1",
                            "--batch-size", "64", "--lr", "0.01:0.1", "--device", "cpu",
                            "--threads", "1")  # fmt: skip
    assert rc == 0, err
    # classes and size from the data: 6 classes of 40x40; 1,200 train images, 10% held out
    assert "1080 train / 120 val / 300 test images, 6 classes, 40x40 images" in err
    assert "held on cpu" in err and out.startswith("finished: 1 epochs")


def _module(tmp_path: Path, body: str) -> str:
    """A user module `userdata_N` holding `body`, importable from tmp_path; returns its name."""
    name = f"userdata_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text("import torch\nfrom torch.utils.data import TensorDataset\n" + body)
    return name


def test_resident_and_streamed_user_data_give_the_same_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from tuneassist.engine.data import load_dataset
    from tuneassist.engine.items import UserImages
    from tuneassist.engine.loader import LoaderSettings
    from tuneassist.engine.stream import open_loader

    name = _module(
        tmp_path,
        "def datasets():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.rand(90, 3, 20, 24, generator=g), torch.arange(90) % 3\n"
        "    return TensorDataset(x[:70], y[:70]), TensorDataset(x[70:], y[70:])\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = f"{name}:datasets"
    with pytest.raises(UserError, match="--allow-import"):
        load_dataset(ref, device="cpu")
    a = load_dataset(ref, device="cpu", allow_import=True, module_dir=str(tmp_path))
    b = load_dataset(ref, device="cpu", allow_import=True, module_dir=str(tmp_path), stream=True)
    assert a.classes == ["0", "1", "2"] and a.train.x.dtype == torch.float32
    assert a.train.x.shape == (63, 3, 20, 24) and isinstance(b.train.x, UserImages)
    assert (a.mean, a.std) == (b.mean, b.std) and abs(a.mean[0] - 0.5) < 0.05
    for train in (True, False):
        settings = LoaderSettings(16, "cpu", a.mean, a.std, train=train, seed=1, channels_last=True)
        la = open_loader(a.train.x, a.train.y, settings)
        lb = open_loader(b.train.x, b.train.y, settings)
        pairs = list(zip(la, lb, strict=True))
        assert len(pairs) == (3 if train else 4)
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def datasets():\n    return 3\n", r"returned int; return \(train, test\), two torch Datasets"),
        ("def datasets():\n    raise OSError('no files')\n", r"datasets\(\) failed \(OSError: no files\)"),
        (
            "def datasets():\n    d = TensorDataset(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 0, -1]))\n"
            "    return d, d\n",
            "labels must be class indices",
        ),
        (
            "def datasets():\n    d = TensorDataset(torch.zeros(4, 8, 8), torch.tensor([0, 1, 0, 1]))\n"
            "    return d, d\n",
            r"is a tensor of shape \(8, 8\), not a CHW tensor",
        ),
        ("other = 1\n", "has no function 'datasets'"),
    ],
)
def test_a_wrong_dataset_function_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    pytest.importorskip("torch")
    from tuneassist.engine.data import load_dataset

    name = _module(tmp_path, body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=message) as info:
        load_dataset(f"{name}:datasets", allow_import=True, module_dir=str(tmp_path))
    assert "\n" not in str(info.value) and f"--data {name}:datasets" in str(info.value)
