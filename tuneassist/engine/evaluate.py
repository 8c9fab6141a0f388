"""Validation and test readings: a model's mean loss and accuracy over a loader."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuneassist.engine.collectives import sum_over_ranks
from tuneassist.engine.loader import DeviceLoader


def evaluate(
    model: nn.Module, loader: DeviceLoader, amp: Callable[[], AbstractContextManager[Any]]
) -> tuple[float, float]:
    """Mean loss and accuracy over a loader, with a single host sync at the end (NaNs when empty)."""
    model.eval()
    total = torch.zeros((), device=loader.device, dtype=torch.float64)
    correct = torch.zeros((), device=loader.device, dtype=torch.int64)
    n = 0
    with torch.no_grad(), amp():
        for x, y in loader:
            out = model(x)
            total += F.cross_entropy(out.float(), y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            n += y.numel()
    model.train()
    # Multi-device: every rank holds a shard; sum losses and counts over ranks (not a mean of means).
    sums = sum_over_ranks(torch.stack([total, correct.double(), total.new_tensor(float(n))]))
    total_sum, correct_sum, n_all = sums.tolist()
    if n_all == 0:
        return math.nan, math.nan
    return total_sum / n_all, correct_sum / n_all


def eval_subset_indices(n: int, k: int) -> torch.Tensor:
    """k of n validation images, evenly spaced: the validation split keeps the data's order, and an
    image folder is ordered by class, so its first k images would be one or two classes only (every
    quick evaluation of a sweep on real CIFAR-10 read airplanes and cars)."""
    return torch.linspace(0, n - 1, k).round().long().unique()
