"""The memory probe: the OOM search (through the fake-OOM hook on the CPU), its clean-up, the CPU RAM
bound, the subprocess entry and the torch-free client."""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

from tuneassist.engine import probe, probe_ram, probe_search
from tuneassist.engine.device import FAKE_OOM_ENV
from tuneassist.engine.models import build_model
from tuneassist.engine.probe import ProbeResult, data_facts, probe_max_batch
from tuneassist.engine.probe_result import round_batch
from tuneassist.engine.probe_search import search_largest
from tuneassist.errors import UserError
from tuneassist.hardware import ram_info
from tuneassist.runs import probe_client
from tuneassist.runs.probe_client import probe_in_subprocess

torch.set_num_threads(1)
MiB = 1024**2


# -- the search itself -------------------------------------------------------------------------


@pytest.mark.parametrize("start", [1, 7, 64])
@pytest.mark.parametrize("limit", [1, 100, 4096])
def test_search_finds_the_exact_largest_fit_with_few_tries(start: int, limit: int) -> None:
    for n in [1, 2, 3, 5, 63, 64, 65, 99, 100, 101, 777, 4095, 4096, 5000]:
        calls: list[int] = []

        def fits(b: int, n: int = n, calls: list[int] = calls) -> bool:
            calls.append(b)
            return b <= n

        largest, first_fail = search_largest(fits, start, limit)
        assert largest == min(n, limit), (n, start, limit, calls)
        assert first_fail == (None if n >= limit else n + 1), (n, start, limit, calls)
        assert all(1 <= b <= limit for b in calls)
        assert len(calls) <= 2 * 13 + 2, calls  # doubling + bisection: logarithmic


def test_search_reports_zero_when_nothing_fits() -> None:
    assert search_largest(lambda b: False, 64, 4096) == (0, 1)


def test_round_batch_is_a_multiple_of_8_below_the_value() -> None:
    assert [round_batch(x) for x in (0.5, 1, 7.9, 8, 15.99, 90, 3686.4)] == [1, 1, 7, 8, 8, 88, 3680]


# -- the OOM back-off on the CPU through the fake-OOM hook ----------------------------------------


def test_fake_oom_search_finds_n_and_cleans_up_after_every_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 20
    monkeypatch.setenv(FAKE_OOM_ENV, str(n))
    checked: list[int] = []
    alive: list[weakref.ref[torch.Tensor]] = []  # the last batch's input and output
    real_fits = probe_search._Stepper.fits

    def watch(module: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        alive[:] = [weakref.ref(args[0]), weakref.ref(out)]

    def checking_fits(self: probe_search._Stepper, b: int) -> bool:
        if not self.tries:
            self.model.register_forward_hook(watch)
        ok = real_fits(self, b)
        if not ok:
            # After the back-off nothing of the failed batch may survive, and no gradients either.
            assert self.releases == sum(1 for _, fit in self.tries if not fit)
            assert len(alive) == 2 and all(r() is None for r in alive), f"batch {b} leaked"
            assert all(p.grad is None for p in self.model.parameters())
            checked.append(b)
        return ok

    monkeypatch.setattr(probe_search._Stepper, "fits", checking_fits)
    res = probe_max_batch("simple3", 10, device="cpu", start=4, limit=64, safety=0.9)
    assert res.method == "cuda-oom-search" and res.simulated
    assert res.largest_fit == n and res.first_oom == n + 1
    assert res.max_batch == 16  # 0.9 x 20 = 18, rounded down to a multiple of 8
    assert res.tries == [[4, 1], [8, 1], [16, 1], [32, 0], [24, 0], [20, 1], [22, 0], [21, 0]]
    assert checked == [32, 24, 22, 21]
    assert "fit at batch 20 and ran out of memory at 21" in res.explanation
    assert "simulated" in res.explanation


def test_leak_check_catches_a_kept_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weakref check above is not vacuous: an exception kept alive holds the failed batch."""
    kept: list[BaseException] = []
    x_ref: list[weakref.ref[torch.Tensor]] = []

    def step() -> None:
        x = torch.randn(64, 3, 8, 8)
        x_ref.append(weakref.ref(x))
        raise torch.cuda.OutOfMemoryError("simulated")

    try:
        step()
    except torch.cuda.OutOfMemoryError as exc:
        kept.append(exc)
    gc.collect()
    assert x_ref[0]() is not None  # the traceback's frame still holds x
    kept.clear()
    gc.collect()
    assert x_ref[0]() is None


def test_fake_oom_when_start_is_too_large_halves_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "5")
    res = probe_max_batch("simple3", 10, device="cpu", start=16, limit=4096)
    assert res.tries == [[16, 0], [8, 0], [4, 1], [6, 0], [5, 1]]
    assert (res.largest_fit, res.first_oom, res.max_batch) == (5, 6, 4)  # 0.9 x 5 = 4.5 -> 4


def test_no_oom_up_to_the_limit_caps_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "100000")
    res = probe_max_batch("simple3", 10, device="cpu", start=32, limit=100)
    assert [b for b, _ in res.tries] == [32, 64, 100]
    assert res.first_oom is None and res.largest_fit == 100 and res.max_batch == 96
    assert "limit 100" in res.explanation


def test_nothing_fits_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "0")
    with pytest.raises(UserError, match="even at batch 1"):
        probe_max_batch("simple3", 10, device="cpu", start=4, limit=64)


def test_bad_hook_value_and_bad_arguments_are_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "lots")
    with pytest.raises(UserError, match=FAKE_OOM_ENV):
        probe_max_batch("simple3", device="cpu")
    monkeypatch.delenv(FAKE_OOM_ENV)
    with pytest.raises(UserError, match="safety"):
        probe_max_batch("simple3", device="cpu", safety=1.5)
    with pytest.raises(UserError, match="unknown model"):
        probe_max_batch("nonet", device="cpu")


def test_errors_other_than_oom_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "50")

    def broken(self: probe_search._Stepper, b: int) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(probe_search._Stepper, "_step", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        probe_max_batch("simple3", device="cpu", start=8, limit=64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_oom_search_frees_everything() -> None:
    dev = torch.device("cuda")
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(dev)
    torch.cuda.set_per_process_memory_fraction(0.05, dev)  # a few GiB: an OOM within seconds
    try:
        res = probe_max_batch("resnet20", 10, device="cuda", start=256, limit=1 << 16)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
    assert res.method == "cuda-oom-search" and not res.simulated
    assert res.first_oom is not None and res.first_oom == res.largest_fit + 1
    assert res.max_batch <= 0.9 * res.largest_fit and res.max_batch % 8 == 0
    assert res.bytes_per_sample and res.bytes_per_sample > 0
    assert torch.cuda.memory_allocated(dev) == before
    x = torch.randn(res.max_batch, 3, 32, 32, device=dev)  # the device is still usable
    assert torch.isfinite(x.sum())


# -- the CPU RAM bound --------------------------------------------------------------------------


def test_ram_bound_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed, per = 900 * MiB, 2 * MiB
    state = 10 * MiB  # the optimiser's momentum buffers, added by size
    monkeypatch.setattr(
        probe_ram, "_measure_peaks", lambda m, c, s, bs, cl: ({b: fixed + per * b for b in bs}, state)
    )
    monkeypatch.setattr(probe_ram, "ram_info", lambda: (16 * 1024 * MiB, 4 * 1024 * MiB, "test"))
    res = probe_max_batch("simple3", device="cpu", safety=0.9, data_bytes=100 * MiB)
    loop = probe_ram.RUN_OVERHEAD_BYTES / MiB
    expect = (0.9 * 4096 - 100 - 900 - 10 - loop) / 2  # MiB usable / MiB per sample
    assert res.method == "cpu-ram-bound" and res.device == "cpu"
    assert res.bytes_per_sample == pytest.approx(per) and res.fixed_bytes == pytest.approx(
        fixed + state + loop * MiB
    )
    assert res.largest_fit == int(expect) and res.max_batch == int(expect) // 8 * 8
    assert res.available_memory == 4 * 1024 * MiB and res.total_memory == 16 * 1024 * MiB
    assert "2.00 MiB per sample" in res.explanation and str(int(expect)) in res.explanation
    # Plenty of RAM: capped at the limit.
    monkeypatch.setattr(probe_ram, "ram_info", lambda: (1 << 50, 1 << 45, "test"))
    assert probe_max_batch("simple3", device="cpu", limit=4096).max_batch == 4096
    # Too little: one clear error.
    monkeypatch.setattr(probe_ram, "ram_info", lambda: (1 << 30, 800 * MiB, "test"))
    with pytest.raises(UserError, match="not enough free RAM"):
        probe_max_batch("simple3", device="cpu")


def test_cpu_peak_measurement_is_real() -> None:
    """A separate process, one training step per batch: the peak grows linearly, by a plausible amount."""
    peaks, state = probe_ram._measure_peaks("simple3", 10, 32, [8, 72, 136])
    assert state == 4 * sum(p.numel() for p in build_model("simple3", 10).parameters())
    slope1 = (peaks[72] - peaks[8]) / 64
    slope2 = (peaks[136] - peaks[72]) / 64
    # simple3 keeps roughly 0.3-0.6 MiB of fp32 activations per 32x32 image for backward, and the
    # peak grows linearly with the batch (measured: about 0.52 MiB per image).
    assert 0.2 * MiB < slope1 < 1.5 * MiB, slope1 / MiB
    assert slope2 == pytest.approx(slope1, rel=0.25)
    assert peaks[8] > 100 * MiB  # torch itself is in the measured process


def test_ram_info_is_sane() -> None:
    total, avail, src = ram_info()
    assert 0 < avail <= total and src


# -- data facts, the module entry and the client -----------------------------------------------


def test_data_facts(tmp_path: Path) -> None:
    assert data_facts("synthetic:2000") == (10, 2400)
    assert data_facts("cifar100") == (100, 60000)
    for split, cls, k in (("train", "a", 3), ("train", "b", 2), ("test", "a", 1)):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(k):
            (tmp_path / split / cls / f"{i}.png").write_bytes(b"x")
    assert data_facts(f"folder:{tmp_path}") == (2, 6)
    with pytest.raises(UserError, match="train/"):
        data_facts(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(UserError, match="unknown data set"):
        data_facts("imagenet")


def test_module_entry_prints_json_and_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "12")
    argv = [
        "--model",
        "simple3",
        "--data",
        "synthetic:100",
        "--device",
        "cpu",
        "--start",
        "4",
        "--limit",
        "64",
    ]
    rc = probe.main([*argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["max_batch"] == 8 and out["largest_fit"] == 12
    assert out["data_bytes"] == 120 * 3 * 32 * 32
    assert ProbeResult(**out).max_batch == 8
    assert probe.main(argv) == 0
    assert capsys.readouterr().out.startswith("max per-device batch: 8\n")
    assert probe.main(["--model", "nonet", "--device", "cpu", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nonet'") and "Traceback" not in err


@pytest.mark.slow  # a fresh process importing torch and torch._dynamo: ~10 s on the shared 2-core box
def test_client_runs_the_probe_in_a_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_OOM_ENV, "12")  # inherited by the subprocess: a quick, known answer
    res = probe_in_subprocess("simple3", "synthetic:100", device="cpu", timeout=120)
    assert res is not None
    assert res["max_batch"] == 8 and res["largest_fit"] == 12
    assert res["method"] == "cuda-oom-search" and res["simulated"]
    with pytest.raises(AssertionError):  # and a failure inside it comes back as None
        assert probe_in_subprocess("no_such_module_xyz:build", "synthetic:100", device="cpu") is not None


def _stand_in(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """Replace the probe's command by a tiny Python program (the client's parsing, without torch)."""
    monkeypatch.setattr(
        probe_client, "probe_command", lambda m, d, dev, *consent: [sys.executable, "-c", code]
    )


def test_client_parses_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    good = {"max_batch": 96, "device": "cuda:0", "method": "cuda-oom-search", "explanation": "x"}
    _stand_in(monkeypatch, f"print('noise'); print({json.dumps(json.dumps(good))})")
    assert probe_in_subprocess("simple3", "synthetic") == good


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import sys; print('error: no CUDA here', file=sys.stderr); sys.exit(2)", "failed: no CUDA here"),
        ("print('not json')", "printed no JSON"),
        ('print(\'{"max_batch": 0, "device": 1, "method": 1, "explanation": 1}\')', "unusable"),
        ("print('{\"max_batch\": 8}')", "incomplete"),
        ("import time; time.sleep(30)", "within"),
    ],
)
def test_client_returns_none_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: str, reason: str
) -> None:
    _stand_in(monkeypatch, code)
    with caplog.at_level(logging.WARNING, logger="tuneassist.probe"):
        timeout = 0.5 if "sleep" in code else 20
        assert probe_in_subprocess("simple3", "synthetic", timeout=timeout) is None
    assert reason in caplog.text


def test_client_checks_names_before_starting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _stand_in(monkeypatch, "raise SystemExit('must not run')")
    with caplog.at_level(logging.WARNING, logger="tuneassist.probe"):
        assert probe_in_subprocess("nonet", "synthetic") is None
    assert "unknown model 'nonet'" in caplog.text


def test_client_module_does_not_import_torch() -> None:
    code = "import sys, tuneassist.runs.probe_client; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
