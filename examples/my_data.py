"""Your own data for tuneassist's own training loop: `--data module:function --allow-import`.

The function takes no arguments and returns (train, test): two map-style torch Datasets whose items are
`(image, label)`, the image a CHW float tensor (what `transforms.ToTensor()` gives; every image the same
size) and the label an int class index. tuneassist reads the classes (the Dataset's `classes`, else
0..max label) and the size (item 0's) from them, holds a seeded validation split out of train, measures
the normalisation on train, and applies its crop + flip augmentation (pass `--no-augment` when your
Dataset augments itself). Data that does not fit on the device is streamed through DataLoader workers.

    tuneassist lr-find --data examples.my_data:datasets --allow-import
    tuneassist train --data examples.my_data:datasets --allow-import --lr 0.05:0.5 --epochs 3
    tuneassist tune --data examples.my_data:datasets --allow-import --budget quick

Here: small generated 40x40 images (no download), class k brighter in its own tile of a grid. With your
own files, return e.g. `torchvision.datasets.ImageFolder(root, transform=transforms.Compose(
[transforms.Resize((64, 64)), transforms.ToTensor()]))` for each split.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

SIDE = 40
CLASSES = ["north-west", "north", "north-east", "west", "centre", "east"]


class TileImages(Dataset):
    """`n` noisy SIDE x SIDE images of len(CLASSES) classes, the same for a given seed."""

    classes = CLASSES

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, len(CLASSES), (n,), generator=g)
        self.noise_seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        y = int(self.labels[i])
        g = torch.Generator().manual_seed(self.noise_seed * 1_000_003 + i)
        x = 0.5 + 0.15 * torch.randn(3, SIDE, SIDE, generator=g)
        r, c = divmod(y, 3)
        t = SIDE // 3
        x[:, r * t : (r + 1) * t, c * t : (c + 1) * t] += 0.3
        return x.clamp_(0, 1), y


def datasets() -> tuple[Dataset, Dataset]:
    """(train, test): what `--data examples.my_data:datasets` trains and reports on."""
    return TileImages(1200, seed=0), TileImages(300, seed=1)
