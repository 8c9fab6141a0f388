"""Data sources: synthetic, CIFAR pickles (written here, never downloaded), image folders, splits."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tuneassist.engine import cifar, folder, synthetic
from tuneassist.engine.data import (
    DataWarning,
    Split,
    channel_stats,
    load_dataset,
    parse_spec,
    split_validation,
)
from tuneassist.errors import UserError

# --- synthetic ---------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_well_formed() -> None:
    classes, tx, ty, sx, sy = synthetic.generate(200, 50)
    again = synthetic.generate(200, 50)
    assert torch.equal(tx, again[1]) and torch.equal(ty, again[2])
    assert torch.equal(sx, again[3]) and torch.equal(sy, again[4])
    assert len(classes) == 10 and len(set(classes)) == 10
    assert tx.shape == (200, 3, 32, 32) and tx.dtype == torch.uint8
    assert sx.shape == (50, 3, 32, 32) and sy.dtype == torch.int64
    assert torch.bincount(ty, minlength=10).tolist() == [20] * 10
    assert torch.bincount(sy, minlength=10).tolist() == [5] * 10
    # Train and test are different images; another seed gives another data set.
    assert not torch.equal(tx[:50], sx)
    assert not torch.equal(synthetic.generate(200, 50, seed=1)[1], tx)
    assert synthetic.default_test_size(10_000) == 2_000


def test_synthetic_classes_are_not_separable_by_colour() -> None:
    _, x, y, _, _ = synthetic.generate(2000, 10)
    mean_rgb = x.to(torch.float32).mean(dim=(2, 3))  # per-image mean colour
    per_class = torch.stack([mean_rgb[y == k].mean(0) for k in range(10)])
    # Every class has nearly the same average colour: colour alone says little about the class.
    assert (per_class.max(0).values - per_class.min(0).values).max() < 20
    # ...and images vary a lot within a class (random colours, positions, clutter).
    assert mean_rgb[y == 0].std(0).min() > 30


def test_load_synthetic_spec_size_and_seeded_split() -> None:
    d = load_dataset("synthetic:200", seed=0)
    assert d.name == "synthetic:200" and d.num_classes == 10
    assert (len(d.train.y), len(d.val.y), len(d.test.y)) == (180, 20, 40)
    assert d.train.x.dtype == torch.uint8 and d.train.x.shape[1:] == (3, 32, 32)
    assert len(d.mean) == 3 and len(d.std) == 3
    assert all(0.3 < m < 0.7 for m in d.mean) and all(0.15 < s < 0.45 for s in d.std)
    same = load_dataset("synthetic:200", seed=0)
    assert torch.equal(same.val.x, d.val.x) and torch.equal(same.train.y, d.train.y)
    other = load_dataset("synthetic:200", seed=1)
    assert not torch.equal(other.val.x, d.val.x)
    assert torch.equal(other.test.x, d.test.x)  # the seed only moves the validation split
    assert len(load_dataset("synthetic:200", val_fraction=0.25).val.y) == 50


def test_split_validation_partitions_the_train_split() -> None:
    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 2, 2).contiguous()
    y = torch.arange(100)
    train, val = split_validation(Split(x, y), 0.1, seed=7)
    (tx, ty), (vx, vy) = (train.x, train.y), (val.x, val.y)
    assert len(vy) == 10 and len(ty) == 90 and (len(train), len(val)) == (90, 10)
    assert sorted(ty.tolist() + vy.tolist()) == list(range(100))
    assert torch.equal(tx[:, 0, 0, 0].long(), ty) and torch.equal(vx[:, 0, 0, 0].long(), vy)
    assert ty.tolist() == sorted(ty.tolist())  # relative order kept
    with pytest.raises(UserError, match="validation fraction"):
        split_validation(Split(x, y), 1.0, seed=0)
    train, val = split_validation(Split(x, y), 0.0, seed=0)
    assert len(val.y) == 0 and len(train.y) == 100


def test_channel_stats_match_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    x[:, 2] //= 4  # different statistics per channel
    mean, std = channel_stats(x)
    f = x.to(torch.float64) / 255
    assert np.allclose(mean, f.mean(dim=(0, 2, 3)).tolist(), atol=1e-9)
    assert np.allclose(std, f.std(dim=(0, 2, 3), correction=0).tolist(), atol=1e-9)
    sub_mean, sub_std = channel_stats(x, max_images=10)  # strided subset: close, not exact
    assert np.allclose(sub_mean, mean, atol=0.05) and np.allclose(sub_std, std, atol=0.05)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("mnist", "unknown data set 'mnist'"),
        ("synthetic:abc", "synthetic size 'abc'"),
        ("synthetic:5", "synthetic size '5'"),
        ("synthetic:", "missing a train size"),
        ("folder:", "missing a path"),
    ],
)
def test_bad_specs_are_user_errors(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        load_dataset(spec)


def test_parse_spec() -> None:
    assert parse_spec("cifar10") == ("cifar10", None)
    assert parse_spec("folder:/a:b") == ("folder", "/a:b")
    assert parse_spec("synthetic:300") == ("synthetic", "300")


# --- CIFAR -------------------------------------------------------------------------------------------


def _cifar_rows(n: int, offset: int) -> np.ndarray:
    """n rows of 3072 bytes, each image's pixels a function of its index (to check the layout)."""
    base = np.arange(3072, dtype=np.int64)[None, :] + 7 * (np.arange(n)[:, None] + offset)
    return (base % 251).astype(np.uint8)


def _write_cifar10(root: Path, per_batch: int = 4, n_test: int = 3) -> None:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    for i in range(5):
        entry = {
            b"batch_label": f"training batch {i + 1} of 5".encode(),
            b"labels": [(i * per_batch + j) % 10 for j in range(per_batch)],
            b"data": _cifar_rows(per_batch, i * per_batch),
            b"filenames": [b"x.png"] * per_batch,
        }
        (d / f"data_batch_{i + 1}").write_bytes(pickle.dumps(entry))
    test = {b"labels": [9, 0, 5][:n_test], b"data": _cifar_rows(n_test, 1000)}
    (d / "test_batch").write_bytes(pickle.dumps(test))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}))


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(req, *a, **k):
        calls.append(getattr(req, "full_url", str(req)))
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def test_cifar10_pickles_load_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar10(tmp_path)
    calls = _no_network(monkeypatch)
    d = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2, seed=0)
    assert calls == []
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck" and d.num_classes == 10
    assert (len(d.train.y), len(d.val.y), len(d.test.y)) == (16, 4, 3)
    assert d.test.y.tolist() == [9, 0, 5]
    # Layout: each row is R(1024) G(1024) B(1024) of a 32x32 image in row-major order.
    rows = _cifar_rows(3, 1000)
    assert np.array_equal(d.test.x[1, 1].numpy(), rows[1, 1024:2048].reshape(32, 32))
    assert np.array_equal(d.test.x[2, 2, 5].numpy(), rows[2, 2048 + 5 * 32 : 2048 + 6 * 32])
    _, tx, ty, _, _ = cifar.load_cifar("cifar10", tmp_path)
    assert ty.tolist() == [k % 10 for k in range(20)]
    assert np.array_equal(tx.reshape(20, -1).numpy(), _cifar_rows(20, 0))


def test_cifar100_with_str_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name, n in (("train", 30), ("test", 10)):
        entry = {
            "data": _cifar_rows(n, 0),
            "fine_labels": [k % 100 for k in range(n)],
            "coarse_labels": [0] * n,
        }
        (d / name).write_bytes(pickle.dumps(entry))
    (d / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    _no_network(monkeypatch)
    classes, tx, ty, sx, sy = cifar.load_cifar("cifar100", tmp_path)
    assert len(classes) == 100 and classes[3] == "c3"
    assert tx.shape == (30, 3, 32, 32) and sy.tolist() == list(range(10))


def test_cifar_offline_and_missing_says_where_to_put_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _no_network(monkeypatch)
    target = tmp_path / "cache"
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", data_dir=target)
    msg = str(err.value)
    assert calls, "a download should have been attempted (and refused by the test)"
    assert "cifar-10-python.tar.gz" in msg and str(target.resolve()) in msg
    assert "\n" not in msg
    with pytest.raises(UserError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", data_dir=target)


def test_cifar_corrupt_batch_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    _no_network(monkeypatch)
    with pytest.raises(UserError, match="unreadable.*fresh cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path)


# --- image folders -----------------------------------------------------------------------------------


def _rgb(seed: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _make_folder(root: Path, per_class: int = 3, test_dir: str = "test") -> dict[str, np.ndarray]:
    """Two classes of lossless PNGs; returns the pixel arrays by relative path."""
    pixels = {}
    for split, n in (("train", per_class), (test_dir, 2)):
        for ci, cls in enumerate(("cat", "dog")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = _rgb(100 * ci + 10 * i + (split != "train"))
                Image.fromarray(arr).save(d / f"{i}.png")
                pixels[f"{split}/{cls}/{i}.png"] = arr
    return pixels


def _nchw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1)


def test_folder_decodes_pixels_labels_and_classes(tmp_path: Path) -> None:
    pixels = _make_folder(tmp_path / "imgs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean folder raises no warning
        classes, tx, ty, sx, sy = folder.load_folder(tmp_path / "imgs", tmp_path / "cache")
    assert classes == ["cat", "dog"]
    assert tx.shape == (6, 3, 32, 32) and ty.tolist() == [0, 0, 0, 1, 1, 1]
    assert sy.tolist() == [0, 0, 1, 1]
    assert torch.equal(tx[4], _nchw(pixels["train/dog/1.png"]))
    assert torch.equal(sx[0], _nchw(pixels["test/cat/0.png"]))


def test_folder_converts_modes_resizes_and_skips_corrupt_files(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _make_folder(root)
    cat = root / "train" / "cat"
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(gray, mode="L").save(cat / "gray.png")
    rgba = np.dstack([_rgb(5), np.full((32, 32), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(cat / "rgba.png")
    pal = Image.fromarray(_rgb(6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(cat / "pal.png")
    Image.fromarray(_rgb(8, (48, 40))).save(cat / "big.jpg", quality=95)
    (cat / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = (root / "train" / "dog" / "0.png").read_bytes()
    (root / "train" / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(DataWarning) as rec:
        classes, tx, ty, sx, sy = folder.load_folder(root, tmp_path / "cache")
    messages = [str(w.message) for w in rec]
    skipped = [m for m in messages if m.startswith("skipped")]
    assert len(skipped) == 1 and "skipped 2 unreadable image file(s)" in skipped[0]
    assert str(cat / "broken.jpg") in skipped[0]  # the first bad file in sorted order is named
    assert any(m.startswith("resized 1 image(s)") for m in messages)
    names = sorted(["0.png", "1.png", "2.png", "big.jpg", "gray.png", "pal.png", "rgba.png"])
    assert ty.tolist() == [0] * len(names) + [1] * 3
    by_name = dict(zip(names, tx[: len(names)], strict=True))
    assert torch.equal(by_name["gray.png"], torch.from_numpy(gray).expand(3, 32, 32))
    assert torch.equal(by_name["rgba.png"], _nchw(rgba[:, :, :3]))  # alpha dropped
    assert by_name["pal.png"].shape == (3, 32, 32)
    # Loading again from the cache tells the same story.
    with pytest.warns(DataWarning) as rec_again:
        again = folder.load_folder(root, tmp_path / "cache")
    assert [str(w.message) for w in rec_again] == messages
    assert torch.equal(again[1], tx)
    # The resized JPEG is close to a plain resize of the original (JPEG is lossy; it is not exact).
    ref = np.asarray(
        Image.fromarray(_rgb(8, (48, 40))).resize((32, 32), Image.Resampling.BILINEAR), np.float32
    )
    assert np.abs(by_name["big.jpg"].permute(1, 2, 0).numpy().astype(np.float32) - ref).mean() < 40


def test_folder_pool_decoding_matches_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_folder(tmp_path / "imgs", per_class=300)
    serial = folder.load_folder(tmp_path / "imgs", tmp_path / "c1", processes=1)
    real_pool = folder._decode_in_pool
    pool_results: list[int] = []

    def recording(chunks, procs):
        out = real_pool(chunks, procs)
        pool_results.append(len(out) if out is not None else -1)
        return out

    monkeypatch.setattr(folder, "_decode_in_pool", recording)
    pooled = folder.load_folder(tmp_path / "imgs", tmp_path / "c2", processes=2, pool_min_files=1)
    assert pool_results == [3]  # 604 files in chunks of 256, decoded by the worker processes
    for a, b in zip(serial[1:], pooled[1:], strict=True):
        assert torch.equal(a, b)


def test_folder_pool_decoders_die_on_sigterm_in_a_worker_whose_handler_only_sets_a_flag() -> None:
    """The background worker's SIGTERM handler logs and asks the run to stop; forked decoders inherited
    it, so the pool's SIGTERM at its exit could leave one blocked on the log lock it was forked
    holding, and the worker waited on it for ever (a `tune` on a new image folder hung). Each decoder
    must take SIGTERM's default (die) and leave Ctrl-C to the parent."""
    code = """
import signal, sys
from tuneassist.engine import folder

def disposition(chunk):
    term, intr = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    return (term is signal.SIG_DFL, intr is signal.SIG_IGN)

folder._decode_chunk = disposition
signal.signal(signal.SIGTERM, lambda *_: None)   # as tuneassist.runs.worker: only sets a flag
print(folder._decode_in_pool([["a"], ["b"], ["c"]], 2))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.strip() == "[(True, True), (True, True), (True, True)]"


def test_folder_cache_is_reused_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    _make_folder(root)
    cache = tmp_path / "cache"
    first = folder.load_folder(root, cache)
    files = list((cache / "folders").glob("*.pt"))
    assert len(files) == 1

    real_decode = folder._decode_all
    decodes: list[int] = []

    def counting(paths, *a, **k):
        decodes.append(len(paths))
        return real_decode(paths, *a, **k)

    monkeypatch.setattr(folder, "_decode_all", counting)
    again = folder.load_folder(root, cache)
    assert decodes == []  # served from the cache
    assert all(torch.equal(a, b) for a, b in zip(first[1:], again[1:], strict=True))

    # Change one file's content (and mtime): the folder is decoded again and the stale cache dropped.
    changed = root / "train" / "dog" / "2.png"
    new = _rgb(999)
    Image.fromarray(new).save(changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = folder.load_folder(root, cache)
    assert decodes == [10]
    assert torch.equal(third[1][5], _nchw(new))
    assert [p.name for p in (cache / "folders").glob("*.pt")] != [files[0].name]
    assert len(list((cache / "folders").glob("*.pt"))) == 1

    # A new file is picked up too.
    Image.fromarray(_rgb(1234)).save(root / "train" / "cat" / "9.png")
    assert len(folder.load_folder(root, cache)[2]) == 7

    # A corrupt cache file is ignored and rewritten rather than crashing.
    cache_file = next((cache / "folders").glob("*.pt"))
    cache_file.write_bytes(b"garbage")
    assert len(folder.load_folder(root, cache)[2]) == 7


def test_folder_through_load_dataset_with_val_dir(tmp_path: Path) -> None:
    _make_folder(tmp_path / "imgs", per_class=10, test_dir="val")
    d = load_dataset(f"folder:{tmp_path / 'imgs'}", data_dir=tmp_path / "cache", val_fraction=0.1)
    assert d.classes == ["cat", "dog"] and d.num_classes == 2
    assert (len(d.train.y), len(d.val.y), len(d.test.y)) == (18, 2, 4)
    assert d.name == f"folder:{tmp_path / 'imgs'}"


def _mk(root: Path, files: list[str]) -> Path:
    for rel in files:
        p = root / rel
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(len(rel))).save(p)
    return root


@pytest.mark.parametrize(
    "files, match",
    [
        ([], "does not exist"),
        (["test/a/1.png", "test/b/1.png"], "has no train/ directory"),
        (["train/a/1.png", "train/b/1.png"], "has no test/ or val/ directory"),
        (["train/", "test/"], "has no class sub-directories"),
        (["train/a/1.png", "test/a/1.png"], "only one class"),
        (["train/a/1.png", "train/b/", "test/a/1.png", "test/b/1.png"], "class 'b' has no images"),
        (["train/a/1.png", "train/b/1.png", "test/a/1.png", "test/c/1.png"], "missing: b; extra: c"),
        (["train/a/1.png", "train/b/1.png", "test/a/", "test/b/"], "has no images"),
    ],
)
def test_folder_errors_name_the_folder_and_the_fix(tmp_path: Path, files: list[str], match: str) -> None:
    root = tmp_path / "data"
    if files:
        _mk(root, files)
    with pytest.raises(UserError, match=match) as err:
        load_dataset(f"folder:{root}", data_dir=tmp_path / "cache")
    assert str(tmp_path) in str(err.value)


def test_folder_class_with_only_corrupt_files_is_a_user_error(tmp_path: Path) -> None:
    root = _mk(tmp_path / "data", ["train/a/1.png", "test/a/1.png", "test/b/1.png"])
    (root / "train" / "b").mkdir()
    (root / "train" / "b" / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(DataWarning), pytest.raises(UserError, match="class 'b' has no readable images"):
        folder.load_folder(root, tmp_path / "cache")
