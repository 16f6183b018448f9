"""The classic architecture: layer shapes, parameter count, batched eval-mode logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mnist_pipeline.model.network import (
    ARCHITECTURES,
    DROPOUT_LAYERS,
    ClassicNet,
    build_model,
    predict_logits,
)
from mnist_pipeline.pipeline.sweep import ARCH_DROPOUT

PARAM_SHAPES = {
    "conv1.weight": (10, 1, 5, 5),
    "conv1.bias": (10,),
    "conv2.weight": (20, 10, 5, 5),
    "conv2.bias": (20,),
    "fc1.weight": (50, 320),
    "fc1.bias": (50,),
    "fc2.weight": (10, 50),
    "fc2.bias": (10,),
}


def test_parameter_shapes_and_count() -> None:
    model = build_model("classic")
    assert isinstance(model, ClassicNet)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == PARAM_SHAPES
    assert sum(p.numel() for p in model.parameters()) == 21_840


def test_layer_output_shapes() -> None:
    model = build_model("classic").eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name in ("conv1", "conv2", "fc1", "fc2"):
        module = getattr(model, name)
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.update({name: out.shape}))
    model(torch.zeros(3, 1, 28, 28))
    assert seen == {
        "conv1": (3, 10, 24, 24),
        "conv2": (3, 20, 8, 8),
        "fc1": (3, 50),
        "fc2": (3, 10),
    }


def classic_by_hand(model: ClassicNet, x: torch.Tensor) -> torch.Tensor:
    """The classic network's eval-mode forward pass written out from its layers' weights: conv
    1->10, max-pool, ReLU; conv 10->20, max-pool, ReLU; fc 320->50, ReLU; fc 50->10."""
    x = F.relu(F.max_pool2d(F.conv2d(x, model.conv1.weight, model.conv1.bias), 2))
    x = F.relu(F.max_pool2d(F.conv2d(x, model.conv2.weight, model.conv2.bias), 2))
    x = F.relu(F.linear(x.reshape(len(x), 320), model.fc1.weight, model.fc1.bias))
    return F.linear(x, model.fc2.weight, model.fc2.bias)


def test_each_network_computes_its_layers_in_their_order() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    classic = build_model("classic").eval()
    with torch.no_grad():
        torch.testing.assert_close(classic(x), classic_by_hand(classic, x))
    wide = build_model("wide").eval()
    with torch.no_grad():  # the head sees the last block's mean over all 7x7 places
        last = wide.features[:-1](x)
        assert last.shape == (4, 128, 7, 7)
        expected = wide.head[-1](last.mean(dim=(2, 3)))
        torch.testing.assert_close(wide(x), expected)


@pytest.mark.parametrize("batch", [1, 7])
def test_predict_logits_in_batches_equals_one_eval_pass(batch: int) -> None:
    torch.manual_seed(0)
    model = build_model("classic")  # in train mode: predict_logits must switch to eval
    images = torch.randn(20, 1, 28, 28)
    logits = predict_logits(model, images, batch)
    assert not model.training
    with torch.no_grad():
        expected = model(images)
    assert logits.shape == (20, 10)
    torch.testing.assert_close(logits, expected)  # same order, no dropout
    # Raw logits, not log-probabilities: they do not already sum to 1 after exp.
    assert not torch.allclose(logits.exp().sum(dim=1), torch.ones(20))
    assert predict_logits(model, images[:0], batch).shape == (0, 10)


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout() -> None:
    torch.manual_seed(0)
    model = build_model("classic")
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        build_model("resnet")


@pytest.mark.parametrize("arch", ["classic", "wide"])
def test_dropout_sets_every_dropout_layer(arch: str) -> None:
    default = [m.p for m in build_model(arch).modules() if isinstance(m, DROPOUT_LAYERS)]
    assert default and all(p > 0 for p in default)
    layers = [m for m in build_model(arch, 0.15).modules() if isinstance(m, DROPOUT_LAYERS)]
    assert len(layers) == len(default) and all(m.p == 0.15 for m in layers)


def test_each_architecture_has_the_one_dropout_the_sweep_assumes() -> None:
    """pipeline/sweep.py (torch-free) reads `train.dropout: null` as this value."""
    for arch, own in ARCH_DROPOUT.items():
        found = {m.p for m in build_model(arch).modules() if isinstance(m, DROPOUT_LAYERS)}
        assert found == {own}, arch
    assert set(ARCH_DROPOUT) == set(ARCHITECTURES)


def test_no_dropout_makes_training_mode_deterministic() -> None:
    torch.manual_seed(0)
    model = build_model("classic", 0.0).train()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), model(x))
