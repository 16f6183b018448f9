"""Network architectures and batched inference (pure torch; no I/O). Networks return logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_pipeline.contract import NUM_CLASSES


class ClassicNet(nn.Module):
    """The classic pytorch/examples MNIST CNN (21,840 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 28, 28] normalised images -> [N, 10] logits."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)


ARCHITECTURES: dict[str, type[nn.Module]] = {"classic": ClassicNet}


def build_model(arch: str) -> nn.Module:
    """Instantiate an architecture by its params.yaml name."""
    try:
        return ARCHITECTURES[arch]()
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHITECTURES)}") from None


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits for every normalised image, in order, computed in eval mode batch by batch."""
    model.eval()
    if len(images) == 0:
        return torch.empty(0, NUM_CLASSES)
    return torch.cat([model(chunk) for chunk in images.split(batch_size)])
