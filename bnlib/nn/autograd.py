r"""Training-mode batch normalisation with a hand-derived backward pass.

:class:`BatchNormFunction` is the optimised form that :func:`bnlib.batch_norm` uses, and
:class:`BatchNormBackward` its backward; with their ``vmap`` rules both work under
:mod:`torch.func` transforms (``vmap``, ``grad``, ``jacrev`` and their compositions) as torch's
own layer does. Forward-mode transforms (``jvp``, ``jacfwd``) and second derivatives need
``batch_norm(..., backward="autograd")``. :func:`batch_norm_backward_reference` is the same
backward written as plainly as the maths, to read and to test the optimised one against.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bnlib.nn._channels import as_channel, reduction_dims, scale_and_shift, values_per_channel

__all__ = ["BatchNormBackward", "BatchNormFunction", "batch_norm_backward_reference",
           "fold_into_channels", "fold_into_vector", "unfold_outputs"]


class BatchNormFunction(torch.autograd.Function):
    r"""Training-mode batch normalisation with a hand-derived backward pass.

    Forward, per channel over the :math:`m` values of the mini-batch (every dim except dim 1):

    .. math::
        \mu = \frac{1}{m}\sum_i x_i, \quad
        \sigma^2 = \frac{1}{m}\sum_i (x_i - \mu)^2, \quad
        \hat{x}_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad
        y_i = \gamma \hat{x}_i + \beta.

    Backward, with :math:`dy_i = \partial L / \partial y_i` and :math:`s = 1/\sqrt{\sigma^2 +
    \epsilon}`, in the compact form derived from the chain of partials of Ioffe and Szegedy
    (2015) (see :func:`batch_norm_backward_reference` for the plain version):

    .. math::
        \frac{\partial L}{\partial x_i} = \frac{\gamma s}{m}
            \Big(m\,dy_i - \sum_j dy_j - \hat{x}_i \sum_j dy_j \hat{x}_j\Big), \qquad
        \frac{\partial L}{\partial \gamma} = \sum_i dy_i \hat{x}_i, \qquad
        \frac{\partial L}{\partial \beta} = \sum_i dy_i.

    Only :math:`\hat{x}`, :math:`s` and :math:`\gamma` are saved for backward, not :math:`x`;
    :class:`BatchNormBackward` computes the gradients. The backward is not itself
    differentiable: double backward raises an error.

    To work under :mod:`torch.func` transforms, ``forward`` takes no ``ctx`` and returns what
    ``setup_context`` saves, and the running statistics are updated by the caller from the
    returned batch statistics, outside the Function (see :func:`bnlib.batch_norm`).

    Args (of ``apply``, positional):
        input (Tensor): input of shape :math:`(N, C, *)`.
        weight (Tensor or None): :math:`\gamma` of shape :math:`(C,)`; ``None`` means 1.
        bias (Tensor or None): :math:`\beta` of shape :math:`(C,)`; ``None`` means 0.
        eps (float): added to the variance for numerical stability.

    Returns (of ``apply``):
        ``(output, x_hat, inv_std, mean, var)``: :math:`y`, :math:`\hat{x}`, :math:`s` and the
        batch mean and biased variance; only ``output`` is differentiable.
    """

    @staticmethod
    def forward(input, weight, bias, eps):
        dims = reduction_dims(input)
        # Two passes (mean, then mean squared deviation) are as stable as torch.var_mean's
        # Welford update and several times faster on CPU.
        mean = input.mean(dims)
        centered = input - as_channel(mean, input)
        squares = centered * centered
        var = squares.mean(dims)
        inv_std = torch.rsqrt(var + eps)
        x_hat = centered.mul_(as_channel(inv_std, input))
        # Reusing the squares' memory for the output saves a large fresh allocation.
        output = scale_and_shift(x_hat, weight, bias, out=squares)
        return output, x_hat, inv_std, mean, var

    @staticmethod
    def setup_context(ctx, inputs, outputs):
        weight = inputs[1]
        output, x_hat, inv_std, mean, var = outputs
        ctx.mark_non_differentiable(x_hat, inv_std, mean, var)
        ctx.set_materialize_grads(False)  # no zero gradients for the four outputs above
        ctx.save_for_backward(x_hat, inv_std, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, *grads_of_saved_outputs):
        if grad_output is None:  # the output took no part in the loss
            return None, None, None, None
        x_hat, inv_std, weight = ctx.saved_tensors
        grad_input, grad_weight, grad_bias = BatchNormBackward.apply(
            grad_output, x_hat, inv_std, weight, ctx.needs_input_grad[0]
        )
        grad_weight = grad_weight if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias if ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None

    @staticmethod
    def vmap(info, in_dims, input, weight, bias, eps):
        """Under ``torch.vmap``, B problems of C channels are one problem of B * C channels."""
        batch = info.batch_size
        outputs = BatchNormFunction.apply(
            fold_into_channels(input, in_dims[0], batch),
            fold_into_vector(weight, in_dims[1], batch),
            fold_into_vector(bias, in_dims[2], batch),
            eps,
        )
        return unfold_outputs(outputs, 2, batch)


class BatchNormBackward(torch.autograd.Function):
    r"""The backward of :class:`BatchNormFunction`, as a Function of its own.

    .. math::
        dx_i = \frac{\gamma s}{m}
            \Big(m\,dy_i - \sum_j dy_j - \hat{x}_i \sum_j dy_j \hat{x}_j\Big)
            = \gamma s\, dy_i + \text{shift} + \text{slope}\cdot\hat{x}_i,

    with the per-channel :math:`\text{shift} = -\frac{\gamma s}{m} \sum_j dy_j` and
    :math:`\text{slope} = -\frac{\gamma s}{m} \sum_j dy_j \hat{x}_j`, and
    :math:`d\gamma = \sum_i dy_i \hat{x}_i`, :math:`d\beta = \sum_i dy_i`. :math:`dx` is written
    over the buffer of the product :math:`dy \cdot \hat{x}`: on CPU a fresh full-size
    allocation can cost more than the arithmetic. Being a Function of its own, with a ``vmap``
    rule, lets it do so under :mod:`torch.func` transforms too, which do not allow ``out=`` on
    the tensors they transform.

    Args (of ``apply``, positional):
        grad_output, x_hat (Tensor): :math:`dy` and :math:`\hat{x}`, shape :math:`(N, C, *)`.
        inv_std (Tensor): :math:`s`, shape :math:`(C,)`.
        weight (Tensor or None): :math:`\gamma`, shape :math:`(C,)`; ``None`` means 1.
        need_input_grad (bool): compute :math:`dx`; when ``False`` it is returned as ``None``.

    Returns (of ``apply``):
        ``(grad_input, grad_weight, grad_bias)``.
    """

    @staticmethod
    def forward(grad_output, x_hat, inv_std, weight, need_input_grad):
        dims, count = reduction_dims(grad_output), values_per_channel(grad_output)
        products = grad_output * x_hat
        sum_dy_xhat = products.sum(dims)
        sum_dy = grad_output.sum(dims)
        if not need_input_grad:
            return None, sum_dy_xhat, sum_dy
        scale = inv_std if weight is None else weight * inv_std
        minus_scale_over_count = scale * (-1.0 / count)
        shift = as_channel(minus_scale_over_count * sum_dy, x_hat)
        slope = as_channel(minus_scale_over_count * sum_dy_xhat, x_hat)
        # dx = scale * dy + shift + slope * x_hat in two fused passes, written over the
        # products buffer instead of a fresh allocation
        grad_input = torch.addcmul(shift, grad_output, as_channel(scale, x_hat), out=products)
        grad_input.addcmul_(x_hat, slope)
        return grad_input, sum_dy_xhat, sum_dy

    @staticmethod
    def setup_context(ctx, inputs, outputs):
        pass  # nothing to save: this backward is not differentiated again

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "BatchNormFunction's backward is not differentiable, so it cannot differentiate "
            "twice; use batch_norm(..., backward=\"autograd\") for second derivatives."
        )

    @staticmethod
    def vmap(info, in_dims, grad_output, x_hat, inv_std, weight, need_input_grad):
        """Under ``torch.vmap``, B problems of C channels are one problem of B * C channels."""
        batch = info.batch_size
        outputs = BatchNormBackward.apply(
            fold_into_channels(grad_output, in_dims[0], batch),
            fold_into_channels(x_hat, in_dims[1], batch),
            fold_into_vector(inv_std, in_dims[2], batch),
            fold_into_vector(weight, in_dims[3], batch),
            need_input_grad,
        )
        return unfold_outputs(outputs, 1, batch)


def fold_into_channels(input: Tensor, dim: int | None, batch: int) -> Tensor:
    """``(N, C, *)`` data of ``batch`` problems, stacked at ``dim`` (``None``: shared), as one
    input of shape ``(N, batch * C, *)``."""
    if dim is None:
        input, dim = input.unsqueeze(0).expand(batch, *input.shape), 0
    return input.movedim(dim, 1).flatten(1, 2)


def fold_into_vector(vector: Tensor | None, dim: int | None, batch: int) -> Tensor | None:
    """Per-channel ``(C,)`` vectors of ``batch`` problems, stacked at ``dim`` (``None``: shared),
    as one vector of shape ``(batch * C,)``."""
    if vector is None:
        return None
    vector = vector.expand(batch, -1) if dim is None else vector.movedim(dim, 0)
    return vector.flatten()


def unfold_outputs(outputs: tuple, full_size: int, batch: int) -> tuple[tuple, tuple]:
    """Split the channel dim of folded outputs back into ``(batch, C)``: the first ``full_size``
    outputs are ``(N, batch * C, *)``, the others ``(batch * C,)``. Returns outputs and out_dims."""
    unfolded, out_dims = [], []
    for index, output in enumerate(outputs):
        dim = 1 if index < full_size else 0
        unfolded.append(None if output is None else output.unflatten(dim, (batch, -1)))
        out_dims.append(None if output is None else dim)
    return tuple(unfolded), tuple(out_dims)


def batch_norm_backward_reference(
    grad_output: Tensor, x_hat: Tensor, inv_std: Tensor, weight: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The backward of :class:`BatchNormFunction`, written term by term as in the maths.

    With :math:`s = 1/\sqrt{\sigma^2 + \epsilon}` and :math:`m` values per channel,

    .. math::
        \frac{\partial L}{\partial x_i} = \frac{\gamma s}{m}
            \Big(m\,dy_i - \sum_j dy_j - \hat{x}_i \sum_j dy_j \hat{x}_j\Big), \qquad
        \frac{\partial L}{\partial \gamma} = \sum_i dy_i \hat{x}_i, \qquad
        \frac{\partial L}{\partial \beta} = \sum_i dy_i.

    :class:`BatchNormFunction` computes the same numbers with fewer passes over memory: it folds
    the bracket into ``scale * dy + shift + slope * x_hat`` with per-channel ``scale``, ``shift``
    and ``slope``, evaluated by two fused multiply-adds (``torch.addcmul``).

    Args:
        grad_output (Tensor): :math:`dy`, shape :math:`(N, C, *)`.
        x_hat (Tensor): the normalised input :math:`\hat{x}`, same shape.
        inv_std (Tensor): :math:`s`, shape :math:`(C,)`.
        weight (Tensor, optional): :math:`\gamma`, shape :math:`(C,)`. Default: ``None`` (ones).

    Returns:
        ``(grad_input, grad_weight, grad_bias)`` of shapes :math:`(N, C, *)`, :math:`(C,)`,
        :math:`(C,)`.
    """
    dims, m = reduction_dims(grad_output), values_per_channel(grad_output)
    gamma = 1.0 if weight is None else as_channel(weight, grad_output)
    s = as_channel(inv_std, grad_output)
    sum_dy = grad_output.sum(dims, keepdim=True)
    sum_dy_xhat = (grad_output * x_hat).sum(dims, keepdim=True)
    grad_input = gamma * s / m * (m * grad_output - sum_dy - x_hat * sum_dy_xhat)
    return grad_input, sum_dy_xhat.flatten(), sum_dy.flatten()
