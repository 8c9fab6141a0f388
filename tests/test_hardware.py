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
    cuda_visible,
    describe,
    host_memory,
    panel_lines,
    parse_nvidia_smi,
    process_alive,
    ram_info,
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
    no_cgroup = tmp_path / "no-cgroup"  # the test's own machine may run in a container with a limit
    f.write_text("MemTotal:       25165824 kB\nMemFree:  100 kB\nMemAvailable:   20971520 kB\n")
    assert host_memory(f, no_cgroup) == (4 * GIB, 24 * GIB)
    f.write_text("nonsense\n")
    assert host_memory(f, no_cgroup) is None
    assert host_memory(tmp_path / "missing", no_cgroup) is None


def _cgroup(tmp_path: Path, v2: bool, limit: int, usage: int) -> Path:
    cg = tmp_path / ("cg2" if v2 else "cg1")
    folder = cg if v2 else cg / "memory"
    folder.mkdir(parents=True)
    (folder / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(f"{limit}\n")
    (folder / ("memory.current" if v2 else "memory.usage_in_bytes")).write_text(f"{usage}\n")
    return cg


@pytest.mark.parametrize("v2", [True, False])
def test_host_ram_is_the_cgroups_when_its_limit_is_lower(tmp_path: Path, v2: bool) -> None:
    """A container's limit, not the machine's RAM: the panel and the probe read the same numbers."""
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       25165824 kB\nMemAvailable:   20971520 kB\n")  # 24 GiB, 20 free
    cg = _cgroup(tmp_path, v2, limit=8 * GIB, usage=5 * GIB)
    total, avail, src = ram_info(f, cg)
    assert (total, avail) == (8 * GIB, 3 * GIB) and "cgroup limit" in src
    assert host_memory(f, cg) == (5 * GIB, 8 * GIB)
    roomy = _cgroup(tmp_path / "roomy", v2, limit=64 * GIB, usage=GIB)  # above the machine: ignored
    assert ram_info(f, roomy) == (24 * GIB, 20 * GIB, f"MemAvailable in {f}")
    (tmp_path / "max").mkdir()
    (tmp_path / "max" / "memory.max").write_text("max\n")  # v2 without a limit
    (tmp_path / "max" / "memory.current").write_text("12345\n")
    assert host_memory(f, tmp_path / "max") == (4 * GIB, 24 * GIB)


def test_ram_info_without_meminfo_takes_half_the_physical_ram(tmp_path: Path) -> None:
    total, avail, src = ram_info(tmp_path / "missing", tmp_path / "no-cgroup")
    assert total > 0 and avail == total // 2 and "half the physical RAM" in src


def test_process_alive_tells_running_zombie_and_stopped_processes_apart() -> None:
    import signal
    import subprocess
    import sys
    import time

    assert process_alive(os.getpid()) and process_alive(os.getpid(), stopped_is_dead=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while process_alive(child.pid, stopped_is_dead=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_alive(child.pid) and not process_alive(child.pid, stopped_is_dead=True)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(child.pid) and time.monotonic() < deadline:  # a zombie until reaped
            time.sleep(0.05)
        assert not process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)  # reaped: gone


def test_cuda_visible_reads_the_variable_as_cuda_does() -> None:
    assert cuda_visible({}) is None
    assert cuda_visible({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert cuda_visible({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert cuda_visible({"CUDA_VISIBLE_DEVICES": " 2, 0 "}) == ["2", "0"]
    assert cuda_visible({"CUDA_VISIBLE_DEVICES": "1,-1,0"}) == ["1"]  # CUDA stops at the first invalid one
    assert cuda_visible({"CUDA_VISIBLE_DEVICES": "GPU-8f3c,1"}) == ["GPU-8f3c", "1"]


def test_visible_gpu_ids_narrow_the_drivers_by_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hardware, "driver_gpu_count", lambda: 4)
    assert hardware.visible_gpu_ids({}) == ["0", "1", "2", "3"]
    assert hardware.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "3,1"}) == ["3", "1"]
    assert hardware.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    monkeypatch.setattr(hardware, "driver_gpu_count", lambda: 0)
    assert hardware.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "0"}) == []  # no driver: nothing to narrow


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
