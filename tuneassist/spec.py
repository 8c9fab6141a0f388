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

from tuneassist.dataref import BUILTIN, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, parse_data
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
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        for name in ("lr_min", "lr_max"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise UserError(
                    f"learning rate {name.replace('_', ' ')} is {v}; it must be a positive number"
                )
        if not lr_range_ok(self.lr_min, self.lr_max):
            raise UserError(
                f"LR range reversed ({self.lr_min:g} > {self.lr_max:g}); give it low:high, e.g. --lr 0.1:1"
            )
        for name in ("momentum_max", "momentum_min"):
            v = getattr(self, name)
            if not (0.0 <= v < 1.0):
                raise UserError(f"momentum {v} is outside [0, 1); use e.g. --momentum 0.95:0.85")
        if self.momentum_min > self.momentum_max:
            raise UserError(
                f"momentum range reversed ({self.momentum_max:g}:{self.momentum_min:g}); give it "
                "high:low, e.g. --momentum 0.95:0.85 (it falls while the LR rises)"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(
                f"weight decay {self.weight_decay} is negative; use 0 or a positive value like 1e-4"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UserError(f"batch size {self.batch_size} must be a positive integer, e.g. --batch-size 128")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"steps {self.steps} must be at least 1")
        if self.steps is None and not (self.epochs > 0):
            raise UserError(f"epochs {self.epochs} must be positive, e.g. --epochs 3")
        if self.steps is None and self.epochs > MAX_EPOCHS:
            raise UserError(
                f"epochs {self.epochs:g} is more than {MAX_EPOCHS:,} (a typo?); 1cycle runs take tens to "
                "hundreds, e.g. --epochs 30"
            )
        if not (0.0 < self.val_fraction < 1.0):
            raise UserError(
                f"validation fraction {self.val_fraction:g} must be above 0 and below 1 (the share of the "
                "training images held out for validation), e.g. --val-fraction 0.1"
            )
        if not rise_fraction_ok(self.rise_fraction):
            raise UserError(f"1cycle rise fraction {self.rise_fraction} must be in {RISE_FRACTION_RANGE}")
        if self.final_div < 1:
            raise UserError(f"1cycle final divisor {self.final_div} must be >= 1")
        if self.eval_every is not None and self.eval_every < 1:
            raise UserError(f"eval-every {self.eval_every} must be at least 1 step")
        if self.devices < 1:
            raise UserError(f"devices {self.devices} must be at least 1")
        if not splits_over(self.batch_size, self.devices):  # batch_size is the total (TBS)
            raise UserError(
                f"batch size {self.batch_size} (the total over all devices) does not split evenly over "
                f"{self.devices} devices; use a multiple of {self.devices}"
            )
        if self.devices > 1 and self.device.startswith("cuda:"):
            raise UserError(
                f"--device {self.device} names one GPU but the run asks for {self.devices}; "
                "use --device cuda (the GPUs are picked from the free ones)"
            )
        if self.sync_every < 1:
            raise UserError(f"sync-every {self.sync_every} must be at least 1")
        # Checked here because torch fails on them with an overflow (seed) or a crash (threads) mid-run.
        if not (isinstance(self.seed, int) and -(2**63) <= self.seed < 2**63):
            raise UserError(f"seed {self.seed} is out of range; use a whole number below 2^63, e.g. --seed 0")
        if self.num_threads is not None and not (
            isinstance(self.num_threads, int) and 1 <= self.num_threads <= MAX_THREADS
        ):
            raise UserError(
                f"threads {self.num_threads} must be from 1 to {MAX_THREADS}; use about the number of cores"
            )
        if self.checkpoint_every < 0:
            raise UserError(f"checkpoint-every {self.checkpoint_every} must be 0 (at the end) or more epochs")
        if self.train_fn is not None:
            if not is_module_function(self.train_fn):
                raise UserError(
                    f"--train {self.train_fn!r} is not a module:function; use e.g. --train mytrain:train "
                    "(a function(hp, report) that trains your model)"
                )
            if self.devices > 1:
                raise UserError(f"--train {self.train_fn} runs your function on one device; drop --devices")
        if self.image_size is not None:
            if not (isinstance(self.image_size, int) and MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE):
                raise UserError(
                    f"image size {self.image_size} must be a whole number of pixels from {MIN_IMAGE_SIZE} to "
                    f"{MAX_IMAGE_SIZE}, e.g. --image-size 64"
                )
            if self.image_size != 32 and not self.data.startswith("folder:"):
                raise UserError(
                    f"--image-size {self.image_size}: {self.data} is 32x32; the image size applies to "
                    "folder:PATH data"
                )
        if ":" in self.model and not self.model.startswith(":"):
            if not is_module_function(self.model):
                raise UserError(
                    f"model {self.model!r} is not a valid module:function; use e.g. --model mynets:build "
                    "(a function taking num_classes and returning an nn.Module)"
                )
        elif self.model not in BUILTIN_MODELS:
            raise UserError(
                f"unknown model {self.model!r}; use one of {', '.join(BUILTIN_MODELS)} or module:function"
            )
        parse_data(self.data)  # UserError naming the forms a data reference takes
        return self
