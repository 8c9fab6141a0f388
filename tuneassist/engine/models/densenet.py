"""DenseNet-40 (k=12) of Huang et al. 2017, the basic form: no bottleneck, no compression.

A 3x3 convolution to 16 channels, three dense blocks of 12 layers (BN-ReLU-conv3x3 to k=12 new
channels each, fed with every earlier feature map of the block), 1x1-conv + 2x2 average-pool
transitions between them, then BN-ReLU, global average pooling and the classifier: depth
1 + 3*12 + 2 + 1 = 40, 1.02M parameters for 10 classes (the paper's 1.0M).

Feature buffer. Each layer's input is the concatenation of all earlier features of its block;
re-concatenating per layer copies O(L^2) channels. In NCHW on the CPU the block instead allocates
one buffer for all its output channels, writes each layer's new features into their slice, and
hands layer l a view of the first channels. Autograd cannot see those writes as in-place
(every later write would invalidate the views saved for backward), so the writes go through
``.data`` and ``_BufferView`` routes the gradient of each view back to the features it holds,
exactly as ``torch.cat``'s backward would (tested against the cat path, to 1e-12 in float64).

Measured on the 2-core CPU box (batch 64, 32x32, forward + backward, 1 thread, best of 8-10 under
load from other jobs): first dense block 4.0 s with the buffer vs 4.7 s with torch.cat, the later
blocks level (2.64 vs 2.71 s, 1.16 vs 1.10 s), the whole net 5.6 s vs 6.0 s. So the buffer is kept
for NCHW CPU tensors. In channels_last it loses badly (first block, 2 threads: 3.8 s vs 2.0 s),
because a channel slice of an NHWC buffer is strided and every layer copies it; so torch.cat is
used for channels_last, on CUDA (not measured here), and under torch.compile (whose inductor
removes the concatenation copies itself and cannot trace ``.data``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _BufferView(torch.autograd.Function):
    """``buf[:, :channels]`` as the differentiable concatenation of ``features``."""

    @staticmethod
    def forward(ctx, buf: torch.Tensor, channels: int, *features: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [f.shape[1] for f in features]
        return buf.data[:, :channels]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (None, None, *torch.split(grad, ctx.sizes, dim=1))


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` new channels."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.bn(x)))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; returns the input concatenated with every layer's output."""

    def __init__(self, in_channels: int, growth: int, num_layers: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.growth = growth
        self.out_channels = in_channels + growth * num_layers
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth) for i in range(num_layers))

    @staticmethod
    def _use_buffer(x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and x.is_contiguous() and not torch.compiler.is_compiling()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._use_buffer(x):
            features = [x]
            for layer in self.layers:
                features.append(layer(torch.cat(features, 1) if len(features) > 1 else x))
            return torch.cat(features, 1)
        n, _, h, w = x.shape
        buf = torch.empty(n, self.out_channels, h, w, dtype=x.dtype, device=x.device)
        buf.data[:, : self.in_channels] = x.detach()
        features = [x]
        c = self.in_channels
        for layer in self.layers:
            new = layer(x if c == self.in_channels else _BufferView.apply(buf, c, *features))
            buf.data[:, c : c + self.growth] = new.detach()
            features.append(new)
            c += self.growth
        return _BufferView.apply(buf, c, *features)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (no compression) then 2x2 average pooling."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """Basic DenseNet for CIFAR: depth 3*num_layers + 4, growth rate ``growth``."""

    def __init__(self, num_classes: int = 10, growth: int = 12, num_layers: int = 12, stem: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c = stem
        for i in range(3):
            block = DenseBlock(c, growth, num_layers)
            blocks.append(block)
            c = block.out_channels
            if i < 2:
                blocks.append(Transition(c))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal convs (as Huang et al.), BN scale 1 / shift 0, zero classifier bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv1(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def densenet40(num_classes: int = 10) -> DenseNet:
    return DenseNet(num_classes, growth=12, num_layers=12)
