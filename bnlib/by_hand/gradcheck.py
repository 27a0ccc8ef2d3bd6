r"""A finite-difference gradient checker for teaching, in the style of CS231n's.

Compare a hand-derived backward pass with :func:`numerical_gradient` through
:func:`relative_error`; values around ``1e-7`` or below (float64) mean the two agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


@torch.no_grad()
def numerical_gradient(
    f: Callable[[Tensor], Tensor], x: Tensor, dy: Tensor, h: float = 1e-5
) -> Tensor:
    r"""Gradient of :math:`\sum f(x) \odot dy` with respect to ``x`` by central differences.

    .. math::
        \frac{\partial}{\partial x_k} \sum_i f(x)_i\, dy_i \approx
        \frac{\sum_i \big(f(x + h e_k)_i - f(x - h e_k)_i\big)\, dy_i}{2h}

    This is the vector-Jacobian product that a backward pass computes for upstream gradient
    ``dy``. ``f`` is evaluated :math:`2 \cdot x.\mathrm{numel}()` times on a private copy of ``x``,
    so the caller's tensor is never modified. ``f`` must be deterministic and free of side effects
    that change its result (a module in training mode updates running statistics, which is
    harmless, but dropout is not). Use float64 for meaningful comparisons.

    Args:
        f (Callable[[Tensor], Tensor]): the function to differentiate.
        x (Tensor): the point at which to take the gradient.
        dy (Tensor): upstream gradient, same shape as ``f(x)``.
        h (float, optional): finite-difference step. Default: ``1e-5``.

    Shape:
        - x: any shape. Output: same shape as ``x``.
    """
    if h <= 0:
        raise ValueError(f"h must be a positive step size, got {h}; try 1e-5 in float64.")
    point = x.detach().clone(memory_format=torch.contiguous_format)
    flat_point = point.view(-1)
    grad = torch.zeros_like(point)
    flat_grad = grad.view(-1)
    for k in range(flat_point.numel()):
        original = flat_point[k].item()
        flat_point[k] = original + h
        plus = (f(point) * dy).sum()
        flat_point[k] = original - h
        minus = (f(point) * dy).sum()
        flat_point[k] = original
        flat_grad[k] = (plus - minus) / (2 * h)
    return grad


def relative_error(a: Tensor, b: Tensor) -> float:
    r"""Largest elementwise relative error between ``a`` and ``b``.

    .. math::
        \max_i \frac{|a_i - b_i|}{\max(10^{-12}, |a_i| + |b_i|)}

    Args:
        a (Tensor): first tensor.
        b (Tensor): second tensor, broadcastable with ``a``.

    Returns:
        float: 0 for identical tensors, at most 1.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    difference = (a - b).abs()
    denominator = (a.abs() + b.abs()).clamp_min(1e-12)
    return float((difference / denominator).max())
