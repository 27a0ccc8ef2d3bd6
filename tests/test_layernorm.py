"""bnlib.LayerNorm and bnlib.nn.layer_norm as drop-ins for torch's, checked in float64."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlib import LayerNorm, build_mlp
from bnlib.nn import layer_norm

# (input shape, normalized_shape)
CASES = [
    ((6, 5), 5),
    ((4, 3, 5), (5,)),
    ((4, 3, 5), [3, 5]),
    ((2, 3, 4, 5), (3, 4, 5)),
    ((3, 2, 4, 4), torch.Size([4, 4])),
    ((7,), 7),  # a single example without a batch dim
]
CASE_IDS = ["NC", "NLC-last", "NLC-two", "NCHW-all", "NCHW-spatial", "unbatched"]
OPTIONS = [(True, True), (True, False), (False, True)]
OPTION_IDS = ["affine", "affine-nobias", "plain"]


def make_pair(normalized_shape, affine=True, bias=True, eps=1e-5):
    """Our layer and torch's with the same random float64 parameters."""
    theirs = nn.LayerNorm(normalized_shape, eps, affine, bias).double()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_()
    ours = LayerNorm(normalized_shape, eps, affine, bias).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize(("shape", "normalized_shape"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize(("affine", "bias"), OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_forward_matches_torch_in_training_and_eval(shape, normalized_shape, affine, bias, eps):
    ours, theirs = make_pair(normalized_shape, affine, bias, eps)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 2
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "normalized_shape"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize(("affine", "bias"), OPTIONS, ids=OPTION_IDS)
def test_backward_matches_torch(shape, normalized_shape, affine, bias):
    ours, theirs = make_pair(normalized_shape, affine, bias)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    dy = torch.randn(shape, dtype=torch.float64)
    ours(x).backward(dy)
    theirs(x_ref).backward(dy)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    for (name, mine), (_, reference) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-10, atol=1e-10,
                                   msg=name)


@pytest.mark.parametrize(("shape", "normalized_shape"), CASES, ids=CASE_IDS)
def test_functional_matches_torch_functional(shape, normalized_shape):
    normalized = tuple(normalized_shape) if not isinstance(normalized_shape, int) \
        else (normalized_shape,)
    x = torch.randn(shape, dtype=torch.float64)
    weight = torch.randn(normalized, dtype=torch.float64)
    bias = torch.randn(normalized, dtype=torch.float64)
    for w, b in [(None, None), (weight, None), (weight, bias)]:
        torch.testing.assert_close(layer_norm(x, normalized, w, b, 1e-3),
                                   F.layer_norm(x, normalized, w, b, 1e-3))


def test_output_has_zero_mean_and_unit_variance_per_example():
    x = torch.randn(5, 3, 4, dtype=torch.float64) * 10 - 4
    y = LayerNorm((3, 4), elementwise_affine=False).double()(x)
    torch.testing.assert_close(y.mean((1, 2)), torch.zeros(5, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(y.var((1, 2), unbiased=False), torch.ones(5, dtype=torch.float64),
                               atol=1e-5, rtol=0)


def test_each_example_is_normalised_on_its_own():
    layer = LayerNorm(8).double()
    batch = torch.randn(6, 8, dtype=torch.float64)
    alone = torch.cat([layer(row[None]) for row in batch])
    # A reduction over a batch may be vectorised differently from one over a single example,
    # so the values agree to rounding; mixing examples would change them by order 1.
    torch.testing.assert_close(layer(batch), alone, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("affine", "bias"), OPTIONS, ids=OPTION_IDS)
def test_state_dict_parameters_and_repr_match_torch(affine, bias):
    ours, theirs = LayerNorm((3, 4), 1e-3, affine, bias), nn.LayerNorm((3, 4), 1e-3, affine, bias)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, p.shape) for n, p in theirs.named_parameters()]
    assert (ours.weight is None, ours.bias is None) == (theirs.weight is None, theirs.bias is None)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert ours.state_dict()._metadata[""] == theirs.state_dict()._metadata[""]
    assert ours.normalized_shape == theirs.normalized_shape


def test_constructor_takes_torch_arguments_in_torch_order():
    def parameters(cls):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(cls.__init__).parameters.values()]

    assert parameters(LayerNorm) == parameters(nn.LayerNorm)
    layer = LayerNorm([2, 3], 1e-3, True, False, "cpu", torch.float64)
    assert layer.normalized_shape == (2, 3) and layer.eps == 1e-3 and layer.bias is None
    assert layer.weight.dtype == torch.float64


def test_reset_parameters_restores_ones_and_zeros():
    layer = LayerNorm(4)
    with torch.no_grad():
        layer.weight.fill_(3.0), layer.bias.fill_(2.0)
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(4)) and torch.equal(layer.bias, torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_keeps_its_dtype_like_torch(dtype):
    ours, theirs = LayerNorm(16), nn.LayerNorm(16)
    x = (torch.randn(4, 16) * 3).to(dtype)
    out = ours(x)
    assert out.dtype == theirs(x).dtype == dtype
    torch.testing.assert_close(out.float(), theirs(x).float(), rtol=0.02, atol=0.02)


@pytest.mark.parametrize(("normalized_shape", "shape"), [
    (4, (2, 3)),
    ((3, 4), (4,)),
    ((3, 4), (2, 4, 3)),
])
def test_input_that_does_not_end_with_normalized_shape_raises_like_torch(normalized_shape,
                                                                         shape):
    x = torch.randn(shape)
    with pytest.raises(RuntimeError):
        nn.LayerNorm(normalized_shape)(x)
    with pytest.raises(RuntimeError, match=r"Given normalized_shape=.*expected input with shape "
                                           r"\[\*, .*make normalized_shape equal the last"):
        LayerNorm(normalized_shape)(x)


@pytest.mark.parametrize("normalized_shape", [(), (0,), (3, -1)])
def test_impossible_normalized_shape_is_refused_at_construction(normalized_shape):
    with pytest.raises(ValueError, match="normalized_shape must hold at least one positive"):
        LayerNorm(normalized_shape)


def test_mlp_with_layernorm_trains_and_needs_no_batch():
    model = build_mlp((784, 16, 10), norm="layernorm", seed=0)
    assert isinstance(model[2], LayerNorm) and model[2].normalized_shape == (16,)
    model(torch.rand(1, 1, 28, 28)).sum().backward()  # one example is fine in training
    assert model[1].weight.grad is not None
