"""Many parameters in one flat storage, so that an optimizer updates them all in one call, and
back again."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["flatten_parameters", "separate_parameters"]


def flatten_parameters(params: list[nn.Parameter]) -> nn.Parameter:
    """Move ``params`` into one flat parameter, and their gradients into its ``.grad``.

    Each parameter keeps its identity, shape and values; its ``.data`` becomes a view of the flat
    parameter and its ``.grad`` a view of the flat gradient, so that an optimizer over the flat
    parameter alone updates all of them in one call (a call's overhead grows with the number of
    tensors, and for a small network it exceeds the update itself). ``torch.save`` writes a view
    with the whole storage it belongs to, so once training is over, :func:`separate_parameters`
    gives each parameter its own storage again (:func:`bnlib.compare` does).

    Returns:
        The flat ``nn.Parameter``, with ``.grad`` set (zeros).
    """
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for param in params:
        size = param.numel()
        param.data = flat.detach()[offset:offset + size].view_as(param)
        param.grad = flat.grad[offset:offset + size].view_as(param)
        offset += size
    return flat


def separate_parameters(models: Iterable[nn.Module]) -> None:
    """Give every parameter of ``models``, and its ``.grad``, storage of its own again.

    Undoes the sharing of :func:`flatten_parameters` (values unchanged), so that a state dict
    saved afterwards holds one model's values only, and the models no longer alias each other.
    """
    for model in models:
        for param in model.parameters():
            param.data = param.data.clone()
            if param.grad is not None:
                param.grad = param.grad.clone()
