r"""The layers of K same-shaped networks stacked along a leading dim, with a hand-written backward.

Network :math:`k` of a stack keeps its tensors at index :math:`k` of dim 0, and a batch of
activations has shape :math:`(K, B, F)`: one matrix product (``torch.baddbmm``) runs a Linear
layer of all K networks. Every parameter is a view into one :math:`(K, P)` tensor, and every
gradient a view into another, so an optimizer updates all K networks in a few elementwise calls.
No operation mixes two networks: a network whose values become NaN leaves the others untouched.
:func:`bnlib.sweep.stack_networks` checks modules made by :func:`bnlib.models.build_mlp` and
stacks them; :func:`cross_entropy_with_grad` starts the backward pass of all K networks.

Every stacked layer has the same small interface: ``initial`` (its stacked tensors, which
:class:`NetworkStack` moves into the flat tensor), ``params`` and ``grads`` (the views it then
gets), ``forward(input, training)``, ``backward(grad, need_input_grad)`` (fills ``grads``, returns
the gradient of the input) and ``write_back(modules)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bnlib.nn.registry import ACTIVATION_NAMES, BATCH_NORM_1D_TYPES

__all__ = ["NetworkStack", "StackedActivation", "StackedBatchNorm", "StackedLinear",
           "cross_entropy_with_grad"]



class StackedLinear:
    r"""K ``nn.Linear`` layers: :math:`y_k = x_k W_k^T + b_k` for every k in one ``baddbmm``.

    The backward computes :math:`\partial W_k = g_k^T x_k`, :math:`\partial b_k = \sum_i g_{k,i}`
    and :math:`\partial x_k = g_k W_k`, each a batched product or a sum for all K.

    Args:
        linears: the K layers, of equal shapes, all with or all without a bias.

    Shape:
        - Input: :math:`(K, B, \text{in\_features})`; output :math:`(K, B, \text{out\_features})`.
    """

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        self.initial = [torch.stack([m.weight.detach() for m in linears])]
        if linears[0].bias is not None:
            self.initial.append(torch.stack([m.bias.detach() for m in linears]).unsqueeze(1))
        self.params: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.input: Tensor | None = None

    def forward(self, input: Tensor, training: bool) -> Tensor:
        self.input = input if training else None
        weight_t = self.params[0].mT
        if len(self.params) == 1:
            return torch.bmm(input, weight_t)
        return torch.baddbmm(self.params[1], input, weight_t)

    def backward(self, grad: Tensor, need_input_grad: bool) -> Tensor | None:
        # bmm into a strided view of flat_grads would loop over the K matrices: copy instead
        self.grads[0].copy_(torch.bmm(grad.mT, self.input))
        if len(self.grads) == 2:
            torch.sum(grad, dim=1, keepdim=True, out=self.grads[1])
        return torch.bmm(grad, self.params[0]) if need_input_grad else None

    def write_back(self, modules: Sequence[nn.Module]) -> None:
        for k, module in enumerate(modules):
            module.weight.copy_(self.params[0][k])
            if module.bias is not None:
                module.bias.copy_(self.params[1][k, 0])


class StackedActivation:
    r"""K copies of ReLU, sigmoid or tanh; the backward reads the saved output, as torch's does.

    With :math:`y` the output, the derivative is :math:`[y > 0]`, :math:`(1 - y)\, y` or
    :math:`1 - y^2`.

    Args:
        name: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.

    Shape:
        - Input: :math:`(K, B, F)`; output the same.
    """

    functions = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}

    def __init__(self, name: str) -> None:
        self.name = name
        self.function = self.functions[name]
        self.initial: list[Tensor] = []
        self.params: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.output: Tensor | None = None

    def forward(self, input: Tensor, training: bool) -> Tensor:
        output = self.function(input)
        self.output = output if training else None
        return output

    def backward(self, grad: Tensor, need_input_grad: bool) -> Tensor:
        output = self.output
        if self.name == "relu":
            return grad.masked_fill(output <= 0, 0.0)
        if self.name == "sigmoid":
            return grad * (1 - output) * output
        return grad * (1 - output * output)

    def write_back(self, modules: Sequence[nn.Module]) -> None:
        pass


class StackedBatchNorm:
    r"""K ``BatchNorm1d`` layers over :math:`(K, B, C)`: statistics per network and channel over B.

    Training normalises with the biased batch variance and updates the running statistics as
    ``nn.BatchNorm1d`` does: :math:`r \leftarrow (1 - \rho) r + \rho s`, with the unbiased variance
    (times :math:`B / (B - 1)`) and :math:`\rho` the momentum, or :math:`1 / n` after :math:`n`
    batches when the momentum is ``None``. Evaluation normalises with the running statistics.

    Args:
        norms: the K layers (torch's or bnlib's ``BatchNorm1d``), with equal settings.

    Shape:
        - Input: :math:`(K, B, C)`; output the same.
    """

    def __init__(self, norms: Sequence[nn.Module]) -> None:
        first = norms[0]
        self.eps, self.momentum = first.eps, first.momentum
        self.names = [name for name in ("weight", "bias") if getattr(first, name) is not None]
        self.initial = [torch.stack([getattr(m, name).detach() for m in norms]).unsqueeze(1)
                        for name in self.names]
        self.running_mean = torch.stack([m.running_mean for m in norms]).unsqueeze(1)
        self.running_var = torch.stack([m.running_var for m in norms]).unsqueeze(1)
        self.batches_before = torch.stack([m.num_batches_tracked for m in norms]).view(-1, 1, 1)
        self.batches = 0
        self.params: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.saved: tuple[Tensor, Tensor] | None = None

    def bound(self, tensors: list[Tensor], name: str) -> Tensor | None:
        """The stacked ``weight`` or ``bias`` (or its gradient) from ``tensors``, else None."""
        return tensors[self.names.index(name)] if name in self.names else None

    def affine(self, normalized: Tensor) -> Tensor:
        weight, bias = self.bound(self.params, "weight"), self.bound(self.params, "bias")
        if weight is not None and bias is not None:
            return torch.addcmul(bias, normalized, weight)
        if weight is not None:
            return normalized * weight
        return normalized if bias is None else normalized + bias

    def forward(self, input: Tensor, training: bool) -> Tensor:
        if not training:
            scale = torch.rsqrt(self.running_var + self.eps)
            return self.affine((input - self.running_mean) * scale)
        # two passes: torch.var_mean's one-pass (Welford) reduction over dim 1 is far slower here
        mean = input.mean(dim=1, keepdim=True)
        centered = input - mean
        var = centered.square().mean(dim=1, keepdim=True)
        inv_std = torch.rsqrt(var + self.eps)
        normalized = centered * inv_std
        self.saved = (normalized, inv_std)
        self.update_running_stats(mean, var, input.shape[1])
        return self.affine(normalized)

    @torch.no_grad()
    def update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        self.batches += 1
        factor: float | Tensor = self.momentum
        if factor is None:  # cumulative average, over each network's own count of batches
            factor = (1.0 / (self.batches_before + self.batches).double()).to(mean.dtype)
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(var * (count / (count - 1)), factor)

    def backward(self, grad: Tensor, need_input_grad: bool) -> Tensor:
        r"""With :math:`g` the gradient of the output and :math:`\hat{x}` the normalised input:
        :math:`\partial\gamma = \sum g \hat{x}`, :math:`\partial\beta = \sum g` and
        :math:`\partial x = \frac{\gamma}{\sigma}(g - \frac{1}{B}(\partial\beta
        + \hat{x}\, \partial\gamma))`, with sums over the batch of :math:`B` examples."""
        normalized, inv_std = self.saved
        grad_weight = torch.sum(grad * normalized, dim=1, keepdim=True,
                                out=self.bound(self.grads, "weight"))
        grad_bias = torch.sum(grad, dim=1, keepdim=True, out=self.bound(self.grads, "bias"))
        weight = self.bound(self.params, "weight")
        scale = inv_std if weight is None else inv_std * weight
        correction = torch.addcmul(grad_bias, normalized, grad_weight)
        return torch.add(grad, correction, alpha=-1 / grad.shape[1]).mul_(scale)

    def write_back(self, modules: Sequence[nn.Module]) -> None:
        for k, module in enumerate(modules):
            for name in self.names:
                getattr(module, name).copy_(self.bound(self.params, name)[k, 0])
            module.running_mean.copy_(self.running_mean[k, 0])
            module.running_var.copy_(self.running_var[k, 0])
            module.num_batches_tracked.add_(self.batches)
        self.batches_before += self.batches
        self.batches = 0


StackedLayer = StackedLinear | StackedActivation | StackedBatchNorm


class NetworkStack:
    """K networks as a list of stacked layers, with parameters and gradients in two flat tensors.

    Args:
        models: K ``nn.Sequential`` networks of identical structure, as
            :func:`bnlib.sweep.stack_networks` checks.

    Attributes:
        flat_params, flat_grads: shape :math:`(K, P)`, with :math:`P` parameters per network.
    """

    def __init__(self, models: Sequence[nn.Sequential]) -> None:
        self.models = list(models)
        columns = list(zip(*(list(model.children())[1:] for model in self.models)))
        self.layers: list[StackedLayer] = [self._stack(column) for column in columns]
        count = len(self.models)
        initial = [tensor for layer in self.layers for tensor in layer.initial]
        self.flat_params = torch.cat([tensor.reshape(count, -1) for tensor in initial], dim=1)
        self.flat_grads = torch.zeros_like(self.flat_params)
        start = 0
        for layer in self.layers:
            for tensor in layer.initial:
                end = start + tensor[0].numel()
                layer.params.append(self.flat_params[:, start:end].view(tensor.shape))
                layer.grads.append(self.flat_grads[:, start:end].view(tensor.shape))
                start = end
            layer.initial = []

    @staticmethod
    def _stack(column: Sequence[nn.Module]) -> StackedLayer:
        if isinstance(column[0], nn.Linear):
            return StackedLinear(column)
        if isinstance(column[0], BATCH_NORM_1D_TYPES):
            return StackedBatchNorm(column)
        return StackedActivation(ACTIVATION_NAMES[type(column[0])])

    def forward(self, images: Tensor, training: bool) -> Tensor:
        """Logits of every network, shape :math:`(K, B, C)`, for images shared by all K."""
        output = images.flatten(1)
        if output.dtype != self.flat_params.dtype:
            output = output.to(self.flat_params.dtype)
        output = output.expand(len(self.models), *output.shape)
        for layer in self.layers:
            output = layer.forward(output, training)
        return output

    def backward(self, grad_logits: Tensor) -> None:
        """Fill ``flat_grads`` from the gradient of the summed losses w.r.t. the logits."""
        grad = grad_logits
        for index in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[index].backward(grad, need_input_grad=index > 0)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy parameters and running statistics into the K modules."""
        columns = list(zip(*(list(model.children())[1:] for model in self.models)))
        for layer, column in zip(self.layers, columns):
            layer.write_back(column)


def cross_entropy_with_grad(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean cross-entropy of each network, and its gradient with respect to the logits.

    :math:`\ell_k = -\frac{1}{B}\sum_i \log \mathrm{softmax}(z_{k,i})_{y_i}` and
    :math:`\partial \ell_k / \partial z_{k,i} = (\mathrm{softmax}(z_{k,i}) - e_{y_i}) / B`.

    Shape:
        - logits: :math:`(K, B, C)`; labels: :math:`(B,)`.
        - Output: losses :math:`(K,)` and the gradient :math:`(K, B, C)`.
    """
    count, batch = logits.shape[:2]
    log_probs = torch.log_softmax(logits, dim=2)
    index = labels.view(1, batch, 1).expand(count, batch, 1)
    losses = log_probs.gather(2, index).mean(dim=1).view(count).neg()
    grad = log_probs.exp_()
    grad.scatter_add_(2, index, torch.full((), -1.0, dtype=grad.dtype,
                                           device=grad.device).expand(count, batch, 1))
    return losses, grad.div_(batch)
