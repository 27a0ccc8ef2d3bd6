r"""Recompute the running statistics of a trained network's BN layers ("precise BN", AdaBN).

During training each BN layer keeps an exponential moving average of its batch statistics
(:math:`r_t = (1 - \rho)\, r_{t-1} + \rho\, s_t`). After training, or on new data, the
statistics can instead be recomputed from scratch: reset them and average the batch statistics of
many batches with equal weights, the cumulative average of ``momentum=None``. This is what
:func:`torch.optim.swa_utils.update_bn` does; :func:`recompute_bn_statistics` does the same for
torch's and ``bnlib``'s layers, and leaves the model as it found it apart from the statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain

import torch
from torch import Tensor, nn

from bnlib._checks import require_int
from bnlib.data.mnist import MNIST
from bnlib.nn.registry import RECOMPUTABLE_TYPES, RENORM_TYPES

__all__ = ["average_bn_statistics", "batch_norm_layers", "recompute_bn_statistics"]

RUNNING_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """The BN layers of ``model`` that keep running statistics, torch's and ``bnlib``'s, in
    ``model.modules()`` order.

    Layers built with ``track_running_stats=False`` have no statistics to recompute and are left
    out; so are normalisations without running statistics (``LayerNorm``, ``GroupNorm``), and
    batch renormalisation, whose statistics a plain average does not give
    (:mod:`bnlib.nn.registry` says why; :func:`recompute_bn_statistics` refuses it).
    """
    return [module for module in model.modules()
            if isinstance(module, RECOMPUTABLE_TYPES) and module.running_mean is not None]


def renorm_reason(model: nn.Module) -> str | None:
    """Why :func:`recompute_bn_statistics` refuses ``model`` (a batch renormalisation layer with
    running statistics, named), or ``None``."""
    for name, module in model.named_modules():
        if isinstance(module, RENORM_TYPES) and module.running_mean is not None:
            where = f"module {name!r}" if name else "the model"
            return (f"{where} is a {type(module).__name__}, whose statistics "
                    "recompute_bn_statistics cannot recompute: its running sigma averages the "
                    "batch standard deviations, not the variances, and in training mode its "
                    "output is corrected towards running statistics that the recomputation has "
                    "just reset, so the layers after it would see other inputs than in training")
    return None


def recompute_bn_statistics(model: nn.Module,
                            data: MNIST | Tensor | Iterable[Tensor | tuple | list], *,
                            batch_size: int = 256,
                            device: torch.device | str | None = None) -> nn.Module:
    r"""Reset every BN layer's running statistics and recompute them as a plain average over
    ``data``, in place.

    Each batch goes through the model in training mode under ``torch.no_grad``, with every BN
    layer's ``momentum`` set to ``None``, so after :math:`T` batches

    .. math::
        \text{running\_mean} = \frac{1}{T} \sum_{t=1}^{T} \mu_t, \qquad
        \text{running\_var} = \frac{1}{T} \sum_{t=1}^{T} \frac{m_t}{m_t - 1}\, \sigma_t^2 ,

    and ``num_batches_tracked`` is :math:`T`. On the same batches this gives exactly what
    :func:`torch.optim.swa_utils.update_bn` gives. Only the running statistics change: each
    module's training flag (the whole model is in training mode during the passes, dropout
    included, as in ``update_bn``) and each BN layer's momentum are restored afterwards, and no
    parameter or gradient is touched. No labels are used, so the data may be unlabelled test or
    target-domain data (AdaBN). If a forward pass raises, the statistics are put back as they were.

    Args:
        model (nn.Module): contains at least one BN layer with running statistics (see
            :func:`batch_norm_layers`).
        data (MNIST, Tensor or iterable): the inputs. An :class:`~bnlib.MNIST` or a tensor of
            inputs is split, in order, into batches of ``batch_size`` (a final batch of one
            example, which BN cannot use, is dropped). Anything else is iterated over as batches:
            each a tensor, or a tuple or list whose first element is the input (as from a
            ``DataLoader``).
        batch_size (int, optional): examples per batch when ``data`` is an ``MNIST`` or a tensor,
            at least 2. Default: ``256``.
        device (torch.device or str, optional): where to move each batch. Default: ``None`` (the
            device of the model's first parameter or buffer).

    Returns:
        ``model`` itself, with recomputed statistics.

    Raises:
        ValueError: the model has no BN layer with running statistics, has a batch
            renormalisation layer (see :mod:`bnlib.nn.registry`), ``data`` holds no batch, or
            ``batch_size`` is below 2.
    """
    reason = renorm_reason(model)
    if reason is not None:
        raise ValueError(f"{reason}; nothing was changed")
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running statistics "
                         "(track_running_stats=True); there is nothing to recompute")
    batches = _first_and_rest(_as_batches(data, batch_size))
    device = device if device is not None else _model_device(model)
    saved_buffers = {layer: [getattr(layer, name).clone() for name in RUNNING_BUFFERS]
                     for layer in layers}
    modes = {module: module.training for module in model.modules()}
    momenta = {layer: layer.momentum for layer in layers}
    completed = False
    try:
        average_bn_statistics(model, layers, batches, device)
        completed = True
    finally:
        for module, training in modes.items():
            module.training = training
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        if not completed:
            _restore(saved_buffers)
    return model


def average_bn_statistics(model: nn.Module, layers: list[nn.Module], batches: Iterable,
                          device: torch.device | str | None = None) -> None:
    """Reset the running statistics of ``layers`` (BN layers of ``model``) and make them the
    plain average over ``batches``: the core of :func:`recompute_bn_statistics`.

    Leaves ``model`` in training mode and the layers' momentum at ``None``; restoring both is the
    caller's job.

    Args:
        model (nn.Module): the network.
        layers (list of nn.Module): its BN layers with running statistics.
        batches (iterable): tensors, or tuples or lists whose first element is the input.
        device (torch.device or str, optional): where to move each batch. Default: ``None``
            (where it is).
    """
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: factor 1 / num_batches_tracked
    model.train()
    with torch.no_grad():
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs.to(device) if device is not None else inputs)


def _restore(saved_buffers: dict[nn.Module, list[Tensor]]) -> None:
    with torch.no_grad():
        for layer, values in saved_buffers.items():
            for name, value in zip(RUNNING_BUFFERS, values):
                getattr(layer, name).copy_(value)


def _as_batches(data, batch_size: int) -> Iterable:
    """``data`` as an iterable of batches; an MNIST or a tensor is split into equal batches."""
    require_int("batch_size", batch_size, 2, " (BN needs more than one value per channel)")
    if isinstance(data, MNIST):
        data = data.images
    if isinstance(data, Tensor):
        usable = len(data) - 1 if len(data) % batch_size == 1 else len(data)
        return data[:usable].split(batch_size) if usable > 0 else ()
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a bnlib.MNIST, a tensor of inputs or an iterable of "
                        f"batches, got {type(data).__name__}")
    return data


def _first_and_rest(batches: Iterable) -> Iterator:
    """The batches, after checking (before anything is reset) that there is at least one."""
    iterator = iter(batches)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("data holds no batch (at least 2 examples are needed); there is "
                         "nothing to compute the statistics from") from None
    return chain([first], iterator)


def _model_device(model: nn.Module) -> torch.device | None:
    tensor = next(chain(model.parameters(), model.buffers()), None)
    return None if tensor is None else tensor.device
