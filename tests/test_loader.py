"""DeviceLoader: augmentation keeps pixel content, normalisation, shuffling, batch shapes, eval order."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tuneassist.engine.data import channel_stats
from tuneassist.engine.loader import DeviceLoader, LoaderSettings
from tuneassist.errors import UserError

N, C, H, W = 64, 3, 32, 32


def _images(n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Never zero, so a padded (black) pixel can be told apart from image content.
    return torch.randint(1, 256, (n, C, H, W), generator=g, dtype=torch.uint8)


def _ids(n: int = N) -> torch.Tensor:
    """Labels that identify each sample, so batches can be traced back to their source image."""
    return torch.arange(n, dtype=torch.int64)


def _denorm(xb: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return torch.round((xb * s + m) * 255).to(torch.int64)


MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _all_crops(img: torch.Tensor, pad: int = 4) -> list[tuple[int, int, bool, torch.Tensor]]:
    padded = F.pad(img, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[:, dy : dy + H, dx : dx + W]
            out.append((dy, dx, False, win))
            out.append((dy, dx, True, win.flip(2)))
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_crop_and_flip_keep_pixel_content(channels_last: bool) -> None:
    x = _images()
    settings = LoaderSettings(32, "cpu", MEAN, STD, train=True, seed=3, channels_last=channels_last)
    loader = DeviceLoader(x, _ids(), settings)
    flips, offsets = set(), set()
    for xb, yb in loader:
        got = _denorm(xb, MEAN, STD)
        for img, k in zip(got, yb.tolist(), strict=True):
            matches = [
                (dy, dx, f) for dy, dx, f, win in _all_crops(x[k].to(torch.int64)) if torch.equal(win, img)
            ]
            assert matches, f"sample {k} is not a crop (or mirrored crop) of its zero-padded source"
            flips.add(matches[0][2])
            offsets.add(matches[0][:2])
    assert flips == {False, True}  # both flipped and unflipped samples occur
    assert len(offsets) > 20  # crops really are random, not one offset


def test_no_augment_returns_exact_images() -> None:
    x = _images()
    loader = DeviceLoader(x, _ids(), LoaderSettings(16, "cpu", MEAN, STD, train=True, augment=False))
    for xb, yb in loader:
        assert torch.equal(_denorm(xb, MEAN, STD), x[yb].to(torch.int64))


def test_normalised_batches_have_zero_mean_unit_std() -> None:
    # Non-uniform per-channel statistics, so a wrong mean/std order or scale would show.
    g = torch.Generator().manual_seed(1)
    base = torch.tensor([40.0, 120.0, 200.0]).view(1, 3, 1, 1)
    spread = torch.tensor([10.0, 30.0, 20.0]).view(1, 3, 1, 1)
    x = (base + spread * torch.randn(256, C, H, W, generator=g)).clamp(0, 255).round().to(torch.uint8)
    mean, std = channel_stats(x)
    for augment in (False, True):
        settings = LoaderSettings(256, "cpu", mean, std, train=True, augment=augment)
        loader = DeviceLoader(x, _ids(256), settings)
        (xb, _), *_ = list(loader)
        if augment:  # black padding pulls a few pixels far below the mean; the centre is all image
            xb = xb[:, :, 4:-4, 4:-4]
        m, s = xb.mean(dim=(0, 2, 3)), xb.std(dim=(0, 2, 3))
        assert torch.allclose(m, torch.zeros(3), atol=0.02), m
        assert torch.allclose(s, torch.ones(3), atol=0.02), s
    settings = LoaderSettings(100, "cpu", mean, std, train=False)
    xb = torch.cat([b for b, _ in DeviceLoader(x, _ids(256), settings)])
    assert torch.allclose(xb.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(xb.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_shuffle_is_a_permutation_and_deterministic_per_seed_and_epoch() -> None:
    x = _images()

    def order(seed: int, epoch: int) -> list[int]:
        loader = DeviceLoader(x, _ids(), LoaderSettings(16, "cpu", MEAN, STD, train=True, seed=seed))
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    o = order(0, 0)
    assert sorted(o) == list(range(N))  # 64 / 16: every sample exactly once
    assert o != list(range(N))
    assert order(0, 0) == o
    assert order(0, 1) != o
    assert order(1, 0) != o
    assert order(1, 0) != order(0, 1)  # seed and epoch do not just add up

    # Same seed and epoch: identical images too (same crops and flips).
    a = DeviceLoader(x, _ids(), LoaderSettings(16, "cpu", MEAN, STD, train=True, seed=5))
    b = DeviceLoader(x, _ids(), LoaderSettings(16, "cpu", MEAN, STD, train=True, seed=5))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_epochs_advance_and_resume_mid_epoch() -> None:
    x = _images()
    loader = DeviceLoader(x, _ids(), LoaderSettings(16, "cpu", MEAN, STD, train=True, seed=2))
    first = [y.clone() for _, y in loader]
    second = [y.clone() for _, y in loader]  # next iteration is the next epoch
    assert loader.epoch == 2
    assert torch.cat(first).tolist() != torch.cat(second).tolist()
    loader.set_epoch(1)
    assert all(torch.equal(a, b) for (_, a), b in zip(loader, second, strict=True))
    full = list(DeviceLoader(x, _ids(), LoaderSettings(16, "cpu", MEAN, STD, train=True, seed=2)))
    loader.set_epoch(0, start_batch=2)
    tail = list(loader)
    assert len(tail) == len(full) - 2
    for (xa, ya), (xb, yb) in zip(tail, full[2:], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_train_batches_have_fixed_shape_and_drop_the_partial_one() -> None:
    x = _images(50)
    loader = DeviceLoader(x, _ids(50), LoaderSettings(16, "cpu", MEAN, STD, train=True))
    assert len(loader) == 3
    batches = list(loader)
    assert len(batches) == 3
    for xb, yb in batches:
        assert xb.shape == (16, C, H, W) and xb.dtype == torch.float32
        assert yb.shape == (16,) and yb.dtype == torch.int64
    ids = torch.cat([y for _, y in batches])
    assert len(set(ids.tolist())) == 48


def test_eval_keeps_all_samples_in_order() -> None:
    x = _images(50)
    loader = DeviceLoader(x, _ids(50), LoaderSettings(16, "cpu", MEAN, STD, train=False))
    assert len(loader) == 4
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(50))
    xs = torch.cat([b for b, _ in batches])
    assert torch.equal(_denorm(xs, MEAN, STD), x.to(torch.int64))
    assert [y.tolist() for _, y in loader] == [y.tolist() for _, y in batches]  # no shuffling ever


def test_channels_last_gives_the_same_values_with_channels_last_strides() -> None:
    x = _images()
    for train in (True, False):
        settings = LoaderSettings(16, "cpu", MEAN, STD, train=train, seed=4)
        a = DeviceLoader(x, _ids(), settings)
        b = DeviceLoader(x, _ids(), replace(settings, channels_last=True))
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xb.is_contiguous(memory_format=torch.channels_last)
            assert xb.shape == xa.shape
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_ranks_get_disjoint_samples() -> None:
    x = _images()
    seen = []
    for rank in range(2):
        settings = LoaderSettings(8, "cpu", MEAN, STD, train=True, seed=1, rank=rank, world_size=2)
        loader = DeviceLoader(x, _ids(), settings)
        assert len(loader) == 4
        seen.append(set(torch.cat([y for _, y in loader]).tolist()))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == N


def test_batch_larger_than_split_is_a_user_error() -> None:
    with pytest.raises(UserError, match="batch size 128 is larger than the 64 training images"):
        DeviceLoader(_images(), _ids(), LoaderSettings(128, "cpu", MEAN, STD, train=True))
    # Evaluation keeps the partial batch, so a large eval batch is fine.
    assert len(DeviceLoader(_images(), _ids(), LoaderSettings(128, "cpu", MEAN, STD, train=False))) == 1


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"batch_size": 0}, UserError, "batch size 0 must be a positive integer"),
        ({"mean": (0.5,)}, ValueError, "mean/std need 3 values, got 1/3"),
        ({"rank": 2, "world_size": 2}, ValueError, "rank 2 outside world size 2"),
    ],
)
def test_settings_are_checked_when_a_loader_takes_them(change: dict, error: type, message: str) -> None:
    settings = replace(LoaderSettings(16, "cpu", MEAN, STD, train=True), **change)
    with pytest.raises(error, match=message):
        DeviceLoader(_images(), _ids(), settings)


def test_source_tensor_is_not_modified() -> None:
    x = _images()
    before = x.clone()
    for train in (True, False):
        for _ in DeviceLoader(x, _ids(), LoaderSettings(16, "cpu", MEAN, STD, train=train)):
            pass
    assert torch.equal(x, before)
