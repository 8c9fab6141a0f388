"""What the machine's devices hold right now, read without torch (the UI process must not import it).

GPUs come from NVML (`nvidia-ml-py`, imported as `pynvml`) when it is installed, else from
`nvidia-smi`, which every NVIDIA driver ships; the host's memory comes from /proc/meminfo. Every
reader fails soft: a panel that cannot read a device says so instead of raising.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3


@dataclass(frozen=True)
class GpuState:
    index: int
    name: str
    used_bytes: int
    total_bytes: int
    utilization: int | None  # percent of the last sample period a kernel ran; None when unknown


@dataclass(frozen=True)
class DeviceReport:
    gpus: list[GpuState]
    source: str  # "nvml", "nvidia-smi", or why there are none
    host_used_bytes: int | None
    host_total_bytes: int | None


def _from_nvml() -> list[GpuState] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: report no GPU, never raise into the UI
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                util: int | None = int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            except Exception:  # noqa: BLE001 - some GPUs (MIG slices) do not report it
                util = None
            label = name.decode() if isinstance(name, bytes) else str(name)
            out.append(GpuState(i, label, int(mem.used), int(mem.total), util))
        return out
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def parse_nvidia_smi(text: str) -> list[GpuState]:
    """Rows of nvidia-smi's `--query-gpu=index,name,memory.used,memory.total,utilization.gpu`
    in `--format=csv,noheader,nounits` (MiB and percent)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            idx, used, total = int(parts[0]), float(parts[2]), float(parts[3])
        except ValueError:
            continue
        util = int(parts[4]) if parts[4].isdigit() else None  # "[N/A]" on MIG slices
        out.append(GpuState(idx, parts[1], int(used * 1024**2), int(total * 1024**2), util))
    return out


def _from_nvidia_smi() -> list[GpuState] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = "index,name,memory.used,memory.total,utilization.gpu"
    try:
        res = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return parse_nvidia_smi(res.stdout)


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache
def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains 1.6-2.5x
    faster than fp32 (simple3, ResNet-20 on 2 cores); elsewhere it is emulated and slower."""
    try:
        flags = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int] | None:
    """(used, total) bytes of host RAM, where used = total - available (what a new run cannot have)."""
    try:
        fields = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
        total = fields["MemTotal"]
        return total - fields["MemAvailable"], total
    except (OSError, KeyError, ValueError, IndexError):
        return None


def read_gpus() -> tuple[list[GpuState], str]:
    """The GPUs now, and where the figures came from (NVML, else nvidia-smi, else why there are none)."""
    gpus = _from_nvml()
    if gpus is not None:
        return gpus, "nvml"
    gpus = _from_nvidia_smi()
    if gpus is not None:
        return gpus, "nvidia-smi"
    return [], "no NVIDIA driver found"


def parse_driver_header(text: str) -> tuple[str | None, str | None]:
    """(driver version, highest CUDA version the driver supports) from plain `nvidia-smi`'s header."""
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


@functools.cache
def driver_versions() -> tuple[str | None, str | None]:
    """The NVIDIA driver's version and the CUDA version it supports (NVML, else nvidia-smi); Nones
    when neither answers. Cached: the driver does not change under a running process."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
            return (
                drv.decode() if isinstance(drv, bytes) else str(drv),
                f"{cuda // 1000}.{cuda % 1000 // 10}",
            )
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no pynvml or no driver: try the command line tool
        pass
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, None
    try:
        res = subprocess.run([exe], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return parse_driver_header(res.stdout)


def cuda_build_problem(
    torch_version: str,
    torch_cuda: str | None,
    gpus: list[GpuState] | None = None,
    versions: tuple[str | None, str | None] | None = None,
    env: dict[str, str] | None = None,
) -> str | None:
    """Why torch cannot use the GPUs the driver shows, in one line with the fix; None when the driver
    shows none (or CUDA_VISIBLE_DEVICES hides them on purpose). Call it only once torch has said CUDA
    is unavailable: then a GPU the driver lists means a torch build that does not match the driver,
    and training on the CPU instead would be a silent 10-100x slowdown."""
    env = dict(os.environ) if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (not visible.strip() or visible.strip().startswith("-")):
        return None  # the user hid every GPU: the CPU is what they asked for
    if gpus is None:
        gpus = read_gpus()[0]
    if not gpus:
        return None
    driver, cuda = versions if versions is not None else driver_versions()
    seen = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({gpus[0].name}"
    seen += f", driver {driver}" if driver else ""
    seen += f", CUDA {cuda})" if cuda else ")"
    build = f"built for CUDA {torch_cuda}" if torch_cuda else "a CPU-only build"
    want = f"the torch build for CUDA {cuda} or older" if cuda else "the torch build that matches the driver"
    return (
        f"the NVIDIA driver shows {seen} but torch {torch_version} ({build}) cannot use them; "
        f"install {want} (https://pytorch.org/get-started/locally/), or use --device cpu"
    )


def read_devices() -> DeviceReport:
    """One sample of every device; slow only when it must run nvidia-smi (tens of ms)."""
    gpus, source = read_gpus()
    host = host_memory()
    return DeviceReport(gpus, source, *(host if host else (None, None)))


def describe(report: DeviceReport) -> list[str]:
    """Short lines for a panel: one per GPU, then the host's memory."""
    lines = []
    for g in report.gpus:
        util = f", {g.utilization}% busy" if g.utilization is not None else ""
        lines.append(
            f"GPU {g.index} {g.name}: {g.used_bytes / GIB:.1f} / {g.total_bytes / GIB:.1f} GiB used{util}"
        )
    if not report.gpus:
        lines.append(f"No GPU ({report.source}): runs use the CPU.")
    if report.host_total_bytes:
        used = report.host_used_bytes or 0
        lines.append(f"Host RAM: {used / GIB:.1f} / {report.host_total_bytes / GIB:.1f} GiB used")
    return lines


def panel_lines(report: DeviceReport, width: int = 28) -> list[str]:
    """The same, folded for a narrow side panel: name on one line, memory and load on the next."""
    lines = []
    for g in report.gpus:
        lines.append(f"GPU {g.index} {g.name.removeprefix('NVIDIA ')}"[:width])
        util = f" · {g.utilization}%" if g.utilization is not None else ""
        lines.append(f"  {g.used_bytes / GIB:.1f}/{g.total_bytes / GIB:.1f} GiB{util}")
    if not report.gpus:
        lines.append("no GPU: runs use the CPU")
    if report.host_total_bytes:
        used = report.host_used_bytes or 0
        lines.append(f"RAM {used / GIB:.1f}/{report.host_total_bytes / GIB:.1f} GiB")
    return lines
