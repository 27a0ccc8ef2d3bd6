"""GhostBatchNorm: BN over virtual sub-batches equals BN fed the chunks one after the other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnlib import BatchNorm1d, BatchNorm2d, build_mlp
from bnlib.nn import GhostBatchNorm


@pytest.mark.parametrize("layer_class, shape",
                         [(BatchNorm1d, (20, 3)), (BatchNorm2d, (10, 3, 4, 4))])
def test_equals_bn_over_each_chunk_in_turn(layer_class, shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(shape, dtype=torch.float64)
    ghost, plain = GhostBatchNorm(3, virtual_batch_size=4).double(), layer_class(3).double()
    with torch.no_grad():
        for layer in (ghost, plain):
            layer.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
            layer.bias.copy_(torch.tensor([0.1, 0.0, 3.0]))
    output = ghost(x)
    grad_ghost, = torch.autograd.grad(output, x, dy)
    chunks = [plain(chunk) for chunk in x.split(4)]  # the last chunk is smaller
    expected = torch.cat(chunks)
    grad_plain, = torch.autograd.grad(expected, x, dy)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(grad_ghost, grad_plain)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ghost, name), getattr(plain, name))


def test_gradient_equals_gradient_accumulation():
    images = torch.randn(32, 1, 28, 28, dtype=torch.float64)
    labels = torch.arange(32) % 10
    ghost_model = build_mlp(norm="bnlib", seed=0).double()
    for index in (2, 5):
        layer = GhostBatchNorm(32, virtual_batch_size=8).double()
        layer.load_state_dict(ghost_model[index].state_dict())
        ghost_model[index] = layer
    F.cross_entropy(ghost_model(images), labels).backward()
    model = build_mlp(norm="bnlib", seed=0).double()
    for chunk_images, chunk_labels in zip(images.chunk(4), labels.chunk(4)):
        (F.cross_entropy(model(chunk_images), chunk_labels) / 4).backward()
    for ghost_p, p in zip(ghost_model.parameters(), model.parameters()):
        torch.testing.assert_close(ghost_p.grad, p.grad)


def test_eval_mode_and_small_batches_are_plain_bn():
    torch.manual_seed(0)
    ghost, plain = GhostBatchNorm(3, virtual_batch_size=8), BatchNorm1d(3)
    x = torch.randn(8, 3)
    torch.testing.assert_close(ghost(x), plain(x))
    ghost.eval(), plain.eval()
    x = torch.randn(50, 3)
    torch.testing.assert_close(ghost(x), plain(x))
    assert "virtual_batch_size=8" in repr(ghost)


def test_bad_arguments_are_refused():
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="virtual_batch_size"):
            GhostBatchNorm(3, virtual_batch_size=bad)
    with pytest.raises(ValueError, match="last ghost batch of 1 example"):
        GhostBatchNorm(3, virtual_batch_size=4)(torch.randn(9, 3))
    with pytest.raises(ValueError, match="channels"):
        GhostBatchNorm(3)(torch.randn(40, 4))
