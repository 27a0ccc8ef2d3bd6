r"""Group normalisation from scratch, a drop-in for :class:`torch.nn.GroupNorm`.

Wu and He (2018) split the channels into groups and take the statistics per example over each
group of channels and all spatial positions. One group is layer normalisation over
:math:`(C, H, W)`; one channel per group is instance normalisation. No statistic involves a
second example, so the layer behaves the same at any batch size, in training and evaluation.
The backward pass is left to autograd.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bnlib.nn._channels import as_channel

__all__ = ["DEFAULT_GROUPS", "GroupNorm", "group_norm", "group_norm_for",
           "layer_norm_over_channels"]


def check_group_norm_input(input: Tensor, num_groups: int, weight: Tensor | None) -> None:
    """Raise a RuntimeError, as torch does, when ``input`` cannot be split into the groups."""
    if input.dim() < 2:
        raise RuntimeError(
            f"Expected at least 2 dimensions for input tensor but received {input.dim()} "
            f"(shape {list(input.shape)}); pass a batch of shape (N, C, *)."
        )
    channels = input.shape[1]
    if channels % num_groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input "
            f"of shape {list(input.shape)} and num_groups={num_groups}; pick a num_groups that "
            f"divides {channels}."
        )
    if weight is not None and weight.shape != (channels,):
        raise RuntimeError(
            f"Expected weight to be a vector of size equal to the number of channels in input, "
            f"but got weight of shape {list(weight.shape)} and input of shape "
            f"{list(input.shape)}; make num_channels equal the input's dim 1."
        )


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Group normalisation, a from-scratch :func:`torch.nn.functional.group_norm`.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} \gamma + \beta

    where the mean and biased variance are taken per example over the :math:`C / G` channels of
    :math:`x`'s group :math:`g` and over every dim after dim 1; :math:`\gamma` and :math:`\beta`
    are per channel.

    Args:
        input (Tensor): input of shape :math:`(N, C, *)`.
        num_groups (int): number of groups :math:`G`; it must divide :math:`C`.
        weight (Tensor, optional): :math:`\gamma`, shape :math:`(C,)`. Default: ``None`` (ones).
        bias (Tensor, optional): :math:`\beta`, shape :math:`(C,)`. Default: ``None`` (zeros).
        eps (float, optional): added to the variance for stability. Default: ``1e-5``.

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: same shape as the input.
    """
    check_group_norm_input(input, num_groups, weight)
    # (N, C, *) -> (N, G, C/G * prod(*)): one row of values per example and group
    grouped = input.reshape(input.shape[0], num_groups, math.prod(input.shape[1:]) // num_groups)
    mean = grouped.mean(-1, keepdim=True)
    centered = grouped - mean
    var = centered.square().mean(-1, keepdim=True)
    output = (centered * torch.rsqrt(var + eps)).reshape(input.shape)
    if weight is not None:
        output = output * as_channel(weight, input)
    if bias is not None:
        output = output + as_channel(bias, input)
    return output.to(input.dtype)


class GroupNorm(nn.Module):
    r"""Group normalisation, a drop-in for :class:`torch.nn.GroupNorm`.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} \gamma + \beta

    The ``num_channels`` channels are split into ``num_groups`` groups of consecutive channels;
    statistics are per example and group (biased variance), in training and evaluation alike;
    :math:`\gamma` and :math:`\beta` are per channel. See :func:`group_norm`; autograd derives
    the backward.

    Args:
        num_groups (int): number of groups :math:`G`; it must divide ``num_channels``.
        num_channels (int): number of channels :math:`C` of the input.
        eps (float, optional): added to the variance for stability. Default: ``1e-5``.
        affine (bool, optional): learn per-channel :math:`\gamma` (ones) and :math:`\beta`
            (zeros). Default: ``True``.
        device, dtype (optional): where and in which dtype the parameters are created.
            Default: ``None``.
        bias (bool, keyword-only, optional): with ``affine``, also learn :math:`\beta`.
            Default: ``True``.

    Shape:
        - Input: :math:`(N, C, *)` with :math:`C` = ``num_channels``.
        - Output: same shape as the input.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_groups < 1 or num_channels % num_groups != 0:
            raise ValueError(
                f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups}); "
                f"use a positive num_groups that divides {num_channels}, such as 1 "
                "(layer norm) or num_channels (instance norm)."
            )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        factory = {"device": device, "dtype": dtype}
        for name, wanted in (("weight", affine), ("bias", affine and bias)):
            value = nn.Parameter(torch.empty(num_channels, **factory)) if wanted else None
            self.register_parameter(name, value)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set weight to 1 and bias to 0."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() >= 2 and input.shape[1] != self.num_channels:
            raise RuntimeError(
                f"GroupNorm({self.num_groups}, {self.num_channels}) expected "
                f"{self.num_channels} channels in dim 1, got input of shape "
                f"{list(input.shape)}; make num_channels equal the input's dim 1."
            )
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


DEFAULT_GROUPS = 4


def group_norm_for(num_channels: int) -> GroupNorm:
    """GroupNorm with ``gcd(DEFAULT_GROUPS, num_channels)`` groups: four for any channel count
    divisible by 4 (Wu and He's default of 32 groups does not fit the book's narrow networks)."""
    return GroupNorm(math.gcd(DEFAULT_GROUPS, num_channels), num_channels)


def layer_norm_over_channels(num_channels: int) -> GroupNorm:
    """Layer normalisation over every dim but the batch dim, with per-channel affine
    parameters: ``GroupNorm(1, num_channels)``, which needs no spatial size."""
    return GroupNorm(1, num_channels)
