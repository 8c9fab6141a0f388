"""Starting, cancelling, resuming and exporting runs; the queue with no daemon.

A run is stored as `queued`; whoever touches the store next (the launcher, a worker that just ended,
`tuneassist runs`) claims the queued runs whose device has a free slot, in one BEGIN IMMEDIATE
transaction so two launchers can never both take the last slot, and starts one detached worker per
claim. Torch-free: the UI calls this.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

import tuneassist
from tuneassist.errors import UserError
from tuneassist.fsafe import open_new, write_file
from tuneassist.hardware import cpu_cores, read_gpus, visible_gpu_ids
from tuneassist.runs.packing import Fits, count_limit, fits_by_memory
from tuneassist.runs.store import METRIC_FIELDS, Store, check_export_target, checkpoint_problem
from tuneassist.spec import RunSpec
from tuneassist.usercode import prepare_spec

GPU_ENV = "TUNEASSIST_VISIBLE_GPUS"  # the GPUs the first launcher saw, passed down to every worker
_children: list[subprocess.Popen[bytes]] = []  # reaped on the next launch so no zombies pile up
_gpu_cache: list[str] | None = None


def detect_gpus() -> list[str]:
    """Physical ids of the NVIDIA GPUs this process may use, without importing torch."""
    global _gpu_cache
    if GPU_ENV in os.environ:
        return [g for g in os.environ[GPU_ENV].split(",") if g.strip()]
    if _gpu_cache is not None:
        return list(_gpu_cache)
    ids = visible_gpu_ids()  # the driver's GPUs, narrowed by CUDA_VISIBLE_DEVICES (tuneassist.hardware)
    _gpu_cache = ids
    return list(ids)


def slots_for(spec: dict[str, Any]) -> tuple[list[str], int]:
    """The device slots a run may take and how many it needs: ('cpu' | 'cuda:<physical id>' | other)."""
    device = str(spec.get("device") or "auto")
    count = int(spec.get("devices") or 1)
    gpus = detect_gpus()
    if device == "cpu":
        return ["cpu"], 1
    if device.startswith("cuda"):
        if ":" in device:
            idx = device.split(":", 1)[1]
            if idx.isdigit() and int(idx) < len(gpus):
                return [f"cuda:{gpus[int(idx)]}"], 1
            return [device], 1  # unknown to us: let the engine say what is wrong, one run at a time
        return ([f"cuda:{g}" for g in gpus] or ["cuda"]), count  # undetected: one shared slot, no pinning
    if device == "auto":
        return ([f"cuda:{g}" for g in gpus], count) if gpus else (["cpu"], 1)
    return [device], 1


_gpu_mem_cache: int | None = None


def gpu_memory_mib() -> int:
    """Memory of the smallest GPU this process may use, in MiB; 0 when unknown (then nothing packs)."""
    global _gpu_mem_cache
    if _gpu_mem_cache is None:
        mine = set(detect_gpus())
        sizes = [g.total_bytes // 2**20 for g in read_gpus()[0] if str(g.index) in mine]
        _gpu_mem_cache = min(sizes) if sizes else 0
    return _gpu_mem_cache


def max_per_device(store: Store) -> int | None:
    """A limit of runs per device set by hand: $TUNEASSIST_MAX_PER_DEVICE, else the store's setting;
    None when nobody set one."""
    raw = os.environ.get("TUNEASSIST_MAX_PER_DEVICE") or store.get_setting("max_per_device")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"max runs per device {raw!r} must be a positive integer (TUNEASSIST_MAX_PER_DEVICE)")
    return value


def placement(store: Store) -> Fits:
    """Which runs may share a device: the limit set by hand, else packing.fits_by_memory per GPU (so
    small-model candidates share a GPU while a big, unknown or multi-GPU run gets its GPUs alone)."""
    limit = max_per_device(store)
    if limit is not None:
        return count_limit(limit)
    return lambda slot, on_slot, spec: fits_by_memory(slot, on_slot, spec, gpu_memory_mib())


def _reap() -> None:
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)


def _worker_env(store: Store) -> dict[str, str]:
    env = dict(os.environ)
    env[GPU_ENV] = ",".join(detect_gpus())
    # torch.compile's on-disk caches shared by the workspace's runs: the 2nd..Nth candidate with the
    # same model, batch and dtype loads the compiled graphs instead of compiling again.
    cache = store.workspace / "cache"
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    env.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
    # The worker must import this very package even when it is not installed.
    root = str(Path(tuneassist.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return env


def _start_detached(store: Store, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`python -m tuneassist.runs.worker --workspace W ARGS` in its own session (the launcher's SIGHUP
    and Ctrl-C never reach it), output appended to `log`; raises OSError when it cannot start."""
    _reap()
    cmd = [sys.executable, "-m", "tuneassist.runs.worker", "--workspace", str(store.workspace), *args]
    with os.fdopen(open_new(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as out:  # no symlinks
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, close_fds=True, env=env)  # fmt: skip
    _children.append(proc)
    return proc


LOGIND_CONF = (
    Path("/usr/lib/systemd/logind.conf.d"),  # drop-ins, lowest priority first; then the main file and
    Path("/etc/systemd/logind.conf"),  # the admin's drop-ins, which override it (systemd's order)
    Path("/run/systemd/logind.conf.d"),
    Path("/etc/systemd/logind.conf.d"),
)
LINGER_DIR = Path("/var/lib/systemd/linger")
_logout_warned = False


def _logind_settings(conf: tuple[Path, ...]) -> dict[str, tuple[str, Path]]:
    """logind's [Login] settings as its files set them (the last file read wins), each with its file."""
    out: dict[str, tuple[str, Path]] = {}
    files: list[Path] = []
    for p in conf:
        if p.is_dir():
            files += sorted(p.glob("*.conf"))
        elif p.is_file():
            files.append(p)
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif section == "Login" and "=" in line and not line.startswith(("#", ";")):
                key, _, value = line.partition("=")
                out[key.strip()] = (value.strip(), f)
    return out


def logout_kills_workers(
    user: str | None = None, conf: tuple[Path, ...] | None = None, linger_dir: Path | None = None
) -> str | None:
    """One line saying that logind will kill detached workers when this user logs out, with the fix;
    None when it will not (KillUserProcesses off, as systemd's default; the user excluded, as root is
    by default; or the user lingers). Paths injectable for tests."""
    settings = _logind_settings(LOGIND_CONF if conf is None else conf)
    linger_dir = LINGER_DIR if linger_dir is None else linger_dir
    kill, where = settings.get("KillUserProcesses", ("no", None))
    if kill.lower() not in ("yes", "true", "1", "on"):
        return None
    if user is None:
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            return None
    only = settings.get("KillOnlyUsers", ("", None))[0].split()
    exclude = settings.get("KillExcludeUsers", ("root", None))[0].split()
    if user in exclude or (only and user not in only) or (linger_dir / user).exists():
        return None
    return (
        f"logind kills your processes at logout (KillUserProcesses=yes in {where}) and user {user} does not "
        "linger: background runs will die when this SSH session ends; keep them running with: "
        f"loginctl enable-linger {user}"
    )


def warn_if_logout_kills_workers() -> None:
    """The logind warning, once per process, at the first detached worker's launch."""
    global _logout_warned
    if _logout_warned:
        return
    _logout_warned = True
    msg = logout_kills_workers()
    if msg:
        warnings.warn(msg, stacklevel=3)


def spawn_worker(store: Store, run_id: int, attempt: int) -> int:
    """Start the detached worker for a claimed run; returns its pid (the run is marked failed on error)."""
    warn_if_logout_kills_workers()
    log = store.run_dir(run_id) / "worker.log"
    try:
        proc = _start_detached(store, ["--run", str(run_id)], log, _worker_env(store))
    except OSError as e:
        store.update_run(
            run_id,
            _only_if={"status": "running", "attempt": attempt},
            status="failed",
            ended=time.time(),
            error=f"could not start the worker process ({e}); check that {sys.executable} runs",
        )
        return 0
    store.update_run(run_id, _only_if={"status": "running", "attempt": attempt, "pid": None}, pid=proc.pid)
    return proc.pid


STANDBY_ENV = "TUNEASSIST_STANDBY"  # "0": no standby worker


def standby_enabled() -> bool:
    return os.environ.get(STANDBY_ENV, "1").strip().lower() not in ("0", "no", "off", "false")


def _spare_core(store: Store) -> bool:
    """Whether a standby can load torch without slowing the runs: always beside GPU runs (they leave
    the cores idle), and beside CPU runs only while their threads leave a core free. On a CPU that
    training keeps busy, loading in advance costs the running run as much time as it saves the next."""
    running = store.list_runs(status="running", refresh=False)
    cores = cpu_cores()
    used = 0
    for r in running:
        spec = r.spec_data
        if not str(r.device or "").startswith("cpu"):
            continue
        used += int(spec.get("num_threads") or cores) * int(spec.get("devices") or 1)
    return used < cores


def spawn_standby(store: Store) -> int:
    """Pre-start a worker for the next run, so that it finds Python, torch and the engine loaded
    (seconds saved on every run of a sweep, and at each step of a checklist). Returns its pid (0: none).

    Only while runs are queued or running and no standby is registered; the process registers itself and
    exits at once when another won the race (see tuneassist.runs.worker.run_standby).
    """
    if (
        not standby_enabled()
        or store.read_only
        or not store.has_queued(or_running=True)
        or store.standby_registered()
        or not _spare_core(store)
    ):
        return 0
    env = _worker_env(store)
    gpus = detect_gpus()
    if gpus:  # the standby picks its GPU by index among these, after torch is loaded (not by env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        return _start_detached(store, ["--standby"], store.workspace / "standby.log", env).pid
    except OSError:
        return 0  # an optimisation only: the runs start as usual without it


def advance_queue(store: Store) -> list[int]:
    """Claim queued runs whose device is free and start them (the first one in the standby worker when
    one waits); start a standby while runs are queued or running. Returns the started run ids."""
    handed: list[int] = []
    claims = store.claim_queued(slots_for, placement(store), handed=handed)
    started = [rid for rid, _slots, attempt in claims if rid in handed or spawn_worker(store, rid, attempt)]
    spawn_standby(store)
    return started


def check_device(device: str) -> None:
    """Refuse a GPU this machine does not have before the run is queued (not as a failed run later):
    an index beyond the GPUs the launcher sees, or any CUDA device on a machine with no GPU driver at
    all. GPUs the launcher cannot count but a driver exists for are left to CUDA to judge."""
    if not device.startswith("cuda"):
        return
    gpus = detect_gpus()
    idx = device.split(":", 1)[1] if ":" in device else ""
    if gpus and idx.isdigit() and int(idx) >= len(gpus):
        raise UserError(
            f"--device {device}: this machine shows {len(gpus)} GPU(s), cuda:0 to cuda:{len(gpus) - 1}; "
            "use one of them, or --device cpu"
        )
    if not gpus and not any(Path(d).exists() for d in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        raise UserError(f"--device {device}: this machine has no GPU (no GPU driver found); use --device cpu")


def launch_run(store: Store, spec: RunSpec, kind: str = "train", session_id: int | None = None) -> int:
    """Validate and queue a run, and start it at once if its device has a free slot. Returns its id.

    A `module:function` model needs the spec's consent (`allow_import`) and is stored with the folder
    its module is found in from here, so the worker that runs it imports the same file.
    """
    spec = prepare_spec(spec.validate())
    if spec.image_size is None and spec.data.startswith("folder:"):
        # Recorded like the model's folder: the side the run decodes at, which GPU packing and a resume
        # then plan for (a 224x224 folder needs 49x a 32x32 one's activations per image).
        from tuneassist.dataref import folder_side

        spec.image_size = folder_side(spec.data.partition(":")[2])
    check_device(str(spec.device or "auto"))
    candidates, need = slots_for(spec.to_dict())
    if need > len(candidates):
        raise UserError(
            f"the run needs {need} GPUs but this machine shows {len(candidates)}; "
            f"use --devices {len(candidates)}"
        )
    if session_id is not None:
        store.get_session(session_id)
    # A session's step launched from two windows at once: the second gets the first one's runs.
    run_id = store.add_run(spec.to_dict(), kind=kind, session_id=session_id, reuse_active=True)
    store.run_dir(run_id)
    advance_queue(store)
    return run_id


def cancel_run(store: Store, run_id: int, wait: float = 0.0) -> str:
    """Cancel a run (queued/lost: at once; running: its worker stops at its next check, keeping metrics).

    Waits up to `wait` seconds for a running run to end; returns its status then.
    """
    status = store.request_cancel(run_id)
    deadline = time.monotonic() + wait
    while status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        status = store.get_run(run_id).status
    return status


def resume_run(store: Store, run_id: int, from_start: bool = False) -> dict[str, Any]:
    """Queue a lost or cancelled run again; its worker continues from the last checkpoint.

    A truncated checkpoint, or one that pickles anything but tensors, is refused here with the reason
    (nothing is loaded); `from_start` sets it aside (checkpoint.pt.bad) and trains from step 0.
    Returns {'from_step': step the run continues from (0 without a checkpoint), 'status': now}.
    """
    store.refresh_lost([run_id])
    checkpoint = store.checkpoint_path(run_id)
    has_checkpoint = checkpoint.exists() and not from_start
    run = store.get_run(run_id, refresh=False)
    if run.kind == "track":  # no worker can train it: the user's own script did (tuneassist.track)
        raise UserError(
            f"run {run_id} was logged by your own script (tuneassist.track); tuneassist cannot resume it: "
            "run your script again (it logs a new run)"
        )
    stopped = run.status in ("lost", "cancelled")
    if stopped and not from_start and not has_checkpoint and run.checkpoint_step:
        # The store says it was saved: resuming from step 0 would silently replace the curve so far.
        raise UserError(
            f"checkpoint {checkpoint} is missing (the store recorded one at step {run.checkpoint_step}); "
            f"nothing was changed: put it back, or resume run {run_id} from step 0 (the curve restarts): "
            f"tuneassist runs resume {run_id} --from-start"
        )
    if has_checkpoint and stopped:
        problem = checkpoint_problem(checkpoint)
        if problem:
            raise UserError(
                f"checkpoint {checkpoint} {problem}; it was not loaded: resume run {run_id} from step 0 "
                f"with: tuneassist runs resume {run_id} --from-start"
            )

    from_step = store.requeue_for_resume(run_id, keep_checkpoint=has_checkpoint)
    if from_start and checkpoint.exists():  # never resumed from later: keep it only for inspection
        os.replace(checkpoint, checkpoint.with_name(checkpoint.name + ".bad"))
    advance_queue(store)
    return {"from_step": from_step, "checkpoint": has_checkpoint, "status": store.get_run(run_id).status}


def export_run(
    store: Store, run_id: int, fmt: str, out: str | os.PathLike[str] | TextIO | None = None
) -> int:
    """Write a run's metric rows as CSV or JSON lines (to a file path, an open file or stdout), or as
    TensorBoard event files under the folder `out` (tuneassist.runs.tbexport, which loads torch)."""
    if fmt == "tensorboard":
        from tuneassist.runs.tbexport import export_tensorboard

        if out is not None and not isinstance(out, str | os.PathLike):
            raise UserError("--format tensorboard writes a folder, not to a stream; give DIR")
        return export_tensorboard(store, run_id, out)
    if fmt not in ("csv", "jsonl"):
        raise UserError(f"unknown export format {fmt!r}; use csv, jsonl or tensorboard")
    store.get_run(run_id, refresh=False)
    rows = store.metrics(run_id)

    def write(f: TextIO) -> None:
        if fmt == "csv":
            w = csv.DictWriter(f, fieldnames=["run_id", *METRIC_FIELDS], lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({"run_id": run_id, **r})
        else:
            for r in rows:
                f.write(json.dumps({"run_id": run_id, **r}) + "\n")

    if out is None:
        write(sys.stdout)
    elif isinstance(out, str | os.PathLike):
        path = Path(out)
        check_export_target(store.workspace, path)
        try:
            write_file(path, write)  # a temp file and a rename: never half a file, never through a link
        except OSError as e:
            raise UserError(f"cannot write {path} ({e.strerror}); choose another --output FILE") from None
    else:
        write(out)
    return len(rows)
