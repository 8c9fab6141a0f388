"""How much training each step spends (the budgets), and the data sizes and epochs it is planned from.

The knob between a CPU demo and the paper's runs; `plan` turns it into run lengths for one session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuneassist.dataref import BUILTIN as BUILTIN_DATA_FACTS
from tuneassist.dataref import after_holdout

# Training split sizes (after the default 10% validation hold-out) of the built-in data sets.
TRAIN_SIZES = {k: after_holdout(f.train) for k, f in BUILTIN_DATA_FACTS.items()}
FALLBACK_TRAIN_SIZE = TRAIN_SIZES["cifar10"]
# The final run's length in the paper (DESIGN.md §2) when the budget is 'paper'.
PAPER_EPOCHS = {("resnet56", "cifar10"): 95, ("densenet40", "cifar10"): 100, ("resnet56", "cifar100"): 100}
PAPER_EPOCHS_DEFAULT = 100
PAPER_EPOCHS_SHALLOW = 30


@dataclass(frozen=True)
class Budget:
    """How much training each step spends: the knob between a CPU demo and the paper's runs."""

    name: str
    range_steps: int
    range_lr: tuple[float, float]
    range_evals: int  # validation points recorded during the range test
    eval_subset: int | None  # validation images per evaluation in short runs (None: all)
    short_epochs: float  # length of one sweep candidate
    short_images: int | None  # ...but at most this many training images (large data sets)
    short_evals: int  # validation points per sweep candidate
    final_epochs: int | None  # None: the paper's epochs for this model and data
    final_images: int | None  # cap on the final run's training images
    wd_refine: bool  # one extra WD run between the two best
    range_retries: int = 1  # extra range tests when the first one cannot be read


BUDGETS: dict[str, Budget] = {
    # quick: synthetic + simple3 on 2 idle CPU cores in ~9 minutes (memory probe, 13 runs and
    # the baseline: about 330k training images; a 200-step range test read the LR 3x too low).
    "quick": Budget("quick", 300, (1e-4, 10.0), 20, 1000, 1.5, 15_000, 8, 8, 120_000, True),
    "standard": Budget("standard", 600, (1e-5, 10.0), 30, 2000, 5.0, None, 12, 30, None, True),
    "paper": Budget("paper", 1000, (1e-5, 10.0), 40, None, 15.0, None, 15, None, None, True),
}
# The batch size a user trains with when they name none (the CLI's default): the untuned baseline's.
DEFAULT_BATCH = 128
# Validation points of a final-length run (at least one per epoch): enough for a diagnosis.
FINAL_EVALS = 10


def pow2_floor(n: float) -> int:
    return 2 ** int(math.floor(math.log2(max(1.0, n))))
