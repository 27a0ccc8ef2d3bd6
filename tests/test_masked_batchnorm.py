"""MaskedBatchNorm1d: BN over the real positions of padded sequences, against torch's BN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlib import BatchNorm1d
from bnlib.nn.masked import MaskedBatchNorm1d, masked_batch_norm

LENGTHS = torch.tensor([3, 7, 5, 1])


def padded_batch(length=7, pad_value=0.0):
    """Sequences of LENGTHS (fixed values), padded with `pad_value` to `length`; their mask."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(len(LENGTHS), 3, length, dtype=torch.float64, generator=generator) * 2 + 1
    mask = LENGTHS[:, None] > torch.arange(length)
    return x.masked_fill(~mask[:, None, :], pad_value), mask


def packed(x, mask):
    """The real positions of a padded (N, C, L) batch as one (sum of lengths, C) batch."""
    return x.transpose(1, 2)[mask]


def test_training_equals_torch_bn_over_packed_real_positions():
    x, mask = padded_batch()
    x.requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours, theirs = MaskedBatchNorm1d(3).double(), nn.BatchNorm1d(3).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        theirs.bias.copy_(torch.tensor([0.1, 0.0, 3.0]))
    ours.load_state_dict(theirs.state_dict())
    upstream = torch.randn(x.shape, dtype=torch.float64)
    out, out_ref = ours(x, mask), theirs(packed(x_ref, mask))
    torch.testing.assert_close(packed(out, mask), out_ref)
    assert (out.transpose(1, 2)[~mask] == 0).all()
    (out * upstream).sum().backward()
    (out_ref * packed(upstream, mask)).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name))


@pytest.mark.parametrize("training", [True, False])
def test_real_outputs_do_not_depend_on_padding(training):
    layer = MaskedBatchNorm1d(3).double()
    with torch.no_grad():
        layer.running_mean.fill_(0.5), layer.running_var.fill_(2.0)
    layer.train(training)
    short, short_mask = padded_batch(7)
    long, long_mask = padded_batch(20, pad_value=5.0)
    long[..., :7] = short
    out_short, out_long = layer(short, short_mask), layer(long, long_mask)
    torch.testing.assert_close(packed(out_short, short_mask), packed(out_long, long_mask))


def test_full_mask_is_plain_batchnorm_and_eval_uses_running_statistics():
    x = torch.randn(4, 3, 6, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    ours, plain = MaskedBatchNorm1d(3, momentum=None).double(), BatchNorm1d(3, momentum=None)
    plain = plain.double()
    for _ in range(2):
        torch.testing.assert_close(ours(x, mask), plain(x))
    torch.testing.assert_close(ours.running_var, plain.running_var)
    ours.eval(), plain.eval()
    torch.testing.assert_close(ours(x + 1, mask), plain(x + 1))


def test_without_running_statistics_uses_batch_statistics_in_eval():
    x, mask = padded_batch()
    layer = MaskedBatchNorm1d(3, track_running_stats=False).double().eval()
    expected = nn.BatchNorm1d(3, track_running_stats=False).double()(packed(x, mask))
    torch.testing.assert_close(packed(layer(x, mask), mask), expected)


def test_bad_masks_raise_clear_errors():
    x, mask = padded_batch()
    layer = MaskedBatchNorm1d(3).double()
    with pytest.raises(ValueError, match="bool"):
        layer(x, mask.long())
    with pytest.raises(ValueError, match=r"shape \(N, L\)"):
        layer(x, mask[:, :3])
    with pytest.raises(ValueError, match="at least 2 real positions"):
        layer(x, torch.zeros_like(mask).index_put_((torch.tensor([0]), torch.tensor([0])),
                                                    torch.tensor(True)))
    with pytest.raises(ValueError, match="3D"):
        masked_batch_norm(x[0], mask, None, None, None, None, True, 0.1, 1e-5)
