"""User-style nets for the benchmarks: the advisor's rules must hold on nets it was not written for.

Passed to the CLI or a RunSpec as `--model benchmarks.nets:NAME` (with `--allow-import`), exactly as
a user passes their own net. Each is about as cheap as `simple3` on a CPU.
"""

from __future__ import annotations

from torch import nn


def quick_nobn(num_classes: int = 10) -> nn.Module:
    """cifar10_quick without BatchNorm (conv biases instead): a net whose LR ceiling is set by plain
    gradient growth, not by BN's scale invariance, so its range test reads differently."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 32, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64),
        nn.Linear(64, num_classes),
    )


def _dw_block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def mobile_mini(num_classes: int = 10) -> nn.Module:
    """A small MobileNet-style net (depthwise-separable blocks, BN, global pooling): another family."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        *_dw_block(32, 64, 1),
        *_dw_block(64, 96, 2),
        *_dw_block(96, 96, 1),
        *_dw_block(96, 128, 2),
        *_dw_block(128, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )
