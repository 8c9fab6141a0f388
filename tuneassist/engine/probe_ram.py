"""The memory probe on the CPU (``method='cpu-ram-bound'``): the largest batch whose training step fits
in the RAM available, from the measured peak memory of two small steps.

The peak resident memory of forward + backward (fp32, channels_last, as the engine runs on the CPU)
at two small batches, measured by the kernel: in a separate process, after a warm-up step at batch 1
(torch loads libraries and kernels lazily, a few hundred MiB), the high-water mark is reset
(``/proc/self/clear_refs``) and VmHWM read after each step. glibc is told to mmap every block over
64 KiB there, so freed activations leave the RSS at once and each mark is the step's own live peak,
not what the allocator kept from the step before. (The process-lifetime peak, getrusage's
ru_maxrss, is no use: the import of torch can peak above a small step.) The slope gives bytes per
sample, the intercept the fixed cost (torch, model, gradients; the optimiser's momentum buffers, one
per parameter and independent of the batch, are added by size), plus RUN_OVERHEAD_BYTES for what a
real run holds beyond the bare step. Checked against the engine's own peak (VmHWM of a `train()`
process, 3 steps, synthetic data, 1 thread): the slope is close or high (simple3 0.53 here vs 0.40
MiB/image in the engine between batch 1024 and 2048; resnet20 1.50 vs 1.40 between 512 and 1024),
and the engine held 230-360 MiB (simple3) and 500-550 MiB (resnet20) more than this reading's line:
torch._dynamo (imported by the optimiser), the data pipeline, evaluation and allocator retention.
With the allowance the predicted need was 10-26% above the engine's real peak at those four points
(the safe side). The bound is available RAM (`tuneassist.hardware.ram_info`: MemAvailable, or the
cgroup limit when lower) x `safety`, less the data set and the fixed cost, divided by bytes per
sample, capped at `limit`. Needs Linux.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tuneassist.engine.device import FAKE_OOM_ENV
from tuneassist.engine.models import _CONSENTED, build_model
from tuneassist.engine.probe_result import MIB, ROUND_TO, ProbeAsk, ProbeResult, round_batch, size_text
from tuneassist.errors import UserError
from tuneassist.hardware import proc_fields, ram_info

MEASURE_BATCHES = (16, 64)  # the two batches measured (the second is capped at `limit`)
MEASURE_TIMEOUT_S = 90.0
RUN_OVERHEAD_BYTES = 768 * 1024**2  # a real run's memory beyond the bare step (see the notes)
_STATUS = Path("/proc/self/status")


def _proc_status(key: str) -> int:
    """A byte count from /proc/self/status (VmRSS, VmHWM)."""
    return proc_fields(_STATUS)[key]


def _reset_hwm() -> None:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _consent_args(model_name: str) -> list[str]:
    """The measuring child's --allow-import/--model-dir: the consent this process was given, passed on."""
    if model_name not in _CONSENTED:
        return []
    folder = _CONSENTED[model_name]
    return ["--allow-import", *(["--model-dir", folder] if folder else [])]


def measure_child(
    model_name: str, num_classes: int, image_size: int, batches: list[int], channels_last: bool
) -> dict[str, Any]:
    """Runs in the measuring process: the peak RSS of forward + backward at each batch (see the notes).

    No optimiser here: its state (one momentum buffer per parameter) does not depend on the batch, so
    it is added by size (`param_bytes`), and building one would import torch._dynamo (seconds).
    """
    model = build_model(model_name, num_classes).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def step(b: int) -> None:
        x = torch.randn(b, 3, image_size, image_size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (b,))
        loss = F.cross_entropy(model(x).float(), y)
        model.zero_grad(set_to_none=False)
        loss.backward()

    step(1)  # warm-up: lazily loaded libraries, thread pools, kernels and the gradients themselves
    peaks: dict[str, int] = {}
    for b in batches:
        gc.collect()
        _reset_hwm()
        step(b)
        peaks[str(b)] = _proc_status("VmHWM")
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"peaks": peaks, "param_bytes": param_bytes, "rss_after": _proc_status("VmRSS")}


def _measure_command(
    model_name: str, num_classes: int, image_size: int, batches: list[int], channels_last: bool
) -> tuple[list[str], dict[str, str]]:
    """The measuring process's command line (the probe's own entry) and environment."""
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # large blocks via mmap: freed memory leaves the RSS at once
    env.pop(FAKE_OOM_ENV, None)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    cmd = [
        sys.executable, "-m", "tuneassist.engine.probe", "--measure-step", ",".join(str(b) for b in batches),
        "--model", model_name, "--num-classes", str(num_classes), "--image-size", str(image_size),
        *([] if channels_last else ["--no-channels-last"]), *_consent_args(model_name),
    ]  # fmt: skip
    return cmd, env


def _measure_peaks(
    model_name: str, num_classes: int, image_size: int, batches: list[int], channels_last: bool = True
) -> tuple[dict[int, int], int]:
    """Peak RSS of one training step at each batch, measured in a separate process (see the notes),
    and the bytes of the optimiser's state (one momentum buffer per parameter)."""
    if not Path("/proc/self/clear_refs").exists() or not proc_fields(_STATUS).get("VmHWM"):
        raise UserError(
            "the CPU memory probe needs Linux (/proc/self/clear_refs and VmHWM); set the batch size by hand"
        )
    cmd, env = _measure_command(model_name, num_classes, image_size, batches, channels_last)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"measuring training steps of {model_name} took over {MEASURE_TIMEOUT_S:.0f} s; the machine "
            "is too busy, set the batch size by hand"
        ) from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if tail.startswith("error: "):
            raise UserError(tail[len("error: ") :])
        raise UserError(f"measuring the memory of a training step of {model_name} failed ({tail})")
    out = json.loads(lines[-1])
    return {int(b): int(v) for b, v in out["peaks"].items()}, int(out["param_bytes"])


def _line(
    ask: ProbeAsk, num_classes: int, image_size: int, channels_last: bool
) -> tuple[dict[int, int], float, float]:
    """(the measured peaks, bytes per sample, fixed bytes): the straight line through two steps' peaks."""
    b2 = min(MEASURE_BATCHES[1], ask.limit)
    b1 = min(MEASURE_BATCHES[0], max(1, b2 // 4))
    if b1 >= b2:  # limit 1: nothing to compare
        peaks, state = _measure_peaks(ask.model, num_classes, image_size, [b2], channels_last)
        return peaks, float(peaks[b2] + state), float(RUN_OVERHEAD_BYTES)
    peaks, state = _measure_peaks(ask.model, num_classes, image_size, [b1, b2], channels_last)
    bps = (peaks[b2] - peaks[b1]) / (b2 - b1)
    if bps <= 0:
        raise UserError(
            f"the peak memory of {ask.model} did not grow from batch {b1} to {b2} "
            f"({peaks[b1] / MIB:.0f} -> {peaks[b2] / MIB:.0f} MiB); the measurement is unusable, "
            "set the batch size by hand"
        )
    return peaks, bps, peaks[b1] - bps * b1 + state + RUN_OVERHEAD_BYTES


def ram_probe(ask: ProbeAsk, num_classes: int, image_size: int, *, channels_last: bool) -> ProbeResult:
    """The largest batch whose training step of `ask.model` fits in the available RAM x the safety margin."""
    total, avail, src = ram_info()
    peaks, bps, fixed = _line(ask, num_classes, image_size, channels_last)
    bound = (avail * ask.safety - ask.data_bytes - fixed) / bps
    measured = (
        f"forward + backward of {ask.model} in fp32{' channels_last' if channels_last else ''} peaked at "
        + " and ".join(f"{peaks[b] / MIB:.0f} MiB at batch {b}" for b in sorted(peaks))
        + f" (VmHWM): {bps / MIB:.2f} MiB per sample on top of "
        f"{max(fixed, 0) / MIB:.0f} MiB for torch, the model, the optimiser and the training loop"
    )
    data = ask.data_bytes
    if bound < 1:
        raise UserError(
            f"not enough free RAM to train {ask.model}: {measured}, but only {size_text(avail)} is available "
            f"({src}){' and the data set needs ' + size_text(data) if data else ''}; free memory "
            "or use a smaller model"
        )
    max_batch = round_batch(min(ask.limit, bound))
    data_txt = f", less the data set's {size_text(data)}" if data else ""
    cap = (
        f"capped at the limit {ask.limit}"
        if bound >= ask.limit
        else f"rounded down to a multiple of {ROUND_TO}: {max_batch}"
    )
    explanation = (
        f"On the CPU {measured}; {100 * ask.safety:.0f}% of the {size_text(avail)} available ({src})"
        f"{data_txt} allows batch {int(bound)}, {cap}."
    )
    return ask.answer(
        max_batch, "cpu", "cpu-ram-bound", explanation, memory=(total, avail), bytes_per_sample=bps,
        largest_fit=int(bound), fixed_bytes=fixed,
    )  # fmt: skip
