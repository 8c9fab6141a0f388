"""Data that does not fit on the device is streamed through DataLoader workers (issue 13 item 3).

The streamed loader must be the resident one in all but memory: the same batches (on the CPU, bit for
bit: the same permutation, crops and flips, the same normalisation), the same batches per epoch and
resume, and one line that says which path a run takes. A folder is then never decoded whole (nor
cached). `--stream` forces the streamed path; $TUNEASSIST_DATA_BUDGET_MIB stands in for a small device.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testkit import banded_folder, run_main

from tuneassist.errors import UserError

torch = pytest.importorskip("torch")
from tuneassist.engine import residency  # noqa: E402
from tuneassist.engine.data import load_dataset  # noqa: E402
from tuneassist.engine.items import FolderImages, TensorImages  # noqa: E402
from tuneassist.engine.loader import DeviceLoader, LoaderSettings  # noqa: E402
from tuneassist.engine.stream import StreamLoader, open_loader, stream_workers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*the validation split has only")  # small on purpose


def _folder(root: Path, per_class: int = 10, side: int = 48) -> Path:
    """Three learnable classes of `side` x `side` PNGs (a bright band per class), train/ and test/."""
    return banded_folder(root, ("a", "b", "c"), per_class, max(2, per_class // 3), side)


def _same_batches(a: object, b: object, **kw: object) -> int:
    """Assert two loaders give equal batches (values, labels, memory layout); return how many."""
    n = 0
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):  # type: ignore[call-overload]
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)
        assert xa.stride() == xb.stride() and xa.dtype == xb.dtype == torch.float32
        n += 1
    return n


def test_streamed_batches_are_the_resident_batches_bit_for_bit() -> None:
    resident = load_dataset("synthetic:300", device="cpu")
    streamed = load_dataset("synthetic:300", device="cpu", stream=True)
    assert not resident.streamed and streamed.streamed and isinstance(streamed.train.x, TensorImages)
    assert (resident.mean, resident.std) == (streamed.mean, streamed.std)
    assert torch.equal(resident.val.y, streamed.val.y)  # the same seeded validation split
    for train in (True, False):
        for channels_last in (False, True):
            for rank, world in ((0, 1), (1, 2)):
                settings = LoaderSettings(
                    32, "cpu", resident.mean, resident.std, train=train, seed=5,
                    channels_last=channels_last, rank=rank, world_size=world,
                )  # fmt: skip
                a = open_loader(resident.train.x, resident.train.y, settings)
                b = open_loader(streamed.train.x, streamed.train.y, settings)
                assert isinstance(b, StreamLoader) and type(a) is DeviceLoader
                assert len(a) == len(b) and a.num_samples == b.num_samples
                a.set_epoch(3, start_batch=2)  # resume mid-epoch
                b.set_epoch(3, start_batch=2)
                assert _same_batches(a, b) == len(a) - 2
                assert a.epoch == b.epoch == 4
                assert _same_batches(a, b) == len(a)  # the next epoch, drawn afresh


def test_a_folder_that_does_not_fit_is_streamed_per_file_and_never_decoded_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    resident = load_dataset(f"folder:{root}", data_dir=cache, device="cpu")
    assert not resident.streamed  # it fits: held whole
    assert "fit in the" in resident.note and resident.note.endswith("held on cpu")
    for cached in (cache / "folders").glob("*.pt"):
        cached.unlink()

    monkeypatch.setenv(residency.BUDGET_ENV, "0.05")
    monkeypatch.setenv("TUNEASSIST_STREAM_WORKERS", "2")
    ds = load_dataset(f"folder:{root}", data_dir=cache, device="cpu")
    assert ds.streamed and isinstance(ds.train.x, FolderImages)
    assert ds.note == (
        f"data: folder:{root}, 39 images at 48x48 (263.2 KiB; 979.9 KiB held on the device) do not fit in "
        "the 51.2 KiB budget ($TUNEASSIST_DATA_BUDGET_MIB): streaming through 2 DataLoader workers"
    )
    assert not list((cache / "folders").glob("*.pt"))  # nothing decoded whole, nothing cached
    assert ds.train.x.shape == resident.train.x.shape and torch.equal(ds.train.y, resident.train.y)
    assert (ds.mean, ds.std) == (resident.mean, resident.std)  # a small split's sample is all of it
    settings = LoaderSettings(8, "cpu", ds.mean, ds.std, train=True)
    a = open_loader(resident.train.x, resident.train.y, settings)
    b = open_loader(ds.train.x, ds.train.y, settings)
    assert _same_batches(a, b) == len(a) == 27 // 8
    settings = LoaderSettings(5, "cpu", ds.mean, ds.std, train=False)
    a = open_loader(resident.test.x, resident.test.y, settings)
    b = open_loader(ds.test.x, ds.test.y, settings)
    assert _same_batches(a, b) == 2  # 9 test images, the last batch kept


def test_an_unreadable_file_in_a_streamed_folder_trains_black_and_says_so(tmp_path: Path) -> None:
    from tuneassist.engine.folder import DataWarning

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(good)
    bad.write_bytes(b"not an image")
    images = FolderImages([str(good), str(bad)], 16)
    assert int(images.read(0).min()) == 200
    with pytest.warns(DataWarning, match=r"cannot read .*bad\.png .*trains as a black image"):
        assert int(images.read(1).abs().sum()) == 0


def test_train_streams_with_the_flag_and_matches_the_resident_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path / "imgs", per_class=12)
    args = ["train", "--data", f"folder:{root}", "--data-dir", str(tmp_path / "c"), "--device", "cpu",
            "--batch-size", "8", "--epochs", "2", "--lr", "0.01:0.1", "--threads", "1",
            "--no-bf16"]  # fmt: skip
    rc, out_r, err_r = run_main(capsys, *args)
    assert rc == 0, err_r
    rc, out_s, err_s = run_main(capsys, *args, "--stream")
    assert rc == 0, err_s
    assert "held on cpu" in err_r and "streaming through" not in err_r
    (line,) = [x for x in err_s.splitlines() if x.startswith("data: ")]
    assert (
        line.endswith("as asked (--stream)") and "streaming through" in line and "48 images at 48x48" in line
    )
    steps = [x for x in err_s.splitlines() if " steps (" in x]
    assert steps and steps[0] in err_r  # the same split sizes and batches per epoch
    # the same batches on the CPU: the same losses and accuracies, to the printed digit
    assert out_s.split("val loss")[1] == out_r.split("val loss")[1]


def test_lr_find_has_the_flag_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["lr-find", "--data", "synthetic:200", "--steps", "12", "--batch-size", "32", "--device", "cpu"]
    rc, out, err = run_main(capsys, *args, "--stream", "--threads", "1")
    assert rc == 0, err
    assert "streaming through" in err and "as asked (--stream)" in err
    rc, out, err = run_main(capsys, *args, "--threads", "1", "--json")  # and --json says which, as a field
    assert rc == 0, err
    start = json.loads(out)["start"]
    assert start["streamed"] is False and start["device"] == "cpu" and start["image_size"] == 32
    rc, out, err = run_main(capsys, *args, "--stream", "--threads", "1", "--json")
    assert rc == 0, err
    start = json.loads(out)["start"]
    assert start["streamed"] is True and start["train_size"] + start["val_size"] == 200


def test_the_budget_and_the_workers_are_read_once_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(residency.BUDGET_ENV, "lots")
    with pytest.raises(UserError, match="must be a number of MiB"):
        residency.data_budget(torch.device("cpu"))
    monkeypatch.setenv(residency.BUDGET_ENV, "2048")
    assert residency.data_budget(torch.device("cpu")) == (2048 * 2**20, "$TUNEASSIST_DATA_BUDGET_MIB")
    monkeypatch.delenv(residency.BUDGET_ENV)
    budget, where = residency.data_budget(torch.device("cpu"))
    assert budget > 0 and where == "half the host's available RAM"
    monkeypatch.setenv("TUNEASSIST_STREAM_WORKERS", "3")
    assert stream_workers() == 3
    monkeypatch.setenv("TUNEASSIST_STREAM_WORKERS", "x")
    with pytest.raises(UserError, match="whole number of worker processes"):
        stream_workers()
    # augmenting, the train split is held padded and mirrored; on the CPU the decoded copy comes on top
    fp = residency.Footprint(100, 80, (3, 32, 32), 3072, augment=True, on_cpu=False)
    assert fp.resident == int(80 * 3072 * 2 * 40 * 40 / (32 * 32) + 20 * 3072)
    assert residency.Footprint(100, 80, (3, 32, 32), 3072, False, True).resident == 2 * 100 * 3072
