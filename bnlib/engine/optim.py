"""The optimizers of the training loops and of :mod:`bnlib.engine.manual`: torch's own, fused."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from bnlib._checks import require_choice

__all__ = ["make_optimizer"]


def make_optimizer(params: nn.Module | Iterable[nn.Parameter], name: str, *, lr: float,
                   momentum: float = 0.0) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD``, with torch's fused kernel where it exists.

    The fused kernel updates every parameter in one call, which for a small model is most of
    what a step costs; it exists for floating-point parameters on the CPU and CUDA.

    Args:
        params: a model (its ``parameters()``) or the parameters to optimise.
        name: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        momentum: momentum of ``"sgd"``. Default: ``0.0``.
    """
    require_choice("optimizer", name, ("adam", "sgd"))
    params = list(params.parameters() if isinstance(params, nn.Module) else params)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=fused)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, fused=fused)
