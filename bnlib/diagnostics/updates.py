r"""How much each weight moves while a model trains: the relative size of its updates,
:math:`\lVert \Delta w \rVert / \lVert w \rVert`, recorded by :class:`UpdateRatioTracker` while
any training loop runs. The hooks come off when it is done: a diagnostic leaves no trace.
"""

from __future__ import annotations

import math
from functools import partial

from torch import Tensor, nn

from bnlib._checks import require_int

__all__ = ["UpdateRatioTracker", "update_ratio"]


def update_ratio(before: Tensor, after: Tensor) -> float:
    r"""Relative size of an update: :math:`\lVert w_\text{after} - w_\text{before} \rVert /
    \lVert w_\text{before} \rVert` (Euclidean norms over all elements).

    Args:
        before: the parameter before the update; not all zero.
        after: the parameter after it, of the same shape.
    """
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape, got {tuple(before.shape)} "
                         f"and {tuple(after.shape)}")
    scale = before.detach().double().norm()
    if scale == 0:
        raise ValueError("before is all zeros: the ratio to its norm is undefined")
    return ((after.detach().double() - before.detach().double()).norm() / scale).item()


class UpdateRatioTracker:
    r"""Record :func:`update_ratio` of every tracked parameter while a model trains.

    A hook on each parameter (``register_post_accumulate_grad_hook``) copies the parameter
    every ``every`` backward passes, just before the optimizer uses the gradient, and records
    its :func:`update_ratio` to the previous copy: with ``every=1`` and one backward pass per
    optimizer step, the relative size of each step's update, whatever the optimizer and the
    loop. The update of the last step is seen by no later backward pass, so :math:`T` steps
    give :math:`\lfloor (T - 1) / \text{every} \rfloor` ratios per parameter. The hooks fire
    when autograd accumulates a gradient (``loss.backward()``), not under
    :func:`torch.autograd.grad` (so :func:`take_snapshot` does not count), nor in a loop that
    writes ``.grad`` itself: :func:`bnlib.train`'s default ``engine="auto"`` sees the hooks and
    trains with autograd (``"manual"`` refuses); check :attr:`passes`. A parameter that is all
    zeros before a step (a bias or BN's
    :math:`\beta` at initialisation) has no relative update: that step's ratio is NaN. Use it as
    a context manager, or call :meth:`remove`, to take the hooks off.

    Args:
        model: the model being trained.
        every: steps between two copies. Default: ``1``.
        weights_only: track only parameters with at least two dimensions (weight matrices
            and kernels), not biases or BN's :math:`\gamma`, :math:`\beta`. Default: ``True``.

    Attributes:
        ratios: parameter name -> its ratios, in step order.
        passes: backward passes seen so far (by the first tracked parameter).
    """

    def __init__(self, model: nn.Module, *, every: int = 1, weights_only: bool = True) -> None:
        require_int("every", every, 1)
        params = {name: param for name, param in model.named_parameters()
                  if param.requires_grad and (param.dim() >= 2 or not weights_only)}
        if not params:
            raise ValueError("the model has no trainable parameter to track"
                             + (" with 2 or more dimensions; pass weights_only=False"
                                if weights_only else ""))
        self.every = every
        self.ratios: dict[str, list[float]] = {name: [] for name in params}
        self._passes = dict.fromkeys(params, 0)
        self._previous: dict[str, Tensor] = {}
        self._handles = [param.register_post_accumulate_grad_hook(partial(self._on_grad, name))
                         for name, param in params.items()]

    def _on_grad(self, name: str, param: Tensor) -> None:
        self._passes[name] += 1
        if (self._passes[name] - 1) % self.every:
            return
        current = param.detach().clone()
        previous = self._previous.get(name)
        if previous is not None:
            self.ratios[name].append(update_ratio(previous, current) if previous.any()
                                     else math.nan)
        self._previous[name] = current

    @property
    def passes(self) -> int:
        """Backward passes seen so far by the first tracked parameter."""
        return next(iter(self._passes.values()))

    def remove(self) -> None:
        """Take the hooks off the parameters; the recorded ratios stay."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._previous.clear()

    def __enter__(self) -> UpdateRatioTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
