"""The full description of one training run, shared by every layer.

Pure Python (no torch) so that the CLI, the run store and the UI can build, validate and
store specs without loading the engine.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from tuneassist.dataref import BUILTIN, check_image_size, parse_data
from tuneassist.errors import UserError

SCHEDULES = ("onecycle", "constant", "step", "range_exp", "range_linear")
OPTIMIZERS = ("sgd", "adam", "adamw")  # adamw: decoupled weight decay (AdamW)
BUILTIN_DATA = tuple(BUILTIN)  # ("synthetic", "cifar10", "cifar100"): tuneassist.dataref
BUILTIN_MODELS = ("simple3", "resnet20", "resnet32", "resnet56", "resnet110", "densenet40")
MAX_THREADS = 1024  # torch overflows or crashes asked for far more CPU threads than any machine has
MAX_EPOCHS = 10_000  # beyond this an epochs value is a typo (1e9), not a plan
RISE_FRACTION_RANGE = "(0, 0.5]"  # a 1cycle LR rises over at most half the run (and falls over as long)


# ---------------------------------------------------------------------------------------------
# Value rules: each is written once, here. `validate` asks them, and so do the profiles, the
# checklist, the CLI and the engine; each keeps its own one-line message, which names the fix in
# its own terms (a flag, a TOML key, a typed value).


def lr_range_ok(lo: Any, hi: Any, *, grows: bool = False) -> bool:
    """A finite, positive LR range low:high. Equal ends are a constant LR; `grows`: the range must
    rise (a range test sweeps it, the checklist's LR step is a range test's sweep and a 1cycle's rise)."""
    for v in (lo, hi):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            return False
    return 0 < lo < hi if grows else 0 < lo <= hi


def rise_fraction_ok(fraction: float) -> bool:
    """The share of a 1cycle run in which the LR rises (RISE_FRACTION_RANGE)."""
    return 0.0 < fraction <= 0.5


def splits_over(batch_size: int, devices: int) -> bool:
    """Whether a total batch size (TBS) splits evenly over the devices: every rank gets the same batch."""
    return devices >= 1 and batch_size % devices == 0


def is_module_function(model: str) -> bool:
    """Whether a model name is a well-formed `module:function` (a user's model; never imported here)."""
    mod, sep, fn = model.partition(":")
    return bool(sep and mod and fn) and all(p.isidentifier() for p in mod.split(".")) and fn.isidentifier()


@dataclass
class RunSpec:
    """Every hyperparameter and setting of one run; stored verbatim by the run store."""

    data: str = "synthetic"
    model: str = "simple3"
    data_dir: str | None = None
    # An image folder's side in pixels (its images are resized to it); None: the folder's most common
    # size. The other data sets are 32x32.
    image_size: int | None = None
    # Stream the data through DataLoader workers even when it fits on the device (--stream); by default
    # a split streams only when it does not fit (tuneassist.engine.data).
    stream: bool = False
    schedule: str = "onecycle"
    # LR: constant/step use lr_max; onecycle goes lr_min -> lr_max -> lr_min -> lr_min/final_div;
    # range tests go lr_min -> lr_max.
    lr_min: float = 0.01
    lr_max: float = 0.1
    # Momentum (SGD momentum or Adam beta1): cyclical from momentum_max down to momentum_min while
    # the LR rises, back while it falls. Equal values mean constant momentum.
    momentum_max: float = 0.95
    momentum_min: float = 0.85
    weight_decay: float = 1e-4
    wd_exclude_bn_bias: bool = False
    nesterov: bool = False
    optimizer: str = "sgd"
    epochs: float = 1.0
    steps: int | None = None  # when set, overrides epochs (range tests count steps)
    batch_size: int = 128
    # 1cycle shape: fraction of the run rising, and the final anneal to lr_min / final_div.
    rise_fraction: float = 0.45
    final_div: float = 100.0
    # Step schedule: LR multiplied by gamma at these fractions of the run.
    step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    step_gamma: float = 0.1
    val_fraction: float = 0.1
    seed: int = 0
    eval_every: int | None = None  # steps between validations; None: once per epoch
    eval_subset: int | None = None  # validate on this many fixed val images (None: all)
    augment: bool = True
    device: str = "auto"
    devices: int = 1
    bf16: bool = True  # CUDA only
    channels_last: bool = True  # NHWC tensors: faster convolutions on CUDA and oneDNN CPUs
    compile: bool = False
    sync_every: int = 10  # read losses back to the host every N steps
    divergence_factor: float = 4.0
    test: bool = True  # evaluate on the test split at the end
    checkpoint_every: int = 0  # epochs between checkpoints (0: only at the end, if a path is given)
    allow_import: bool = False  # allow `module:function` models: the user's consent to run their code
    # Where a `module:function` model's module was found when the run was launched (the sys.path entry);
    # every worker imports it from there, whatever directory it starts in. See tuneassist.usercode.
    model_dir: str | None = None
    data_module_dir: str | None = None  # the same for a `--data module:function` (the user's Datasets)
    # Your own training function, `module:function` (`--train`): it trains your model on your data with
    # this spec's hyperparameters (tuneassist.engine.usertrain); `model` then names the same function.
    train_fn: str | None = None
    num_threads: int | None = None  # CPU threads for torch (None: torch default)

    @property
    def is_range_test(self) -> bool:
        return self.schedule.startswith("range_")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def validate(self) -> RunSpec:
        """Raise UserError for values no run could use; returns self for chaining."""
        for rule in _RUN_RULES:  # in order: the first broken rule is the one reported
            rule(self)
        return self


# ---------------------------------------------------------------------------------------------
# RunSpec.validate's rules, by topic, in the order it asks them.


def _check_optimiser(spec: RunSpec) -> None:
    """The schedule, the optimiser, and the LR, momentum and weight-decay values."""
    if spec.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {spec.schedule!r}; use one of {', '.join(SCHEDULES)}")
    if spec.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {spec.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    for name in ("lr_min", "lr_max"):
        v = getattr(spec, name)
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise UserError(
                f"learning rate {name.replace('_', ' ')} is {v}; it must be a positive number"
            )
    if not lr_range_ok(spec.lr_min, spec.lr_max):
        raise UserError(
            f"LR range reversed ({spec.lr_min:g} > {spec.lr_max:g}); give it low:high, e.g. --lr 0.1:1"
        )
    for name in ("momentum_max", "momentum_min"):
        v = getattr(spec, name)
        if not (0.0 <= v < 1.0):
            raise UserError(f"momentum {v} is outside [0, 1); use e.g. --momentum 0.95:0.85")
    if spec.momentum_min > spec.momentum_max:
        raise UserError(
            f"momentum range reversed ({spec.momentum_max:g}:{spec.momentum_min:g}); give it "
            "high:low, e.g. --momentum 0.95:0.85 (it falls while the LR rises)"
        )
    if not (math.isfinite(spec.weight_decay) and spec.weight_decay >= 0):
        raise UserError(
            f"weight decay {spec.weight_decay} is negative; use 0 or a positive value like 1e-4"
        )


def _check_length(spec: RunSpec) -> None:
    """The batch size, the run's length and its 1cycle shape, validation and evaluation."""
    if not isinstance(spec.batch_size, int) or spec.batch_size < 1:
        raise UserError(f"batch size {spec.batch_size} must be a positive integer, e.g. --batch-size 128")
    if spec.steps is not None and spec.steps < 1:
        raise UserError(f"steps {spec.steps} must be at least 1")
    if spec.steps is None and not (spec.epochs > 0):
        raise UserError(f"epochs {spec.epochs} must be positive, e.g. --epochs 3")
    if spec.steps is None and spec.epochs > MAX_EPOCHS:
        raise UserError(
            f"epochs {spec.epochs:g} is more than {MAX_EPOCHS:,} (a typo?); 1cycle runs take tens to "
            "hundreds, e.g. --epochs 30"
        )
    if not (0.0 < spec.val_fraction < 1.0):
        raise UserError(
            f"validation fraction {spec.val_fraction:g} must be above 0 and below 1 (the share of the "
            "training images held out for validation), e.g. --val-fraction 0.1"
        )
    if not rise_fraction_ok(spec.rise_fraction):
        raise UserError(f"1cycle rise fraction {spec.rise_fraction} must be in {RISE_FRACTION_RANGE}")
    if spec.final_div < 1:
        raise UserError(f"1cycle final divisor {spec.final_div} must be >= 1")
    if spec.eval_every is not None and spec.eval_every < 1:
        raise UserError(f"eval-every {spec.eval_every} must be at least 1 step")


def _check_devices(spec: RunSpec) -> None:
    """The devices the total batch size is split over, and how often they synchronise."""
    if spec.devices < 1:
        raise UserError(f"devices {spec.devices} must be at least 1")
    if not splits_over(spec.batch_size, spec.devices):  # batch_size is the total (TBS)
        raise UserError(
            f"batch size {spec.batch_size} (the total over all devices) does not split evenly over "
            f"{spec.devices} devices; use a multiple of {spec.devices}"
        )
    if spec.devices > 1 and spec.device.startswith("cuda:"):
        raise UserError(
            f"--device {spec.device} names one GPU but the run asks for {spec.devices}; "
            "use --device cuda (the GPUs are picked from the free ones)"
        )
    if spec.sync_every < 1:
        raise UserError(f"sync-every {spec.sync_every} must be at least 1")


def _check_process(spec: RunSpec) -> None:
    """Seed, threads, checkpoints and the user's training function."""
    # Checked here because torch fails on them with an overflow (seed) or a crash (threads) mid-run.
    if not (isinstance(spec.seed, int) and -(2**63) <= spec.seed < 2**63):
        raise UserError(f"seed {spec.seed} is out of range; use a whole number below 2^63, e.g. --seed 0")
    if spec.num_threads is not None and not (
        isinstance(spec.num_threads, int) and 1 <= spec.num_threads <= MAX_THREADS
    ):
        raise UserError(
            f"threads {spec.num_threads} must be from 1 to {MAX_THREADS}; use about the number of cores"
        )
    if spec.checkpoint_every < 0:
        raise UserError(f"checkpoint-every {spec.checkpoint_every} must be 0 (at the end) or more epochs")
    if spec.train_fn is not None:
        if not is_module_function(spec.train_fn):
            raise UserError(
                f"--train {spec.train_fn!r} is not a module:function; use e.g. --train mytrain:train "
                "(a function(hp, report) that trains your model)"
            )
        if spec.devices > 1:
            raise UserError(f"--train {spec.train_fn} runs your function on one device; drop --devices")


def _check_inputs(spec: RunSpec) -> None:
    """The image size, the model and the data reference."""
    if spec.image_size is not None:
        check_image_size(spec.image_size)
        if spec.image_size != 32 and not spec.data.startswith("folder:"):
            raise UserError(
                f"--image-size {spec.image_size}: {spec.data} is 32x32; the image size applies to "
                "folder:PATH data"
            )
    if ":" in spec.model and not spec.model.startswith(":"):
        if not is_module_function(spec.model):
            raise UserError(
                f"model {spec.model!r} is not a valid module:function; use e.g. --model mynets:build "
                "(a function taking num_classes and returning an nn.Module)"
            )
    elif spec.model not in BUILTIN_MODELS:
        raise UserError(
            f"unknown model {spec.model!r}; use one of {', '.join(BUILTIN_MODELS)} or module:function"
        )
    parse_data(spec.data)  # UserError naming the forms a data reference takes


_RUN_RULES = (_check_optimiser, _check_length, _check_devices, _check_process, _check_inputs)
