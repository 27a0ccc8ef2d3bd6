r"""Batch normalisation of padded sequences, with statistics over the real positions only.

A batch of sequences of different lengths is padded to one length :math:`L` and given to
``BatchNorm1d`` as :math:`(N, C, L)`. Plain BN then counts the padding as data: its mean and
variance, and so every real position's output, depend on how much padding the batch holds. Here
a boolean ``mask`` of shape :math:`(N, L)` marks the real positions, and the statistics, the
running statistics included, are those of BN applied to the real positions alone, packed into
one :math:`(\sum_i L_i, C)` batch. Padded positions come out as zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnlib.nn.batchnorm import BatchNorm1d
from bnlib.nn.functional import update_running_stats

__all__ = ["MaskedBatchNorm1d", "masked_batch_norm"]


def check_mask(input: Tensor, mask: Tensor) -> None:
    """Raise a ValueError, saying what to change, unless ``mask`` fits ``input``."""
    if input.dim() != 3:
        raise ValueError(f"masked batch norm expects a 3D (N, C, L) input, got shape "
                         f"{tuple(input.shape)}; put the channels in dim 1 and time in dim 2.")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True at real positions), got {mask.dtype}; "
                         "use lengths[:, None] > torch.arange(L) to build one.")
    expected = (input.shape[0], input.shape[2])
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask must have shape (N, L) = {expected} to match the input "
                         f"{tuple(input.shape)}, got {tuple(mask.shape)}.")


def masked_batch_norm(
    input: Tensor,
    mask: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    r"""BN of a padded :math:`(N, C, L)` batch over the positions where ``mask`` is True.

    In training the mean and the biased variance are taken per channel over the real positions,
    and the running statistics are updated with them (the variance made unbiased with the count
    of real positions), as BN over the packed real positions would. In evaluation the running
    statistics are used. Padded positions of the output are 0. Autograd derives the backward.
    """
    check_mask(input, mask)
    real = mask[:, None, :].to(input.dtype)  # (N, 1, L): 1 at real positions, 0 at padding
    if training:
        count = int(mask.sum())
        if count < 2:
            raise ValueError(f"masked batch norm in training needs at least 2 real positions per "
                             f"channel, got {count}; use a larger batch or evaluation mode.")
        mean = (input * real).sum((0, 2)) / count
        var = ((input - mean[:, None]) ** 2 * real).sum((0, 2)) / count
        update_running_stats(running_mean, running_var, mean.detach(), var.detach(), momentum,
                             count)
    else:
        mean, var = running_mean, running_var
    output = (input - mean[:, None]) / torch.sqrt(var[:, None] + eps)
    if weight is not None:
        output = output * weight[:, None]
    if bias is not None:
        output = output + bias[:, None]
    return output * real


class MaskedBatchNorm1d(BatchNorm1d):
    r"""``BatchNorm1d`` for padded sequences, called as ``layer(input, mask)``.

    Parameters, buffers and state dict are ``BatchNorm1d``'s, so a trained ``BatchNorm1d`` loads
    into it and back. ``mask`` is a bool :math:`(N, L)` tensor, True at real positions.

    Shape:
        - Input: :math:`(N, C, L)`; mask: :math:`(N, L)`.
        - Output: :math:`(N, C, L)`, zero at padded positions.
    """

    accepted_dims = (3,)
    input_description = "3D (N, C, L)"

    def forward(self, input: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        self.check_input(input)
        factor = self.next_average_factor()
        # Batch statistics in training, and in evaluation too when there are no running ones;
        # the running statistics are passed only when they are to be used or updated.
        use_batch_stats = self.training or self.running_mean is None
        pass_running = not use_batch_stats or self.track_running_stats
        running_mean = self.running_mean if pass_running else None
        running_var = self.running_var if pass_running else None
        return masked_batch_norm(input, mask, running_mean, running_var, self.weight, self.bias,
                                 use_batch_stats, factor, self.eps)
