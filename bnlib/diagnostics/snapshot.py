"""What happens inside a network: activations and gradients, layer by layer.

:func:`take_snapshot` runs one batch through a model with forward hooks on its activation (or
other) modules, optionally backpropagates a loss, and returns per-layer statistics and histograms
of the activations, of the gradients with respect to them, and of the gradients of every
``Linear`` weight (:mod:`bnlib.diagnostics.updates` follows the updates while a model trains).
Hooks are removed and BN running statistics restored before it returns: a diagnostic leaves no
trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnlib._checks import require_choice, require_int

__all__ = ["Histogram", "LayerStats", "Snapshot", "dead_fraction", "saturation_fraction",
           "take_snapshot"]

WATCHED = (nn.Tanh, nn.Sigmoid, nn.ReLU)
_KINDS = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.Linear: "linear"}
_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


@dataclass(frozen=True)
class Histogram:
    """Counts of values in ``len(counts)`` bins whose boundaries are ``edges``."""

    counts: np.ndarray
    edges: np.ndarray


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one tensor of one layer over a batch (all its elements pooled).

    Args:
        name: the module's name in ``model.named_modules()``, or the weight's parameter name.
        kind: ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"linear"``, or the module's class name.
        mean, std: mean and standard deviation of the elements.
        norm: Euclidean norm of the whole tensor.
        histogram: the elements' histogram.
        saturation: for activations of tanh and sigmoid, the fraction of saturated outputs (see
            :func:`saturation_fraction`); of ReLU, the fraction of zeros. ``None`` otherwise.
        dead: for ReLU activations, the fraction of units that are zero for every example of the
            batch (see :func:`dead_fraction`). ``None`` otherwise.
        data_norm: for weight gradients, the norm of the weight itself. ``None`` otherwise.
    """

    name: str
    kind: str
    mean: float
    std: float
    norm: float
    histogram: Histogram
    saturation: float | None = None
    dead: float | None = None
    data_norm: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """One batch seen from inside: the loss and per-layer statistics, input side first.

    ``activation_grads`` and ``weight_grads`` are empty when no targets were given.
    """

    activations: list[LayerStats]
    activation_grads: list[LayerStats]
    weight_grads: list[LayerStats]
    loss: float | None


def saturation_fraction(outputs: Tensor, kind: str, threshold: float = 0.97) -> float:
    r"""Fraction of an activation's outputs that are saturated.

    For tanh, an output :math:`y` is saturated when :math:`|y| > \theta`, with :math:`\theta` =
    ``threshold``: its slope :math:`1 - y^2` is then below :math:`1 - \theta^2`. For sigmoid,
    :math:`\sigma(x) = (1 + \tanh(x/2))/2`, so the same rule on the tanh scale reads
    :math:`|2y - 1| > \theta`. For ReLU, the fraction of outputs that are exactly zero (no
    gradient flows through them).

    Args:
        outputs: the activation's outputs, any shape.
        kind: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
        threshold: :math:`\theta`, in :math:`(0, 1)`; unused for ReLU. Default: ``0.97``.
    """
    require_choice("kind", kind, ("tanh", "sigmoid", "relu"))
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if outputs.numel() == 0:
        raise ValueError("outputs is empty: pass at least one activation value")
    outputs = outputs.detach()
    if kind == "relu":
        return (outputs == 0).double().mean().item()
    distance = outputs if kind == "tanh" else 2 * outputs - 1
    return (distance.abs() > threshold).double().mean().item()


def dead_fraction(outputs: Tensor) -> float:
    """Fraction of ReLU units whose output is zero for every example of the batch.

    Args:
        outputs: ReLU outputs of shape :math:`(N, C)` or :math:`(N, C, *)`; a unit is a channel
            :math:`c`, dead when all of ``outputs[:, c]`` is zero.
    """
    if outputs.dim() < 2 or outputs.shape[0] == 0 or outputs.shape[1] == 0:
        raise ValueError(f"outputs must have shape (N, C, ...) with N, C > 0, got "
                         f"{tuple(outputs.shape)}")
    per_unit = outputs.detach().transpose(0, 1).reshape(outputs.shape[1], -1)
    return (per_unit == 0).all(dim=1).double().mean().item()


def _stats(name: str, kind: str, values: Tensor, bins: int,
           value_range: tuple[float, float] | None = None, **extra: float | None) -> LayerStats:
    values = values.detach().double()
    counts, edges = np.histogram(values.cpu().numpy().ravel(), bins=bins, range=value_range)
    return LayerStats(name, kind, values.mean().item(), values.std(correction=0).item(),
                      values.norm().item(), Histogram(counts, edges), **extra)


def _kind(module: nn.Module) -> str:
    return next((kind for cls, kind in _KINDS.items() if isinstance(module, cls)),
                type(module).__name__.lower())


def _activation_stats(name: str, kind: str, outputs: Tensor, bins: int,
                      threshold: float) -> LayerStats:
    saturation = (saturation_fraction(outputs, kind, threshold)
                  if kind in ("tanh", "sigmoid", "relu") else None)
    dead = dead_fraction(outputs) if kind == "relu" and outputs.dim() >= 2 else None
    return _stats(name, kind, outputs, bins, _RANGES.get(kind), saturation=saturation, dead=dead)


def _check_snapshot_args(model: nn.Module, inputs: Tensor, watch: tuple[type, ...],
                         threshold: float, bins: int) -> None:
    if not isinstance(inputs, Tensor) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError("inputs must be a batch tensor of shape (N, ...) with N >= 1")
    require_int("bins", bins, 1)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if not any(isinstance(module, watch) for module in model.modules()):
        names = ", ".join(cls.__name__ for cls in watch)
        raise ValueError(f"the model has no module of the watched types ({names}); pass "
                         "watch=(...) with the classes of the layers to look at")


def _keep_output(store: list[tuple[str, nn.Module, Tensor]], name: str, module: nn.Module,
                 inputs: tuple, output: Tensor) -> None:
    store.append((name, module, output))


def take_snapshot(model: nn.Module, inputs: Tensor, targets: Tensor | None = None, *,
                  loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                  watch: Sequence[type[nn.Module]] = WATCHED, threshold: float = 0.97,
                  bins: int = 50) -> Snapshot:
    r"""Run one batch and return per-layer statistics of activations and gradients.

    Forward hooks on every module of a ``watch`` type record its outputs, in call order (a
    module called twice appears twice). With ``targets``, the loss ``loss_fn(model(inputs),
    targets)`` is differentiated with :func:`torch.autograd.grad` with respect to those outputs
    and to the weight of every ``nn.Linear``, so the parameters' ``.grad`` stay untouched.
    The model runs in its current mode; buffers changed by the pass (BN running statistics) are
    restored, and the hooks removed, before the function returns.

    Args:
        model: any module, typically an ``nn.Sequential`` MLP.
        inputs: one batch.
        targets: targets for ``loss_fn``, or ``None`` for activations only. Default: ``None``.
        loss_fn: the loss. Default: :func:`torch.nn.functional.cross_entropy`.
        watch: module classes whose outputs are recorded. Default: ``(nn.Tanh, nn.Sigmoid,
            nn.ReLU)``.
        threshold: saturation threshold of :func:`saturation_fraction`. Default: ``0.97``.
        bins: bins of every histogram. Default: ``50``.
    """
    watch = tuple(watch)
    _check_snapshot_args(model, inputs, watch, threshold, bins)
    recorded: list[tuple[str, nn.Module, Tensor]] = []
    handles = [module.register_forward_hook(partial(_keep_output, recorded, name))
               for name, module in model.named_modules() if isinstance(module, watch)]
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    weights = [(f"{name}.weight", module.weight) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and module.weight.requires_grad]
    try:
        with torch.set_grad_enabled(targets is not None):
            logits = model(inputs)
            loss = None if targets is None else loss_fn(logits, targets)
            grads = () if loss is None else torch.autograd.grad(
                loss, [output for *_, output in recorded] + [weight for _, weight in weights],
                allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
    names = _call_names(recorded)
    records = list(zip(names, (module for _, module, _ in recorded)))
    activations = [_activation_stats(name, _kind(module), output, bins, threshold)
                   for (name, module), (*_, output) in zip(records, recorded)]
    output_grads = [_stats(name, _kind(module), grad, bins)
                    for (name, module), grad in zip(records, grads) if grad is not None]
    weight_grads = [_stats(name, "linear", grad, bins, data_norm=weight.detach().norm().item())
                    for (name, weight), grad in zip(weights, grads[len(recorded):])
                    if grad is not None]
    return Snapshot(activations, output_grads, weight_grads,
                    None if loss is None else loss.item())


def _call_names(recorded: list[tuple[str, nn.Module, Tensor]]) -> Iterator[str]:
    """Module names, with " (call k)" added to the k-th call (k >= 2) of a module."""
    seen: dict[str, int] = {}
    for name, _, _ in recorded:
        seen[name] = seen.get(name, 0) + 1
        yield name if seen[name] == 1 else f"{name} (call {seen[name]})"
