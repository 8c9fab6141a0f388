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


# -- a GPU the driver shows but torch cannot use --------------------------------------------------------

SMI_HEADER = (
    "+-----------------------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n"
)
H200 = GpuState(0, "NVIDIA H200", 0, 143771 * 1024**2, 0)


def test_driver_versions_from_the_nvidia_smi_header() -> None:
    assert hardware.parse_driver_header(SMI_HEADER) == ("550.54.15", "12.4")
    assert hardware.parse_driver_header("no driver here") == (None, None)


def test_cuda_build_problem_names_both_versions_and_the_fix() -> None:
    msg = hardware.cuda_build_problem("2.14.1+cu130", "13.0", [H200], ("550.54.15", "12.4"), env={})
    assert msg is not None and "\n" not in msg
    for part in (
        "1 GPU (NVIDIA H200, driver 550.54.15, CUDA 12.4)",
        "torch 2.14.1+cu130 (built for CUDA 13.0)",
        "install the torch build for CUDA 12.4",
        "--device cpu",
    ):
        assert part in msg, msg
    cpu_build = hardware.cuda_build_problem("2.14.1+cpu", None, [H200, H200], (None, None), env={})
    assert cpu_build and "2 GPUs" in cpu_build and "a CPU-only build" in cpu_build
    assert hardware.cuda_build_problem("2.14.1", "13.0", [], ("550", "12.4"), env={}) is None  # no GPU
    for hidden in ("", "-1"):  # the user hid the GPUs on purpose: the CPU is what they asked for
        assert hardware.cuda_build_problem("2.14.1", None, [H200], ("550", "12.4"),
                                           env={"CUDA_VISIBLE_DEVICES": hidden}) is None  # fmt: skip


def test_device_auto_stops_when_the_driver_shows_a_gpu_torch_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train --device auto` with a driver that lists a GPU and a torch without working CUDA: exit 2 and
    one line naming both, instead of quietly training on the CPU."""
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this torch can use a GPU here; the mismatch cannot be staged")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    rows = SMI_OUTPUT.splitlines()[0]
    exe.write_text(
        f'#!/bin/sh\ncase "$*" in\n  *query-gpu*) echo "{rows}" ;;\n  -L) echo "GPU 0: NVIDIA H200" ;;\n'
        f"  *) cat <<'END'\n{SMI_HEADER}END\n;;\nesac\n"
    )
    exe.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    r = subprocess.run(
        [sys.executable, "-m", "tuneassist", "train", "--data", "synthetic:64", "--epochs", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device auto: the NVIDIA driver shows 1 GPU"), (
        r.stderr
    )
    assert "driver 550.54.15, CUDA 12.4" in lines[0] and f"torch {torch.__version__}" in lines[0]
    assert "--device cpu" in lines[0]
