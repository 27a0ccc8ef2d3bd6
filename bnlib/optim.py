"""Optimizers for small models, where a step is mostly per-call overhead."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.adam import adam as functional_adam

__all__ = ["make_optimizer", "lean_step"]


def make_optimizer(model: nn.Module, name: str, *, lr: float,
                   momentum: float = 0.0) -> torch.optim.Optimizer:
    """Adam or SGD over ``model``'s parameters, with torch's fused kernel where it exists.

    Args:
        model: the model whose parameters are optimised.
        name: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        momentum: momentum of ``"sgd"``. Default: ``0.0``.
    """
    if name not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
    params = list(model.parameters())
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=fused)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, fused=fused)


def lean_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step``, minus the bookkeeping that a fused Adam repeats at every call.

    ``Adam.step`` regathers parameters and state, opens a profiler record and runs hooks each call,
    which for a small model costs more than the update. After the first call has created the state,
    this hands the same tensors to ``torch.optim.adam.adam``, the function ``Adam.step`` calls: the
    arithmetic is unchanged. Other optimizers, and missing gradients, use ``optimizer.step``.
    """
    groups = optimizer.param_groups
    if not (isinstance(optimizer, torch.optim.Adam) and len(groups) == 1 and groups[0]["fused"]
            and not groups[0]["amsgrad"] and not any(p.is_complex() for p in groups[0]["params"])):
        return optimizer.step
    group, params = groups[0], groups[0]["params"]
    state_lists: list[list[Tensor]] = []

    def step() -> None:
        grads = [param.grad for param in params]
        if not state_lists or any(grad is None for grad in grads):
            optimizer.step()  # the first call creates the state
            if not state_lists and all(param in optimizer.state for param in params):
                state_lists.extend([optimizer.state[param][key] for param in params]
                                   for key in ("exp_avg", "exp_avg_sq", "step"))
            return
        exp_avgs, exp_avg_sqs, steps = state_lists
        functional_adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, amsgrad=False,
                        beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
                        weight_decay=group["weight_decay"], eps=group["eps"],
                        maximize=group["maximize"],
                        decoupled_weight_decay=group["decoupled_weight_decay"])

    return step
