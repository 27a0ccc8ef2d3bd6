"""Measurements behind "how does BN help optimization?": noise after BN, ICS, the loss landscape.

* :class:`NoiseInjection`, :func:`add_noise_after_bn` and :func:`add_noise_after_hidden_linear`:
  a random scale and shift, per unit or per example and unit, drawn afresh at every step, after
  each BN layer ("noisy BN") or where a network without BN would have them;
* :func:`ics_measure`: the internal covariate shift of Santurkar et al. (2018), Definition 2.1,
  as the change of a layer's gradient when the layers below it take their update;
* :func:`probe_gradient_direction`: the loss and the gradient along the gradient direction, over a
  range of step sizes (the loss range, the gradient predictiveness and the effective smoothness);
* :func:`weight_gradient_cosines`: the cosine between each unit's weights and their gradient.

Every function evaluates the model with :func:`torch.func.functional_call` on copies of its
buffers, so BN running statistics and the model's parameters are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bnlib.nn.registry import BATCH_NORM_1D_TYPES

__all__ = ["NoiseInjection", "add_noise_after", "add_noise_after_bn",
           "add_noise_after_hidden_linear", "loss_and_gradients", "layer_parameter_names",
           "layer_input", "ics_measure",
           "GradientProbe", "probe_gradient_direction", "weight_gradient_cosines"]

LossFn = Callable[[Tensor, Tensor], Tensor]


class NoiseInjection(nn.Module):
    r"""Multiply each unit by a random scale and add a random shift, both redrawn on demand.

    .. math::
        y_{n,j} = s_j x_{n,j} + b_j, \qquad b_j \sim \mathcal{U}(-\mu_{max}, \mu_{max}), \quad
        s_j \sim \mathcal{U}(s_{min}, s_{max}),

    with one :math:`(s_j, b_j)` per unit, shared by the examples of a batch and kept until the
    next :meth:`resample`. Shared by the batch, the noise passes through a BN layer before it as
    a random jitter of its :math:`\gamma` and :math:`\beta`. With ``per_example=True`` every
    example also gets its own draws from the same ranges, i.i.d. over examples and units and
    new at every forward pass in training: :math:`y_{n,j} = s_j u_{n,j} x_{n,j} + b_j + v_{n,j}`,
    noise whose distribution (its mean :math:`b_j`, its spread) changes with every
    :meth:`resample` (the noise of Santurkar et al., 2018, Section 2.1). In evaluation mode the
    layer is the identity, the noise map averaged over draws when the scale range is centred
    on 1.

    Args:
        num_features: number of units :math:`C`.
        shift_range: :math:`\mu_{max} \ge 0`. Default: ``1.0``.
        scale_range: :math:`(s_{min}, s_{max})`, positive. Default: ``(0.5, 1.5)``.
        per_example: draw the noise for every example instead of once per batch.
            Default: ``False``.

    Shape:
        - Input: :math:`(N, C)`. Output: :math:`(N, C)`.
    """

    def __init__(self, num_features: int, shift_range: float = 1.0,
                 scale_range: tuple[float, float] = (0.5, 1.5), per_example: bool = False
                 ) -> None:
        super().__init__()
        low, high = scale_range
        if shift_range < 0 or not 0 < low <= high:
            raise ValueError(f"need shift_range >= 0 and 0 < scale_range[0] <= scale_range[1], "
                             f"got shift_range={shift_range}, scale_range={scale_range}")
        self.shift_range, self.scale_range = shift_range, (low, high)
        self.per_example = per_example
        self.generator: torch.Generator | None = None  # what per-example draws come from
        self.register_buffer("scale", torch.ones(num_features))
        self.register_buffer("shift", torch.zeros(num_features))

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None
             ) -> tuple[Tensor, Tensor]:
        """Scales and shifts of the given shape, from the layer's two uniform ranges."""
        low, high = self.scale_range
        uniform = torch.rand(2, *shape, generator=generator, dtype=self.scale.dtype)
        return low + (high - low) * uniform[0], self.shift_range * (2 * uniform[1] - 1)

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw a new scale and shift for every unit; per example, draw from ``generator``."""
        self.generator = generator
        scale, shift = self.draw(self.scale.shape, generator)
        self.scale.copy_(scale)
        self.shift.copy_(shift)

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return input
        if self.per_example:
            scale, shift = self.draw(tuple(input.shape), self.generator)
            return input * (self.scale * scale) + (self.shift + shift)
        return input * self.scale + self.shift


def add_noise_after(model: nn.Sequential, after: type | tuple[type, ...], skip_last: bool = False,
                    **noise_options) -> nn.Sequential:
    """A new ``nn.Sequential`` with the same layers and a :class:`NoiseInjection` after each
    layer of type ``after`` (but the last one, with ``skip_last``).

    The layers are shared with ``model``, not copied; ``noise_options`` go to
    :class:`NoiseInjection`.
    """
    positions = [i for i, layer in enumerate(model) if isinstance(layer, after)]
    if skip_last:
        positions = positions[:-1]
    if not positions:
        raise ValueError(f"model has no layer of type {after} to put noise after")
    layers: list[nn.Module] = []
    for index, layer in enumerate(model):
        layers.append(layer)
        if index in positions:
            width = layer.num_features if hasattr(layer, "num_features") else layer.out_features
            layers.append(NoiseInjection(width, **noise_options))
    return nn.Sequential(*layers)


def add_noise_after_bn(model: nn.Sequential, shift_range: float = 1.0,
                       scale_range: tuple[float, float] = (0.5, 1.5), per_example: bool = False
                       ) -> nn.Sequential:
    """A new ``nn.Sequential`` with the same layers and a :class:`NoiseInjection` after each BN.

    The layers are shared with ``model``, not copied.
    """
    try:
        return add_noise_after(model, BATCH_NORM_1D_TYPES, shift_range=shift_range,
                               scale_range=scale_range, per_example=per_example)
    except ValueError:
        raise ValueError("model has no BatchNorm layer to put noise after") from None


def add_noise_after_hidden_linear(model: nn.Sequential, shift_range: float = 1.0,
                                  scale_range: tuple[float, float] = (0.5, 1.5),
                                  per_example: bool = False) -> nn.Sequential:
    """A :class:`NoiseInjection` after every ``nn.Linear`` but the output layer: where a BN
    network has its BN layers, the same noise for a network without BN (Santurkar et al.'s
    control). The layers are shared with ``model``, not copied."""
    return add_noise_after(model, nn.Linear, skip_last=True, shift_range=shift_range,
                           scale_range=scale_range, per_example=per_example)


def loss_and_gradients(model: nn.Module, params: Mapping[str, Tensor], images: Tensor,
                       labels: Tensor, loss_fn: LossFn = F.cross_entropy
                       ) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of ``model`` with parameters ``params`` on a batch, and its gradients.

    Parameters missing from ``params`` keep the model's values (without gradients); buffers are
    copied, so training-mode BN does not update the model's running statistics.
    """
    leaves = {name: value.detach().requires_grad_() for name, value in params.items()}
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    loss = loss_fn(functional_call(model, {**leaves, **buffers}, (images,)), labels)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.detach(), dict(zip(leaves, grads))


def layer_input(model: nn.Sequential, index: int, images: Tensor) -> Tensor:
    """What layer ``index`` of ``model`` receives for ``images``, without a gradient.

    The layers before it run in the model's current mode on copies of their buffers, so
    training-mode BN does not update the model's running statistics.
    """
    head = model[:index]
    buffers = {name: buffer.clone() for name, buffer in head.named_buffers()}
    with torch.no_grad():
        return functional_call(head, buffers, (images,))


def concat_flat(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors flattened and joined into one vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def ics_measure(model: nn.Module, layers: Sequence[Sequence[str]], images: Tensor,
                labels: Tensor, lr: float, loss_fn: LossFn = F.cross_entropy
                ) -> list[tuple[float, float]]:
    r"""Internal covariate shift per layer: :math:`\lVert G - G' \rVert_2` and :math:`\cos(G, G')`.

    :math:`G_i` is the gradient of the loss with respect to the parameters of layer :math:`i`;
    :math:`G_i^\prime` the same gradient, on the same batch, after the layers below :math:`i`
    (those before it in ``layers``) took one plain gradient step of size ``lr``, the layers from
    :math:`i` on unchanged (Santurkar et al., 2018, Definition 2.1, for SGD).

    Args:
        model: the network; left unchanged.
        layers: the parameter names of each layer, from the input to the output.
        images, labels: the batch.
        lr: the step size of the update of the layers below.
        loss_fn: ``loss_fn(output, labels)``. Default: ``F.cross_entropy``.

    Returns:
        One ``(l2_difference, cosine)`` per layer; the first layer has none below it: ``(0, 1)``.
    """
    params = dict(model.named_parameters())
    names = [name for layer in layers for name in layer]
    unknown = sorted(set(names) - set(params))
    if unknown:
        raise ValueError(f"layers names parameters the model does not have: {unknown}; "
                         f"see layer_parameter_names(model)")
    _, grads = loss_and_gradients(model, {n: params[n] for n in names}, images, labels, loss_fn)
    results = [(0.0, 1.0)]
    for index, layer in enumerate(layers[1:], start=1):
        before = concat_flat([grads[name] for name in layer])
        updated = {name: params[name] - lr * grads[name]
                   for below in layers[:index] for name in below}
        _, after_grads = loss_and_gradients(
            model, {**{name: params[name] for name in layer}, **updated}, images, labels, loss_fn)
        after = concat_flat([after_grads[name] for name in layer])
        cosine = F.cosine_similarity(before, after, dim=0)
        results.append((float(torch.linalg.vector_norm(before - after)), float(cosine)))
    return results


def layer_parameter_names(model: nn.Sequential) -> list[list[str]]:
    """The parameter names of each layer of ``model``, from the input to the output.

    A layer starts at each ``nn.Linear`` and takes in the parameters of the modules after it up
    to the next ``nn.Linear`` (its normalization's :math:`\\gamma` and :math:`\\beta`).
    """
    layers: list[list[str]] = []
    for index, module in enumerate(model):
        names = [f"{index}.{name}" for name, _ in module.named_parameters()]
        if isinstance(module, nn.Linear) or not layers:
            layers.append(names)
        else:
            layers[-1] += names
    return [names for names in layers if names]


@dataclass
class GradientProbe:
    """The loss and gradient at points :math:`w - \\eta g` along the gradient :math:`g`.

    Attributes:
        step_sizes: the :math:`\\eta` probed, a 1-D tensor.
        losses: the loss at each point.
        gradient_changes: :math:`\\lVert \\nabla L(w - \\eta g) - \\nabla L(w) \\rVert_2` at each.
        gradient_norm: :math:`\\lVert g \\rVert_2`.
    """

    step_sizes: Tensor
    losses: Tensor
    gradient_changes: Tensor
    gradient_norm: float

    @property
    def loss_range(self) -> float:
        """Largest minus smallest loss over the step sizes."""
        return float(self.losses.max() - self.losses.min())

    @property
    def gradient_predictiveness(self) -> float:
        """Largest change of the gradient over the step sizes (smaller: more predictive)."""
        return float(self.gradient_changes.max())

    @property
    def effective_smoothness(self) -> float:
        """Largest gradient change per distance moved, :math:`\\lVert \\Delta \\nabla L \\rVert
        / (\\eta \\lVert g \\rVert)`: the "effective beta-smoothness"."""
        return float((self.gradient_changes / (self.step_sizes * self.gradient_norm)).max())


def probe_gradient_direction(model: nn.Module, images: Tensor, labels: Tensor,
                             step_sizes: Sequence[float], loss_fn: LossFn = F.cross_entropy
                             ) -> GradientProbe:
    r"""Loss and gradient along the gradient direction, at :math:`w - \eta g` for each step size.

    All parameters of ``model`` move together; the batch is the same at every point (Santurkar
    et al., 2018, Figure 4, at one step of training). The model is left unchanged.

    Args:
        model: the network.
        images, labels: the batch on which the gradient and the losses are computed.
        step_sizes: the :math:`\eta > 0` to probe.
        loss_fn: ``loss_fn(output, labels)``. Default: ``F.cross_entropy``.
    """
    steps = torch.as_tensor(step_sizes, dtype=torch.float64)
    if steps.ndim != 1 or steps.numel() == 0 or bool((steps <= 0).any()):
        raise ValueError(f"step_sizes must be a non-empty list of positive numbers, "
                         f"got {step_sizes}")
    params = {name: p.detach() for name, p in model.named_parameters()}
    _, grads = loss_and_gradients(model, params, images, labels, loss_fn)
    grad = concat_flat(list(grads.values()))
    losses, changes = [], []
    for eta in steps.tolist():
        moved = {name: params[name] - eta * grads[name] for name in params}
        loss, moved_grads = loss_and_gradients(model, moved, images, labels, loss_fn)
        losses.append(float(loss))
        moved_grad = concat_flat(list(moved_grads.values()))
        changes.append(float(torch.linalg.vector_norm(moved_grad - grad)))
    return GradientProbe(steps, torch.tensor(losses, dtype=torch.float64),
                         torch.tensor(changes, dtype=torch.float64),
                         float(torch.linalg.vector_norm(grad)))


def weight_gradient_cosines(model: nn.Module, weight_name: str, images: Tensor, labels: Tensor,
                            loss_fn: LossFn = F.cross_entropy) -> Tensor:
    """Cosine between each row of a weight matrix (one unit's weights) and its gradient.

    Returns:
        A 1-D tensor, one cosine per row of the parameter ``weight_name``.
    """
    weight = dict(model.named_parameters())[weight_name]
    _, grads = loss_and_gradients(model, {weight_name: weight}, images, labels, loss_fn)
    return F.cosine_similarity(weight.detach(), grads[weight_name], dim=1)
