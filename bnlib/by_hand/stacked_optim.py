r"""Adam and SGD for K networks at once: each row of a :math:`(K, P)` tensor, its own learning rate.

The updates are torch's own (``torch.optim.Adam`` and ``torch.optim.SGD`` with their defaults,
single-tensor form), written with whole-tensor operations so that one call updates every network;
the learning rates are a :math:`(K, 1)` tensor. Each row depends on its own values only, so a
network whose gradients are NaN does not change the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["StackedAdam", "StackedSGD"]


class StackedAdam:
    r"""``torch.optim.Adam`` (no weight decay, no amsgrad) on a :math:`(K, P)` tensor, lr per row.

    Written as torch's single-tensor Adam does it, with :math:`t` the step count:

    .. math::
        m \leftarrow \mathrm{lerp}(m, g, 1 - \beta_1), \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \theta \leftarrow \theta - \frac{\eta_k}{1 - \beta_1^t}
            \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

    Args:
        params: the parameters, updated in place; row k belongs to network k.
        lrs: learning rates :math:`\eta_k`, one per row.
        betas: :math:`(\beta_1, \beta_2)`. Default: ``(0.9, 0.999)``.
        eps: :math:`\epsilon`. Default: ``1e-8``.

    Shape:
        - params: :math:`(K, P)`; lrs: :math:`(K,)`.
    """

    def __init__(self, params: Tensor, lrs: Sequence[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.betas, self.eps = params, betas, eps
        # The CPU's sqrt is several times slower on zeros and subnormals (a first layer's weights
        # for always-blank pixels have v = 0). When the square root of the smallest normal number,
        # divided by sqrt(1 - beta2^t) >= sqrt(1 - beta2), is below half a unit in the last place
        # of eps, it vanishes when eps is added, as that of 0 does: raising v to it changes no bit.
        tiny, unit = torch.finfo(params.dtype).tiny, torch.finfo(params.dtype).eps
        negligible = math.sqrt(tiny / (1 - betas[1])) < eps * unit / 4
        self.sqrt_floor = tiny if negligible else 0.0
        self.negative_lrs = -torch.tensor(lrs, dtype=torch.float64, device=params.device)
        self.negative_lrs = self.negative_lrs.view(-1, 1)
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        # reused at every step: a fresh tensor of this size would be fresh pages from the system
        self.denom = torch.empty_like(params)
        self.scaled_exp_avg = torch.empty_like(params)
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: Tensor) -> None:
        """One update from ``grads``, shaped like ``params``."""
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grads, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        # torch computes lr / (1 - beta1^t) in double precision, then rounds it to the dtype
        step_size = (self.negative_lrs / (1 - beta1 ** self.steps)).to(self.params.dtype)
        denom = torch.clamp(self.exp_avg_sq, min=self.sqrt_floor, out=self.denom).sqrt_()
        denom.div_((1 - beta2 ** self.steps) ** 0.5).add_(self.eps)
        torch.mul(self.exp_avg, step_size, out=self.scaled_exp_avg)
        self.params.addcdiv_(self.scaled_exp_avg, denom)


class StackedSGD:
    r"""``torch.optim.SGD`` (no dampening, weight decay or Nesterov) on :math:`(K, P)`, lr per row.

    :math:`b \leftarrow \mu b + g` (:math:`b = g` at the first step) and
    :math:`\theta \leftarrow \theta - \eta_k b`; without momentum :math:`\theta \leftarrow \theta -
    \eta_k g`.

    Args:
        params: the parameters, updated in place; row k belongs to network k.
        lrs: learning rates :math:`\eta_k`, one per row.
        momentum: :math:`\mu`. Default: ``0.0``.

    Shape:
        - params: :math:`(K, P)`; lrs: :math:`(K,)`.
    """

    def __init__(self, params: Tensor, lrs: Sequence[float], momentum: float = 0.0) -> None:
        self.params, self.momentum = params, momentum
        self.lrs = torch.tensor(lrs, dtype=params.dtype, device=params.device).view(-1, 1)
        self.buffer: Tensor | None = None

    @torch.no_grad()
    def step(self, grads: Tensor) -> None:
        """One update from ``grads``, shaped like ``params``."""
        update = grads
        if self.momentum != 0:
            if self.buffer is None:
                self.buffer = grads.clone()
            else:
                self.buffer.mul_(self.momentum).add_(grads)
            update = self.buffer
        self.params.addcmul_(update, self.lrs, value=-1)
