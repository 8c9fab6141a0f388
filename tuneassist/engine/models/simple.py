"""``simple3``: the shallow 3-layer conv net of Smith's experiments, Caffe's ``cifar10_quick``.

conv5x5 32 -> maxpool 3/2 -> conv5x5 32 -> avgpool 3/2 -> conv5x5 64 -> avgpool 3/2 -> fc 64 ->
fc classes, padding 2, ReLU after each conv, pooling in Caffe's ceil mode (32 -> 16 -> 8 -> 4).
Like the original there is no nonlinearity between the two fully connected layers.

One change: BatchNorm after each convolution, so that it trains quickly in a few epochs (and at
the large learning rates that 1cycle uses) on a CPU. Inputs larger than 32x32 are average-pooled
to 4x4 before the classifier, so any size >= 32 works.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 5, padding=2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Simple3(nn.Module):
    """cifar10_quick with BatchNorm; about 0.15M parameters for 10 classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(3, 32),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *_conv_bn_relu(32, 32),
            nn.AvgPool2d(3, 2, ceil_mode=True),
            *_conv_bn_relu(32, 64),
            nn.AvgPool2d(3, 2, ceil_mode=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(64 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation; BN scale 1 and shift 0."""
        for m in self.modules():
            reset = getattr(m, "reset_parameters", None)
            if m is not self and callable(reset):
                reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if x.shape[-2:] != (4, 4):
            x = self.pool(x)
        return self.fc2(self.fc1(torch.flatten(x, 1)))


def simple3(num_classes: int = 10) -> Simple3:
    return Simple3(num_classes)
