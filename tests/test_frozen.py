"""bnlib.nn.frozen: frozen BN layers, freeze_batchnorm and set_batchnorm_eval."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlib import (
    BatchNorm1d,
    BatchNorm2d,
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    GhostBatchNorm,
    build_mlp,
    freeze_batchnorm,
    set_batchnorm_eval,
)

# (BN class, frozen class, input shape)
LAYOUTS = [
    (nn.BatchNorm1d, FrozenBatchNorm1d, (6, 3)),
    (nn.BatchNorm1d, FrozenBatchNorm1d, (5, 3, 4)),
    (nn.BatchNorm2d, FrozenBatchNorm2d, (4, 3, 3, 2)),
    (BatchNorm1d, FrozenBatchNorm1d, (6, 3)),
    (BatchNorm1d, FrozenBatchNorm1d, (5, 3, 4)),
    (BatchNorm2d, FrozenBatchNorm2d, (4, 3, 3, 2)),
]
LAYOUT_IDS = ["torch1d-NC", "torch1d-NCL", "torch2d", "bnlib1d-NC", "bnlib1d-NCL", "bnlib2d"]


def trained_bn(bn_cls, shape, affine=True, eps=1e-5):
    """A float64 BN with random affine parameters and running statistics away from 0 and 1."""
    bn = bn_cls(3, eps=eps, affine=affine).double()
    generator = torch.Generator().manual_seed(0)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5, generator=generator)
            bn.bias.normal_(generator=generator)
    for _ in range(3):
        bn(3.0 + 2.0 * torch.randn(shape, generator=generator, dtype=torch.float64))
    return bn


def random_input(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(("bn_cls", "frozen_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_output_equals_eval_mode_bn(bn_cls, frozen_cls, shape, affine, mode):
    bn = trained_bn(bn_cls, shape, affine, eps=1e-3)
    frozen = frozen_cls.from_batchnorm(bn).train(mode == "train")
    assert frozen.eps == bn.eps and frozen.weight.dtype == torch.float64
    x = random_input(shape)
    expected = bn.eval()(x)
    torch.testing.assert_close(frozen(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("bn_cls", "frozen_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_input_gradient_equals_eval_mode_bn(bn_cls, frozen_cls, shape):
    bn = trained_bn(bn_cls, shape).eval()
    frozen = frozen_cls.from_batchnorm(bn)
    x = random_input(shape).requires_grad_()
    upstream = random_input(shape, seed=2)
    (expected,) = torch.autograd.grad(bn(x), x, upstream)
    (got,) = torch.autograd.grad(frozen(x), x, upstream)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("bn_cls", "frozen_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_nothing_moves_or_learns_in_train_mode(bn_cls, frozen_cls, shape):
    frozen = frozen_cls.from_batchnorm(trained_bn(bn_cls, shape)).train()
    before = {name: tensor.clone() for name, tensor in frozen.state_dict().items()}
    x = random_input(shape).requires_grad_()
    for step in range(3):
        frozen(x * (step + 2) + step).sum().backward()
    assert list(frozen.parameters()) == []
    assert x.grad is not None  # gradients still flow through to the layers below
    assert all(not tensor.requires_grad and tensor.grad is None for tensor in frozen.buffers())
    for name, tensor in frozen.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_buffers_and_state_dict_keys_are_torchvisions():
    frozen = FrozenBatchNorm2d(4, eps=1e-3)
    assert list(frozen.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert [name for name, _ in frozen.named_buffers()] == list(frozen.state_dict())
    x = random_input((2, 4, 3, 3)).float()
    torch.testing.assert_close(frozen(x), x / (1 + 1e-3) ** 0.5)  # initially the identity map
    assert repr(frozen) == "FrozenBatchNorm2d(4, eps=0.001)"


@pytest.mark.parametrize(("bn_cls", "frozen_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_bn_state_dict_loads_with_num_batches_tracked(bn_cls, frozen_cls, shape):
    bn = trained_bn(bn_cls, shape)
    assert "num_batches_tracked" in bn.state_dict()
    frozen = frozen_cls(3).double()
    frozen.load_state_dict(bn.state_dict())  # strict: num_batches_tracked is accepted
    x = random_input(shape)
    torch.testing.assert_close(frozen(x), bn.eval()(x), rtol=1e-12, atol=1e-12)
    assert "num_batches_tracked" in bn.state_dict()  # the caller's state dict is not changed


@pytest.mark.parametrize(("bn_cls", "frozen_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_state_dict_of_bn_without_affine_loads(bn_cls, frozen_cls, shape):
    bn = trained_bn(bn_cls, shape, affine=False)
    frozen = frozen_cls(3).double()
    with torch.no_grad():
        frozen.weight.fill_(7.0)
    frozen.load_state_dict(bn.state_dict())
    x = random_input(shape)
    torch.testing.assert_close(frozen(x), bn.eval()(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("bn_cls", "frozen_cls", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_frozen_state_dict_loads_into_bn(bn_cls, frozen_cls, shape):
    frozen = frozen_cls.from_batchnorm(trained_bn(bn_cls, shape))
    bn = bn_cls(3).double()
    bn.load_state_dict(frozen.state_dict())  # strict; num_batches_tracked starts at 0
    assert int(bn.num_batches_tracked) == 0
    x = random_input(shape)
    torch.testing.assert_close(bn.eval()(x), frozen(x), rtol=1e-12, atol=1e-12)


def test_from_batchnorm_copies_and_keeps_device_and_dtype():
    bn = trained_bn(BatchNorm1d, (6, 3))
    frozen = FrozenBatchNorm1d.from_batchnorm(bn)
    with torch.no_grad():
        bn.weight.add_(1.0)
        bn.running_mean.add_(1.0)
    assert not torch.equal(frozen.weight, bn.weight)
    assert not torch.equal(frozen.running_mean, bn.running_mean)
    float_frozen = FrozenBatchNorm2d.from_batchnorm(nn.BatchNorm2d(3))
    assert float_frozen.running_var.dtype == torch.float32


def test_bn_without_running_statistics_is_refused():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        FrozenBatchNorm1d.from_batchnorm(nn.BatchNorm1d(3, track_running_stats=False))


@pytest.mark.parametrize(("frozen", "shape", "message"), [
    (FrozenBatchNorm1d(3), (4, 5), "expected 3 channels in dim 1, got 5"),
    (FrozenBatchNorm2d(3), (4, 5, 2, 2), "expected 3 channels in dim 1, got 5"),
    (FrozenBatchNorm1d(3), (4, 3, 2, 2), "expected 2D .* or 3D .* got 4D"),
    (FrozenBatchNorm2d(3), (4, 3), "expected 4D .* got 2D"),
    (FrozenBatchNorm2d(3), (3,), "got 1D"),
], ids=["1d-channels", "2d-channels", "1d-rank", "2d-rank", "2d-vector"])
def test_bad_input_is_explained(frozen, shape, message):
    with pytest.raises(ValueError, match=message):
        frozen(torch.zeros(shape))


@pytest.mark.parametrize(("args", "message"), [((0,), "positive int"), ((2.0,), "positive int"),
                                               ((3, -1.0), "non-negative")])
def test_bad_arguments_are_explained(args, message):
    with pytest.raises(ValueError, match=message):
        FrozenBatchNorm1d(*args)


class Nested(nn.Module):
    """BN layers of both libraries and both ranks, at several depths and in a ModuleList."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(),
                                      nn.Sequential(nn.Conv2d(3, 3, 1), BatchNorm2d(3)))
        self.blocks = nn.ModuleList([nn.Linear(12, 4), BatchNorm1d(4), nn.BatchNorm1d(4)])

    def forward(self, x):
        x = self.features(x).flatten(1)
        for block in self.blocks:
            x = block(x)
        return x


def count(model, classes):
    return sum(isinstance(module, classes) for module in model.modules())


def test_freeze_batchnorm_replaces_every_bn_of_a_nested_model():
    torch.manual_seed(0)
    model = Nested().double()
    x = random_input((8, 1, 4, 4))
    model(x)  # one training step moves every running statistic
    model.eval()
    expected = model(x)
    frozen_model = freeze_batchnorm(model)
    assert frozen_model is model
    assert count(model, (nn.BatchNorm1d, nn.BatchNorm2d, BatchNorm1d, BatchNorm2d)) == 0
    assert count(model, FrozenBatchNorm2d) == 2 and count(model, FrozenBatchNorm1d) == 2
    model.train()  # survives train(): the frozen layers have no training mode
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    # Only the convolutions and the Linear are left to learn.
    assert len(list(model.parameters())) == 3 * 2


def test_freeze_batchnorm_of_a_bn_layer_returns_a_frozen_layer():
    bn = trained_bn(BatchNorm2d, (4, 3, 2, 2))
    frozen = freeze_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and isinstance(bn, BatchNorm2d)


def test_freeze_batchnorm_refuses_bn_without_frozen_class_and_changes_nothing():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Sequential(GhostBatchNorm(3)))
    with pytest.raises(TypeError, match="GhostBatchNorm"):
        freeze_batchnorm(model)
    assert isinstance(model[0], nn.BatchNorm1d)
    with pytest.raises(TypeError, match="BatchNorm3d"):
        freeze_batchnorm(nn.Sequential(nn.BatchNorm3d(2)))


def test_set_batchnorm_eval_is_undone_by_train():
    model = build_mlp(norm="bnlib", seed=0).train()
    set_batchnorm_eval(model)
    bn_layers = [m for m in model.modules() if isinstance(m, BatchNorm1d)]
    assert bn_layers and not any(bn.training for bn in bn_layers)
    assert model.training and model[1].training  # everything else still trains
    before = bn_layers[0].running_mean.clone()
    model(torch.rand(16, 1, 28, 28))
    assert torch.equal(bn_layers[0].running_mean, before)
    assert all(bn.weight.requires_grad for bn in bn_layers)  # gamma and beta still learn
    model.train()  # the classic trap: a training loop's train() call
    model(torch.rand(16, 1, 28, 28))
    assert all(bn.training for bn in bn_layers)
    assert not torch.equal(bn_layers[0].running_mean, before)


def test_model_state_dict_loads_into_its_frozen_twin():
    """What torchvision does with pretrained weights: a BN model's state dict, prefixes and
    num_batches_tracked included, loads strictly into the same model built with frozen BN."""
    trained = build_mlp(norm="bnlib", seed=0).double()
    trained(random_input((16, 784)))  # move the running statistics
    twin = freeze_batchnorm(build_mlp(norm="torch", seed=1).double())
    twin.load_state_dict(trained.state_dict())
    x = random_input((5, 784), seed=3)
    torch.testing.assert_close(twin(x), trained.eval()(x), rtol=1e-12, atol=1e-12)
