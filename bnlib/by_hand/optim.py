r"""Adam and SGD written out: one step each, in place, as torch's optimizers compute it.

:func:`adam_step` and :func:`sgd_step` update a list of parameters from their gradients exactly
as :class:`torch.optim.Adam` and :class:`torch.optim.SGD` do (the same operations in the same
order, so the same rounding), with the optimizer's state in a dataclass. Together with the layers
of :mod:`bnlib.layers` they make a whole training step without autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["AdamState", "SGDState", "adam_step", "check_optimizer_lists", "sgd_step"]


@dataclass
class AdamState:
    """Adam's state: the number of steps taken and each parameter's two moment estimates."""

    step: int = 0
    exp_avg: list[Tensor] = field(default_factory=list)
    exp_avg_sq: list[Tensor] = field(default_factory=list)


@torch.no_grad()
def adam_step(params: list[Tensor], grads: list[Tensor], state: AdamState, *, lr: float = 1e-3,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0) -> None:
    r"""One step of Adam on ``params``, in place, as :class:`torch.optim.Adam` computes it.

    .. math::
        g \leftarrow g + \lambda \theta, \quad
        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \theta \leftarrow \theta - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon},

    that is :math:`\theta - \gamma \hat{m} / (\sqrt{\hat{v}} + \epsilon)` with the bias-corrected
    :math:`\hat{m} = m / (1 - \beta_1^t)` and :math:`\hat{v} = v / (1 - \beta_2^t)`.

    Args:
        params, grads (list of Tensor): the parameters :math:`\theta` and their gradients.
        state (AdamState): :math:`t` and the moments, created on the first call.
        lr, betas, eps, weight_decay: :math:`\gamma`, :math:`(\beta_1, \beta_2)`, :math:`\epsilon`
            and :math:`\lambda`, torch's names and defaults.
    """
    check_optimizer_lists(params, grads)
    if not state.exp_avg:
        state.exp_avg = [torch.zeros_like(param) for param in params]
        state.exp_avg_sq = [torch.zeros_like(param) for param in params]
    state.step += 1
    beta1, beta2 = betas
    step_size = lr / (1 - beta1 ** state.step)
    bias_correction2_sqrt = (1 - beta2 ** state.step) ** 0.5
    for param, grad, exp_avg, exp_avg_sq in zip(params, grads, state.exp_avg, state.exp_avg_sq):
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


@dataclass
class SGDState:
    """SGD's state: each parameter's momentum buffer (``None`` until the first step)."""

    momentum_buffer: list[Tensor | None] = field(default_factory=list)


@torch.no_grad()
def sgd_step(params: list[Tensor], grads: list[Tensor], state: SGDState, *, lr: float = 1e-3,
             momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
             nesterov: bool = False) -> None:
    r"""One step of stochastic gradient descent, in place, as :class:`torch.optim.SGD` computes it.

    .. math::
        g \leftarrow g + \lambda \theta, \quad
        b \leftarrow \mu b + (1 - \tau) g \ (b = g \text{ at the first step}), \quad
        g \leftarrow g + \mu b \text{ (Nesterov) or } b, \quad
        \theta \leftarrow \theta - \gamma g .

    Args:
        params, grads (list of Tensor): the parameters :math:`\theta` and their gradients.
        state (SGDState): the momentum buffers :math:`b`.
        lr, momentum, dampening, weight_decay, nesterov: :math:`\gamma`, :math:`\mu`,
            :math:`\tau`, :math:`\lambda` and the Nesterov switch, torch's names and defaults.
    """
    check_optimizer_lists(params, grads)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    if not state.momentum_buffer:
        state.momentum_buffer = [None] * len(params)
    for index, (param, grad) in enumerate(zip(params, grads)):
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buffer = state.momentum_buffer[index]
            if buffer is None:
                buffer = state.momentum_buffer[index] = grad.clone()
            else:
                buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buffer, alpha=momentum) if nesterov else buffer
        param.add_(grad, alpha=-lr)


def check_optimizer_lists(params: list[Tensor], grads: list[Tensor]) -> None:
    """Raise a ValueError unless every parameter has a gradient of its own shape."""
    if len(params) != len(grads) or any(p.shape != g.shape for p, g in zip(params, grads)):
        raise ValueError(
            f"expected one gradient per parameter, of the same shape; got parameter shapes "
            f"{[tuple(p.shape) for p in params]} and gradient shapes "
            f"{[tuple(g.shape) for g in grads]}.")
