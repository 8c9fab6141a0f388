"""Packing runs onto GPUs by memory, per GPU, with per-image figures that are re-measured here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneassist.engine.memory import saved_mib_per_image
from tuneassist.runs import launch
from tuneassist.runs.packing import (
    PACK_MAX,
    PEAK_FACTOR,
    RUN_BASE_MIB,
    SAVED_MIB_PER_IMAGE,
    count_limit,
    fits_by_memory,
    need_mib,
)
from tuneassist.runs.store import Store

H100 = 81559  # MiB, as nvidia-smi reports an 80 GB H100


def _spec(model: str = "resnet20", batch_size: int = 128, **kw: object) -> dict:
    return {"model": model, "batch_size": batch_size, "device": "cuda", **kw}


@pytest.mark.parametrize("model", sorted(SAVED_MIB_PER_IMAGE))
def test_the_table_is_what_the_models_keep_for_backward(model: str) -> None:
    bf16, fp32 = SAVED_MIB_PER_IMAGE[model]
    assert saved_mib_per_image(model, bf16=True) == pytest.approx(bf16, rel=0.02)
    assert saved_mib_per_image(model, bf16=False, channels_last=False) == pytest.approx(fp32, rel=0.02)


def test_saved_memory_grows_with_depth_and_halves_in_bf16() -> None:
    resnets = [SAVED_MIB_PER_IMAGE[f"resnet{d}"] for d in (20, 32, 56, 110)]
    assert [r[0] for r in resnets] == sorted(r[0] for r in resnets)
    for bf16, fp32 in resnets:
        assert 0.45 < bf16 / fp32 < 0.65  # bf16 activations, fp32 BatchNorm statistics


def test_need_is_per_device_batch_times_the_measured_figure() -> None:
    assert need_mib(_spec("resnet56", 512)) == RUN_BASE_MIB + PEAK_FACTOR * 2.244 * 512
    assert need_mib(_spec("resnet56", 512, bf16=False)) == RUN_BASE_MIB + PEAK_FACTOR * 4.078 * 512
    assert need_mib(_spec("mynets:build")) is None  # your own model: size unknown
    assert need_mib(_spec(devices=2)) is None  # a multi-GPU run has its GPUs alone


def test_fits_per_gpu_by_memory() -> None:
    small = _spec("resnet20", 128)
    assert fits_by_memory("cuda:0", [], _spec("mynets:build"), H100)  # alone: always
    assert fits_by_memory("cuda:0", [small] * (PACK_MAX - 1), small, H100)
    assert not fits_by_memory("cuda:0", [small] * PACK_MAX, small, H100)
    assert not fits_by_memory("cpu", [small], small, 0)  # the CPU's cores: one run at a time
    assert not fits_by_memory("cuda:0", [small], small, 0)  # memory unknown: never pack
    assert not fits_by_memory("cuda:0", [_spec("mynets:build")], small, H100)
    assert not fits_by_memory("cuda:0", [small], _spec(devices=2), H100)
    # 24 GiB: two DenseNet-40 at 512 (2 GiB + 2 x 9.3 MiB x 512 each) do not fit, one beside a small run does.
    big = _spec("densenet40", 512)
    assert not fits_by_memory("cuda:0", [big], big, 24576)
    assert fits_by_memory("cuda:0", [big], small, 24576)
    assert count_limit(2)("cpu", [small], small) and not count_limit(2)("cpu", [small, small], small)


def test_a_big_run_on_one_gpu_leaves_the_other_gpu_to_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(launch.GPU_ENV, "0,1")
    monkeypatch.delenv("TUNEASSIST_MAX_PER_DEVICE", raising=False)
    monkeypatch.setattr(launch, "_gpu_mem_cache", 16384)
    with Store(tmp_path / "ws") as store:
        store.add_run(_spec("mynets:build", allow_import=True))
        for _ in range(4):
            store.add_run(_spec("resnet20", 256))
        claims = store.claim_queued(launch.slots_for, launch.placement(store))
        by_slot = sorted(slots[0] for _, slots, _ in claims)
        # The custom model has cuda:0 alone; 80% of 16 GiB holds 4 x (2 GiB + 2 x 0.79 MiB x 256) on cuda:1.
        assert by_slot == ["cuda:0"] + ["cuda:1"] * 4
        # A batch-size sweep's big candidate waits for room instead of joining the small ones.
        store.add_run(_spec("densenet40", 1024))
        assert store.claim_queued(launch.slots_for, launch.placement(store)) == []
