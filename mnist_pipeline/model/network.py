"""Network architectures and batched inference (pure torch; no I/O). Networks return logits."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mnist_pipeline.core.contract import NUM_CLASSES


class ClassicNet(nn.Module):
    """The classic pytorch/examples MNIST CNN (21,840 parameters); dropout 0.5 unless
    train.dropout sets it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc1_drop = nn.Dropout()
        self.fc2 = nn.Linear(50, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 28, 28] normalised images -> [N, 10] logits."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(self.fc1_drop(x))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    """3x3 convolution (no bias: the batch norm has one), batch norm, ReLU."""
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class WideNet(nn.Module):
    """The opt-in stronger CNN (`model.arch: wide`): five 3x3 convolutions with batch norm in
    three blocks (32; 64-64; 128-128 channels at 28, 14 and 7 pixels), global average pooling,
    dropout, one linear layer (278,890 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(1, 32), nn.MaxPool2d(2),
            *_conv_bn(32, 64), *_conv_bn(64, 64), nn.MaxPool2d(2),
            *_conv_bn(64, 128), *_conv_bn(128, 128), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 28, 28] normalised images -> [N, 10] logits."""
        return self.head(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"classic": ClassicNet, "wide": WideNet}
DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def logits_layer(model: nn.Module) -> nn.Linear:
    """The linear layer whose outputs are `model`'s logits (temperature scaling folds into it)."""
    if isinstance(model, ClassicNet):
        return model.fc2
    if isinstance(model, WideNet):
        return model.head[-1]
    raise TypeError(f"no known logits layer in {type(model).__name__}")


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm2d that follows a Conv2d inside an
    nn.Sequential folded into that convolution's weights and bias (what export ships: the
    same function, no batch-norm ops left). Models without batch norm come back unchanged."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return folded


def build_model(arch: str, dropout: float | None = None) -> nn.Module:
    """Instantiate an architecture by its params.yaml name; `dropout`, when given, is the
    probability of every dropout layer in it (training only: eval mode has no dropout)."""
    try:
        model = ARCHITECTURES[arch]()
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHITECTURES)}") from None
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, DROPOUT_LAYERS):
                module.p = dropout
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits for every normalised image, in order, computed in eval mode batch by batch."""
    model.eval()
    if len(images) == 0:
        return torch.empty(0, NUM_CLASSES)
    return torch.cat([model(chunk) for chunk in images.split(batch_size)])
