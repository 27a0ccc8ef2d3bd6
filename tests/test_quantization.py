"""Int8 post-training quantization with and without folding BN first."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from torch import nn

from bnlib import build_cnn, build_mlp
from bnlib.inference.quantization import fusable_groups, logits_in_batches, quantize_int8


def trained_like_cnn(seed: int = 0) -> nn.Module:
    """A CNN with torch's BN and non-trivial running statistics, in eval mode."""
    model = build_cnn(norm="torch", seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator) * 0.3)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
    return model.eval()


def quantize_quietly(model: nn.Module, images: torch.Tensor, fuse: bool) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 marks prepare/convert deprecated
        return quantize_int8(model, images, fuse=fuse)


def test_fusable_groups_of_the_book_networks():
    assert fusable_groups(build_cnn(norm="torch")) == [
        ["features.0", "features.1", "features.2"], ["features.4", "features.5", "features.6"]]
    assert fusable_groups(build_mlp(norm="torch")) == [["1", "2", "3"], ["4", "5", "6"]]
    assert fusable_groups(build_cnn(norm="torch", bn_position="after")) == []
    assert fusable_groups(build_cnn(norm="bnlib")) == []  # fuse_modules knows only torch's BN


@pytest.mark.parametrize("fuse", [True, False])
def test_int8_model_follows_the_float_one(fuse):
    model = trained_like_cnn()
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    quantized = quantize_quietly(model, images, fuse)
    assert any(isinstance(m, nnq.BatchNorm2d) for m in quantized.modules()) is not fuse
    assert any(isinstance(m, nniq.ConvReLU2d) for m in quantized.modules()) is fuse
    with torch.no_grad():
        float_logits, int8_logits = model(images), quantized(images)
    assert int8_logits.dtype == torch.float32
    # int8 rounding moves the logits a little, not the ranking of most images
    assert (float_logits - int8_logits).abs().max() < 0.1 * float_logits.abs().max()
    assert (float_logits.argmax(1) == int8_logits.argmax(1)).float().mean() > 0.9
    assert all(m.training is False for m in model.modules())  # the input model is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_refuses_training_mode_and_bnlib_bn():
    images = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match="eval"):
        quantize_int8(build_cnn(norm="torch"), images)
    with pytest.raises(ValueError, match="norm='torch'"):
        quantize_int8(build_cnn(norm="bnlib").eval(), images)


def test_logits_in_batches_equal_one_call():
    model = trained_like_cnn()
    images = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model(images)
    torch.testing.assert_close(logits_in_batches(model, images, batch_size=3), whole)
    with pytest.raises(ValueError, match="batch_size"):
        logits_in_batches(model, images, batch_size=0)
