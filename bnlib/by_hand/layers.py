r"""The whole network by hand: every layer as a forward that returns what its backward needs.

Each layer has a ``*_forward(...)`` returning ``(output, cache)`` and a ``*_backward(grad_output,
cache)`` beside it that returns the gradients of the loss with respect to the layer's inputs, in
the order of the forward's arguments. Batch normalization reuses the derivation of
:mod:`bnlib.manual_backward`, and :func:`mlp_forward` and :func:`mlp_backward` compose the layers
for a :func:`bnlib.build_mlp` network; :mod:`bnlib.optim_steps` writes out the optimizer's step.
Nothing here records an autograd graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bnlib.nn._channels import values_per_channel
from bnlib.nn.autograd import BatchNormBackward, BatchNormFunction
from bnlib.nn.functional import check_batch_norm_arguments, update_running_stats
from bnlib.nn.registry import BATCH_NORM_1D_TYPES

__all__ = ["batch_norm_backward", "batch_norm_forward",
           "flatten_backward", "flatten_forward", "linear_backward", "linear_forward",
           "mlp_backward", "mlp_forward", "relu_backward", "relu_forward",
           "sigmoid_backward", "sigmoid_forward", "softmax_cross_entropy_backward",
           "softmax_cross_entropy_forward", "tanh_backward", "tanh_forward"]


def linear_forward(input: Tensor, weight: Tensor, bias: Tensor | None = None):
    r"""Affine map :math:`y = x W^\top + b`, as :func:`torch.nn.functional.linear`.

    Args:
        input (Tensor): :math:`x`, shape :math:`(*, H_{in})`.
        weight (Tensor): :math:`W`, shape :math:`(H_{out}, H_{in})` (torch's layout).
        bias (Tensor, optional): :math:`b`, shape :math:`(H_{out},)`. Default: ``None``.

    Returns:
        ``(output, cache)``: :math:`y` of shape :math:`(*, H_{out})`, and ``(input, weight,
        has_bias)`` for :func:`linear_backward`.
    """
    if weight.dim() != 2 or input.dim() < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear_forward: weight of shape {tuple(weight.shape)} (out_features, in_features) "
            f"cannot take input of shape {tuple(input.shape)}; the input's last dim must equal "
            "in_features, weight.shape[1].")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear_forward: bias should have shape ({weight.shape[0]},), one value "
                         f"per output feature, but has shape {tuple(bias.shape)}.")
    if bias is None:
        output = input @ weight.T
    elif input.dim() == 2:
        output = torch.addmm(bias, input, weight.T)  # b + x W^T in one call, as torch's linear
    else:
        output = input @ weight.T + bias
    return output, (input, weight, bias is not None)


def linear_backward(grad_output: Tensor, cache, need_input_grad: bool = True):
    r"""Backward of :func:`linear_forward`, summing over the :math:`M` rows of all leading dims.

    .. math::
        dx = dy\, W, \qquad dW = dy^\top x = \sum_{n=1}^{M} dy_n\, x_n^\top, \qquad
        db = \sum_{n=1}^{M} dy_n .

    Returns:
        ``(grad_input, grad_weight, grad_bias)``; ``grad_bias`` is ``None`` without a bias and
        ``grad_input`` is ``None`` when ``need_input_grad`` is ``False``.
    """
    input, weight, has_bias = cache
    rows_out = grad_output.reshape(-1, weight.shape[0])
    grad_weight = rows_out.T @ input.reshape(-1, weight.shape[1])
    grad_bias = rows_out.sum(0) if has_bias else None
    grad_input = grad_output @ weight if need_input_grad else None
    return grad_input, grad_weight, grad_bias


def batch_norm_forward(input: Tensor, running_mean: Tensor | None = None,
                       running_var: Tensor | None = None, weight: Tensor | None = None,
                       bias: Tensor | None = None, momentum: float = 0.1, eps: float = 1e-5):
    r"""Training-mode batch normalization, :class:`~bnlib.manual_backward.BatchNormFunction`'s
    forward; given running statistics are updated in place as
    :func:`torch.nn.functional.batch_norm` does with ``training=True``.

    Args: as :func:`torch.nn.functional.batch_norm`, without ``training`` (always ``True``).

    Returns:
        ``(output, cache)``: :math:`y`, shaped like the input :math:`(N, C, *)`, and
        ``(x_hat, inv_std, weight, bias is not None)`` for :func:`batch_norm_backward`.
    """
    check_batch_norm_arguments(input, running_mean, running_var, weight, bias, True, eps, "manual")
    output, x_hat, inv_std, mean, var = BatchNormFunction.forward(input, weight, bias, eps)
    count = values_per_channel(input)
    update_running_stats(running_mean, running_var, mean, var, momentum, count)
    return output, (x_hat, inv_std, weight, bias is not None)


def batch_norm_backward(grad_output: Tensor, cache, need_input_grad: bool = True):
    r"""Backward of :func:`batch_norm_forward`: the compact form derived in the backprop chapter,
    computed by :class:`~bnlib.manual_backward.BatchNormBackward`,

    .. math::
        dx_i = \frac{\gamma s}{m} \Big(m\, dy_i - \sum_j dy_j - \hat{x}_i \sum_j dy_j \hat{x}_j
        \Big), \qquad d\gamma = \sum_i dy_i \hat{x}_i, \qquad d\beta = \sum_i dy_i .

    Returns:
        ``(grad_input, grad_weight, grad_bias)``, ``None`` for what was ``None`` in the forward
        and for ``grad_input`` when ``need_input_grad`` is ``False``.
    """
    x_hat, inv_std, weight, has_bias = cache
    grad_input, grad_weight, grad_bias = BatchNormBackward.forward(
        grad_output, x_hat, inv_std, weight, need_input_grad)
    return grad_input, grad_weight if weight is not None else None, grad_bias if has_bias else None


def relu_forward(input: Tensor):
    r""":math:`y = \max(x, 0)`; the output is the cache."""
    output = input.clamp_min(0)
    return output, output


def relu_backward(grad_output: Tensor, cache) -> Tensor:
    r""":math:`dx = dy \cdot [y > 0]`: the gradient passes where the unit was active.

    For :math:`y \ge 0` the indicator :math:`[y > 0]` is :math:`\operatorname{sign}(y)`, a float
    multiply that is cheaper than a comparison and a bool-to-float cast.
    """
    return grad_output * cache.sign()


def sigmoid_forward(input: Tensor):
    r""":math:`y = \sigma(x) = 1 / (1 + e^{-x})`; the output is the cache."""
    output = torch.sigmoid(input)
    return output, output


def sigmoid_backward(grad_output: Tensor, cache) -> Tensor:
    r""":math:`dx = dy \cdot y (1 - y)`, since :math:`\sigma' = \sigma (1 - \sigma)`."""
    return grad_output * cache * (1 - cache)


def tanh_forward(input: Tensor):
    r""":math:`y = \tanh x`; the output is the cache."""
    output = torch.tanh(input)
    return output, output


def tanh_backward(grad_output: Tensor, cache) -> Tensor:
    r""":math:`dx = dy \cdot (1 - y^2)`, since :math:`\tanh' = 1 - \tanh^2`."""
    return grad_output * (1 - cache * cache)


def flatten_forward(input: Tensor):
    """``input.flatten(1)``, as :class:`torch.nn.Flatten`; the cache is the input's shape."""
    return input.flatten(1), input.shape


def flatten_backward(grad_output: Tensor, cache) -> Tensor:
    """The gradient reshaped back to the input's shape."""
    return grad_output.reshape(cache)


def softmax_cross_entropy_forward(logits: Tensor, target: Tensor):
    r"""Mean cross-entropy of ``softmax(logits)``, as :func:`torch.nn.functional.cross_entropy`.

    .. math::
        \mathcal{L} = -\frac{1}{N} \sum_{n=1}^{N} \log p_{n, t_n}, \qquad
        \log p_{nk} = z_{nk} - \log \sum_j e^{z_{nj}},

    with the log-sum-exp taken stably (the largest logit subtracted first).

    Args:
        logits (Tensor): :math:`z`, shape :math:`(N, C)`.
        target (Tensor): class indices :math:`t_n \in \{0, \dots, C - 1\}`, int64 of shape
            :math:`(N,)`.

    Returns:
        ``(loss, cache)``: the scalar loss and ``(log_probs, target)``.
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1] or target.dtype != torch.int64:
        raise ValueError(
            f"softmax_cross_entropy_forward expects logits (N, C) and int64 class indices (N,), "
            f"got logits {tuple(logits.shape)} and target {tuple(target.shape)} of {target.dtype}.")
    shifted = logits - logits.amax(dim=1, keepdim=True)  # largest logit 0: exp cannot overflow
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    try:
        picked = log_probs.gather(1, target.unsqueeze(1))
    except RuntimeError as error:
        raise ValueError(f"every target must be a class index in [0, {logits.shape[1] - 1}]: "
                         f"{error}") from None
    return -picked.mean(), (log_probs, target)


def softmax_cross_entropy_backward(grad_output: Tensor | float, cache) -> Tensor:
    r"""Backward of :func:`softmax_cross_entropy_forward`:
    :math:`dz = d\mathcal{L} \cdot (p - \mathrm{onehot}(t)) / N`."""
    log_probs, target = cache
    grad = log_probs.exp()
    grad[torch.arange(len(target), device=target.device), target] -= 1
    return grad.mul_(grad_output / len(target))


ACTIVATION_LAYERS = {nn.ReLU: (relu_forward, relu_backward),
                     nn.Sigmoid: (sigmoid_forward, sigmoid_backward),
                     nn.Tanh: (tanh_forward, tanh_backward)}


def layer_by_hand(layer: nn.Module, input: Tensor):
    """``(output, cache, backward, parameter names)`` of one layer of a ``build_mlp`` network."""
    if isinstance(layer, nn.Linear):
        return *linear_forward(input, layer.weight, layer.bias), linear_backward, ("weight", "bias")
    if isinstance(layer, BATCH_NORM_1D_TYPES):
        if not layer.training or not layer.track_running_stats:
            raise ValueError("mlp_forward runs batch norm in training mode with running statistics;"
                             " call model.train() (evaluate the model itself in eval mode)")
        layer.num_batches_tracked.add_(1)
        momentum = layer.momentum
        if momentum is None:  # a cumulative average, as torch's layer computes it
            momentum = 1.0 / float(layer.num_batches_tracked)
        output, cache = batch_norm_forward(input, layer.running_mean, layer.running_var,
                                           layer.weight, layer.bias, momentum, layer.eps)
        return output, cache, batch_norm_backward, ("weight", "bias")
    if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) == (1, -1):
        return *flatten_forward(input), flatten_backward, ()
    if type(layer) in ACTIVATION_LAYERS:
        forward, backward = ACTIVATION_LAYERS[type(layer)]
        return *forward(input), backward, ()
    raise TypeError(f"mlp_forward handles the layers of build_mlp (Flatten, Linear, BatchNorm1d, "
                    f"ReLU, Sigmoid, Tanh), not {type(layer).__name__}")


@torch.no_grad()
def mlp_forward(model: nn.Sequential, input: Tensor):
    """Forward pass of a :func:`bnlib.build_mlp` network by the hand-written layers.

    Batch-norm layers run in training mode and update their running statistics and
    ``num_batches_tracked`` as the modules do. Returns ``(logits, caches)``, one cache per layer.
    """
    caches = []
    for name, layer in model.named_children():
        input, cache, backward, param_names = layer_by_hand(layer, input)
        caches.append((name, backward, cache, param_names))
    return input, caches


@torch.no_grad()
def mlp_backward(grad_logits: Tensor, caches) -> dict[str, Tensor]:
    """Backward pass of :func:`mlp_forward`: the gradient of every parameter, by name.

    The names and their order are those of ``model.named_parameters()``. The layers below the
    first one with parameters are not visited: nothing there needs a gradient.
    """
    first = min(index for index, (_, _, _, names) in enumerate(caches) if names)
    layer_grads = []
    grad = grad_logits
    for index in range(len(caches) - 1, first - 1, -1):
        name, backward, cache, param_names = caches[index]
        if not param_names:
            grad = backward(grad, cache)
            continue
        grad, *param_grads = backward(grad, cache, index > first)
        layer_grads.append({f"{name}.{param}": value
                            for param, value in zip(param_names, param_grads) if value is not None})
    return {name: value for grads in reversed(layer_grads) for name, value in grads.items()}
