"""Tests of bnlib.diagnostics.landscape: noise after BN, the ICS measure and the gradient-direction probe."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlib import build_mlp
from bnlib.diagnostics.landscape import (
    NoiseInjection,
    add_noise_after_bn,
    add_noise_after_hidden_linear,
    ics_measure,
    layer_input,
    layer_parameter_names,
    probe_gradient_direction,
    weight_gradient_cosines,
)


class Quadratic(nn.Module):
    """L(w) = w^T A w / 2, whatever the input: its landscape is known in closed form."""

    def __init__(self, matrix: torch.Tensor, start: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.w = nn.Parameter(start.clone())

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.matrix @ self.w


def quadratic_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return output


def batch(n: int = 16, dtype: torch.dtype = torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 28, 28, generator=generator, dtype=dtype)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return images, labels


def test_probe_on_quadratic_matches_closed_form():
    generator = torch.Generator().manual_seed(1)
    root = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    matrix, start = root @ root.T, torch.randn(5, generator=generator, dtype=torch.float64)
    steps = [0.01, 0.05, 0.1, 0.3]
    probe = probe_gradient_direction(Quadratic(matrix, start), torch.zeros(1), torch.zeros(1),
                                     steps, loss_fn=quadratic_loss)
    grad = matrix @ start
    # L(w - eta g) = L(w) - eta g.g + eta^2 g.A.g / 2 and grad L(w - eta g) - g = -eta A g.
    expected = torch.stack([0.5 * start @ matrix @ start - eta * grad @ grad
                            + 0.5 * eta**2 * grad @ matrix @ grad for eta in steps])
    torch.testing.assert_close(probe.losses, expected)
    assert probe.loss_range == pytest.approx(float(expected.max() - expected.min()))
    curvature = float(torch.linalg.vector_norm(matrix @ grad))
    torch.testing.assert_close(probe.gradient_changes,
                               torch.tensor(steps, dtype=torch.float64) * curvature)
    assert probe.gradient_predictiveness == pytest.approx(max(steps) * curvature)
    assert probe.effective_smoothness == pytest.approx(curvature / float(grad.norm()))


def test_probe_rejects_bad_step_sizes():
    model = build_mlp((784, 8, 10), seed=0)
    images, labels = batch(dtype=torch.float32)
    for steps in ([], [0.1, 0.0], [-1.0]):
        with pytest.raises(ValueError, match="step_sizes"):
            probe_gradient_direction(model, images, labels, steps)


@pytest.mark.parametrize("norm", ["none", "torch"])
def test_probe_and_ics_leave_the_model_unchanged(norm):
    model = build_mlp((784, 8, 8, 10), norm=norm, seed=0).double()
    before = copy.deepcopy(model.state_dict())
    images, labels = batch()
    probe_gradient_direction(model, images, labels, [0.1, 0.5])
    ics_measure(model, layer_parameter_names(model), images, labels, lr=0.5)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_layer_parameter_names_groups_each_linear_with_its_bn():
    assert layer_parameter_names(build_mlp((784, 8, 8, 10), norm="torch")) == [
        ["1.weight", "2.weight", "2.bias"], ["4.weight", "5.weight", "5.bias"],
        ["7.weight", "7.bias"]]
    assert layer_parameter_names(build_mlp((784, 8, 10))) == [["1.weight", "1.bias"],
                                                              ["3.weight", "3.bias"]]


def test_ics_rejects_unknown_parameter_names():
    model = build_mlp((784, 8, 10), seed=0)
    images, labels = batch(dtype=torch.float32)
    with pytest.raises(ValueError, match="4.weight"):
        ics_measure(model, [["1.weight"], ["4.weight"]], images, labels, lr=0.1)


def test_ics_is_zero_for_a_one_layer_network():
    model = build_mlp((784, 10), seed=0).double()
    images, labels = batch()
    assert ics_measure(model, [["1.weight", "1.bias"]], images, labels, lr=1.0) == [(0.0, 1.0)]


def test_ics_is_zero_without_an_update():
    model = build_mlp((784, 8, 10), seed=0).double()
    layers = [["1.weight", "1.bias"], ["3.weight", "3.bias"]]
    images, labels = batch()
    for l2, cosine in ics_measure(model, layers, images, labels, lr=0.0):
        assert l2 == 0.0 and cosine == pytest.approx(1.0)


def test_ics_matches_the_gradient_after_updating_the_layers_below():
    model = build_mlp((784, 8, 8, 10), norm="torch", seed=0).double()
    layers = layer_parameter_names(model)
    images, labels = batch()
    lr = 0.3
    measured = ics_measure(model, layers, images, labels, lr)
    reference = copy.deepcopy(model)
    F.cross_entropy(reference(images), labels).backward()
    before = torch.cat([reference.get_parameter(n).grad.flatten() for n in layers[2]])
    with torch.no_grad():  # the two layers below the last take their step
        for name in layers[0] + layers[1]:
            parameter = reference.get_parameter(name)
            parameter -= lr * parameter.grad
    reference.zero_grad()
    reference.load_state_dict({**reference.state_dict(),
                               **{k: v for k, v in model.state_dict().items() if "running" in k
                                  or "num_batches" in k}})
    F.cross_entropy(reference(images), labels).backward()
    after = torch.cat([reference.get_parameter(n).grad.flatten() for n in layers[2]])
    assert measured[2][0] == pytest.approx(float((before - after).norm()), rel=1e-10)
    assert measured[2][1] == pytest.approx(float(F.cosine_similarity(before, after, dim=0)))
    assert measured[2][0] > 0


@pytest.mark.parametrize("norm", ["torch", "bnlib"])
def test_weights_feeding_bn_are_orthogonal_to_their_gradient(norm):
    model = build_mlp((784, 16, 16, 10), norm=norm, seed=0).double()
    for module in model:
        if hasattr(module, "running_mean"):
            module.eps = 1e-30  # BN(a W x) = BN(W x) exactly only without eps
    images, labels = batch(n=32)
    cosines = weight_gradient_cosines(model, "1.weight", images, labels)
    assert cosines.shape == (16,)
    assert float(cosines.abs().max()) < 1e-12
    plain = build_mlp((784, 16, 16, 10), seed=0).double()
    assert float(weight_gradient_cosines(plain, "1.weight", images, labels).abs().max()) > 1e-3


def test_noise_injection_draws_scales_and_shifts_in_range():
    layer = NoiseInjection(1000, shift_range=0.5, scale_range=(0.8, 1.2))
    x = torch.randn(4, 1000)
    assert torch.equal(layer(x), x)  # before the first draw: scale 1, shift 0
    layer.resample(torch.Generator().manual_seed(0))
    assert float(layer.scale.min()) >= 0.8 and float(layer.scale.max()) <= 1.2
    assert float(layer.shift.abs().max()) <= 0.5 and float(layer.shift.abs().max()) > 0.4
    torch.testing.assert_close(layer(x), x * layer.scale + layer.shift)
    first = layer.scale.clone()
    layer.resample(torch.Generator().manual_seed(1))
    assert not torch.equal(first, layer.scale)
    assert torch.equal(layer.eval()(x), x)


def test_per_example_noise_differs_between_examples_and_draws():
    layer = NoiseInjection(50, shift_range=0.5, scale_range=(0.8, 1.2), per_example=True)
    layer.resample(torch.Generator().manual_seed(0))
    x = torch.ones(64, 50)
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)  # new draws at every forward pass
    assert float(first.std(0).min()) > 0.05  # each example its own noise
    # x = 1: the output is the unit's scale times the example's, plus both shifts
    assert 0.8**2 - 2 * 0.5 <= float(first.min()) and float(first.max()) <= 1.2**2 + 2 * 0.5
    centred = first - layer.scale - layer.shift  # around the step's draw, per unit
    assert float(centred.mean(0).abs().max()) < 0.3
    layer.resample(torch.Generator().manual_seed(0))
    assert torch.equal(layer(x), first)  # reproducible from the generator
    assert torch.equal(layer.eval()(x), x)


def test_batch_shared_noise_after_bn_is_a_jitter_of_gamma_and_beta():
    bn = nn.BatchNorm1d(6).double()
    noise = NoiseInjection(6).double()
    noise.resample(torch.Generator().manual_seed(3))
    x = torch.randn(16, 6, dtype=torch.float64)
    jittered = nn.BatchNorm1d(6).double()
    with torch.no_grad():
        jittered.weight.copy_(noise.scale * bn.weight)
        jittered.bias.copy_(noise.scale * bn.bias + noise.shift)
    torch.testing.assert_close(noise(bn(x)), jittered(x))


def test_add_noise_after_hidden_linear_skips_the_output_layer():
    model = build_mlp((784, 8, 8, 10), seed=0)
    noisy = add_noise_after_hidden_linear(model, per_example=True)
    kinds = [type(layer) for layer in noisy]
    linear_positions = [i for i, kind in enumerate(kinds) if kind is nn.Linear]
    assert [kinds[i + 1] for i in linear_positions[:-1]] == [NoiseInjection] * 2
    assert linear_positions[-1] == len(noisy) - 1
    assert all(layer.per_example for layer in noisy if isinstance(layer, NoiseInjection))
    assert noisy[1] is model[1]


def test_noise_injection_rejects_bad_ranges():
    with pytest.raises(ValueError, match="scale_range"):
        NoiseInjection(3, scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="shift_range"):
        NoiseInjection(3, shift_range=-1.0)


def test_add_noise_after_bn_puts_one_layer_after_each_bn():
    model = build_mlp((784, 8, 8, 10), norm="torch", seed=0)
    noisy = add_noise_after_bn(model)
    kinds = [type(layer) for layer in noisy]
    bn_positions = [i for i, kind in enumerate(kinds) if kind is nn.BatchNorm1d]
    assert len(bn_positions) == 2
    assert all(kinds[i + 1] is NoiseInjection for i in bn_positions)
    assert noisy[1] is model[1]  # the layers are shared
    with pytest.raises(ValueError, match="no BatchNorm"):
        add_noise_after_bn(build_mlp((784, 8, 10), seed=0))


def test_layer_input_is_the_output_of_the_layers_before_and_keeps_running_stats():
    model = build_mlp((784, 8, 8, 10), norm="torch", seed=0).double()
    images, _ = batch()
    before = copy.deepcopy(model.state_dict())
    inputs = layer_input(model, 4, images)
    torch.testing.assert_close(inputs, copy.deepcopy(model)[:4](images))
    assert not inputs.requires_grad
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
