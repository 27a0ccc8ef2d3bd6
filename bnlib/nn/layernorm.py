r"""Layer normalisation from scratch, a drop-in for :class:`torch.nn.LayerNorm`.

Batch normalisation takes its statistics per channel over the batch; layer normalisation takes
them per example over the trailing ``normalized_shape`` dims, so it needs no batch at all and
behaves the same in training and evaluation. The backward pass is left to autograd.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LayerNorm", "layer_norm"]


def check_layer_norm_input(input: Tensor, normalized_shape: tuple[int, ...]) -> None:
    """Raise a RuntimeError, as torch does, unless ``input`` ends with ``normalized_shape``."""
    trailing = tuple(input.shape[input.dim() - len(normalized_shape):])
    if input.dim() < len(normalized_shape) or trailing != normalized_shape:
        raise RuntimeError(
            f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*, {', '.join(map(str, normalized_shape))}], but got input of size"
            f"{list(input.shape)}; make normalized_shape equal the last "
            f"{len(normalized_shape)} dim(s) of the input."
        )


def layer_norm(
    input: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Layer normalisation over the trailing dims, a from-scratch
    :func:`torch.nn.functional.layer_norm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with the mean and the biased variance taken per example over the last
    ``len(normalized_shape)`` dims, and :math:`\gamma`, :math:`\beta` elementwise.

    Args:
        input (Tensor): input of shape :math:`(*, \text{normalized\_shape})`.
        normalized_shape (sequence of int): the trailing shape to normalise over.
        weight (Tensor, optional): :math:`\gamma`, shaped like ``normalized_shape``.
            Default: ``None`` (ones).
        bias (Tensor, optional): :math:`\beta`, shaped like ``normalized_shape``.
            Default: ``None`` (zeros).
        eps (float, optional): added to the variance for stability. Default: ``1e-5``.

    Shape:
        - Input: :math:`(*, \text{normalized\_shape})`.
        - Output: same shape as the input.
    """
    normalized_shape = tuple(normalized_shape)
    check_layer_norm_input(input, normalized_shape)
    dims = tuple(range(-len(normalized_shape), 0))
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    var = centered.square().mean(dims, keepdim=True)
    output = centered * torch.rsqrt(var + eps)
    if weight is not None:
        output = output * weight
    if bias is not None:
        output = output + bias
    return output.to(input.dtype)


class LayerNorm(nn.Module):
    r"""Layer normalisation, a drop-in for :class:`torch.nn.LayerNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Statistics are per example over the last ``len(normalized_shape)`` dims (biased variance),
    in training and evaluation alike; :math:`\gamma` and :math:`\beta` are elementwise, of shape
    ``normalized_shape``. See :func:`layer_norm`; autograd derives the backward.

    Args:
        normalized_shape (int or sequence of int): the trailing shape of the input to normalise
            over; an int means the last dim.
        eps (float, optional): added to the variance for stability. Default: ``1e-5``.
        elementwise_affine (bool, optional): learn :math:`\gamma` (ones) and :math:`\beta`
            (zeros). Default: ``True``.
        bias (bool, optional): with ``elementwise_affine``, also learn :math:`\beta`.
            Default: ``True``.
        device, dtype (optional): where and in which dtype the parameters are created.
            Default: ``None``.

    Shape:
        - Input: :math:`(N, *)`, ending with ``normalized_shape``.
        - Output: same shape as the input.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(size) for size in normalized_shape)
        if not self.normalized_shape or min(self.normalized_shape) < 1:
            raise ValueError(
                f"normalized_shape must hold at least one positive size, got "
                f"{self.normalized_shape}; pass the trailing input shape, such as 64 or (C, H, W)."
            )
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        factory = {"device": device, "dtype": dtype}
        for name, wanted in (("weight", elementwise_affine), ("bias", elementwise_affine and bias)):
            value = nn.Parameter(torch.empty(self.normalized_shape, **factory)) if wanted else None
            self.register_parameter(name, value)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set weight to 1 and bias to 0."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )
