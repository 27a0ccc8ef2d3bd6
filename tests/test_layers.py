"""bnlib.by_hand.layers: every hand-written forward and backward against torch and autograd in float64,
the optimizers against torch.optim over several steps, and whole build_mlp networks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlib import build_mlp
from bnlib.by_hand import AdamState, SGDState, adam_step, sgd_step
from bnlib.by_hand.layers import (
    batch_norm_backward,
    batch_norm_forward,
    flatten_backward,
    flatten_forward,
    linear_backward,
    linear_forward,
    mlp_backward,
    mlp_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
    tanh_backward,
    tanh_forward,
)

DOUBLE = torch.float64


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, dtype=DOUBLE, generator=torch.Generator().manual_seed(seed)) * scale


def leaf(tensor):
    return None if tensor is None else tensor.detach().clone().requires_grad_(True)


def as_function(forward, backward):
    """A hand-written forward/backward pair as an autograd Function, for gradcheck."""

    class ByHand(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            output, ctx.cache = forward(*inputs)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            grads = backward(grad_output, ctx.cache)
            return grads if isinstance(grads, tuple) else (grads,)

    return ByHand.apply


# Linear

LINEAR_SHAPES = [((5, 3), 4), ((2, 4, 3), 2), ((3,), 5), ((1, 6), 1)]


@pytest.mark.parametrize("input_shape, out_features", LINEAR_SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward_matches_torch(input_shape, out_features, with_bias):
    x, weight = randn(*input_shape), randn(out_features, input_shape[-1], seed=1)
    bias = randn(out_features, seed=2) if with_bias else None
    output, _ = linear_forward(x, weight, bias)
    torch.testing.assert_close(output, F.linear(x, weight, bias), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("input_shape, out_features", LINEAR_SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_backward_matches_autograd(input_shape, out_features, with_bias):
    x, weight = randn(*input_shape), randn(out_features, input_shape[-1], seed=1)
    bias = randn(out_features, seed=2) if with_bias else None
    grad_output = randn(*input_shape[:-1], out_features, seed=3)
    _, cache = linear_forward(x, weight, bias)
    ours = linear_backward(grad_output, cache)
    leaves = [leaf(x), leaf(weight), leaf(bias)]
    F.linear(*leaves).backward(grad_output)
    for mine, reference in zip(ours, leaves):
        if reference is None:
            assert mine is None
        else:
            torch.testing.assert_close(mine, reference.grad, rtol=1e-12, atol=1e-12)
    assert linear_backward(grad_output, cache, need_input_grad=False)[0] is None


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_gradcheck(with_bias):
    linear = as_function(linear_forward, linear_backward)
    inputs = [leaf(randn(4, 3)), leaf(randn(2, 3, seed=1))] + ([leaf(randn(2, seed=2))]
                                                               if with_bias else [])
    assert torch.autograd.gradcheck(linear, inputs)


@pytest.mark.parametrize("input_shape, weight_shape, bias_shape, expected", [
    ((5, 3), (4, 2), None, "last dim must equal in_features"),
    ((5, 3), (3,), None, "out_features, in_features"),
    ((5, 3), (4, 3), (3,), "bias should have shape (4,)"),
])
def test_linear_shape_errors(input_shape, weight_shape, bias_shape, expected):
    bias = None if bias_shape is None else randn(*bias_shape)
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        linear_forward(randn(*input_shape), randn(*weight_shape), bias)


# Batch normalization, training mode

BN_SHAPES = [(6, 3), (5, 3, 4), (4, 3, 3, 2)]
AFFINE = ["both", "weight only", "none"]


def bn_case(shape, affine):
    channels = shape[1]
    weight = randn(channels, seed=1) if affine != "none" else None
    bias = randn(channels, seed=2) if affine == "both" else None
    return randn(*shape, scale=2.0) + 0.5, weight, bias


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("affine", AFFINE)
def test_batch_norm_forward_and_running_stats_match_torch(shape, affine):
    x, weight, bias = bn_case(shape, affine)
    ours_stats = [torch.zeros(shape[1], dtype=DOUBLE), torch.ones(shape[1], dtype=DOUBLE)]
    torch_stats = [stat.clone() for stat in ours_stats]
    output, _ = batch_norm_forward(x, *ours_stats, weight, bias, momentum=0.3, eps=1e-4)
    expected = F.batch_norm(x, *torch_stats, weight, bias, True, 0.3, 1e-4)
    torch.testing.assert_close(output, expected)
    for mine, reference in zip(ours_stats, torch_stats):
        torch.testing.assert_close(mine, reference)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("affine", AFFINE)
def test_batch_norm_backward_matches_autograd(shape, affine):
    x, weight, bias = bn_case(shape, affine)
    grad_output = randn(*shape, seed=3)
    _, cache = batch_norm_forward(x, None, None, weight, bias)
    ours = batch_norm_backward(grad_output, cache)
    leaves = [leaf(x), leaf(weight), leaf(bias)]
    F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True).backward(grad_output)
    for mine, reference in zip(ours, leaves):
        if reference is None:
            assert mine is None
        else:
            torch.testing.assert_close(mine, reference.grad)
    assert batch_norm_backward(grad_output, cache, need_input_grad=False)[0] is None


def test_batch_norm_gradcheck():
    def forward(x, weight, bias):
        return batch_norm_forward(x, None, None, weight, bias)

    inputs = [leaf(tensor) for tensor in bn_case((5, 3, 2), "both")]
    assert torch.autograd.gradcheck(as_function(forward, batch_norm_backward), inputs)


def test_batch_norm_errors_say_what_to_change():
    with pytest.raises(ValueError, match="weight should have shape"):
        batch_norm_forward(randn(4, 3), None, None, randn(2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_forward(randn(1, 3))


# Activations and flatten

ACTIVATIONS = [(relu_forward, relu_backward, torch.relu),
               (sigmoid_forward, sigmoid_backward, torch.sigmoid),
               (tanh_forward, tanh_backward, torch.tanh)]
ACTIVATION_IDS = ["relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("forward, backward, reference", ACTIVATIONS, ids=ACTIVATION_IDS)
@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 4)])
def test_activation_forward_and_backward_match_autograd(forward, backward, reference, shape):
    x, grad_output = randn(*shape, scale=3.0), randn(*shape, seed=1)
    output, cache = forward(x)
    x_leaf = leaf(x)
    expected = reference(x_leaf)
    expected.backward(grad_output)
    torch.testing.assert_close(output, expected.detach(), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(backward(grad_output, cache), x_leaf.grad, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("forward, backward, reference", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_activation_gradcheck(forward, backward, reference):
    x = randn(4, 5)
    x = torch.where(x.abs() < 0.1, x + 0.3, x)  # keep ReLU's kink out of the finite differences
    assert torch.autograd.gradcheck(as_function(forward, backward), [leaf(x)])


def test_relu_gradient_is_zero_where_the_unit_is_off():
    x = torch.tensor([-2.0, 0.0, 3.0], dtype=DOUBLE)
    _, cache = relu_forward(x)
    assert relu_backward(torch.ones(3, dtype=DOUBLE), cache).tolist() == [0.0, 0.0, 1.0]


def test_flatten_round_trip():
    x = randn(2, 1, 3, 4)
    output, cache = flatten_forward(x)
    torch.testing.assert_close(output, nn.Flatten()(x))
    assert flatten_backward(output, cache).shape == x.shape


# Softmax cross-entropy

@pytest.mark.parametrize("batch, classes", [(1, 2), (8, 10), (33, 5)])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_cross_entropy_matches_torch(batch, classes, scale):
    logits = randn(batch, classes, scale=scale)
    target = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(1))
    loss, cache = softmax_cross_entropy_forward(logits, target)
    logits_leaf = leaf(logits)
    expected = F.cross_entropy(logits_leaf, target)
    expected.backward(torch.tensor(0.7, dtype=DOUBLE))
    assert torch.isfinite(loss)  # large logits do not overflow
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(softmax_cross_entropy_backward(0.7, cache), logits_leaf.grad)


def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    logits, target = randn(4, 3), torch.tensor([0, 2, 1, 2])
    _, cache = softmax_cross_entropy_forward(logits, target)
    expected = (logits.softmax(dim=1) - F.one_hot(target, 3)) / 4
    torch.testing.assert_close(softmax_cross_entropy_backward(1.0, cache), expected)


def test_softmax_cross_entropy_gradcheck():
    target = torch.tensor([1, 0, 2, 2])

    def forward(logits):
        return softmax_cross_entropy_forward(logits, target)

    assert torch.autograd.gradcheck(as_function(forward, softmax_cross_entropy_backward),
                                    [leaf(randn(4, 3))])


@pytest.mark.parametrize("logits_shape, target, expected", [
    ((4, 3), torch.tensor([0, 1, 2]), "logits \\(N, C\\) and int64 class indices"),
    ((4, 3), torch.tensor([0.0, 1.0, 2.0, 1.0]), "int64 class indices"),
    ((4,), torch.tensor([0, 1, 2, 1]), "logits \\(N, C\\)"),
    ((4, 3), torch.tensor([0, 1, 3, 1]), "class index in \\[0, 2\\]"),
    ((4, 3), torch.tensor([0, -1, 2, 1]), "class index in \\[0, 2\\]"),
])
def test_softmax_cross_entropy_bad_input(logits_shape, target, expected):
    with pytest.raises(ValueError, match=expected):
        softmax_cross_entropy_forward(randn(*logits_shape), target)


# Optimizers against torch.optim over several steps

def optimizer_case(dtype, seed=0):
    shapes = [(4, 3), (4,), (2, 4)]
    params = [randn(*shape, seed=seed + i).to(dtype) for i, shape in enumerate(shapes)]
    grads = [[randn(*shape, seed=100 * step + i).to(dtype) for i, shape in enumerate(shapes)]
             for step in range(6)]
    return params, grads


def run_torch_optimizer(make, params, grads):
    torch_params = [nn.Parameter(param.clone()) for param in params]
    optimizer = make(torch_params)
    for step_grads in grads:
        for param, grad in zip(torch_params, step_grads):
            param.grad = grad.clone()
        optimizer.step()
    return [param.detach() for param in torch_params]


ADAM_OPTIONS = [{}, {"lr": 0.1, "betas": (0.8, 0.99)}, {"eps": 1e-3, "weight_decay": 0.1}]


@pytest.mark.parametrize("options", ADAM_OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adam_step_matches_torch_over_several_steps(options, dtype):
    params, grads = optimizer_case(dtype)
    expected = run_torch_optimizer(lambda p: torch.optim.Adam(p, **options), params, grads)
    ours, state = [param.clone() for param in params], AdamState()
    for step_grads in grads:
        adam_step(ours, step_grads, state, **options)
    assert state.step == len(grads)
    for mine, reference in zip(ours, expected):
        torch.testing.assert_close(mine, reference)


SGD_OPTIONS = [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9},
               {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01},
               {"lr": 0.05, "momentum": 0.8, "nesterov": True}]


@pytest.mark.parametrize("options", SGD_OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_step_matches_torch_over_several_steps(options, dtype):
    params, grads = optimizer_case(dtype)
    expected = run_torch_optimizer(lambda p: torch.optim.SGD(p, **options), params, grads)
    ours, state = [param.clone() for param in params], SGDState()
    for step_grads in grads:
        sgd_step(ours, step_grads, state, **options)
    for mine, reference in zip(ours, expected):
        torch.testing.assert_close(mine, reference)


def test_optimizers_reject_mismatched_gradients():
    params, grads = optimizer_case(DOUBLE)
    with pytest.raises(ValueError, match="one gradient per parameter"):
        adam_step(params, grads[0][:2], AdamState())
    with pytest.raises(ValueError, match="one gradient per parameter"):
        sgd_step(params, [grad.reshape(-1) for grad in grads[0]], SGDState(), lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        sgd_step(params, grads[0], SGDState(), lr=0.1, nesterov=True)


# Whole networks

MLP_VARIANTS = [(activation, norm, position) for activation in ("relu", "sigmoid", "tanh")
                for norm, position in (("none", "before"), ("torch", "before"),
                                       ("torch", "after"), ("bnlib", "before"), ("bnlib", "after"))]


def mlp_pair(activation, norm, position, seed=0):
    return [build_mlp((12, 7, 6, 4), activation=activation, norm=norm, bn_position=position,
                      seed=seed).double() for _ in range(2)]


@pytest.mark.parametrize("activation, norm, position", MLP_VARIANTS)
def test_mlp_gradients_match_autograd(activation, norm, position):
    by_hand, reference = mlp_pair(activation, norm, position)
    images, labels = randn(10, 1, 3, 4, seed=5), torch.arange(10) % 4
    logits, caches = mlp_forward(by_hand, images)
    loss, loss_cache = softmax_cross_entropy_forward(logits, labels)
    grads = mlp_backward(softmax_cross_entropy_backward(1.0, loss_cache), caches)
    expected_loss = F.cross_entropy(reference(images), labels)
    expected_loss.backward()
    torch.testing.assert_close(loss, expected_loss.detach())
    expected = dict(reference.named_parameters())
    assert list(grads) == list(expected)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name].grad, rtol=1e-10, atol=1e-12)
    # running statistics and batch counts move as the modules' own forward moves them
    for (name, mine), theirs in zip(by_hand.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(mine, theirs, msg=name)


@pytest.mark.parametrize("norm", ["none", "torch"])
def test_training_by_hand_follows_autograd_in_float64(norm):
    by_hand, reference = mlp_pair("relu", norm, "before", seed=3)
    params, state = list(by_hand.parameters()), AdamState()
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    for step in range(5):
        images, labels = randn(16, 12, seed=step), torch.arange(16) % 4
        logits, caches = mlp_forward(by_hand, images)
        _, loss_cache = softmax_cross_entropy_forward(logits, labels)
        grads = mlp_backward(softmax_cross_entropy_backward(1.0, loss_cache), caches)
        adam_step(params, list(grads.values()), state, lr=0.01)
        optimizer.zero_grad()
        F.cross_entropy(reference(images), labels).backward()
        optimizer.step()
    for mine, theirs in zip(by_hand.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(mine, theirs)


def test_mlp_forward_updates_a_cumulative_average_as_the_module_does():
    by_hand, reference = mlp_pair("relu", "torch", "before")
    for model in (by_hand, reference):
        model[2].momentum = None  # running statistics as the mean over all batches so far
    for seed in range(3):
        images = randn(8, 12, seed=seed)
        mlp_forward(by_hand, images)
        reference(images)
    for (name, mine), theirs in zip(by_hand.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(mine, theirs, msg=name)


def test_mlp_forward_needs_training_mode_for_batch_norm():
    model = build_mlp((12, 5, 3), norm="torch").double().eval()
    with pytest.raises(ValueError, match="model.train()"):
        mlp_forward(model, randn(4, 12))


def test_mlp_forward_rejects_layers_it_does_not_know():
    with pytest.raises(TypeError, match="not Dropout"):
        mlp_forward(nn.Sequential(nn.Linear(3, 2), nn.Dropout()).double(), randn(4, 3))


def test_mlp_forward_reports_a_width_mismatch():
    with pytest.raises(ValueError, match="in_features"):
        mlp_forward(build_mlp((12, 5, 3)).double(), randn(4, 10))
