"""Tests for SmallCNN's and build_cnn's placement and dropout options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlib.models import SmallCNN, build_cnn
from bnlib.nn.batchnorm import BatchNorm2d as BnlibBatchNorm2d


def feature_types(model: SmallCNN) -> list[type]:
    return [type(layer) for layer in model.features]


def test_defaults_are_bn_before_relu_without_dropout():
    assert feature_types(SmallCNN((4, 8))) == [
        nn.Conv2d, BnlibBatchNorm2d, nn.ReLU, nn.MaxPool2d,
        nn.Conv2d, BnlibBatchNorm2d, nn.ReLU, nn.MaxPool2d,
    ]
    explicit = build_cnn((4, 8), bn_position="before", dropout=0.0, seed=0)
    default = build_cnn((4, 8), seed=0)
    assert feature_types(explicit) == feature_types(default)
    for (name, a), (_, b) in zip(explicit.state_dict().items(), default.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("norm, bn_type", [("torch", nn.BatchNorm2d), ("bnlib", BnlibBatchNorm2d)])
def test_bn_after_relu_keeps_the_convolution_bias(norm, bn_type):
    model = SmallCNN((4, 8), norm=norm, bn_position="after")
    assert feature_types(model) == [nn.Conv2d, nn.ReLU, bn_type, nn.MaxPool2d] * 2
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert all(conv.bias is not None for conv in convs)
    assert [m.num_features for m in model.features if isinstance(m, bn_type)] == [4, 8]


def test_bn_before_relu_drops_the_convolution_bias():
    convs = [m for m in SmallCNN((4, 8)).features if isinstance(m, nn.Conv2d)]
    assert all(conv.bias is None for conv in convs)


def test_bn_after_relu_sees_only_non_negative_values_and_normalises_them():
    model = build_cnn((4,), bn_position="after", seed=0)
    seen = []
    model.features[2].register_forward_hook(lambda module, inputs, output: seen.append(
        (inputs[0], output)))
    model(torch.rand(16, 1, 28, 28))
    bn_input, bn_output = seen[0]
    assert bn_input.min().item() >= 0
    assert torch.allclose(bn_output.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)


def test_position_is_ignored_without_norm():
    before = build_cnn((4, 8), norm="none", bn_position="before", seed=0)
    after = build_cnn((4, 8), norm="none", bn_position="after", seed=0)
    assert feature_types(before) == feature_types(after) == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("bn_position", ["before", "after"])
def test_dropout_ends_every_stage_after_pooling(bn_position):
    model = SmallCNN((4, 8, 8), bn_position=bn_position, dropout=0.25)
    types = feature_types(model)
    assert types.count(nn.Dropout) == 3
    for index, layer_type in enumerate(types):
        if layer_type is nn.MaxPool2d:
            assert types[index + 1] is nn.Dropout
    assert all(m.p == 0.25 for m in model.features if isinstance(m, nn.Dropout))


def test_dropout_acts_in_training_mode_only_and_keeps_the_weights_of_the_same_seed():
    images = torch.rand(8, 1, 28, 28)
    plain = build_cnn((4, 8), norm="none", seed=0).eval()
    dropped = build_cnn((4, 8), norm="none", dropout=0.5, seed=0).eval()
    for (name, a), (_, b) in zip(plain.state_dict().items(), dropped.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(plain(images), dropped(images))
    torch.manual_seed(0)
    assert not torch.equal(plain.train()(images), dropped.train()(images))


@pytest.mark.parametrize("kwargs, words", [
    ({"bn_position": "middle"}, ["bn_position", "'middle'", "'before'", "'after'"]),
    ({"dropout": 1.0}, ["dropout", "[0, 1)", "1.0"]),
    ({"dropout": -0.1}, ["dropout", "[0, 1)", "-0.1"]),
    ({"dropout": True}, ["dropout", "True"]),
    ({"dropout": "0.5"}, ["dropout", "'0.5'"]),
])
def test_bad_options_raise_a_clear_value_error(kwargs, words):
    for build in (SmallCNN, build_cnn):
        with pytest.raises(ValueError) as error:
            build(**kwargs)
        for word in words:
            assert word in str(error.value)


@pytest.mark.parametrize("bn_position", ["before", "after"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_every_option_trains_and_classifies_a_batch(bn_position, dropout):
    model = build_cnn((4, 8), bn_position=bn_position, dropout=dropout, seed=0)
    images, labels = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    nn.functional.cross_entropy(model(images), labels).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.eval()(images).shape == (6, 10)
