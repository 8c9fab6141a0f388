"""Image folders as people have them (issue 13 item 3): any image size, trained at the folder's own size
(an LR tuned on 32x32 thumbnails does not carry over to 64x64 images), `--image-size N` to choose, and
a single root of class folders with a seeded test split. The tests draw their own small folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuneassist.dataref import FOLDER_TEST_FRACTION, common_side, folder_side, folder_test_count
from tuneassist.errors import UserError
from tuneassist.session import estimate_train_size

torch = pytest.importorskip("torch")
from tuneassist.engine.data import DataWarning, load_dataset  # noqa: E402


def _draw(path: Path, size: tuple[int, int], k: int) -> None:
    """A learnable picture: class k is bright in its own horizontal band, plus seeded noise."""
    w, h = size
    rng = np.random.default_rng(abs(hash((str(path.name), w, h))) % 2**32)
    img = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    band = slice(k * h // 4, (k + 1) * h // 4)
    img[band] = 220
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _folder(
    root: Path, counts: dict[str, int], size: tuple[int, int], splits: tuple[str, ...] = ("train", "test")
) -> Path:
    for split in splits:
        for k, (cls, n) in enumerate(counts.items()):
            for i in range(n if split != "test" else max(2, n // 4)):
                _draw(root / split / cls / f"{i:03d}.png", size, k)
    return root


def test_a_64x64_folder_trains_at_64x64_unless_told_otherwise(tmp_path: Path) -> None:
    from tuneassist.engine.train import train
    from tuneassist.spec import RunSpec

    root = _folder(tmp_path / "imgs", {"a": 12, "b": 12, "c": 12}, (64, 64))
    cache = tmp_path / "cache"
    ds = load_dataset(f"folder:{root}", data_dir=cache)
    assert ds.train.x.shape[1:] == (3, 64, 64) and ds.test.x.shape[1:] == (3, 64, 64)
    # the pixels are the files' own: no resize happened
    first = np.asarray(Image.open(root / "test" / "a" / "000.png"))
    assert torch.equal(ds.test.x[0], torch.from_numpy(first).permute(2, 0, 1))

    events: list[dict] = []
    spec = RunSpec(data=f"folder:{root}", data_dir=str(cache), model="resnet20", steps=3, batch_size=8,
                   device="cpu", test=False, num_threads=1, bf16=False).validate()  # fmt: skip
    end = train(spec, on_event=events.append)
    assert end["outcome"] == "finished"
    assert events[0]["type"] == "start" and events[0]["image_size"] == 64

    with pytest.warns(DataWarning) as rec:
        small = load_dataset(f"folder:{root}", data_dir=cache, image_size=32)
    assert small.train.x.shape[1:] == (3, 32, 32)
    (msg,) = [str(w.message) for w in rec if "resized" in str(w.message)]
    assert msg.startswith(f"resized {36 + 9} image(s) in {root} that were not 32x32 to 32x32 (--image-size;")
    # both sizes stay cached side by side: asking for 64 again decodes nothing and warns nothing
    again = load_dataset(f"folder:{root}", data_dir=cache)
    assert torch.equal(again.train.x, ds.train.x)


def test_the_default_size_is_the_folders_most_common_and_says_how_others_were_resized(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 8, "b": 8}, (48, 48))
    _draw(root / "train" / "a" / "odd.png", (100, 30), 0)
    with pytest.warns(DataWarning) as rec:
        ds = load_dataset(f"folder:{root}", data_dir=tmp_path / "cache")
    assert ds.train.x.shape[1:] == (3, 48, 48)
    (msg,) = [str(w.message) for w in rec if "resized" in str(w.message)]
    assert "to 48x48 (the folder's most common size; --image-size N sets another; stretched" in msg
    assert f"most are 48x48, but e.g. {root / 'train' / 'a' / 'odd.png'} is 100x30" in msg
    assert common_side({(500, 375): 3, (32, 32): 2}) == 375  # not square: its shorter side
    assert common_side({(64, 64): 2, (32, 32): 2}) == 32  # a tie: the smaller, cheaper size
    assert common_side({}) == 32


def test_a_single_root_of_class_folders_gets_a_seeded_test_split(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for k, (cls, n) in enumerate({"cat": 10, "dog": 7, "owl": 1}.items()):
        for i in range(n):
            _draw(root / cls / f"{i:02d}.png", (40, 40), k)
    cache = tmp_path / "cache"
    with pytest.warns(DataWarning) as rec:
        ds = load_dataset(f"folder:{root}", data_dir=cache, val_fraction=0.2, seed=3)
    (note,) = [str(w.message) for w in rec if "no train/ and test/" in str(w.message)]
    assert f"its test split is {FOLDER_TEST_FRACTION:.0%} of each class's images (3 of 18)" in note
    assert "the same for every run" in note and "PATH/train/<class>" in note
    assert ds.classes == ["cat", "dog", "owl"] and ds.train.x.shape[1:] == (3, 40, 40)
    assert torch.bincount(ds.test.y, minlength=3).tolist() == [2, 1, 0]  # 20%, at least one, never all
    assert [folder_test_count(n) for n in (1, 2, 7, 10, 100)] == [0, 1, 1, 2, 20]
    assert len(ds.train.y) + len(ds.val.y) == 15
    assert estimate_train_size(f"folder:{root}", 0.2) == 15 - round(15 * 0.2)  # the UI's count agrees

    # The test split is the same whatever the run's seed, and after a class is added.
    other = load_dataset(f"folder:{root}", data_dir=cache, val_fraction=0.2, seed=9)
    assert torch.equal(other.test.x, ds.test.x)
    for i in range(5):
        _draw(root / "bee" / f"{i}.png", (40, 40), 3)
    grown = load_dataset(f"folder:{root}", data_dir=cache)
    cat_dog = (grown.test.y == 1) | (grown.test.y == 2)  # classes sort bee, cat, dog, owl now
    assert torch.equal(grown.test.x[cat_dog], ds.test.x)


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (["test/a/1.png", "test/b/1.png"], "has no train/ directory"),
        (["a/1.png", "val/1.png"], "has no train/ directory"),
        (["1.png"], "has no train/ directory"),
        (["a/1.png", "a/2.png"], "only one class"),
    ],
)
def test_folders_that_are_neither_layout_name_both(tmp_path: Path, files: list[str], says: str) -> None:
    root = tmp_path / "d"
    for rel in files:
        _draw(root / rel, (32, 32), 0)
    with pytest.raises(UserError, match=says) as err:
        load_dataset(f"folder:{root}", data_dir=tmp_path / "cache")
    assert str(root) in str(err.value)


def test_image_size_is_checked_before_anything_runs(tmp_path: Path) -> None:
    from tuneassist.spec import RunSpec

    with pytest.raises(UserError, match="cifar10 is 32x32; the image size applies to folder:PATH data"):
        RunSpec(data="cifar10", image_size=64).validate()
    with pytest.raises(UserError, match="from 8 to 1024"):
        RunSpec(data="folder:/x", image_size=4096).validate()
    RunSpec(data="cifar10", image_size=32).validate()  # what it is anyway
    out = subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", "train", "--data", "synthetic", "--image-size", "64"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "synthetic is 32x32; the image size applies to folder:PATH data" in out.stderr


def test_train_prints_the_size_it_trains_at(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": 6, "b": 6}, (56, 56))
    out = subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", "train", "--data", f"folder:{root}", "--data-dir",
         str(tmp_path / "c"), "--steps", "2", "--batch-size", "4", "--device", "cpu", "--threads", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 classes, 56x56 images, on cpu" in out.stderr


def test_the_memory_probe_sizes_its_batches_at_the_folders_side(tmp_path: Path) -> None:
    """The TBS probe runs before any run decodes the folder: it reads the side from the files' headers,
    so a 64x64 folder's batch is measured at 64x64 (4x the memory of 32x32), its data held at that size."""
    from tuneassist.engine.probe import data_facts, data_side

    big = _folder(tmp_path / "big", {"a": 5, "b": 5}, (64, 64))
    single = tmp_path / "single"
    for k, cls in enumerate(("x", "y")):
        for i in range(4):
            _draw(single / cls / f"{i}.png", (24, 24), k)
    assert folder_side(big) == 64 and data_side(f"folder:{big}") == 64
    assert folder_side(single) == 24 and data_facts(f"folder:{single}") == (2, 8)
    assert data_side("cifar10") == 32 and data_side(None) == 32
    assert folder_side(tmp_path / "missing") is None  # the run, not the launcher, says what is wrong


@pytest.mark.parametrize("model", ["simple3", "resnet20"])
def test_gpu_packing_plans_for_the_pixels_a_folder_run_trains_at(model: str) -> None:
    """The per-image memory table is measured at 32x32; a 64x64 run keeps about 4x the activations
    (measured here), and the packer's plan for it grows the same way."""
    from tuneassist.engine.memory import saved_mib_per_image
    from tuneassist.runs.packing import RUN_BASE_MIB, need_mib

    at32, at64 = saved_mib_per_image(model, side=32), saved_mib_per_image(model, side=64)
    assert at64 / at32 == pytest.approx(4.0, rel=0.1)
    spec = {"model": model, "batch_size": 128, "device": "cuda"}
    plan32, plan64 = need_mib(spec), need_mib({**spec, "image_size": 64})
    assert plan32 is not None and plan64 is not None
    assert (plan64 - RUN_BASE_MIB) == pytest.approx(4 * (plan32 - RUN_BASE_MIB))


def test_the_launcher_records_the_side_a_folder_run_decodes_at(tmp_path: Path) -> None:
    from tuneassist.runs.launch import launch_run
    from tuneassist.runs.store import Store
    from tuneassist.spec import RunSpec

    root = _folder(tmp_path / "imgs", {"a": 4, "b": 4}, (48, 48))
    store = Store(tmp_path / "ws")
    spec = RunSpec(data=f"folder:{root}", steps=1, batch_size=4, device="cpu", test=False)
    rid = launch_run(store, spec)
    assert store.get_run(rid).spec_data["image_size"] == 48
    from tuneassist.runs.launch import cancel_run

    cancel_run(store, rid, wait=60)
