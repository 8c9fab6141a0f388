"""The devices panel: GPU memory and load read without torch (NVML or nvidia-smi), host RAM from /proc."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tuneassist import hardware
from tuneassist.hardware import (
    GIB,
    DeviceReport,
    GpuState,
    describe,
    host_memory,
    panel_lines,
    parse_nvidia_smi,
)

# What `nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu
# --format=csv,noheader,nounits` prints on a two-GPU box, one of them a MIG slice without utilisation.
SMI_OUTPUT = "0, NVIDIA H200, 12288, 143771, 87\n1, NVIDIA H200 MIG 1g.18gb, 0, 16384, [N/A]\n"


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, rc: int = 0) -> None:
    """Put an `nvidia-smi` first on PATH that prints `output`, as the driver's tool would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'END'\n{output}END\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(hardware, "_from_nvml", lambda: None)  # pynvml, if installed, sees the real box


def test_parse_nvidia_smi_rows() -> None:
    gpus = parse_nvidia_smi(SMI_OUTPUT + "garbage line\n2, X, notanumber, 1, 1\n")
    assert gpus == [
        GpuState(0, "NVIDIA H200", 12288 * 1024**2, 143771 * 1024**2, 87),
        GpuState(1, "NVIDIA H200 MIG 1g.18gb", 0, 16384 * 1024**2, None),
    ]


def test_read_devices_through_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, SMI_OUTPUT)
    rep = hardware.read_devices()
    assert rep.source == "nvidia-smi" and [g.index for g in rep.gpus] == [0, 1]
    lines = describe(rep)
    assert lines[0] == "GPU 0 NVIDIA H200: 12.0 / 140.4 GiB used, 87% busy"
    assert lines[1] == "GPU 1 NVIDIA H200 MIG 1g.18gb: 0.0 / 16.0 GiB used"


def test_failing_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA-SMI has failed\n", rc=9)
    rep = hardware.read_devices()
    assert rep.gpus == [] and "no NVIDIA driver" in rep.source
    assert describe(rep)[0].startswith("No GPU")


def test_host_memory_from_meminfo(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       25165824 kB\nMemFree:  100 kB\nMemAvailable:   20971520 kB\n")
    assert host_memory(f) == (4 * GIB, 24 * GIB)
    f.write_text("nonsense\n")
    assert host_memory(f) is None
    assert host_memory(tmp_path / "missing") is None


def test_panel_lines_fit_the_sidebar() -> None:
    gpu = GpuState(0, "NVIDIA H100 80GB HBM3 with a very long name", GIB, 80 * GIB, 5)
    rep = DeviceReport([gpu], "nvml", 1, GIB)
    lines = panel_lines(rep)
    assert lines[0].startswith("GPU 0 H100") and all(len(x) <= 28 for x in lines)
    assert lines[1] == "  1.0/80.0 GiB · 5%"
