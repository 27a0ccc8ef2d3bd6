"""BN under mixed precision: bnlib's layers under ``torch.autocast`` (and with half-precision
input) give torch's output dtype, buffer dtypes, statistics and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlib import BatchNorm1d, BatchNorm2d, BatchRenorm1d, BatchRenorm2d, GhostBatchNorm
from bnlib.nn.functional import statistics_precision

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# (our class, torch's class, input shape)
LAYOUTS = [
    (BatchNorm1d, nn.BatchNorm1d, (32, 6)),
    (BatchNorm1d, nn.BatchNorm1d, (16, 6, 5)),
    (BatchNorm2d, nn.BatchNorm2d, (8, 6, 4, 4)),
]
LAYOUT_IDS = ["1d-NC", "1d-NCL", "2d-NCHW"]
# One rounding of a value of order 1 to bfloat16 (8 significant bits) or float16 (11).
TOLERANCE = {torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}


def activations(shape, mean=20.0, seed=0):
    """Float32 activations whose channel means are large next to their spread, where statistics
    taken in half precision go wrong."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * 2 + mean


def twins(ours, theirs, channels, device="cpu", **kwargs):
    """The two layers with the same random affine parameters."""
    layers = ours(channels, **kwargs).to(device), theirs(channels).to(device)
    generator = torch.Generator().manual_seed(1)
    weight, bias = torch.rand(2, channels, generator=generator) + 0.5
    for layer in layers:
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    return layers


def run(layer, x, device_type, dtype, autocast=True):
    """Forward of ``x`` cast to ``dtype`` (as an autocast ``Linear`` or convolution would
    return it), inside autocast or not, and backward of a loss; returns the output and the
    gradient of ``x``."""
    x = x.clone().requires_grad_()
    with torch.autocast(device_type, dtype=dtype, enabled=autocast):
        output = layer(x.to(dtype))
    output.float().square().mean().backward()
    return output, x.grad


def assert_like_torch(ours, theirs, x, device_type="cpu", dtype=torch.bfloat16, autocast=True):
    tolerance = TOLERANCE[dtype]
    for _ in range(2):  # a second batch, normalised after one running-statistics update
        out_ours, grad_ours = run(ours, x, device_type, dtype, autocast)
        out_theirs, grad_theirs = run(theirs, x, device_type, dtype, autocast)
        assert out_ours.dtype == out_theirs.dtype
        torch.testing.assert_close(out_ours.float(), out_theirs.float(), rtol=tolerance,
                                   atol=2 * tolerance)
        torch.testing.assert_close(grad_ours, grad_theirs, rtol=tolerance, atol=tolerance)
    for name in ("running_mean", "running_var", "weight", "bias"):
        mine, torchs = getattr(ours, name), getattr(theirs, name)
        assert mine.dtype == torchs.dtype == torch.float32, name
        torch.testing.assert_close(mine, torchs, rtol=1e-5, atol=1e-5)
    for name in ("weight", "bias"):
        mine, torchs = getattr(ours, name).grad, getattr(theirs, name).grad
        assert mine.dtype == torchs.dtype == torch.float32
        torch.testing.assert_close(mine, torchs, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("backward", ["manual", "autograd"])
@pytest.mark.parametrize(("ours", "theirs", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_training_under_cpu_autocast_matches_torch(ours, theirs, shape, backward):
    x = activations(shape)
    assert_like_torch(*twins(ours, theirs, shape[1], backward=backward), x)


@pytest.mark.parametrize(("ours", "theirs", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_evaluation_under_cpu_autocast_matches_torch(ours, theirs, shape):
    x = activations(shape)
    ours, theirs = twins(ours, theirs, shape[1])
    for layer in (ours, theirs):
        layer(x)  # running statistics away from 0 and 1
        layer.eval()
    assert_like_torch(ours, theirs, x)


@pytest.mark.parametrize(("ours", "theirs", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_float32_input_stays_float32_under_cpu_autocast(ours, theirs, shape):
    """Autocast does not cast BN's input: batch_norm is on none of its CPU lists."""
    ours, theirs = twins(ours, theirs, shape[1])
    x = activations(shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output_ours, output_theirs = ours(x), theirs(x)
    assert output_ours.dtype == output_theirs.dtype == torch.float32
    torch.testing.assert_close(output_ours, output_theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("ours", "theirs", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_half_precision_input_without_autocast_matches_torch(ours, theirs, shape, dtype):
    assert_like_torch(*twins(ours, theirs, shape[1]), activations(shape), dtype=dtype,
                      autocast=False)


def test_statistics_are_float32_sums_of_the_half_precision_input():
    """The running statistics are those of the bfloat16 values, computed in float32: one update
    from 0 and 1 with momentum 1 stores them exactly."""
    x = activations((256, 4), mean=200.0).bfloat16()
    layer = BatchNorm1d(4, momentum=1.0)
    layer(x)
    var, mean = torch.var_mean(x.double(), dim=0)
    torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-5, atol=0)


def test_linear_bn_relu_block_under_cpu_autocast_matches_torch():
    x = activations((64, 10))
    torch.manual_seed(0)
    linear = nn.Linear(10, 6)
    blocks = [nn.Sequential(linear, bn, nn.ReLU()) for bn in twins(BatchNorm1d, nn.BatchNorm1d, 6)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = (block(x) for block in blocks)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=2 ** -7, atol=2 ** -6)


def test_ghost_batchnorm_under_cpu_autocast_is_torch_bn_per_ghost_batch():
    x = activations((32, 5)).bfloat16()
    ghost = GhostBatchNorm(5, virtual_batch_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = ghost(x)
        reference = torch.cat([nn.BatchNorm1d(5)(chunk) for chunk in x.split(8)])
    assert output.dtype == reference.dtype == torch.bfloat16
    assert ghost.running_mean.dtype == ghost.running_var.dtype == torch.float32
    torch.testing.assert_close(output.float(), reference.float(), rtol=2 ** -7, atol=2 ** -6)


@pytest.mark.parametrize(("ours", "theirs", "shape"), [
    (BatchRenorm1d, nn.BatchNorm1d, (32, 6)), (BatchRenorm2d, nn.BatchNorm2d, (8, 6, 4, 4))],
    ids=["1d", "2d"])
def test_batch_renorm_without_corrections_under_cpu_autocast_matches_torch(ours, theirs, shape):
    """With r_max=1 and d_max=0 batch renormalisation is BN, also under autocast. Its running
    variance holds sigma^2 - eps of the biased sigma, so only the running means are compared."""
    ours, theirs = twins(ours, theirs, shape[1], r_max=1.0, d_max=0.0)
    x = activations(shape)
    (output_ours, grad_ours), (output_theirs, grad_theirs) = (
        run(layer, x, "cpu", torch.bfloat16) for layer in (ours, theirs))
    assert output_ours.dtype == output_theirs.dtype == torch.bfloat16
    torch.testing.assert_close(output_ours.float(), output_theirs.float(), rtol=2 ** -7,
                               atol=2 ** -6)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=2 ** -7, atol=2 ** -7)
    assert ours.running_mean.dtype == ours.running_var.dtype == torch.float32
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-5)


def test_statistics_precision_widens_only_half_precision():
    x = torch.ones(3)
    assert statistics_precision(x) is x
    assert statistics_precision(x.double()).dtype == torch.float64
    assert statistics_precision(x.bfloat16()).dtype == torch.float32
    assert statistics_precision(x.half()).dtype == torch.float32


@CUDA
@pytest.mark.parametrize(("ours", "theirs", "shape"), LAYOUTS, ids=LAYOUT_IDS)
def test_training_under_cuda_float16_autocast_matches_torch(ours, theirs, shape):
    x = activations(shape).cuda()
    assert_like_torch(*twins(ours, theirs, shape[1], device="cuda"), x, device_type="cuda",
                      dtype=torch.float16)
