r"""The layers of :mod:`bnlib.engine`: forward and backward passes written out, on fixed buffers.

Each layer object wraps one module of an MLP and owns the buffers of its output and of the
gradient it passes down, allocated once per batch size (:meth:`resize`) and reused at every step:
every operation writes into a buffer (``out=`` or in place), so a step allocates almost nothing
and calls as few operations as the maths needs. The tensors read are ``detach()`` aliases of the
module's parameters and buffers, so the optimizer's in-place updates are seen without autograd
recording anything. :meth:`backward` writes the parameters' gradients into their ``.grad``.
:func:`bnlib.engine_support.unsupported_reason` recognises the models made of these layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ActivationStep", "BatchNormStep", "LinearStep", "SoftmaxCrossEntropyStep"]


class LinearStep:
    r""":math:`z = x W^\top + b`; backward :math:`\partial W = \delta^\top x`,
    :math:`\partial b = \sum_n \delta_n`, :math:`\partial x = \delta W`.

    Args:
        linear: the module; its parameters must already have their ``.grad`` tensors.
        needs_input_grad: compute :math:`\partial x` (not for the first layer).
    """

    def __init__(self, linear: nn.Linear, needs_input_grad: bool) -> None:
        self.weight = linear.weight.detach()
        self.weight_t = self.weight.t()
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.params = [p for p in (linear.weight, linear.bias) if p is not None]
        self.needs_input_grad = needs_input_grad
        self.buffers: dict[int, tuple[Tensor, Tensor | None]] = {}
        self.input = self.output = self.input_grad = None

    def resize(self, batch_size: int) -> None:
        if batch_size not in self.buffers:
            out_features, in_features = self.weight.shape
            new = self.weight.new_empty
            self.buffers[batch_size] = (new(batch_size, out_features),
                                        new(batch_size, in_features) if self.needs_input_grad
                                        else None)
        self.output, self.input_grad = self.buffers[batch_size]

    def forward(self, x: Tensor) -> Tensor:
        self.input = x
        if self.bias is None:
            return torch.mm(x, self.weight_t, out=self.output)
        return torch.addmm(self.bias, x, self.weight_t, out=self.output)

    def backward(self, grad: Tensor) -> Tensor | None:
        torch.mm(grad.t(), self.input, out=self.params[0].grad)
        if self.bias is not None:
            torch.sum(grad, 0, out=self.params[1].grad)
        if self.input_grad is None:
            return None
        return torch.mm(grad, self.weight, out=self.input_grad)


class BatchNormStep:
    r"""Training-mode batch norm of an :math:`(N, C)` input with the batch statistics.

    .. math::
        \hat x = (z - \mu) / \sqrt{\sigma^2 + \epsilon}, \qquad y = \gamma \hat x + \beta,
        \qquad \partial z = \frac{\gamma}{N \sqrt{\sigma^2 + \epsilon}}
        \Big(N \delta - \sum_n \delta_n - \hat x \sum_n \delta_n \hat x_n\Big)

    with :math:`\sigma^2` the biased batch variance. The module's running statistics are updated
    as its own forward does: ``num_batches_tracked += 1``, then
    :math:`r \leftarrow r + \rho (s - r)` with :math:`\rho` the momentum, or
    ``1 / num_batches_tracked`` (a cumulative average) when the momentum is ``None``, and the
    unbiased variance :math:`\frac{N}{N - 1} \sigma^2` going into ``running_var``.

    Args:
        norm: a ``torch.nn.BatchNorm1d`` or ``bnlib.BatchNorm1d`` module.
        like: a parameter of the model, for the buffers' dtype and device.
    """

    def __init__(self, norm: nn.Module, like: Tensor) -> None:
        self.module = norm
        self.like = like
        self.weight = None if norm.weight is None else norm.weight.detach()
        self.bias = None if norm.bias is None else norm.bias.detach()
        self.weight_grad = None if norm.weight is None else norm.weight.grad
        self.bias_grad = None if norm.bias is None else norm.bias.grad
        self.tracks = norm.track_running_stats and norm.running_mean is not None
        # The buffers themselves, updated in place (module attribute lookups cost more per step).
        self.running_mean, self.running_var = norm.running_mean, norm.running_var
        self.num_batches_tracked = norm.num_batches_tracked
        self.buffers: dict[int, tuple[Tensor, ...]] = {}
        self.count = 0
        self.rstd = None

    def resize(self, batch_size: int) -> None:
        if batch_size < 2:
            raise ValueError(f"batch norm needs more than 1 value per channel when training, got "
                             f"a batch of {batch_size}; use batches of at least 2 examples")
        if batch_size not in self.buffers:
            channels, new = self.module.num_features, self.like.new_empty
            self.buffers[batch_size] = (
                *(new(batch_size, channels) for _ in range(3)), *(new(channels) for _ in range(4)))
        (self.x_hat, self.scaled, self.input_grad, self.unbiased_var, self.sum_grad,
         self.sum_grad_x_hat, self.grad_scale) = self.buffers[batch_size]
        self.count = batch_size

    def forward(self, z: Tensor) -> Tensor:
        var, mean = torch.var_mean(z, 0, correction=0)
        if self.tracks:
            self.update_running_stats(mean, var)
        self.rstd = var.add_(self.module.eps).rsqrt_()
        x_hat = torch.sub(z, mean, out=self.x_hat).mul_(self.rstd)
        if self.weight is None:
            return x_hat
        if self.bias is None:
            return torch.mul(x_hat, self.weight, out=self.scaled)
        return torch.addcmul(self.bias, x_hat, self.weight, out=self.scaled)

    def update_running_stats(self, mean: Tensor, var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = self.module.momentum
        if factor is None:  # a cumulative average
            factor = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, factor)
        unbiased = torch.mul(var, self.count / (self.count - 1), out=self.unbiased_var)
        self.running_var.lerp_(unbiased, factor)

    def backward(self, grad: Tensor) -> Tensor:
        x_hat = self.x_hat
        sum_grad = torch.sum(grad, 0, out=self.bias_grad if self.bias_grad is not None
                             else self.sum_grad)
        sum_grad_x_hat = torch.linalg.vecdot(
            grad, x_hat, dim=0,
            out=self.weight_grad if self.weight_grad is not None else self.sum_grad_x_hat)
        input_grad = torch.addcmul(sum_grad, x_hat, sum_grad_x_hat, out=self.input_grad)
        torch.sub(grad, input_grad, alpha=1 / self.count, out=input_grad)
        scale = self.rstd if self.weight is None else torch.mul(self.rstd, self.weight,
                                                                out=self.grad_scale)
        return input_grad.mul_(scale)


class ActivationStep:
    r"""ReLU, sigmoid or tanh; backward multiplies the incoming gradient in place by
    :math:`\phi'`, written with the output :math:`a`: :math:`[a > 0]`, :math:`a (1 - a)` and
    :math:`1 - a^2`.

    Args:
        kind: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
        like: a parameter of the model, for the buffers' dtype and device.
    """

    forwards = {"relu": torch.clamp_min, "sigmoid": torch.sigmoid, "tanh": torch.tanh}

    def __init__(self, kind: str, like: Tensor) -> None:
        self.kind = kind
        self.like = like
        self.buffers: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        self.output = self.work = None

    def resize(self, batch_size: int, features: int) -> None:
        key = (batch_size, features)
        if key not in self.buffers:
            work_dtype = torch.bool if self.kind == "relu" else self.like.dtype
            self.buffers[key] = (self.like.new_empty(key),
                                 torch.empty(key, dtype=work_dtype, device=self.like.device))
        self.output, self.work = self.buffers[key]

    def forward(self, z: Tensor) -> Tensor:
        if self.kind == "relu":
            return torch.clamp_min(z, 0, out=self.output)
        return self.forwards[self.kind](z, out=self.output)

    def backward(self, grad: Tensor) -> Tensor:
        a = self.output
        if self.kind == "relu":
            return grad.mul_(torch.gt(a, 0, out=self.work))
        if self.kind == "sigmoid":
            grad.mul_(a)
            return grad.addcmul_(grad, a, value=-1)
        return grad.addcmul_(grad, torch.mul(a, a, out=self.work), value=-1)


class SoftmaxCrossEntropyStep:
    r"""Mean cross-entropy of the logits; backward :math:`(\mathrm{softmax}(z) - y) / N` with
    :math:`y` the one-hot labels.

    Args:
        like: a parameter of the model, for the buffers' dtype and device.
    """

    def __init__(self, like: Tensor) -> None:
        self.like = like
        self.buffers: dict[tuple[int, int], tuple[Tensor, Tensor, Tensor]] = {}
        self.labels = None

    def resize(self, batch_size: int, classes: int) -> None:
        key = (batch_size, classes)
        if key not in self.buffers:
            minus_one = self.like.new_full((batch_size, 1), -1.0)
            self.buffers[key] = (self.like.new_empty(key), self.like.new_empty(key), minus_one)
        self.log_probs, self.grad, self.minus_one = self.buffers[key]

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        self.labels = labels
        return F.nll_loss(torch.log_softmax(logits, 1, out=self.log_probs), labels)

    def backward(self) -> Tensor:
        grad = torch.exp(self.log_probs, out=self.grad)
        grad.scatter_add_(1, self.labels.view(-1, 1), self.minus_one)
        return grad.mul_(1 / len(grad))
