r"""Batch normalisation from scratch: the functional form, in training and in evaluation.

Statistics are taken per channel (dim 1) over every other dim, exactly as
:func:`torch.nn.functional.batch_norm` does, but only with elementary tensor ops. The training
form with the hand-derived backward, :class:`BatchNormFunction`, lives in
:mod:`bnlib.nn.autograd`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnlib.nn._channels import as_channel, reduction_dims, scale_and_shift, values_per_channel
from bnlib.nn.autograd import BatchNormFunction

__all__ = ["BACKWARD_MODES", "BatchNormFunction", "batch_norm", "batch_norm_autograd",
           "batch_norm_eval", "batch_norm_manual", "bn_eval_scale_shift",
           "check_batch_norm_arguments", "statistics_precision", "update_running_stats"]

BACKWARD_MODES = ("manual", "autograd")
HALF_PRECISION = (torch.float16, torch.bfloat16)


def statistics_precision(input: Tensor) -> Tensor:
    """``input`` in the dtype its batch statistics are computed in: float32 for float16 and
    bfloat16 input, as torch's CPU and CUDA kernels do, else its own dtype (no copy).

    With 8 (bfloat16) or 11 (float16) significant bits, the centred values and their mean square
    lose most of the variance of a channel whose mean is large next to its spread.
    """
    return input.float() if input.dtype in HALF_PRECISION else input


@torch.no_grad()
def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    batch_mean: Tensor,
    batch_var: Tensor,
    momentum: float,
    count: int,
) -> None:
    r"""In place :math:`r \leftarrow (1 - \rho)\, r + \rho\, s`, with :math:`\rho` the momentum.

    ``batch_var`` is the biased variance of the ``count`` values per channel; ``running_var`` gets
    the unbiased one, :math:`\frac{count}{count - 1}` times as large.
    """
    # lerp_(s, rho) computes r + rho (s - r), the same update in one fused op
    if running_mean is not None:
        running_mean.lerp_(batch_mean.to(running_mean.dtype), momentum)
    if running_var is not None:
        unbiased_var = batch_var.to(running_var.dtype) * (count / (count - 1))
        running_var.lerp_(unbiased_var, momentum)


def batch_norm_manual(input, running_mean, running_var, weight, bias, momentum, eps):
    """Training-mode batch norm by :class:`BatchNormFunction`, with its hand-derived backward.

    The Function returns the batch statistics, and the running statistics are updated here,
    outside it, as :mod:`torch.func` transforms require.
    """
    output, _, _, mean, var = BatchNormFunction.apply(input, weight, bias, eps)
    count = values_per_channel(input)
    update_running_stats(running_mean, running_var, mean, var, momentum, count)
    return output


def batch_norm_autograd(input, running_mean, running_var, weight, bias, momentum, eps):
    """Training-mode batch norm built from differentiable ops; autograd derives the backward."""
    dims, count = reduction_dims(input), values_per_channel(input)
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    var = centered.square().mean(dims, keepdim=True)
    x_hat = centered * torch.rsqrt(var + eps)
    batch_mean, batch_var = mean.detach().flatten(), var.detach().flatten()
    update_running_stats(running_mean, running_var, batch_mean, batch_var, momentum, count)
    return scale_and_shift(x_hat, weight, bias)


def bn_eval_scale_shift(
    bn_rm: Tensor, bn_rv: Tensor, bn_eps: float, bn_w: Tensor | None, bn_b: Tensor | None
) -> tuple[Tensor, Tensor]:
    r"""Eval-mode BN as the affine map :math:`y = s z + t`: return :math:`s` and :math:`t`.

    .. math::
        s = \frac{\gamma}{\sqrt{r_{var} + \epsilon}}, \qquad t = \beta - r_{mean}\, s

    Args:
        bn_rm, bn_rv (Tensor): running mean and variance, shape :math:`(C,)`.
        bn_eps (float): :math:`\epsilon`.
        bn_w, bn_b (Tensor or None): :math:`\gamma` and :math:`\beta`; ``None`` means 1 and 0.

    Shape:
        - Output: two tensors of shape :math:`(C,)`.
    """
    scale = torch.rsqrt(bn_rv + bn_eps)
    if bn_w is not None:
        scale = scale * bn_w
    shift = -bn_rm * scale
    if bn_b is not None:
        shift = shift + bn_b
    return scale, shift


def batch_norm_eval(input, running_mean, running_var, weight, bias, eps):
    r"""Normalise with fixed statistics: an affine map per channel that autograd handles directly.

    :math:`y = x \cdot s + t` with :math:`s = \gamma / \sqrt{r_{var} + \epsilon}` and
    :math:`t = \beta - r_{mean} s`, so the full-size tensor is touched in one fused pass. The
    output has the input's dtype, also when float32 statistics meet a bfloat16 input.
    """
    scale, shift = bn_eval_scale_shift(running_mean, running_var, eps, weight, bias)
    output = torch.addcmul(as_channel(shift, input), input, as_channel(scale, input))
    return output.to(input.dtype)


def _check_vector(name: str, vector: Tensor | None, channels: int) -> None:
    if vector is not None and vector.shape != (channels,):
        raise ValueError(
            f"{name} should have shape ({channels},), one value per input channel, "
            f"but got shape {tuple(vector.shape)}; pass a 1-D tensor of length {channels}."
        )


def check_batch_norm_arguments(input, running_mean, running_var, weight, bias, training, eps,
                               backward) -> None:
    """Raise a ValueError that says what to change when :func:`batch_norm` cannot run."""
    if backward not in BACKWARD_MODES:
        raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}.")
    if input.dim() < 2:
        raise ValueError(
            f"batch_norm expects input of shape (N, C, *) with at least 2 dims, "
            f"got {input.dim()}D input of shape {tuple(input.shape)}."
        )
    for name, vector in [("running_mean", running_mean), ("running_var", running_var),
                         ("weight", weight), ("bias", bias)]:
        _check_vector(name, vector, input.shape[1])
    if training and values_per_channel(input) == 1:
        # Without running statistics (track_running_stats=False) eval mode uses batch statistics
        # too, so model.eval() would not help there.
        way_out = ("or call model.eval() to normalise with the running statistics"
                   if running_mean is not None else
                   "since this layer keeps no running statistics (track_running_stats=False), "
                   "eval mode needs one too")
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input size {input.size()}; use a batch with more than one example, {way_out}."
        )
    if eps < 0.0 or (training and eps == 0.0):
        raise ValueError(
            f"batch_norm eps must be positive in training and non-negative in eval, got {eps}; "
            "use a small positive value such as 1e-5."
        )
    if not training and (running_mean is None or running_var is None):
        raise ValueError(
            "batch_norm with training=False normalises with running_mean and running_var, "
            "but at least one is None; pass both, or use training=True for batch statistics."
        )


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    backward: str = "manual",
) -> Tensor:
    r"""Batch normalisation per channel, a from-scratch :func:`torch.nn.functional.batch_norm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    In training the biased batch statistics normalise, and when given, the running statistics are
    updated in place: :math:`r \leftarrow (1 - \text{momentum})\, r + \text{momentum}\, s`, with the
    unbiased batch variance going into ``running_var``. Otherwise the running statistics normalise.
    A float16 or bfloat16 input has its statistics taken in float32
    (:func:`statistics_precision`) and its output in its own dtype, as in torch.

    Args:
        input (Tensor): input of shape :math:`(N, C, *)`.
        running_mean (Tensor or None): running mean of shape :math:`(C,)`.
        running_var (Tensor or None): running variance of shape :math:`(C,)`.
        weight (Tensor, optional): :math:`\gamma`, shape :math:`(C,)`. Default: ``None`` (ones).
        bias (Tensor, optional): :math:`\beta`, shape :math:`(C,)`. Default: ``None`` (zeros).
        training (bool, optional): use batch statistics. Default: ``False``.
        momentum (float, optional): running-statistics update factor. Default: ``0.1``.
        eps (float, optional): added to the variance for stability. Default: ``1e-5``.
        backward (str, optional): ``"manual"`` uses :class:`BatchNormFunction` with the
            hand-derived backward; ``"autograd"`` lets autograd differentiate composed ops.
            Default: ``"manual"``.

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: same shape as the input.
    """
    check_batch_norm_arguments(input, running_mean, running_var, weight, bias, training, eps,
                               backward)
    if input.numel() == 0:
        return input.clone()
    if not training:
        return batch_norm_eval(input, running_mean, running_var, weight, bias, eps)
    train = batch_norm_manual if backward == "manual" else batch_norm_autograd
    # The output, and so the gradient of the input, keep the input's dtype, as in torch.
    output = train(statistics_precision(input), running_mean, running_var, weight, bias,
                   momentum, eps)
    return output.to(input.dtype)
