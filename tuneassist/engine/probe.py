"""The memory probe: the largest per-device batch a model can train at (checklist step 2, TBS).

Why measure instead of estimate: activation memory depends on the model, the kernels cuDNN picks,
bf16 autocast and channels_last, so the only number worth trusting comes from running the very
training step the engine runs.

- CUDA (``method='cuda-oom-search'``, `tuneassist.engine.probe_search`): a full training step at
  batches doubling until one runs out of memory, then a bisection; the process is cleaned up after
  every out-of-memory and stays usable.
- CPU (``method='cpu-ram-bound'``, `tuneassist.engine.probe_ram`): the peak resident memory of two
  small training steps, measured in a separate process, extrapolated to the RAM available (the
  cgroup limit when lower). Needs Linux.

The answer (`max_batch`) keeps the safety margin and is rounded down to a multiple of 8 (tensor
cores work in 8s, and it splits evenly over 2, 4 or 8 devices); the checklist takes the powers of
two below it.

Test hook: with ``TUNEASSIST_FAKE_OOM_ABOVE=N`` in the environment the probe runs the CUDA search
on whatever device it has and the training step raises ``torch.cuda.OutOfMemoryError`` for every
batch above N, after the forward pass has allocated its activations, so the same back-off and
clean-up code runs on a CPU; the search must then report N.

Subprocess entry (used by the torch-free UI through ``tuneassist.runs.probe_client``)::

    python -m tuneassist.engine.probe --model resnet56 --data cifar10 --device auto --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tuneassist.dataref import BUILTIN, parse_data
from tuneassist.engine.device import fake_oom_above, resolve_device
from tuneassist.engine.models import allow_user_model, build_model
from tuneassist.engine.probe_ram import measure_child, ram_probe
from tuneassist.engine.probe_result import IMAGE_SIZE, ProbeAsk, ProbeResult
from tuneassist.engine.probe_search import search_probe
from tuneassist.errors import UserError

__all__ = ["IMAGE_SIZE", "ProbeResult", "data_facts", "data_side", "main", "probe_max_batch"]


def probe_max_batch(
    model_name: str,
    num_classes: int = 10,
    image_size: int = IMAGE_SIZE,
    device: str = "auto",
    *,
    start: int = 64,
    limit: int = 4096,
    safety: float = 0.9,
    bf16: bool = True,
    channels_last: bool = True,
    data_bytes: int = 0,
) -> ProbeResult:
    """The largest per-device batch at which `model_name` trains on `device` (see the module notes).

    `data_bytes`: the data set's size, held in memory by the run (DeviceLoader) and so reserved here.
    Raises UserError when nothing fits or the device cannot be measured.
    """
    if not (0 < safety <= 1):
        raise UserError(f"safety {safety} must be in (0, 1], e.g. 0.9 (keep 10% free)")
    if start < 1 or limit < 1:
        raise UserError(f"start {start} and limit {limit} must be positive batch sizes")
    if num_classes < 1 or image_size < 8:
        raise UserError(f"{num_classes} classes of {image_size}px images: need at least 1 class and 8 px")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    fake = fake_oom_above()
    ask = ProbeAsk(model_name, safety, limit, data_bytes)
    if dev.type == "cuda" or fake is not None:
        res = search_probe(
            ask, num_classes, image_size, dev, start=start, bf16=bf16, channels_last=channels_last,
            fake_above=fake,
        )  # fmt: skip
    else:
        build_model(model_name, num_classes)  # a bad name is a UserError here, not in a subprocess
        res = ram_probe(ask, num_classes, image_size, channels_last=channels_last)
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def data_facts(data: str) -> tuple[int, int]:
    """(number of classes, images the run holds in memory) of a data spec, without decoding it.

    Images count train + validation + test; each is 3 x side x side uint8 in memory (`data_side`).
    """
    kind, arg = parse_data(data)
    if kind == "synthetic":
        from tuneassist.engine import synthetic

        n = synthetic.DEFAULT_TRAIN
        if arg:
            try:
                n = int(arg)
            except ValueError:
                raise UserError(f"synthetic size {arg!r} must be an integer, e.g. synthetic:2000") from None
        return len(synthetic.CLASSES), n + synthetic.default_test_size(n)
    if kind in BUILTIN:
        return BUILTIN[kind].classes, BUILTIN[kind].train + BUILTIN[kind].test
    if kind == "module":  # the user's Datasets: never imported to probe memory (streamed if they are big)
        return 10, 0
    root = Path(str(arg)).expanduser()  # folder:PATH (parse_data refuses any other form)
    train = root / "train"
    single = not train.is_dir()  # a single root of class folders (PATH/<class>/*.jpg)
    if single and not root.is_dir():
        raise UserError(f"{root} is not a folder; expected PATH/train/<class>/*.jpg or PATH/<class>/*.jpg")
    classes = [d for d in (root if single else train).iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not classes:
        raise UserError(
            f"{root} has no class folders; expected PATH/train/<class>/*.jpg or PATH/<class>/*.jpg"
        )
    if single:
        n = sum(1 for _ in root.glob("*/*"))
    else:
        n = sum(1 for split in ("train", "test", "val") for _ in (root / split).glob("*/*"))
    return len(classes), n


def data_side(data: str | None) -> int:
    """The side a data spec's runs train at: a folder's own (see dataref.folder_side), else 32."""
    if data is None or not data.startswith("folder:"):
        return IMAGE_SIZE
    from tuneassist.dataref import folder_side

    return folder_side(data.partition(":")[2]) or IMAGE_SIZE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tuneassist.engine.probe",
        description="Largest per-device training batch that fits in memory (the checklist's TBS step).",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=None, help="data spec: sets the classes and reserves its memory")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-classes", type=int, default=None, help="when no --data is given (default 10)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side of the test images (default: a folder:PATH's own, as its runs train; 32 otherwise)",
    )
    p.add_argument("--start", type=int, default=64)
    p.add_argument("--limit", type=int, default=4096)
    p.add_argument("--safety", type=float, default=0.9)
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--measure-step", default=None, help=argparse.SUPPRESS)  # batches, e.g. 16,64
    p.add_argument("--allow-import", action="store_true", help="allow a module:function model to import")
    p.add_argument("--model-dir", default=None, help="import a module:function model's module from here")
    args = p.parse_args(argv)
    if args.allow_import:
        allow_user_model(args.model, args.model_dir)
    try:
        if args.measure_step is not None:  # internal: the CPU probe's measuring process
            batches = [int(b) for b in args.measure_step.split(",")]
            out = measure_child(
                args.model,
                args.num_classes or 10,
                args.image_size or IMAGE_SIZE,
                batches,
                not args.no_channels_last,
            )
            print(json.dumps(out), flush=True)
            return 0
        classes, images = (10, 0) if args.data is None else data_facts(args.data)
        side = args.image_size or data_side(args.data)
        res = probe_max_batch(
            args.model,
            args.num_classes or classes,
            side,
            args.device,
            start=args.start,
            limit=args.limit,
            safety=args.safety,
            bf16=not args.no_bf16,
            channels_last=not args.no_channels_last,
            data_bytes=images * 3 * side * side,
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # one line for the caller, never a traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: the memory probe failed ({type(exc).__name__}: {first})", file=sys.stderr, flush=True)
        return 1
    if args.json:
        print(json.dumps(res.to_dict()), flush=True)
    else:
        print(f"max per-device batch: {res.max_batch}\n{res.explanation}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
