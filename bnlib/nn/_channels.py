r"""Per-channel bookkeeping shared by every batch-norm implementation in bnlib.

Batch normalisation treats dim 1 of an input of shape :math:`(N, C, *)` as the channel dim:
each channel has its own statistics, taken over every other dim, and its own :math:`\gamma`
and :math:`\beta`. These helpers name the dims, count the values and broadcast the vectors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["as_channel", "reduction_dims", "scale_and_shift", "values_per_channel"]


def reduction_dims(input: Tensor) -> list[int]:
    """Every dim except the channel dim 1: the dims that the statistics are taken over."""
    return [0] + list(range(2, input.dim()))


def values_per_channel(input: Tensor) -> int:
    """Number of values :math:`m` that share one channel: the product of every dim but dim 1."""
    return math.prod(input.shape[:1] + input.shape[2:])


def as_channel(vector: Tensor | None, input: Tensor) -> Tensor | None:
    """View a per-channel vector of shape ``(C,)`` as ``(1, C, 1, ..., 1)``, which broadcasts
    against ``input``; ``None`` stays ``None``."""
    if vector is None:
        return None
    return vector.view([1, input.shape[1]] + [1] * (input.dim() - 2))


def scale_and_shift(
    x_hat: Tensor, weight: Tensor | None, bias: Tensor | None, out: Tensor | None = None
) -> Tensor:
    r"""Return :math:`\gamma \hat{x} + \beta` in the dtype of ``x_hat``, skipping whichever of
    :math:`\gamma` and :math:`\beta` is ``None``.

    The result is always a tensor of its own, never ``x_hat`` itself, so an in-place op on it
    (such as ``ReLU(inplace=True)``) cannot corrupt an ``x_hat`` saved for backward. ``out``, a
    spare buffer shaped like ``x_hat``, receives the result instead of a fresh allocation; it may
    only be given outside autograd and outside :mod:`torch.func` transforms.
    """
    gamma, beta = as_channel(weight, x_hat), as_channel(bias, x_hat)
    if gamma is not None and beta is not None:
        result = torch.addcmul(beta, x_hat, gamma, out=out)
    elif gamma is not None:
        result = torch.mul(x_hat, gamma, out=out)
    elif beta is not None:
        result = torch.add(x_hat, beta, out=out)
    else:
        result = x_hat.clone() if out is None else out.copy_(x_hat)
    # float32 parameters promote a bfloat16 or float16 input: return the input's dtype, as torch
    return result.to(x_hat.dtype)
