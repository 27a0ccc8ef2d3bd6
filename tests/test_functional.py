"""bnlib.batch_norm and BatchNormFunction against torch.nn.functional.batch_norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnlib.nn import BatchNormFunction, batch_norm
from bnlib.nn.autograd import BatchNormBackward, batch_norm_backward_reference

SHAPES = [(6, 3), (5, 3, 4), (4, 3, 3, 2)]
MODES = ["manual", "autograd"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_case(shape, affine=True, dtype=torch.float64, device="cpu", seed=0):
    """Input, weight, bias and running statistics; weight and bias are None when not affine."""
    generator = torch.Generator().manual_seed(seed)
    channels = shape[1]
    x = (torch.randn(shape, generator=generator, dtype=dtype) * 2 + 0.5).to(device)
    weight = torch.randn(channels, generator=generator, dtype=dtype).to(device) if affine else None
    bias = torch.randn(channels, generator=generator, dtype=dtype).to(device) if affine else None
    running_mean = torch.randn(channels, generator=generator, dtype=dtype).to(device)
    running_var = torch.rand(channels, generator=generator, dtype=dtype).to(device) + 0.5
    return x, weight, bias, running_mean, running_var


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backward", MODES)
def test_forward_and_running_stats_match_torch(shape, affine, training, backward):
    x, weight, bias, running_mean, running_var = make_case(shape, affine)
    ours_mean, ours_var = running_mean.clone(), running_var.clone()
    out = batch_norm(x, ours_mean, ours_var, weight, bias, training, 0.3, 1e-4, backward=backward)
    expected = F.batch_norm(x, running_mean, running_var, weight, bias, training, 0.3, 1e-4)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(ours_mean, running_mean)
    torch.testing.assert_close(ours_var, running_var)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backward", MODES)
def test_gradients_match_torch(shape, affine, training, backward):
    x, weight, bias, running_mean, running_var = make_case(shape, affine)
    dy = torch.randn(shape, dtype=torch.float64)
    ours = leaves(x, weight, bias)
    theirs = leaves(x, weight, bias)
    out = batch_norm(ours[0], running_mean.clone(), running_var.clone(), ours[1], ours[2],
                     training, backward=backward)
    out.backward(dy)
    F.batch_norm(theirs[0], running_mean, running_var, theirs[1], theirs[2], training).backward(dy)
    for mine, reference in zip(ours, theirs):
        if reference is not None:
            torch.testing.assert_close(mine.grad, reference.grad)


@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("which", ["weight", "bias"])
def test_only_one_of_weight_and_bias(backward, which):
    x, weight, bias, _, _ = make_case((7, 2, 3))
    weight = weight if which == "weight" else None
    bias = bias if which == "bias" else None
    ours = leaves(x, weight, bias)
    theirs = leaves(x, weight, bias)
    dy = torch.randn_like(x)
    batch_norm(ours[0], None, None, ours[1], ours[2], True, backward=backward).backward(dy)
    F.batch_norm(theirs[0], None, None, theirs[1], theirs[2], True).backward(dy)
    for mine, reference in zip(ours, theirs):
        if reference is not None:
            torch.testing.assert_close(mine.grad, reference.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backward", MODES)
def test_float32_matches_torch_on_every_device(device, backward):
    x, weight, bias, running_mean, running_var = make_case((16, 4, 5), dtype=torch.float32,
                                                           device=device)
    ours = leaves(x, weight, bias)
    theirs = leaves(x, weight, bias)
    ours_stats = (running_mean.clone(), running_var.clone())
    dy = torch.randn_like(x)
    out = batch_norm(ours[0], *ours_stats, ours[1], ours[2], True, backward=backward)
    expected = F.batch_norm(theirs[0], running_mean, running_var, theirs[1], theirs[2], True)
    out.backward(dy)
    expected.backward(dy)
    assert out.dtype == torch.float32 and out.device == x.device
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_stats, (running_mean, running_var), rtol=1e-4, atol=1e-5)
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backward", MODES)
def test_channels_last_input_and_expanded_gradient(backward):
    x, weight, bias, _, _ = make_case((4, 3, 2, 5))
    x = x.to(memory_format=torch.channels_last)
    ours = leaves(x, weight, bias)
    theirs = leaves(x, weight, bias)
    # .sum() hands backward an expanded, zero-stride gradient
    out = batch_norm(ours[0], None, None, ours[1], ours[2], True, backward=backward)
    (out * 2).sum().backward()
    (F.batch_norm(theirs[0], None, None, theirs[1], theirs[2], True) * 2).sum().backward()
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad)


@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("affine", [True, False])
def test_in_place_op_on_the_output_keeps_gradients_right(backward, affine):
    x, weight, bias, _, _ = make_case((6, 3), affine)
    ours = leaves(x, weight, bias)
    theirs = leaves(x, weight, bias)
    dy = torch.randn_like(x)
    out = batch_norm(ours[0], None, None, ours[1], ours[2], True, backward=backward)
    F.relu(out, inplace=True).backward(dy)
    F.relu(F.batch_norm(theirs[0], None, None, theirs[1], theirs[2], True)).backward(dy)
    torch.testing.assert_close(ours[0].grad, theirs[0].grad)


def test_training_output_is_normalised_per_channel():
    x, *_ = make_case((50, 3, 4))
    out = batch_norm(x, None, None, training=True, eps=1e-12)
    torch.testing.assert_close(out.mean((0, 2)), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(out.var((0, 2), correction=0), torch.ones(3, dtype=torch.float64))


def test_running_var_receives_the_unbiased_variance():
    x, *_ = make_case((10, 2))
    running_mean, running_var = torch.zeros(2, dtype=x.dtype), torch.zeros(2, dtype=x.dtype)
    batch_norm(x, running_mean, running_var, training=True, momentum=1.0)
    torch.testing.assert_close(running_mean, x.mean(0))
    torch.testing.assert_close(running_var, x.var(0, correction=1))


def test_running_stats_never_join_the_graph():
    x, weight, bias, running_mean, running_var = leaves(*make_case((6, 3)))
    running_mean.requires_grad_(False)
    running_var.requires_grad_(False)
    for backward in MODES:
        batch_norm(x, running_mean, running_var, weight, bias, True, backward=backward)
        assert running_mean.grad_fn is None and running_var.grad_fn is None


def test_function_saves_x_hat_and_inv_std_but_not_the_input():
    x, weight, bias, _, _ = leaves(*make_case((6, 3, 2)))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        BatchNormFunction.apply(x, weight, bias, 1e-5)
    shapes = sorted(tuple(t.shape) for t in saved)
    assert shapes == [(3,), (3,), (6, 3, 2)]
    assert all(t.data_ptr() != x.data_ptr() for t in saved)


@pytest.mark.parametrize("affine", [True, False])
def test_function_passes_gradcheck(affine):
    x, weight, bias, _, _ = leaves(*make_case((5, 3, 2), affine))
    inputs = (x, weight, bias, 1e-5)
    assert torch.autograd.gradcheck(BatchNormFunction.apply, inputs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_function_returns_x_hat_inv_std_and_the_batch_statistics(shape, affine):
    x, weight, bias, _, _ = make_case(shape, affine)
    dims = [0] + list(range(2, len(shape)))
    output, x_hat, inv_std, mean, var = BatchNormFunction.apply(x, weight, bias, 1e-5)
    torch.testing.assert_close(mean, x.mean(dims))
    torch.testing.assert_close(var, x.var(dims, correction=0))
    torch.testing.assert_close(inv_std, (var + 1e-5).rsqrt())
    torch.testing.assert_close(output, F.batch_norm(x, None, None, weight, bias, True))
    assert x_hat.data_ptr() != output.data_ptr()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_reference_backward_equals_the_optimised_one_and_torch(shape, affine):
    x, weight, bias, _, _ = make_case(shape, affine)
    dy = torch.randn(shape, dtype=torch.float64)
    _, x_hat, inv_std, _, _ = BatchNormFunction.apply(x, weight, bias, 1e-5)
    plain = batch_norm_backward_reference(dy, x_hat, inv_std, weight)
    fast = BatchNormBackward.apply(dy, x_hat, inv_std, weight, True)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    theirs = leaves(x, weight if affine else torch.ones(shape[1], dtype=x.dtype), bias)
    F.batch_norm(theirs[0], None, None, theirs[1], theirs[2], True).backward(dy)
    torch.testing.assert_close(plain[0], theirs[0].grad)
    torch.testing.assert_close(plain[1], theirs[1].grad)
    torch.testing.assert_close(plain[2], dy.sum([0] + list(range(2, len(shape)))))
    assert BatchNormBackward.apply(dy, x_hat, inv_std, weight, False)[0] is None


@pytest.mark.parametrize("backward", MODES)
@pytest.mark.parametrize("training", [True, False])
def test_functional_form_passes_gradcheck(backward, training):
    x, weight, bias, running_mean, running_var = make_case((4, 2, 3))
    x, weight, bias = leaves(x, weight, bias)

    def normalise(x, weight, bias):
        # fresh copies, so every evaluation sees the same running statistics
        stats = (running_mean.clone(), running_var.clone())
        return batch_norm(x, *stats, weight, bias, training, backward=backward)

    assert torch.autograd.gradcheck(normalise, (x, weight, bias))


def test_manual_backward_is_not_twice_differentiable():
    x, weight, bias, _, _ = leaves(*make_case((4, 2)))
    out = batch_norm(x, None, None, weight, bias, True, backward="manual")
    (grad_x,) = torch.autograd.grad((out**3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad_x.sum().backward()


def test_empty_batch_gives_empty_output_and_keeps_running_stats():
    running_mean, running_var = torch.zeros(3), torch.ones(3)
    out = batch_norm(torch.randn(0, 3), running_mean, running_var, training=True)
    assert out.shape == (0, 3)
    assert torch.equal(running_mean, torch.zeros(3)) and torch.equal(running_var, torch.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input": torch.randn(1, 3), "training": True},
         r"Expected more than 1 value per channel when training.*model\.eval"),
        ({"input": torch.randn(1, 3, 1), "training": True},
         r"got input size torch\.Size\(\[1, 3, 1\]\)"),
        ({"input": torch.randn(3)}, r"at least 2 dims, got 1D"),
        ({"running_mean": torch.zeros(4)},
         r"running_mean should have shape \(3,\).*got shape \(4,\)"),
        ({"weight": torch.ones(2)}, r"weight should have shape \(3,\)"),
        ({"running_var": None}, r"training=False.*running_mean and running_var.*training=True"),
        ({"eps": 0.0, "training": True}, r"eps must be positive"),
        ({"eps": -1.0}, r"non-negative in eval, got -1\.0"),
        ({"backward": "numeric"},
         r"backward must be one of \('manual', 'autograd'\), got 'numeric'"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    arguments = {"input": torch.randn(4, 3), "running_mean": torch.zeros(3),
                 "running_var": torch.ones(3)} | kwargs
    with pytest.raises(ValueError, match=message):
        batch_norm(**arguments)
