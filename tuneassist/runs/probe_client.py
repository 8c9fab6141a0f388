"""Run the memory probe in a subprocess, for the torch-free UI and autopilot.

Why a subprocess: the probe imports torch and, on a GPU, creates a CUDA context and fills the
device on purpose until it runs out of memory. None of that may happen in the process that draws
the UI, and the probe's memory must be handed back when it ends. A failed or slow probe is not an
error for the caller: the checklist works without a known limit, so this returns None and logs why.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneassist.errors import UserError
from tuneassist.spec import RunSpec

log = logging.getLogger("tuneassist.probe")

REQUIRED_KEYS = ("max_batch", "device", "method", "explanation")
PROBE_SECONDS = 120.0  # how long `tune` and the TUI wait for the probe; past it the batch limit is unknown


def probe_command(
    model: str,
    data: str,
    device: str = "auto",
    allow_import: bool = False,
    model_dir: str | None = None,
    image_size: int | None = None,
) -> list[str]:
    """The command line that probes `model` on `data` (as a user could run it by hand); a user model's
    consent and folder are passed on, so the probe imports what the runs will, and the side the runs
    train at (`--image-size`), so it measures the activations they will have."""
    consent = ["--allow-import", *(["--model-dir", model_dir] if model_dir else [])] if allow_import else []
    size = ["--image-size", str(image_size)] if image_size is not None else []
    return [
        sys.executable,
        "-m",
        "tuneassist.engine.probe",
        "--model",
        model,
        "--data",
        data,
        "--device",
        device,
        "--json",
        *consent,
        *size,
    ]


def _run_waiting(
    cmd: list[str], env: dict[str, str], timeout: float, on_wait: Callable[[float], None] | None
) -> subprocess.CompletedProcess[str]:
    """subprocess.run(cmd, capture_output=True, text=True, timeout=...), calling `on_wait(elapsed)`
    about once a second meanwhile (the probe can take minutes: a front end shows that it is alive)."""
    if on_wait is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    t0 = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        while True:
            elapsed = time.monotonic() - t0
            try:
                out, err = proc.communicate(timeout=max(0.05, min(1.0, timeout - elapsed)))
                return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                if time.monotonic() - t0 >= timeout:
                    proc.kill()
                    proc.communicate()
                    raise
                on_wait(time.monotonic() - t0)


def probe_in_subprocess(
    model: str,
    data: str,
    device: str = "auto",
    timeout: float = PROBE_SECONDS,
    allow_import: bool = False,
    model_dir: str | None = None,
    on_wait: Callable[[float], None] | None = None,
    image_size: int | None = None,
) -> dict[str, Any] | None:
    """The probe's result (ProbeResult.to_dict()), or None with the reason logged as a warning.

    Use ``result['max_batch']`` as the checklist's ``max_fit`` (largest per-device batch).
    """
    try:  # names the probe could never use: say so at once, without starting torch
        RunSpec(data=data, model=model, device=device, image_size=image_size).validate()
    except UserError as exc:
        log.warning("memory probe of %s on %s not run: %s", model, data, exc)
        return None
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # works from a source checkout too
    env["PYTHONPATH"] = os.pathsep.join(
        [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    cmd = probe_command(model, data, device, allow_import, model_dir, image_size)
    try:
        proc = _run_waiting(cmd, env, timeout, on_wait)
    except subprocess.TimeoutExpired:
        log.warning(
            "memory probe of %s on %s gave no answer within %.0f s; batch size limit unknown",
            model,
            data,
            timeout,
        )
        return None
    except OSError as exc:
        log.warning("memory probe could not start (%s); batch size limit unknown", exc)
        return None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        errors = [ln for ln in lines if ln.startswith("error: ")]
        why = (
            errors[-1][len("error: ") :]
            if errors
            else (lines[-1] if lines else f"exit code {proc.returncode}")
        )
        log.warning("memory probe of %s on %s failed: %s", model, data, why)
        return None
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        log.warning("memory probe of %s on %s printed no JSON result (%s)", model, data, exc)
        return None
    if not isinstance(result, dict) or any(k not in result for k in REQUIRED_KEYS):
        log.warning("memory probe of %s on %s returned an incomplete result: %r", model, data, result)
        return None
    mb = result["max_batch"]
    if not isinstance(mb, int) or isinstance(mb, bool) or mb < 1:
        log.warning("memory probe of %s on %s returned an unusable max_batch %r", model, data, mb)
        return None
    return result
