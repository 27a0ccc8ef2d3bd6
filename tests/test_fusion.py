"""Folding BN into the preceding Linear/Conv: equal to torch's fusion and to the unfused model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.fusion as torch_fusion
from torch import nn

from bnlib import SmallCNN, build_mlp
from bnlib.inference import fuse_bn, fuse_conv_bn_eval, fuse_linear_bn_eval
from bnlib.nn import (
    BatchNorm1d,
    BatchNorm2d,
    BatchRenorm1d,
    BatchRenorm2d,
    GhostBatchNorm,
    SyncBatchNorm,
)

BN1D = {"torch": nn.BatchNorm1d, "bnlib": BatchNorm1d}
BN2D = {"torch": nn.BatchNorm2d, "bnlib": BatchNorm2d}
TOL = {"rtol": 1e-12, "atol": 1e-12}


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BN in ``model`` non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if getattr(module, "running_mean", None) is None:
            continue
        channels = module.num_features
        with torch.no_grad():
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) * 2 + 0.1)
            if module.weight is not None:
                module.weight.copy_(torch.randn(channels, generator=generator))
                module.bias.copy_(torch.randn(channels, generator=generator))


def linear_bn(kind: str, bias: bool, affine: bool) -> tuple[nn.Linear, nn.Module]:
    torch.manual_seed(0)
    linear = nn.Linear(7, 5, bias=bias).double().eval()
    bn = BN1D[kind](5, affine=affine).double().eval()
    randomise_bn(bn)
    return linear, bn


def conv_bn(kind: str, bias: bool, affine: bool, transpose: bool = False):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d if transpose else nn.Conv2d
    conv = layer(3, 4, 3, padding=1, bias=bias).double().eval()
    bn = BN2D[kind](4, affine=affine).double().eval()
    randomise_bn(bn)
    return conv, bn


@pytest.mark.parametrize("kind", ["torch", "bnlib"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_linear_fold_equals_unfused_and_torch(kind, bias, affine):
    linear, bn = linear_bn(kind, bias, affine)
    before = [p.clone() for p in linear.parameters()]
    fused = fuse_linear_bn_eval(linear, bn)
    x = torch.randn(11, 7, dtype=torch.float64)
    torch.testing.assert_close(fused(x), bn(linear(x)), **TOL)
    assert fused is not linear
    assert all(torch.equal(a, b) for a, b in zip(before, linear.parameters()))
    if affine:  # torch's fusion needs BN's weight and bias
        expected = torch_fusion.fuse_linear_bn_eval(linear, bn)
        torch.testing.assert_close(fused.weight, expected.weight, **TOL)
        torch.testing.assert_close(fused.bias, expected.bias, **TOL)


@pytest.mark.parametrize("kind", ["torch", "bnlib"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("transpose", [False, True])
def test_conv_fold_equals_unfused_and_torch(kind, bias, affine, transpose):
    conv, bn = conv_bn(kind, bias, affine, transpose)
    before = [p.clone() for p in conv.parameters()]
    fused = fuse_conv_bn_eval(conv, bn, transpose=transpose)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(fused(x), bn(conv(x)), **TOL)
    assert all(torch.equal(a, b) for a, b in zip(before, conv.parameters()))
    expected = torch_fusion.fuse_conv_bn_eval(conv, bn, transpose=transpose)
    torch.testing.assert_close(fused.weight, expected.weight, **TOL)
    torch.testing.assert_close(fused.bias, expected.bias, **TOL)


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, BatchNorm1d, BatchNorm2d))
               for m in model.modules())


@pytest.mark.parametrize("norm", ["torch", "bnlib"])
def test_fuse_bn_folds_the_books_mlp(norm):
    model = build_mlp((20, 16, 12, 10), norm=norm, seed=0).double().eval()
    randomise_bn(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fuse_bn(model)
    x = torch.randn(9, 20, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), **TOL)
    assert count_bn(model) == 2 and count_bn(folded) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("norm", ["torch", "bnlib"])
def test_fuse_bn_folds_the_books_cnn(norm):
    torch.manual_seed(0)
    model = SmallCNN((4, 6), norm=norm).double().eval()
    randomise_bn(model)
    folded = fuse_bn(model)
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), **TOL)
    assert count_bn(folded) == 0 and isinstance(folded, SmallCNN)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_fuse_bn_folds_batch_renorm_into_its_eval_mode_outputs(arch):
    """In eval mode batch renormalisation is BN's affine map with its running statistics (its
    running sigma stored as running_var = sigma^2 - eps), so it folds like BN: float64, with
    statistics from training-mode passes (its own update rule) and random gamma and beta."""
    torch.manual_seed(0)
    if arch == "mlp":
        model, shape = build_mlp((20, 16, 12, 10), norm="batchrenorm", seed=0), (9, 20)
    else:
        model, shape = SmallCNN((4, 6), norm="batchrenorm"), (3, 1, 28, 28)
    model = model.double()
    randomise_bn(model)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape[1:], dtype=torch.float64) * 2 + 0.5)
    model.eval()
    x = torch.randn(shape, dtype=torch.float64)
    expected = model(x)
    folded = fuse_bn(model)
    renorms = [m for m in folded.modules() if isinstance(m, (BatchRenorm1d, BatchRenorm2d))]
    assert renorms == [] and sum(isinstance(m, (BatchRenorm1d, BatchRenorm2d))
                                 for m in model.modules()) == 2
    torch.testing.assert_close(folded(x), expected, **TOL)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)  # the original untouched


def test_fuse_bn_leaves_bn_after_the_activation():
    model = build_mlp((20, 16, 10), norm="bnlib", bn_position="after", seed=0).double().eval()
    randomise_bn(model)
    folded = fuse_bn(model)
    x = torch.randn(9, 20, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), **TOL)
    assert count_bn(folded) == 1


def test_fuse_bn_folds_nested_sequentials():
    inner = nn.Sequential(nn.Linear(4, 3), BatchNorm1d(3), nn.Tanh())
    model = nn.Sequential(inner, nn.Linear(3, 2), nn.BatchNorm1d(2)).double().eval()
    randomise_bn(model)
    folded = fuse_bn(model)
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), **TOL)
    assert count_bn(folded) == 0


@pytest.mark.parametrize("layer_class", [SyncBatchNorm, GhostBatchNorm, nn.SyncBatchNorm])
def test_sync_and_ghost_bn_fold_in_eval_mode(layer_class):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), layer_class(3)).double().eval()
    randomise_bn(model)
    folded = fuse_bn(model)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), **TOL)
    assert isinstance(folded[1], nn.Identity)


def test_training_mode_is_refused():
    linear, bn = linear_bn("bnlib", True, True)
    with pytest.raises(ValueError, match=r"eval\(\)"):
        fuse_linear_bn_eval(linear, bn.train())
    conv, bn2 = conv_bn("torch", False, True)
    with pytest.raises(ValueError, match=r"eval\(\)"):
        fuse_conv_bn_eval(conv.train(), bn2)
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        fuse_bn(build_mlp((20, 8, 10), norm="bnlib"))


@pytest.mark.parametrize("kind", ["torch", "bnlib"])
def test_bn_without_running_stats_is_refused(kind):
    linear = nn.Linear(4, 3).eval()
    bn = BN1D[kind](3, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fuse_linear_bn_eval(linear, bn)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fuse_bn(nn.Sequential(linear, bn).eval())


def test_mismatched_or_wrong_modules_are_refused():
    with pytest.raises(ValueError, match="num_features=4"):
        fuse_linear_bn_eval(nn.Linear(4, 3).eval(), BatchNorm1d(4).eval())
    with pytest.raises(ValueError, match="expected a BatchNorm"):
        fuse_conv_bn_eval(nn.Conv2d(1, 3, 3).eval(), nn.LayerNorm(3).eval())
    grouped = nn.ConvTranspose2d(4, 4, 3, groups=2).eval()
    with pytest.raises(ValueError, match="grouped"):
        fuse_conv_bn_eval(grouped, BatchNorm2d(4).eval(), transpose=True)
