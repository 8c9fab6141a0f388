"""`tuneassist lr-find` and `tuneassist train`: the engine, headless, in the foreground or background."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from tuneassist.cli.options import add_background, add_workspace, count, number, positive_int, value_range
from tuneassist.dataref import is_data_module
from tuneassist.errors import UserError
from tuneassist.spec import BUILTIN_MODELS, RunSpec, lr_range_ok


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default="synthetic",
        help="synthetic (offline default), cifar10, cifar100, folder:PATH or module:function (your (train, "
        "test) Datasets; needs --allow-import)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="side in pixels that a folder:PATH's images are resized to (default: the folder's most common "
        "size; the other data sets are 32x32)",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="read the data through DataLoader workers even when it fits on the device (default: only "
        "when it does not; the run's first line says which)",
    )
    p.add_argument("--data-dir", default=None, help="where cifar10/cifar100 files are cached")
    p.add_argument(
        "--model", default="simple3", help=f"{', '.join(BUILTIN_MODELS)} or module:function (your own net)"
    )
    p.add_argument(
        "--train",
        default=None,
        metavar="MODULE:FUNCTION",
        help="your own training function(hp, report), which trains your model on your data with the "
        "run's hyperparameters (see examples/cifar_style.py); needs --allow-import",
    )
    p.add_argument(
        "--allow-import",
        action="store_true",
        help="allow a module:function (--model, --train or --data) to import your module",
    )
    p.add_argument("--batch-size", type=positive_int, default=128, help="total batch size (default 128)")
    p.add_argument("--wd", type=number, default=None, help="L2 weight decay")
    p.add_argument("--wd-exclude-bn-bias", action="store_true", help="no weight decay on BN and bias")
    p.add_argument(
        "--nesterov", action="store_true", help="Nesterov momentum (default: off, plain SGD momentum)"
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw"),
        default=None,
        help="sgd (the paper's, L2 WD; the default), adam (L2 WD) or adamw (decoupled WD); momentum is "
        "Adam's beta1",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, split and batches (default 0)")
    p.add_argument("--val-fraction", type=number, default=0.1, help="share of train held out (0.1)")
    p.add_argument(
        "--device", default="auto", help="auto (a GPU when torch can use one), cpu, cuda or cuda:N (auto)"
    )
    p.add_argument(
        "--devices",
        type=positive_int,
        default=None,
        help="devices per run (default 1): N GPUs with DDP (N CPU processes on the CPU); "
        "--batch-size stays the total, each device takes batch/N",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument(
        "--no-bf16",
        action="store_true",
        help="train in fp32 (default: bf16 autocast on CUDA and on CPUs with native bf16, AVX512-BF16/AMX)",
    )
    p.add_argument("--no-channels-last", action="store_true", help="NCHW tensors (default: channels_last)")
    p.add_argument("--no-augment", action="store_true", help="no random crop/flip")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    add_background(p)
    add_workspace(p)


def register(sub: argparse._SubParsersAction) -> None:
    lf = sub.add_parser(
        "lr-find",
        help="LR range test: find the largest LR that still trains",
        description="Train briefly while the LR grows and read off the largest LR at "
        "which the loss still falls; prints the plot and a 1cycle range.",
    )
    _common(lf)
    lf.add_argument("--lr", type=value_range, default=(1e-4, 10.0), help="LR range start:end (1e-4:10)")
    lf.add_argument("--mode", choices=("exp", "linear"), default="exp", help="LR growth (exp)")
    lf.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="steps of the test (default: about 4 epochs, 100..400)",
    )
    lf.add_argument(
        "--momentum",
        type=value_range,
        default=(0.95, 0.85),
        help="cyclical momentum high:low while LR rises (0.95:0.85)",
    )
    lf.add_argument(
        "--eval-every",
        type=positive_int,
        default=None,
        help="steps between validation-loss readings (default: steps/25)",
    )
    lf.add_argument("--eval-subset", type=positive_int, default=1000, help="val images per reading (1000)")
    lf.set_defaults(func=cmd_lr_find)

    tr = sub.add_parser(
        "train",
        help="train with 1cycle, step or constant LR",
        description="Train a model; prints progress and the final val/test accuracy.",
    )
    _common(tr)
    tr.add_argument("--profile", default=None, help="re-run a saved profile (TOML file or name)")
    tr.add_argument(
        "--schedule",
        choices=("onecycle", "constant", "step"),
        default=None,
        help="LR schedule (default: onecycle, or the profile's)",
    )
    tr.add_argument("--lr", type=value_range, default=None, help="LR min:max for 1cycle, or one value")
    tr.add_argument("--momentum", type=value_range, default=None, help="momentum high:low, or one value")
    tr.add_argument(
        "--epochs", type=number, default=None, help="epochs to train (default 3, or the profile's)"
    )
    tr.add_argument("--steps", type=positive_int, default=None, help="total steps (overrides epochs)")
    tr.add_argument("--rise-fraction", type=number, default=None, help="1cycle share rising (0.45)")
    tr.add_argument(
        "--checkpoint-every",
        type=count,
        default=None,
        help="epochs between checkpoints of a --background run (default 1; resume continues from the last)",
    )
    tr.add_argument("--eval-every", type=positive_int, default=None, help="steps between evals (per epoch)")
    tr.set_defaults(func=cmd_train, data=None, model=None, batch_size=None)


def _spec_from_args(args: argparse.Namespace, **over: Any) -> RunSpec:
    kw: dict[str, Any] = dict(
        data=args.data,
        data_dir=args.data_dir,
        image_size=args.image_size,
        stream=args.stream,
        model=args.model,
        allow_import=args.allow_import,
        batch_size=args.batch_size,
        wd_exclude_bn_bias=args.wd_exclude_bn_bias,
        nesterov=args.nesterov,
        optimizer=args.optimizer or "sgd",
        seed=args.seed,
        val_fraction=args.val_fraction,
        device=args.device,
        devices=args.devices or 1,
        compile=args.compile,
        bf16=not args.no_bf16,
        channels_last=not args.no_channels_last,
        augment=not args.no_augment,
        num_threads=args.threads,
    )
    if args.wd is not None:
        kw["weight_decay"] = args.wd
    if getattr(args, "train", None):  # the function trains its own model: it names the run's model too
        kw.update(train_fn=args.train, model=args.train)
    kw.update(over)
    from tuneassist.usercode import prepare_spec

    return prepare_spec(RunSpec(**kw).validate())  # a user model: consent, and the folder it is in


def _px(side: int | None) -> str:
    """'64x64 images, ' (the size the run trains at), or nothing when the engine did not say."""
    return f"{side}x{side} images, " if side else ""


def _times(devices: int | None) -> str:
    """' x 4 devices (DDP)' for a multi-device run, else nothing."""
    return f" x {devices} devices (DDP)" if devices and devices > 1 else ""


# What `train --json` and `lr-find --json` say about the run's data and device: the facts of the start
# line (None where the user's own training function does not tell them).
RUN_FACTS = (
    "device", "devices", "num_classes", "image_size", "train_size", "val_size", "test_size", "streamed"
)  # fmt: skip


def run_facts(start: dict[str, Any]) -> dict[str, Any]:
    """The start event's facts, for --json: what the start line and the data note say in words."""
    return {k: start.get(k) for k in RUN_FACTS}


class Progress:
    """Progress on stderr: a live status line on a terminal, one line per evaluation otherwise."""

    def __init__(self, quiet: bool) -> None:
        from tuneassist.cli.status import StatusLine

        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.status = StatusLine(sys.stderr)  # cut to the terminal's width: a wrapped line never redraws
        if self.tty and not quiet:  # decoding an image folder the first time takes minutes: show it
            from tuneassist.engine import folder

            folder.set_decode_progress(
                lambda done, total: self.status.show(f"decoding the image folder: {done:,}/{total:,} images")
            )
        self.total = 1
        self.spe = 1
        self.t0 = time.perf_counter()
        self.last_draw = 0.0
        self.last_loss: float | None = None
        self.ips = 0.0
        self.start: dict[str, Any] = {}  # the start event, kept even when quiet (--json reports it)

    def _eta(self, step: int) -> str:
        el = time.perf_counter() - self.t0
        left = el / max(step, 1) * (self.total - step)
        return f"{int(left // 60)}:{int(left % 60):02d}"

    def __call__(self, e: dict[str, Any]) -> None:
        if e["type"] == "start":
            self.start = e
        if self.quiet:
            return
        t = e["type"]
        if t == "start":
            self.total, self.spe = e["total_steps"], e["steps_per_epoch"]
            self.t0 = time.perf_counter()
            self.status.clear()
            print(
                f"{e['train_size']} train / {e['val_size']} val / {e['test_size']} test images, "
                f"{e['num_classes']} classes, {_px(e.get('image_size'))}"
                f"on {e['device']}{_times(e.get('devices'))}: {self.total} steps "
                f"({e['epochs']:.3g} epochs of {self.spe})",
                file=sys.stderr,
            )
            if e.get("data_note"):  # held on the device, or streamed, and why
                print(e["data_note"], file=sys.stderr)
        elif t == "step":
            self.last_loss, self.ips = e["train_loss"], e["images_per_s"]
            now = time.perf_counter()
            if self.tty and now - self.last_draw > 0.25:
                self.last_draw = now
                loss = "nan" if self.last_loss is None else f"{self.last_loss:.4f}"
                line = (
                    f"epoch {e['epoch']:.2f}/{self.total / self.spe:.3g}  step {e['step'] + 1}/{self.total}"
                    f"  loss {loss}  lr {e['lr']:.3g}  {self.ips:,.0f} img/s  ETA {self._eta(e['step'] + 1)}"
                )
                self.status.show(line)
        elif t == "eval":
            self.status.clear()
            el = time.perf_counter() - self.t0
            loss = "nan" if self.last_loss is None else f"{self.last_loss:.4f}"
            print(
                f"epoch {e['epoch']:.2f}  train loss {loss}  val loss {e['val_loss']:.4f}  "
                f"val acc {100 * e['val_acc']:.1f}%  {self.ips:,.0f} img/s  "
                f"{int(el // 60)}:{int(el % 60):02d} elapsed",
                file=sys.stderr,
                flush=True,
            )
        elif t == "end":
            self.status.clear()


def _rank() -> int:
    """This process's rank under torchrun (a multi-node run started by hand), else 0."""
    from tuneassist.engine.ddp_launch import under_torchrun

    return int(os.environ["RANK"]) if under_torchrun() else 0


def train_fn(spec: RunSpec) -> Callable[..., dict[str, Any]]:
    """The foreground trainer for `spec`, all with train()'s signature: in this process on one device;
    torchrun + DDP on `spec.devices` devices of this machine; or, when this process is itself a rank
    that torchrun started (multi-node), this rank of that run, with events on rank 0 only."""
    from tuneassist.engine.ddp_launch import run_distributed, under_torchrun

    if under_torchrun():
        from tuneassist.engine.distributed import run_rank

        def as_rank(spec: RunSpec, on_event: Any = None, **kw: Any) -> dict[str, Any]:
            return run_rank(spec, on_event=on_event if _rank() == 0 else None, **kw)

        return as_rank
    if spec.devices > 1:
        return run_distributed
    from tuneassist.engine.train import train

    return train


def _background(args: argparse.Namespace, spec: RunSpec, kind: str) -> int:
    from tuneassist.cli.runs_cmd import launch_background

    return launch_background(args, spec, kind)


def cmd_lr_find(args: argparse.Namespace) -> int:
    lr_start, lr_end = args.lr
    if not lr_range_ok(lr_start, lr_end, grows=True):
        raise UserError(
            f"LR range {lr_start:g}:{lr_end:g} must grow; give it low:high, both positive, e.g. --lr 1e-4:10"
        )
    over: dict[str, Any] = dict(
        schedule=f"range_{args.mode}",
        lr_min=lr_start,
        lr_max=lr_end,
        momentum_max=args.momentum[0],
        momentum_min=args.momentum[1],
        test=False,
        eval_subset=args.eval_subset,
        sync_every=5,
    )
    if args.wd is None:
        over["weight_decay"] = 1e-4
    if args.steps:
        over["steps"] = args.steps
        over["eval_every"] = args.eval_every or max(1, args.steps // 25)
    spec = _spec_from_args(args, **over)
    if spec.steps is None:  # about four epochs of the train split, 100..400 steps
        from tuneassist.advisor.checklist import FALLBACK_TRAIN_SIZE, TRAIN_SIZES
        from tuneassist.session import estimate_train_size

        n_train = estimate_train_size(spec.data, spec.val_fraction) or TRAIN_SIZES.get(
            spec.data, FALLBACK_TRAIN_SIZE
        )
        per_epoch = max(1, n_train // spec.batch_size)
        spec.steps = int(min(400, max(100, 4 * per_epoch)))
        spec.eval_every = args.eval_every or max(1, spec.steps // 25)
    if args.background:
        return _background(args, spec, "lr_find")
    result = run_lr_find(spec, quiet=args.json or _rank() != 0)
    if _rank() != 0:
        return 0
    if args.json:
        print(json.dumps(result))
    else:
        print(render_lr_find(result))
    return 0


def run_lr_find(spec: RunSpec, quiet: bool = False) -> dict[str, Any]:
    """Run the range test in the foreground and read it with the advisor."""
    from tuneassist.advisor.lr_range import suggest_lr

    lrs: list[float] = []
    losses: list[float | None] = []
    val_lrs: list[float] = []
    val_losses: list[float] = []
    progress = Progress(quiet)

    def on_event(e: dict[str, Any]) -> None:
        progress(e)
        if e["type"] == "step":
            lrs.append(e["lr"])
            losses.append(e["train_loss"])
        elif e["type"] == "eval" and lrs:
            val_lrs.append(lrs[-1])
            val_losses.append(e["val_loss"])

    end = train_fn(spec)(spec, on_event=on_event)
    clean = [math.nan if v is None else v for v in losses]
    suggestion = suggest_lr(
        lrs, clean, val_lrs or None, val_losses or None, diverged_at_lr=end.get("diverged_lr")
    )
    return {
        "spec": spec.to_dict(),
        "suggestion": suggestion.to_dict(),
        "curve": {"lr": lrs, "train_loss": losses, "val_lr": val_lrs, "val_loss": val_losses},
        "end": end,
        "start": run_facts(progress.start),
    }


def render_lr_find(result: dict[str, Any]) -> str:
    from tuneassist.cli.termplot import range_test_lines

    s = result["suggestion"]
    lines = range_test_lines(result["curve"], s, color=sys.stdout.isatty())
    data, model = shlex.quote(str(result["spec"]["data"])), shlex.quote(str(result["spec"]["model"]))
    train = result["spec"].get("train_fn")
    net = f"--train {shlex.quote(str(train))} --allow-import" if train else f"--model {model}"
    if not train and (":" in str(result["spec"]["model"]) or is_data_module(str(result["spec"]["data"]))):
        net += " --allow-import"  # a module:function model or data imports the user's code
    if s.get("min_lr") is None or s.get("max_lr") is None:  # no range: the failure's advice is the news
        retry = s.get("retry_range")
        lr = f" --lr {retry[0]:.3g}:{retry[1]:.3g}" if retry else ""
        lines.append(f"Next: tuneassist lr-find --data {data} {net}{lr} (see the note above)")
    else:
        lines.append(
            f"Next: tuneassist train --data {data} {net} "
            f"--schedule onecycle --lr {s['min_lr']:.3g}:{s['max_lr']:.3g} --momentum 0.95:0.85"
        )
    return "\n".join(lines)


TRAIN_DEFAULTS = {"data": "synthetic", "model": "simple3", "batch_size": 128}


# What `train --profile` takes from the profile (the rest: the command line, or the defaults).
_PROFILE_KEYS = (
    "data", "model", "batch_size", "weight_decay", "wd_exclude_bn_bias", "nesterov", "optimizer",
    "train_fn", "schedule", "lr_min", "lr_max", "momentum_max", "momentum_min", "epochs",
    "rise_fraction", "final_div",
)  # fmt: skip


def _profile_values(args: argparse.Namespace) -> dict[str, Any]:
    """The profile's values, and its devices, image size and WD into `args` where the command line
    left them unset: whatever the command line gives explicitly wins."""
    from tuneassist.cli.profile_cmd import profile_dirs
    from tuneassist.profiles import find_profile, profile_to_runspec

    prof = find_profile(args.profile, profile_dirs(getattr(args, "workspace", None)))
    base = profile_to_runspec(prof, allow_import=args.allow_import).to_dict()
    over = {k: base[k] for k in _PROFILE_KEYS}
    if args.optimizer is not None:  # given on the command line: it wins over the profile's
        over.pop("optimizer")
    if args.devices is None:
        args.devices = base["devices"]
    if args.image_size is None and args.data in (None, base["data"]):  # the size it was tuned at
        args.image_size = base["image_size"]
    if args.wd is None:
        args.wd = over["weight_decay"]
    return over


def cmd_train(args: argparse.Namespace) -> int:
    over: dict[str, Any] = _profile_values(args) if args.profile else {}
    for k, v in TRAIN_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, over.get(k, v))
    schedule = args.schedule or over.get("schedule", "onecycle")
    over["schedule"] = schedule
    if args.lr is not None:
        over["lr_min"], over["lr_max"] = args.lr
        if schedule != "onecycle":
            over["lr_min"] = over["lr_max"] = args.lr[-1]
    elif schedule != "onecycle" and not args.profile:
        over["lr_min"] = over["lr_max"] = 0.01
    if args.momentum is not None:
        over["momentum_max"], over["momentum_min"] = args.momentum
    elif schedule != "onecycle" and not args.profile:
        over["momentum_max"] = over["momentum_min"] = 0.9
    if args.epochs is not None:
        over["epochs"] = args.epochs
    elif "epochs" not in over:
        over["epochs"] = 3.0
    if args.steps is not None:
        over["steps"] = args.steps
    if args.rise_fraction is not None:
        over["rise_fraction"] = args.rise_fraction
    if args.eval_every is not None:
        over["eval_every"] = args.eval_every
    for k in ("data", "model", "batch_size"):
        over.pop(k, None)  # they come from args, which now hold the profile's or the defaults
    if args.checkpoint_every is not None:
        over["checkpoint_every"] = args.checkpoint_every
    elif args.background:
        over["checkpoint_every"] = 1
    spec = _spec_from_args(args, **over)
    if args.background:
        return _background(args, spec, "train")
    progress = Progress(args.json)
    end = train_fn(spec)(spec, on_event=progress)
    if _rank() != 0:
        return 0 if end["outcome"] == "finished" else 1
    summary = {
        "outcome": end["outcome"],
        "val_loss": end["val_loss"],
        "val_acc": end["val_acc"],
        "test_loss": end["test_loss"],
        "test_acc": end["test_acc"],
        "epochs": end["epoch"],
        "steps": end["step"],
        "wall_time": end["wall_time"],
        "images_per_s": end["images_per_s"],
        **run_facts(progress.start),
    }
    if args.json:
        print(json.dumps(summary))
        return 0 if end["outcome"] == "finished" else 1
    if end["outcome"] == "diverged":
        print(
            f"diverged: {end['reason']}. Lower the LR "
            f"(e.g. --lr {spec.lr_min / 3:.3g}:{spec.lr_max / 3:.3g}) "
            "or run `tuneassist lr-find` to find the largest LR that trains."
        )
        return 1
    acc = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    print(
        f"{end['outcome']}: {end['epoch']:.3g} epochs in {end['wall_time']:.1f} s "
        f"({end['images_per_s']:,.0f} img/s). val loss {end['val_loss']:.4f}, val acc {acc(end['val_acc'])}; "
        f"test loss {end['test_loss'] if end['test_loss'] is None else round(end['test_loss'], 4)}, "
        f"test acc {acc(end['test_acc'])}"
    )
    return 0
