r"""Batch renormalisation (Ioffe, 2017): BN corrected towards its running statistics in training.

In training, BN normalises with the batch statistics :math:`\mu_B, \sigma_B`; in evaluation with
the running ones :math:`\mu, \sigma`. Batch renormalisation keeps the batch normalisation but
applies the per-channel correction

.. math::
    \hat{x} = \frac{x - \mu_B}{\sigma_B}\, r + d, \qquad
    r = \mathrm{clip}_{[1/r_{max},\, r_{max}]}\Big(\frac{\sigma_B}{\sigma}\Big), \qquad
    d = \mathrm{clip}_{[-d_{max},\, d_{max}]}\Big(\frac{\mu_B - \mu}{\sigma}\Big),

with :math:`r` and :math:`d` treated as constants in the backward pass. Unclipped, the training
output equals the evaluation output :math:`(x - \mu) / \sigma`; with :math:`r_{max} = 1,
d_{max} = 0` it is BN. As in the paper's Algorithm 1, :math:`\sigma_B = \sqrt{\mathrm{Var}_B[x]
+ \epsilon}` (biased variance) and the running :math:`\sigma` is a moving average of
:math:`\sigma_B`, not of the variance. It is stored as ``running_var`` :math:`= \sigma^2 -
\epsilon`, so that the buffers, the state dict and evaluation are exactly BN's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bnlib.nn._channels import as_channel, reduction_dims, scale_and_shift
from bnlib.nn.batchnorm import _BatchNorm
from bnlib.nn.functional import check_batch_norm_arguments, statistics_precision

__all__ = ["BatchRenorm1d", "BatchRenorm2d", "RenormSchedule", "batch_renorm_train",
           "renorm_corrections"]


@torch.no_grad()
def renorm_corrections(batch_mean: Tensor, batch_std: Tensor, running_mean: Tensor,
                       running_std: Tensor, r_max: float, d_max: float) -> tuple[Tensor, Tensor]:
    r"""Return the clipped corrections :math:`r = \sigma_B / \sigma` and
    :math:`d = (\mu_B - \mu) / \sigma`, outside autograd (the stop-gradient of the paper)."""
    r = (batch_std / running_std).clamp(1.0 / r_max, r_max)
    d = ((batch_mean - running_mean) / running_std).clamp(-d_max, d_max)
    return r, d


def batch_renorm_train(input: Tensor, running_mean: Tensor, running_var: Tensor,
                       weight: Tensor | None, bias: Tensor | None, momentum: float, eps: float,
                       r_max: float, d_max: float) -> Tensor:
    r"""Training-mode batch renormalisation; updates the running statistics in place.

    The corrections use the running statistics from before this batch's update; the update is
    :math:`\mu \leftarrow \mu + \alpha (\mu_B - \mu)` and :math:`\sigma \leftarrow \sigma +
    \alpha (\sigma_B - \sigma)` with :math:`\alpha` = ``momentum``, and ``running_var`` holds
    :math:`\sigma^2 - \epsilon`. Autograd derives the backward, with :math:`r, d` constants.

    Args:
        input (Tensor): input of shape :math:`(N, C, *)`.
        running_mean, running_var (Tensor): the running statistics, shape :math:`(C,)`.
        weight, bias (Tensor or None): :math:`\gamma` and :math:`\beta`, shape :math:`(C,)`.
        momentum (float): :math:`\alpha`, the running-statistics update factor.
        eps (float): added to the batch variance.
        r_max (float): :math:`r` is clipped to :math:`[1/r_{max}, r_{max}]`.
        d_max (float): :math:`d` is clipped to :math:`[-d_{max}, d_{max}]`.
    """
    input_dtype, input = input.dtype, statistics_precision(input)
    dims = reduction_dims(input)
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    std = torch.sqrt(centered.square().mean(dims, keepdim=True) + eps)
    batch_mean, batch_std = mean.flatten().detach(), std.flatten().detach()
    running_std = torch.sqrt(running_var + eps).to(input.dtype)
    r, d = renorm_corrections(batch_mean, batch_std, running_mean.to(input.dtype), running_std,
                              r_max, d_max)
    x_hat = centered / std * as_channel(r, input) + as_channel(d, input)
    with torch.no_grad():
        running_mean.lerp_(batch_mean.to(running_mean.dtype), momentum)
        new_std = running_std.to(running_var.dtype).lerp_(batch_std.to(running_var.dtype),
                                                          momentum)
        running_var.copy_(new_std.square().sub_(eps).clamp_(min=0.0))
    return scale_and_shift(x_hat, weight, bias).to(input_dtype)


class _BatchRenorm(_BatchNorm):
    r"""Shared machinery of :class:`BatchRenorm1d` and :class:`BatchRenorm2d`.

    Args:
        num_features, eps, momentum, affine, track_running_stats, device, dtype, bias: as for
            :class:`bnlib.BatchNorm1d` (``bias`` keyword-only). Defaults: ``1e-5, 0.1, True,
            True, None, None, True``.
        r_max (float, keyword-only, optional): bound of :math:`r`, at least 1; a plain attribute
            that may be changed between steps (see :class:`RenormSchedule`). Default: ``3.0``.
        d_max (float, keyword-only, optional): bound of :math:`|d|`, at least 0; a plain
            attribute too. Default: ``5.0``.

    Without running statistics (``track_running_stats=False``) there is nothing to correct
    towards: the layer is BN. In evaluation it is BN's evaluation.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
        r_max: float = 3.0,
        d_max: float = 5.0,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias, backward="autograd")
        self.r_max = r_max
        self.d_max = d_max

    def __setattr__(self, name: str, value) -> None:
        # Checked on every assignment, so a schedule cannot set an impossible bound either.
        if name == "r_max" and not value >= 1.0:
            raise ValueError(f"r_max must be at least 1 (r is clipped to [1/r_max, r_max]), "
                             f"got {value!r}; use 1 for plain BN.")
        if name == "d_max" and not value >= 0.0:
            raise ValueError(f"d_max must be at least 0 (d is clipped to [-d_max, d_max]), "
                             f"got {value!r}; use 0 for plain BN.")
        super().__setattr__(name, value)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}"

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(input)
        self.check_input(input)
        check_batch_norm_arguments(input, self.running_mean, self.running_var, self.weight,
                                   self.bias, True, self.eps, "autograd")
        factor = self.next_average_factor()
        return batch_renorm_train(input, self.running_mean, self.running_var, self.weight,
                                  self.bias, factor, self.eps, self.r_max, self.d_max)


class BatchRenorm1d(_BatchRenorm):
    r"""Batch renormalisation over a 2D or 3D input; in evaluation, :class:`bnlib.BatchNorm1d`.

    .. math::
        y = \gamma \Big(\frac{x - \mu_B}{\sigma_B}\, r + d\Big) + \beta

    Arguments as :class:`bnlib.BatchNorm1d`'s plus keyword-only ``r_max=3.0`` and
    ``d_max=5.0`` (see :class:`_BatchRenorm`); the state dict is BN's.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, L)`.
        - Output: same shape as the input.
    """

    accepted_dims = (2, 3)
    input_description = "2D (N, C) or 3D (N, C, L)"


class BatchRenorm2d(_BatchRenorm):
    r"""Batch renormalisation over a 4D input; in evaluation, :class:`bnlib.BatchNorm2d`.

    .. math::
        y = \gamma \Big(\frac{x - \mu_B}{\sigma_B}\, r + d\Big) + \beta

    Arguments as :class:`bnlib.BatchNorm2d`'s plus keyword-only ``r_max=3.0`` and
    ``d_max=5.0`` (see :class:`_BatchRenorm`); the state dict is BN's.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: same shape as the input.
    """

    accepted_dims = (4,)
    input_description = "4D (N, C, H, W)"


@dataclass(frozen=True)
class RenormSchedule:
    r"""Warm-up of :math:`r_{max}` and :math:`d_{max}`: plain BN first, then a linear ramp.

    For ``warmup_steps`` steps :math:`r_{max} = 1, d_{max} = 0` (BN, while the running
    statistics settle); then both grow linearly, reaching ``r_max`` at step ``r_max_step`` and
    ``d_max`` at ``d_max_step``. The paper starts from BN and relaxes the bounds gradually, to
    :math:`r_{max} = 3` and :math:`d_{max} = 5`; the step counts here are only defaults, meant for
    runs of tens of thousands of steps, to be scaled to the length of a run.

    Args:
        r_max (float): final :math:`r_{max}`. Default: ``3.0``.
        d_max (float): final :math:`d_{max}`. Default: ``5.0``.
        warmup_steps (int): steps of plain BN. Default: ``5000``.
        r_max_step (int): step at which ``r_max`` is reached. Default: ``40000``.
        d_max_step (int): step at which ``d_max`` is reached. Default: ``25000``.
    """

    r_max: float = 3.0
    d_max: float = 5.0
    warmup_steps: int = 5000
    r_max_step: int = 40000
    d_max_step: int = 25000

    def __post_init__(self) -> None:
        if self.r_max < 1 or self.d_max < 0:
            raise ValueError(f"need r_max >= 1 and d_max >= 0, got {self.r_max}, {self.d_max}.")
        if not 0 <= self.warmup_steps <= min(self.r_max_step, self.d_max_step):
            raise ValueError("need 0 <= warmup_steps <= r_max_step and d_max_step, got "
                             f"{self.warmup_steps}, {self.r_max_step}, {self.d_max_step}.")

    def _ramp(self, step: int, end_step: int) -> float:
        if step <= self.warmup_steps:
            return 0.0
        return min(1.0, (step - self.warmup_steps) / max(end_step - self.warmup_steps, 1))

    def limits(self, step: int) -> tuple[float, float]:
        """Return ``(r_max, d_max)`` at training step ``step`` (counted from 0)."""
        r_max = 1.0 + (self.r_max - 1.0) * self._ramp(step, self.r_max_step)
        return r_max, self.d_max * self._ramp(step, self.d_max_step)

    def apply(self, model: nn.Module, step: int) -> None:
        """Set ``r_max`` and ``d_max`` of every batch-renorm layer in ``model`` for ``step``."""
        r_max, d_max = self.limits(step)
        for module in model.modules():
            if isinstance(module, _BatchRenorm):
                module.r_max, module.d_max = r_max, d_max
