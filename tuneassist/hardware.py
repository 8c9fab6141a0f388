"""What the machine has and holds right now, read without torch (the UI process must not import it).

The one home of the host facts every layer needs: GPUs (from NVML, `nvidia-ml-py` imported as
`pynvml`, when it is installed, else from `nvidia-smi`, which every NVIDIA driver ships, and which of
them CUDA_VISIBLE_DEVICES leaves this process), host RAM (/proc/meminfo, lowered to the cgroup's limit
in a container), CPU cores and features, and whether a process is alive. The panel readers fail soft:
a panel that cannot read a device says so instead of raising.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tuneassist.errors import UserError

GIB = 1024**3
CGROUP = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")


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
        import pynvml
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


def proc_fields(path: Path) -> dict[str, int]:
    """The numeric fields of a /proc key-value file (meminfo, PID/status) in bytes ('kB' scaled);
    empty when it cannot be read."""
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(":")
            parts = v.split()
            if parts and parts[0].isdigit():
                out[k.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_bound(total: int, avail: int, src: str, cgroup: Path) -> tuple[int, int, str]:
    """(total, available, source) lowered to the cgroup's limit less its usage (v2, else v1) when the
    process runs in a container with less memory than the machine."""
    for limit_f, usage_f in (
        (cgroup / "memory.max", cgroup / "memory.current"),
        (cgroup / "memory" / "memory.limit_in_bytes", cgroup / "memory" / "memory.usage_in_bytes"),
    ):
        lim, used = _read_int(limit_f), _read_int(usage_f)
        if lim is not None and used is not None and lim < total:
            total = lim
            if lim - used < avail:
                avail, src = max(0, lim - used), f"the cgroup limit {limit_f} less its usage"
            break
    return total, avail, src


def _meminfo_ram(meminfo: Path, cgroup: Path) -> tuple[int, int, str] | None:
    info = proc_fields(meminfo)
    if "MemTotal" not in info or "MemAvailable" not in info:
        return None
    return _cgroup_bound(info["MemTotal"], info["MemAvailable"], f"MemAvailable in {meminfo}", cgroup)


def ram_info(meminfo: Path = MEMINFO, cgroup: Path = CGROUP) -> tuple[int, int, str]:
    """(total, available) RAM bytes for a new process and where they came from.

    MemAvailable from /proc/meminfo (half the physical RAM where there is none), lowered to the
    cgroup's limit minus its usage when the process runs in a container with a smaller memory limit.
    """
    found = _meminfo_ram(meminfo, cgroup)
    if found is not None:
        return found
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        raise UserError(
            "cannot read the machine's memory size here; pass --device cuda, or set the batch size by hand"
        ) from None
    return _cgroup_bound(
        total, total // 2, f"half the physical RAM (no {meminfo} to read MemAvailable)", cgroup
    )


def host_memory(meminfo: Path = MEMINFO, cgroup: Path = CGROUP) -> tuple[int, int] | None:
    """(used, total) bytes of host RAM, where used = total - available (what a new run cannot have),
    within the cgroup's limit as `ram_info` reads it; None without a readable meminfo."""
    found = _meminfo_ram(meminfo, cgroup)
    if found is None:
        return None
    total, avail, _ = found
    return total - avail, total


def process_alive(pid: int, *, stopped_is_dead: bool = False) -> bool:
    """Whether process `pid` exists and is not a zombie (which still answers kill(0)); with
    `stopped_is_dead`, a stopped one (SIGSTOP) counts as gone too. Where /proc cannot say (another
    system, or not allowed to look) a process that exists counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    dead = ("Z", "X", "T") if stopped_is_dead else ("Z", "X")
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in dead
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # exited while we looked, or no /proc here
    except (OSError, IndexError):
        return True


def cuda_visible(env: dict[str, str] | None = None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: the entries up to the first empty or negative one (CUDA
    stops there); None when it is not set."""
    raw = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    ids = []
    for part in raw.split(","):
        part = part.strip()
        if not part or part.startswith("-"):
            break
        ids.append(part)
    return ids


def driver_gpu_count() -> int:
    """GPUs the NVIDIA driver shows, CUDA_VISIBLE_DEVICES aside: /proc/driver/nvidia/gpus, else NVML
    or nvidia-smi; 0 without a driver."""
    proc_dir = Path("/proc/driver/nvidia/gpus")
    if proc_dir.is_dir():
        return sum(1 for _ in proc_dir.iterdir())
    return len(read_gpus()[0])


def visible_gpu_ids(env: dict[str, str] | None = None) -> list[str]:
    """Ids of the NVIDIA GPUs this process may use: the driver's, narrowed by CUDA_VISIBLE_DEVICES."""
    n = driver_gpu_count()
    visible = cuda_visible(env)
    return visible if n and visible is not None else [str(i) for i in range(n)]


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
        import pynvml

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
    if cuda_visible(env) == []:
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
