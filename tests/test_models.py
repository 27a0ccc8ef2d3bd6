"""Tests for build_mlp, SmallCNN and build_cnn: structure, initialisation and seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlib.models import NORMS_1D, NORMS_2D, SmallCNN, build_cnn, build_mlp
from bnlib.nn.batchnorm import BatchNorm1d as BnlibBatchNorm1d
from bnlib.nn.batchnorm import BatchNorm2d as BnlibBatchNorm2d


def layer_types(model: nn.Module) -> list[type]:
    return [type(layer) for layer in model]


def test_default_mlp_is_784_32_32_10_relu_without_norm():
    model = build_mlp()
    assert layer_types(model) == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    shapes = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert shapes == [(784, 32), (32, 32), (32, 10)]
    assert all(m.bias is not None for m in model if isinstance(m, nn.Linear))


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 784)])
def test_mlp_accepts_images_and_flat_vectors(shape):
    assert build_mlp(norm="torch", seed=0)(torch.rand(shape)).shape == (5, 10)


@pytest.mark.parametrize("norm, bn_type", [("torch", nn.BatchNorm1d),
                                           ("bnlib", BnlibBatchNorm1d)])
def test_bn_before_activation_follows_a_linear_without_bias(norm, bn_type):
    model = build_mlp(norm=norm, bn_position="before")
    assert layer_types(model) == [nn.Flatten, nn.Linear, bn_type, nn.ReLU, nn.Linear, bn_type,
                                  nn.ReLU, nn.Linear]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [m.bias is None for m in linears] == [True, True, False]
    assert [m.num_features for m in model if isinstance(m, bn_type)] == [32, 32]


def test_bn_after_activation_keeps_the_bias_and_output_layer_is_plain():
    model = build_mlp((784, 64, 16, 10), norm="torch", bn_position="after", activation="tanh")
    assert layer_types(model) == [nn.Flatten, nn.Linear, nn.Tanh, nn.BatchNorm1d, nn.Linear,
                                  nn.Tanh, nn.BatchNorm1d, nn.Linear]
    assert all(m.bias is not None for m in model if isinstance(m, nn.Linear))
    assert [m.num_features for m in model if isinstance(m, nn.BatchNorm1d)] == [64, 16]


def test_two_widths_give_a_single_linear_layer():
    assert layer_types(build_mlp((784, 10), norm="torch")) == [nn.Flatten, nn.Linear]


def test_sigmoid_activation():
    assert nn.Sigmoid in layer_types(build_mlp(activation="sigmoid"))


def test_norm_factories_are_a_small_extensible_table():
    assert set(NORMS_1D) == set(NORMS_2D) == {"none", "torch", "bnlib", "batchrenorm",
                                              "layernorm", "groupnorm"}
    assert NORMS_1D["none"] is None and NORMS_1D["torch"] is nn.BatchNorm1d


def test_init_std_draws_small_gaussian_weights_and_zero_biases():
    model = build_mlp(init_std=0.01, seed=0)
    first, *_, last = [m for m in model if isinstance(m, nn.Linear)]
    assert first.weight.std().item() == pytest.approx(0.01, rel=0.03)
    assert first.weight.mean().abs().item() < 0.001
    assert last.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert all(torch.all(m.bias == 0) for m in model if isinstance(m, nn.Linear))


def test_same_seed_same_weights_different_seed_different_weights():
    first, second = build_mlp(norm="bnlib", seed=3), build_mlp(norm="bnlib", seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    other = build_mlp(norm="bnlib", seed=4)
    assert not torch.equal(first[1].weight, other[1].weight)


def test_seeded_construction_leaves_the_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    build_mlp(seed=0, init_std=0.1)
    build_cnn(seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    build_mlp()  # unseeded construction draws from the global generator
    assert not torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kwargs, words", [
    ({"activation": "gelu"}, ["activation", "'gelu'", "'relu'"]),
    ({"norm": "layer"}, ["norm", "'layer'", "'torch'"]),
    ({"bn_position": "middle"}, ["bn_position", "'before'", "'after'"]),
    ({"widths": (784,)}, ["at least 2", "(784,)"]),
    ({"init_std": 0.0}, ["init_std", "positive"]),
])
def test_bad_arguments_raise_a_clear_value_error(kwargs, words):
    with pytest.raises(ValueError) as error:
        build_mlp(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_small_cnn_shapes_and_structure():
    model = SmallCNN((8, 16), norm="torch")
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert all(c.bias is None for c in convs)
    assert [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == [8, 16]
    assert model.classifier[-1].in_features == 16 * 7 * 7


def test_small_cnn_defaults_to_bnlib_batchnorm_and_without_norm_keeps_conv_bias():
    assert any(isinstance(m, BnlibBatchNorm2d) for m in SmallCNN().modules())
    plain = SmallCNN(norm="none", num_classes=3)
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert plain(torch.rand(2, 1, 28, 28)).shape == (2, 3)


def test_build_cnn_is_seeded_and_validates():
    first, second = build_cnn(seed=1), build_cnn(seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    with pytest.raises(ValueError, match="norm"):
        build_cnn(norm="group")
    with pytest.raises(ValueError, match="below 1x1"):
        SmallCNN((4, 4, 4, 4, 4, 4))


@pytest.mark.parametrize("init, gain", [("he", 2.0), ("xavier", None)])
def test_init_draws_fan_scaled_weights_and_zero_biases(init, gain):
    widths = (400, 300, 200, 10)
    model = build_mlp(widths, init=init, seed=0)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for linear in linears:
        fan_out, fan_in = linear.weight.shape
        variance = gain / fan_in if gain else 2.0 / (fan_in + fan_out)
        # 2,000 weights or more: the sample variance is within 10% of the rule's.
        assert linear.weight.var().item() == pytest.approx(variance, rel=0.1)
        assert torch.all(linear.bias == 0)


def test_he_init_keeps_a_deep_relu_networks_signal_and_torchs_default_shrinks_it():
    inputs = torch.randn(512, 256, generator=torch.Generator().manual_seed(0))
    stds = {}
    for init in ("default", "he"):
        model = build_mlp((256,) * 11 + (10,), init=init, seed=0)
        stds[init] = model[:-1](inputs).std().item()
    assert stds["he"] > 0.3 and stds["default"] < 0.05  # 0.52 and 0.023 on seed 0


def test_init_applies_to_every_convolution_and_the_classifier():
    model = build_cnn((8, 16), norm="none", init="he", seed=0)
    conv = model.features[0]
    assert conv.weight.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.2)
    assert torch.all(conv.bias == 0) and torch.all(model.classifier[1].bias == 0)
    assert torch.equal(build_cnn(init="default", seed=0).features[0].weight,
                       build_cnn(seed=0).features[0].weight)


@pytest.mark.parametrize("kwargs, words", [
    ({"init": "kaiming"}, "unknown init 'kaiming'"),
    ({"init": "he", "init_std": 0.1}, "give init_std or init, not both"),
])
def test_bad_init_arguments_raise_a_clear_value_error(kwargs, words):
    with pytest.raises(ValueError, match=words):
        build_mlp(**kwargs)
    if "init_std" not in kwargs:
        with pytest.raises(ValueError, match=words):
            build_cnn(**kwargs)
