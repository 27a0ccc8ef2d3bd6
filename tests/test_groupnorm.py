"""bnlib.GroupNorm and bnlib.nn.group_norm as drop-ins for torch's, checked in float64."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlib import GroupNorm, LayerNorm, build_cnn, build_mlp
from bnlib.nn import group_norm
from bnlib.nn.groupnorm import group_norm_for, layer_norm_over_channels

# (num_groups, num_channels, input shape)
CASES = [
    (2, 6, (4, 6)),
    (3, 6, (3, 6, 5)),
    (2, 4, (2, 4, 3, 3)),
    (1, 4, (2, 4, 3, 2)),  # layer norm over (C, H, W)
    (4, 4, (3, 4, 2, 2)),  # instance norm
    (2, 4, (2, 4, 2, 1, 3)),
    (2, 4, (0, 4, 3)),  # an empty batch
]
CASE_IDS = ["NC", "NCL", "NCHW", "one-group", "instance", "NCDHW", "empty"]
OPTIONS = [(True, True), (True, False), (False, True)]
OPTION_IDS = ["affine", "affine-nobias", "plain"]


def make_pair(num_groups, num_channels, affine=True, bias=True, eps=1e-5):
    """Our layer and torch's with the same random float64 parameters."""
    theirs = nn.GroupNorm(num_groups, num_channels, eps, affine, bias=bias).double()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_()
    ours = GroupNorm(num_groups, num_channels, eps, affine, bias=bias).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize(("groups", "channels", "shape"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize(("affine", "bias"), OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_forward_matches_torch_in_training_and_eval(groups, channels, shape, affine, bias, eps):
    ours, theirs = make_pair(groups, channels, affine, bias, eps)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 2
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("groups", "channels", "shape"), CASES[:-1], ids=CASE_IDS[:-1])
@pytest.mark.parametrize(("affine", "bias"), OPTIONS, ids=OPTION_IDS)
def test_backward_matches_torch(groups, channels, shape, affine, bias):
    ours, theirs = make_pair(groups, channels, affine, bias)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    dy = torch.randn(shape, dtype=torch.float64)
    ours(x).backward(dy)
    theirs(x_ref).backward(dy)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    for (name, mine), (_, reference) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-10, atol=1e-10,
                                   msg=name)


@pytest.mark.parametrize(("groups", "channels", "shape"), CASES, ids=CASE_IDS)
def test_functional_matches_torch_functional(groups, channels, shape):
    x = torch.randn(shape, dtype=torch.float64)
    weight = torch.randn(channels, dtype=torch.float64)
    bias = torch.randn(channels, dtype=torch.float64)
    for w, b in [(None, None), (weight, None), (weight, bias)]:
        torch.testing.assert_close(group_norm(x, groups, w, b, 1e-3),
                                   F.group_norm(x, groups, w, b, 1e-3))


def test_statistics_are_per_example_and_group():
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64) * 5 + 1
    y = GroupNorm(3, 6, affine=False).double()(x).reshape(3, 3, 2 * 16)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 3, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 3, dtype=torch.float64),
                               atol=1e-4, rtol=0)
    layer = GroupNorm(3, 6).double()
    alone = torch.cat([layer(example[None]) for example in x])
    # A reduction over a batch may be vectorised differently from one over a single example,
    # so the values agree to rounding; mixing examples would change them by order 1.
    torch.testing.assert_close(layer(x), alone, rtol=0, atol=1e-14)


def test_one_group_is_layer_norm_over_every_dim_but_the_batch():
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(layer_norm_over_channels(3).double()(x),
                               LayerNorm((3, 5, 5)).double()(x))


@pytest.mark.parametrize(("affine", "bias"), OPTIONS, ids=OPTION_IDS)
def test_state_dict_parameters_and_repr_match_torch(affine, bias):
    ours = GroupNorm(2, 6, 1e-3, affine, bias=bias)
    theirs = nn.GroupNorm(2, 6, 1e-3, affine, bias=bias)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, p.shape) for n, p in theirs.named_parameters()]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert ours.state_dict()._metadata[""] == theirs.state_dict()._metadata[""]


def test_constructor_takes_torch_arguments_in_torch_order():
    def parameters(cls):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(cls.__init__).parameters.values()]

    assert parameters(GroupNorm) == parameters(nn.GroupNorm)
    layer = GroupNorm(2, 4, 1e-3, True, "cpu", torch.float64, bias=False)
    assert (layer.num_groups, layer.num_channels, layer.eps, layer.bias) == (2, 4, 1e-3, None)
    assert layer.weight.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_input_keeps_its_dtype_like_torch(dtype):
    ours, theirs = GroupNorm(2, 8), nn.GroupNorm(2, 8)
    x = (torch.randn(4, 8, 3, 3) * 3).to(dtype)
    out = ours(x)
    assert out.dtype == theirs(x).dtype == dtype
    torch.testing.assert_close(out.float(), theirs(x).float(), rtol=0.02, atol=0.02)


@pytest.mark.parametrize(("groups", "channels"), [(3, 4), (4, 6)])
def test_channels_not_divisible_by_groups_is_refused_like_torch(groups, channels):
    with pytest.raises(ValueError, match=r"must be divisible by num_groups"):
        nn.GroupNorm(groups, channels)
    with pytest.raises(ValueError, match=rf"num_channels \({channels}\) must be divisible by "
                                         rf"num_groups \({groups}\); use a positive num_groups"):
        GroupNorm(groups, channels)


@pytest.mark.parametrize("groups", [0, -2])
def test_non_positive_group_count_is_refused(groups):
    with pytest.raises(ValueError, match="use a positive num_groups"):
        GroupNorm(groups, 4)


@pytest.mark.parametrize(("shape", "message"), [
    ((4,), r"Expected at least 2 dimensions.*\(N, C, \*\)"),
    ((2, 3), r"GroupNorm\(2, 4\) expected 4 channels in dim 1.*num_channels"),
    ((2, 6, 3), r"expected 4 channels in dim 1, got input of shape \[2, 6, 3\]"),
])
def test_input_that_does_not_fit_raises_runtime_error_like_torch(shape, message):
    x = torch.randn(shape)
    with pytest.raises(RuntimeError):
        nn.GroupNorm(2, 4)(x)
    with pytest.raises(RuntimeError, match=message):
        GroupNorm(2, 4)(x)


def test_functional_refuses_groups_that_do_not_divide_the_channels():
    with pytest.raises(RuntimeError, match="divisible by num_groups.*pick a num_groups"):
        group_norm(torch.randn(2, 6, 3), 4)


@pytest.mark.parametrize(("channels", "groups"), [(8, 4), (32, 4), (6, 2), (5, 1)])
def test_default_group_count_divides_the_channels(channels, groups):
    assert group_norm_for(channels).num_groups == groups


def test_models_accept_groupnorm_and_layernorm():
    cnn = build_cnn((8, 16), norm="groupnorm", seed=0)
    assert [m.num_groups for m in cnn.modules() if isinstance(m, GroupNorm)] == [4, 4]
    cnn_ln = build_cnn((8, 16), norm="layernorm", seed=0)
    assert [m.num_groups for m in cnn_ln.modules() if isinstance(m, GroupNorm)] == [1, 1]
    mlp = build_mlp((784, 32, 10), norm="groupnorm", seed=0)
    assert isinstance(mlp[2], GroupNorm) and mlp[2].num_channels == 32
    for model in (cnn, cnn_ln, mlp):
        logits = model(torch.rand(1, 1, 28, 28))  # a batch of one trains without error
        assert logits.shape == (1, 10)
        logits.sum().backward()
