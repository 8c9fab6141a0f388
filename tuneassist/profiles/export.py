"""Profiles in the forms other tools read: a PyTorch snippet, a LightningCLI config, JSON.

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

from tuneassist.errors import UserError
from tuneassist.profiles.schema import Profile

FORMATS = ("pytorch", "lightning", "json")
# Training images per epoch of the built-in data sets as tuneassist trains them (10% held out).
TRAIN_IMAGES = {"synthetic": 9000, "cifar10": 45000, "cifar100": 45000}


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


def export_pytorch(profile: Profile) -> str:
    """A short runnable script: SGD + OneCycleLR with the profile's schedule (prints it when run)."""
    spe, origin = steps_per_epoch(profile)
    origin = one_line(origin)
    spe_line = (
        f"STEPS_PER_EPOCH = {_lit(spe)}  # {origin}; use len(train_loader) (drop_last=True) for yours"
        if spe is not None
        else f"STEPS_PER_EPOCH = None  # {origin}: set it to len(train_loader) (drop_last=True)"
    )
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
    # Every value from the profile enters the script as a literal: numbers through repr() of a float,
    # int or bool, text only inside the (escaped) docstring or a one-line comment.
    return f'''"""{_docstring_body(_header(profile))}

Reproduces the profile's 1cycle schedule with torch.optim.SGD and OneCycleLR. Call scheduler.step()
after every optimizer.step() (once per batch, not per epoch). Run this file to print the schedule.
"""

{IMPORT_TORCH}

MAX_LR = {_lit(profile.lr_max)}
DIV_FACTOR = {_lit(profile.lr_max / profile.lr_min)}  # first LR = MAX_LR / DIV_FACTOR = lr_min
FINAL_DIV_FACTOR = {_lit(profile.final_div)}  # last LR = lr_min / FINAL_DIV_FACTOR
PCT_START = {_lit(profile.rise_fraction)}  # fraction of the steps rising (as many falling, then anneal)
MOMENTUM_MAX = {_lit(profile.momentum_max)}
MOMENTUM_MIN = {_lit(profile.momentum_min)}
WEIGHT_DECAY = {_lit(profile.weight_decay)}
NESTEROV = {_lit(profile.nesterov)}
BATCH_SIZE = {_lit(profile.batch_size)}  # total over {_lit(profile.devices)} device(s)
EPOCHS = {_lit(profile.epochs)}
{spe_line}


def make_optimizer(model, steps_per_epoch=STEPS_PER_EPOCH, epochs=EPOCHS):
    """SGD and its OneCycleLR scheduler for `model`."""
    if steps_per_epoch is None:
        raise ValueError("pass steps_per_epoch=len(train_loader)")
{params}    optimizer = torch.optim.SGD(
        params, lr=MAX_LR / DIV_FACTOR, momentum=MOMENTUM_MAX, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=MAX_LR,
        total_steps=max(1, round(epochs * steps_per_epoch)),
        pct_start=PCT_START,
        anneal_strategy="linear",
        cycle_momentum=True,
        base_momentum=MOMENTUM_MIN,
        max_momentum=MOMENTUM_MAX,
        div_factor=DIV_FACTOR,
        final_div_factor=FINAL_DIV_FACTOR,
        three_phase=True,
    )
    return optimizer, scheduler


if __name__ == "__main__":
    model = torch.nn.Linear(1, 1)  # stand-in: use your {one_line(profile.model)}
    optimizer, scheduler = make_optimizer(model, STEPS_PER_EPOCH or 100)
    total = scheduler.total_steps
    for step in range(total):
        if step % max(1, total // 10) == 0 or step == total - 1:
            group = optimizer.param_groups[0]
            print(f"step {{step:6d}}  lr {{group['lr']:.5g}}  momentum {{group['momentum']:.4g}}")
        optimizer.step()
        scheduler.step()
'''


def _yaml_scalar(v: Any) -> str:
    """A YAML scalar: true/false, a number, else a JSON string (JSON is YAML; ASCII-only, so no line
    break of any kind, not even U+2028, can end the value)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float) and math.isfinite(v):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=True)


def export_lightning(profile: Profile) -> str:
    """A LightningCLI config (optimizer + lr_scheduler + trainer) reproducing the schedule."""
    spe, origin = steps_per_epoch(profile)
    if spe is None:
        raise UserError(
            f"profile {profile.name!r}: steps per epoch unknown for data {profile.data!r}; add "
            "steps_per_epoch = N under [schedule] (N = len(train_loader)) and export again"
        )
    steps = total_steps(profile, spe)
    sched = onecycle_kwargs(profile, steps)
    lines = [
        f"# {_header(profile)}",
        f"# total_steps = {profile.epochs:g} epochs x {spe} steps per epoch ({one_line(origin)}).",
        "# LightningCLI steps a scheduler once per *epoch* by default; 1cycle must step every batch.",
        "# Return it with interval 'step': subclass LightningCLI and override",
        "#   configure_optimizers(lightning_module, optimizer, lr_scheduler) to return",
        '#   {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}',
        "trainer:",
        f"  max_epochs: {_yaml_scalar(profile.epochs)}",
        f"  devices: {_yaml_scalar(int(profile.devices))}",
        "optimizer:",
        "  class_path: torch.optim.SGD",
        "  init_args:",
        f"    lr: {_yaml_scalar(profile.lr_min)}",
        f"    momentum: {_yaml_scalar(profile.momentum_max)}",
        f"    weight_decay: {_yaml_scalar(profile.weight_decay)}",
        f"    nesterov: {_yaml_scalar(profile.nesterov)}",
        "lr_scheduler:",
        "  class_path: torch.optim.lr_scheduler.OneCycleLR",
        "  init_args:",
    ]
    lines += [f"    {k}: {_yaml_scalar(v)}" for k, v in sched.items()]
    per_device = profile.batch_size // profile.devices
    lines.append(
        f"# Batch size per device for your DataModule: {_lit(per_device)} (TBS {_lit(profile.batch_size)})."
    )
    return "\n".join(lines) + "\n"


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


EXTENSIONS = {"pytorch": ".py", "lightning": ".yaml", "json": ".json"}
