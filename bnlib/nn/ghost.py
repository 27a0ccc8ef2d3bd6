r"""Ghost batch normalisation: BN statistics over virtual sub-batches of each training batch.

Hoffer, Hubara and Soudry (2017) normalise a large batch in chunks ("ghost batches") of a fixed
size, each with its own statistics, to keep the noise of small-batch BN while training with large
batches. Per-process BN in data-parallel training, and BN under gradient accumulation, compute
exactly this, with one ghost batch per process or per micro-batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bnlib._checks import require_int
from bnlib.nn.batchnorm import _BatchNorm

__all__ = ["GhostBatchNorm"]


class GhostBatchNorm(_BatchNorm):
    r"""Batch normalisation with statistics over each virtual sub-batch of the training batch.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} \gamma + \beta

    where :math:`g` is the ghost batch of ``virtual_batch_size`` consecutive examples that holds
    :math:`x` (the last one may be smaller). Each ghost batch counts as one training step for
    the running statistics, as if the chunks had been fed one after the other. In eval mode, or
    for batches of at most ``virtual_batch_size`` examples, it is plain BN.

    Args:
        num_features (int): number of channels :math:`C`.
        virtual_batch_size (int, optional): examples per ghost batch, at least 2.
            Default: ``32``.
        eps, momentum, affine, track_running_stats, device, dtype, bias, backward: as for
            :class:`bnlib.BatchNorm1d` (``bias`` and ``backward`` keyword-only). Defaults:
            ``1e-5, 0.1, True, True, None, None, True, "manual"``.

    Shape:
        - Input: :math:`(N, C, *)`, for example :math:`(N, C)` or :math:`(N, C, H, W)`.
        - Output: same shape as the input.
    """

    accepted_dims = (2, 3, 4, 5)
    input_description = "(N, C, *) with 2 to 5 dims"

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
        backward: str = "manual",
    ) -> None:
        require_int("virtual_batch_size", virtual_batch_size, 2, message=(
            f"virtual_batch_size must be an int of at least 2 (BN needs two examples to "
            f"estimate a variance), got {virtual_batch_size!r}."))
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias, backward=backward)
        self.virtual_batch_size = virtual_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"

    def forward(self, input: Tensor) -> Tensor:
        self.check_input(input)
        if not self.training or input.shape[0] <= self.virtual_batch_size:
            return super().forward(input)
        last = input.shape[0] % self.virtual_batch_size
        if last == 1 and math.prod(input.shape[2:]) == 1:
            raise ValueError(
                f"a batch of {input.shape[0]} examples leaves a last ghost batch of 1 example "
                f"with virtual_batch_size={self.virtual_batch_size}, too few to estimate a "
                "variance; use a batch size that is not 1 more than a multiple of it."
            )
        chunks = input.split(self.virtual_batch_size)
        return torch.cat([super(GhostBatchNorm, self).forward(chunk) for chunk in chunks])
