"""Profiles in the forms other tools read: a PyTorch script, a LightningModule mixin, JSON.

The PyTorch export reproduces tuneassist's 1cycle exactly with `torch.optim.lr_scheduler.OneCycleLR`
(three_phase=True, anneal_strategy='linear'): the LR rises lr_min -> lr_max over `rise_fraction` of
the steps, falls back to lr_min over the same number of steps, then anneals to lr_min / final_div;
momentum moves the opposite way between momentum_max and momentum_min. In OneCycleLR's terms:
max_lr = lr_max, div_factor = lr_max / lr_min, final_div_factor = final_div, pct_start = rise_fraction,
max_momentum = momentum_max, base_momentum = momentum_min.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tuneassist.dataref import BUILTIN, after_holdout
from tuneassist.errors import UserError
from tuneassist.profiles.schema import Profile

FORMATS = ("pytorch", "lightning", "json")
# Training images per epoch of the built-in data sets as tuneassist trains them (10% held out).
TRAIN_IMAGES = {k: after_holdout(f.train) for k, f in BUILTIN.items()}  # after the default 10% hold-out


def onecycle_kwargs(profile: Profile, total_steps: int) -> dict[str, Any]:
    """OneCycleLR's arguments for a profile (everything but the optimizer)."""
    return {
        "max_lr": profile.lr_max,
        "total_steps": total_steps,
        "pct_start": profile.rise_fraction,
        "anneal_strategy": "linear",
        "cycle_momentum": True,
        "base_momentum": profile.momentum_min,
        "max_momentum": profile.momentum_max,
        "div_factor": profile.lr_max / profile.lr_min,
        "final_div_factor": profile.final_div,
        "three_phase": True,
    }


def steps_per_epoch(profile: Profile) -> tuple[int | None, str]:
    """Steps per epoch (last partial batch dropped) and where the number comes from."""
    if profile.steps_per_epoch is not None:
        return profile.steps_per_epoch, "from the profile"
    n = TRAIN_IMAGES.get(profile.data)
    if n is None:
        return None, f"unknown for data {profile.data!r}"
    return n // profile.batch_size, f"{n:,} training images // TBS {profile.batch_size}"


def total_steps(profile: Profile, spe: int) -> int:
    """The run's length in optimizer steps, as the engine counts it: round(epochs x steps/epoch)."""
    return max(1, round(profile.epochs * spe))


def one_line(text: str) -> str:
    """`text` with every character that is not printable (newlines, ESC, line and paragraph separators,
    bidi overrides) escaped: safe inside a `#` comment of Python or YAML, which ends at a line break."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _docstring_body(text: str) -> str:
    """`text` as the inside of a plain (not raw) triple-quoted Python string whose value is `text`:
    backslashes and quotes escaped, so nothing in it can close the string; non-printable characters
    escaped too, except the newlines the template itself writes between lines."""
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n" or c.isprintable():
            out.append(c)
        else:
            out.append(ascii(c)[1:-1])
    return "".join(out)


def _lit(v: Any) -> str:
    """A number or bool as a Python literal (a profile's numbers are validated; never text here)."""
    if not isinstance(v, bool | int | float):
        raise TypeError(f"{type(v).__name__} where the export writes a number")
    return repr(v)


def _header(profile: Profile) -> str:
    """One line describing the profile; every free-text value in it is escaped to printable text."""
    return one_line(_header_text(profile))


def _header_text(profile: Profile) -> str:
    acc = ""
    if profile.expected_accuracy is not None:
        acc = f" Expected test accuracy: {profile.expected_accuracy:g}%"
        if profile.expected_source:
            acc += f" ({profile.expected_source})"
        acc += "."
    if profile.measured_accuracy is not None:
        acc += f" Measured: {profile.measured_accuracy:g}%."
    return (
        f"tuneassist profile {profile.name!r}: {profile.model} on {profile.data}, 1cycle LR "
        f"{profile.lr_min:g} -> {profile.lr_max:g}, "
        f"momentum {profile.momentum_max:g} -> {profile.momentum_min:g}, "
        f"WD {profile.weight_decay:g}, TBS {profile.batch_size}, {profile.epochs:g} epochs.{acc}"
    )


# The generated script imports torch; this module must not (spelled out of line-start position so
# layering checks that grep this package for torch imports stay meaningful).
IMPORT_TORCH = "import " + "torch"


# The optimiser each profile names, as template text (the profile's value only picks the entry):
# the class, its arguments beyond params and lr, and what it is.
_OPTIMIZERS = {
    "sgd": ("torch.optim.SGD", "momentum=MOMENTUM_MAX, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV",
            "SGD: momentum, L2 weight decay, as in the paper"),
    "adam": ("torch.optim.Adam", "betas=(MOMENTUM_MAX, 0.999), weight_decay=WEIGHT_DECAY",
             "Adam: beta1 cycles as momentum does, L2 weight decay"),
    "adamw": ("torch.optim.AdamW", "betas=(MOMENTUM_MAX, 0.999), weight_decay=WEIGHT_DECAY",
              "AdamW: beta1 cycles as momentum does, decoupled weight decay"),
}  # fmt: skip


def _constants(profile: Profile) -> str:
    """The profile's numbers as the script's constants, every one a literal."""
    nesterov = f"NESTEROV = {_lit(profile.nesterov)}\n" if profile.optimizer == "sgd" else ""
    return (
        f"MAX_LR = {_lit(profile.lr_max)}\n"
        f"DIV_FACTOR = {_lit(profile.lr_max / profile.lr_min)}  # first LR = MAX_LR / DIV_FACTOR = lr_min\n"
        f"FINAL_DIV_FACTOR = {_lit(profile.final_div)}  # last LR = lr_min / FINAL_DIV_FACTOR\n"
        f"PCT_START = {_lit(profile.rise_fraction)}  # steps rising (as many falling, then anneal)\n"
        f"MOMENTUM_MAX = {_lit(profile.momentum_max)}\n"
        f"MOMENTUM_MIN = {_lit(profile.momentum_min)}\n"
        f"WEIGHT_DECAY = {_lit(profile.weight_decay)}\n"
        f"{nesterov}"
        f"BATCH_SIZE = {_lit(profile.batch_size)}  # total over {_lit(profile.devices)} device(s)\n"
        f"EPOCHS = {_lit(profile.epochs)}\n"
    )


def _make_onecycle(profile: Profile) -> str:
    """`make_onecycle(model, total_steps)`: the profile's optimiser and OneCycleLR, shared by both
    Python exports so that the two never disagree on the schedule."""
    cls, args, what = _OPTIMIZERS[profile.optimizer]
    params = (
        "    decay = [p for p in model.parameters() if p.ndim > 1]\n"
        "    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN weights and biases\n"
        "    params = [\n"
        "        {'params': decay, 'weight_decay': WEIGHT_DECAY},\n"
        "        {'params': no_decay, 'weight_decay': 0.0},\n"
        "    ]\n"
        if profile.wd_exclude_bn_bias
        else "    params = model.parameters()\n"
    )
    return (
        "def make_onecycle(model, total_steps):\n"
        f'    """The optimizer ({what}) and its OneCycleLR over `total_steps` steps."""\n'
        f"{params}"
        f"    optimizer = {cls}(\n        params, lr=MAX_LR / DIV_FACTOR, {args}\n    )\n"
        "    scheduler = torch.optim.lr_scheduler.OneCycleLR(\n"
        "        optimizer,\n"
        "        max_lr=MAX_LR,\n"
        "        total_steps=int(total_steps),\n"
        "        pct_start=PCT_START,\n"
        '        anneal_strategy="linear",\n'
        "        cycle_momentum=True,\n"
        "        base_momentum=MOMENTUM_MIN,\n"
        "        max_momentum=MOMENTUM_MAX,\n"
        "        div_factor=DIV_FACTOR,\n"
        "        final_div_factor=FINAL_DIV_FACTOR,\n"
        "        three_phase=True,\n"
        "    )\n"
        "    return optimizer, scheduler\n"
    )


def _demo(profile: Profile, make: str) -> str:
    """The `__main__` block: print the schedule for a stand-in model (`make` builds the pair)."""
    momentum = "group['momentum']" if profile.optimizer == "sgd" else "group['betas'][0]"
    return (
        'if __name__ == "__main__":\n'
        f"    model = torch.nn.Linear(1, 1)  # stand-in: use your {one_line(profile.model)}\n"
        f"    optimizer, scheduler = {make}\n"
        "    total = scheduler.total_steps\n"
        "    for step in range(total):\n"
        "        if step % max(1, total // 10) == 0 or step == total - 1:\n"
        "            group = optimizer.param_groups[0]\n"
        f"            print(f\"step {{step:6d}}  lr {{group['lr']:.5g}}  momentum {{{momentum}:.4g}}\")\n"
        "        optimizer.step()\n"
        "        scheduler.step()\n"
    )


def export_pytorch(profile: Profile) -> str:
    """A short runnable script: the profile's optimiser + OneCycleLR, its length from your loader."""
    spe, origin = steps_per_epoch(profile)
    origin = one_line(origin)
    spe_line = (
        f"STEPS_PER_EPOCH = {_lit(spe)}  # {origin}; for the demo below: make_optimizer reads your loader"
        if spe is not None
        else f"STEPS_PER_EPOCH = None  # {origin}: the demo below uses 100; make_optimizer reads your loader"
    )
    # Every value from the profile enters the script as a literal: numbers through repr() of a float,
    # int or bool, text only inside the (escaped) docstring or a one-line comment.
    return f'''"""{_docstring_body(_header(profile))}

Reproduces the profile's 1cycle schedule with {_OPTIMIZERS[profile.optimizer][0]} and OneCycleLR:
optimizer, scheduler = make_optimizer(model, train_loader); call scheduler.step() after every
optimizer.step() (once per batch, not per epoch). Run this file to print the schedule.
"""

{IMPORT_TORCH}

{_constants(profile)}{spe_line}


{_make_onecycle(profile)}

def make_optimizer(model, train_loader, epochs=EPOCHS, accumulation_steps=1):
    """The optimizer and its OneCycleLR for `model`, as long as `epochs` of `train_loader`.

    The steps per epoch are your loader's: len(train_loader) batches (or pass that number), divided
    by `accumulation_steps` when you step the optimizer once per several batches.
    """
    batches = train_loader if isinstance(train_loader, int) else len(train_loader)
    steps_per_epoch = max(1, batches // accumulation_steps)
    return make_onecycle(model, max(1, round(epochs * steps_per_epoch)))


{_demo(profile, "make_optimizer(model, STEPS_PER_EPOCH or 100)")}'''


def export_lightning(profile: Profile) -> str:
    """A LightningModule mixin whose configure_optimizers returns the profile's optimiser with 1cycle
    over the trainer's `estimated_stepping_batches`, stepped every batch (interval "step"): the length
    comes from the trainer (its epochs, the DataModule's batches, gradient accumulation, devices), so a
    DataModule of any size trains to the schedule's end and never past it."""
    epochs = profile.epochs
    whole = float(epochs).is_integer()
    max_epochs = int(epochs) if whole else math.ceil(epochs)
    rounded = "" if whole else "  # the profile's epochs, rounded up: Lightning counts whole epochs"
    per_device = profile.batch_size // profile.devices
    trainer = f'{{"max_epochs": {_lit(max_epochs)}, "devices": {_lit(int(profile.devices))}}}'
    return f'''"""{_docstring_body(_header(profile))}

1cycle for your LightningModule, with {_OPTIMIZERS[profile.optimizer][0]} and OneCycleLR: put
OneCycleMixin first in its bases (class Net(OneCycleMixin, LightningModule)), or copy its
configure_optimizers, and train with Trainer(**TRAINER_KWARGS) and a DataModule whose batch size is
BATCH_SIZE_PER_DEVICE. The schedule lasts trainer.estimated_stepping_batches steps (epochs x batches
per epoch / accumulate_grad_batches, across devices) and steps every batch (interval "step").
Run this file to print the schedule for 100 steps.
"""

import math

{IMPORT_TORCH}

{_constants(profile)}BATCH_SIZE_PER_DEVICE = {_lit(per_device)}
TRAINER_KWARGS = {trainer}{rounded}


{_make_onecycle(profile)}

class OneCycleMixin:
    """configure_optimizers for a LightningModule: the profile's optimizer and 1cycle, per batch."""

    def configure_optimizers(self):
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise ValueError("1cycle needs the run's length: give the Trainer max_epochs or max_steps")
        optimizer, scheduler = make_onecycle(self, max(1, int(total_steps)))
        return {{"optimizer": optimizer, "lr_scheduler": {{"scheduler": scheduler, "interval": "step"}}}}


{_demo(profile, "make_onecycle(model, 100)")}'''


def export_json(profile: Profile) -> str:
    """The profile as JSON, with OneCycleLR's arguments worked out when the steps per epoch are known."""
    d = profile.to_dict()
    spe, origin = steps_per_epoch(profile)
    if spe is not None:
        d["onecycle_lr"] = {**onecycle_kwargs(profile, total_steps(profile, spe)), "steps_per_epoch": spe}
    d["needs_import"] = profile.needs_import
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def export_profile(profile: Profile, fmt: str) -> str:
    """The profile as text in `fmt`: 'pytorch', 'lightning' or 'json'."""
    if fmt == "pytorch":
        return export_pytorch(profile)
    if fmt == "lightning":
        return export_lightning(profile)
    if fmt == "json":
        return export_json(profile)
    raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


EXTENSIONS = {"pytorch": ".py", "lightning": ".py", "json": ".json"}
