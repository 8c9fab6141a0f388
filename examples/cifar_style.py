"""Your own CIFAR-style training script, tuned by tuneassist's checklist.

tuneassist calls `train(hp, report)` for every run of the checklist (the LR range test, the batch size,
momentum and weight decay sweeps, the final 1cycle run) in a background worker:

    tuneassist lr-find --train examples.cifar_style:train --allow-import --data synthetic
    tuneassist train --train examples.cifar_style:train --allow-import --data synthetic \\
        --schedule onecycle --lr 0.05:0.5 --epochs 3 --background
    tuneassist tune --train examples.cifar_style:train --allow-import --data synthetic --budget quick

The function keeps its own model, data and loop; from `hp` it takes what the checklist is trying:
`hp.batch_size`, `hp.make_optimizer(model)` (SGD/Adam/AdamW with the run's weight decay),
`hp.plan(len(train_loader))` (the run's length: the schedule is fixed from it), `hp.set_hyper(optimizer,
step)` (this step's LR and momentum), `hp.should_eval(step)`, `hp.device`, `hp.seed`, `hp.data`. It hands
each step's numbers to `report(step, train_loss=..., val_loss=..., val_acc=...)` and stops when that
returns False (the run's last step, a cancel, or a loss that blew up).

`--data synthetic` here means this script's own small learnable images (no download); `folder:PATH`
reads an image folder with torchvision's ImageFolder, as a user's script would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

NUM_CLASSES = 10


def learnable_images(n: int, seed: int) -> TensorDataset:
    """10 classes of noisy 32x32 images, class k brighter in its own tile of a 4x4 grid."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = 0.6 * torch.randn(n, 3, 32, 32, generator=g)
    for k in range(NUM_CLASSES):
        r, c = divmod(k, 4)
        x[y == k, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] += 1.5
    return TensorDataset(x, y)


def make_data(hp) -> tuple[Dataset, Dataset, Dataset, int]:  # noqa: ANN001 - tuneassist's Hyper
    """(train, validation, test, classes): the script's own data; the images are the same for every run."""
    if hp.data.startswith("folder:"):
        from torchvision import datasets, transforms

        root = hp.data.partition(":")[2]
        tf = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
        full = datasets.ImageFolder(f"{root}/train", transform=tf)
        test = datasets.ImageFolder(f"{root}/test", transform=tf)
        n_val = max(1, len(full) // 10)
        train, val = torch.utils.data.random_split(
            full, [len(full) - n_val, n_val], generator=torch.Generator().manual_seed(0)
        )
        return train, val, test, len(full.classes)
    n = 3000 if hp.data == "synthetic" else int(hp.data.partition(":")[2] or 3000)
    held = max(200, n // 6)
    return learnable_images(n, 0), learnable_images(held, 1), learnable_images(held, 2), NUM_CLASSES


def make_model(num_classes: int) -> nn.Module:
    """A small CIFAR-style CNN of the script's own, with BatchNorm."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(
        block(3, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )  # fmt: skip


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    model.eval()
    total, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        total += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    model.train()
    return {"val_loss": total / n, "val_acc": correct / n}


def train(hp, report) -> None:  # noqa: ANN001 - tuneassist's Hyper and report
    torch.manual_seed(hp.seed)
    train_set, val_set, test_set, classes = make_data(hp)
    train_loader = DataLoader(train_set, batch_size=hp.batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=256)
    model = make_model(classes).to(hp.device)
    optimizer = hp.make_optimizer(model)
    total = hp.plan(
        len(train_loader), train_size=len(train_set), val_size=len(val_set), test_size=len(test_set),
        num_classes=classes,
    )  # fmt: skip
    step = 0
    while True:
        for x, y in train_loader:
            x, y = x.to(hp.device), y.to(hp.device)
            hp.set_hyper(optimizer, step)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            numbers = evaluate(model, val_loader, hp.device) if hp.should_eval(step) else {}
            if hp.test and step + 1 == total:  # the final run's test accuracy, after its last step
                test = evaluate(model, DataLoader(test_set, batch_size=256), hp.device)
                numbers.update(test_loss=test["val_loss"], test_acc=test["val_acc"])
            if not report(step, train_loss=loss.item(), **numbers):
                return
            step += 1
