r"""Frozen batch normalisation: BN reduced to its evaluation-mode affine map, in every mode.

:class:`FrozenBatchNorm1d` and :class:`FrozenBatchNorm2d` follow ``torchvision.ops.misc.
FrozenBatchNorm2d``: ``weight``, ``bias``, ``running_mean`` and ``running_var`` are buffers, so
no optimizer sees them and no training step moves them, and a BN state dict (with its
``num_batches_tracked``) loads into them. :func:`freeze_batchnorm` swaps them in for a model's
BN layers, as detectron2's ``FrozenBatchNorm2d.convert_frozen_batchnorm`` does;
:func:`set_batchnorm_eval` is the lighter recipe that only switches BN layers to eval mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bnlib._checks import require_int
from bnlib.nn.functional import batch_norm_eval
from bnlib.nn.registry import ANY_BATCH_NORM_TYPES, BATCH_NORM_1D_TYPES, BATCH_NORM_2D_TYPES

__all__ = ["FrozenBatchNorm1d", "FrozenBatchNorm2d", "freeze_batchnorm", "set_batchnorm_eval"]


class _FrozenBatchNorm(nn.Module):
    r"""Shared machinery of :class:`FrozenBatchNorm1d` and :class:`FrozenBatchNorm2d`.

    Args:
        num_features (int): number of channels :math:`C`.
        eps (float, optional): added to the variance for numerical stability. Default: ``1e-5``.
        device, dtype (optional): where and in which dtype the buffers are created.
            Default: ``None``.
    """

    accepted_dims: tuple[int, ...] = ()
    input_description: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        require_int("num_features", num_features, 1,
                    message=f"num_features must be a positive int, got {num_features!r}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be non-negative, got {eps!r}; use 1e-5, BN's default")
        self.num_features = num_features
        self.eps = eps
        factory = {"device": device, "dtype": dtype}
        # Buffers, not parameters: parameters() never returns them, and state_dict() still does.
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    @classmethod
    def from_batchnorm(cls, bn: nn.Module) -> _FrozenBatchNorm:
        r"""A frozen copy of ``bn``'s running statistics, :math:`\gamma`, :math:`\beta` and eps.

        A BN without ``affine`` gets :math:`\gamma = 1`, :math:`\beta = 0`, which is what it
        computes; the copy has ``bn``'s device and dtype and shares no memory with it.

        Args:
            bn: a ``torch.nn.BatchNorm1d``/``2d`` or ``bnlib.BatchNorm1d``/``2d`` with running
                statistics.
        """
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(
                f"cannot freeze {bn!r}: it has no running statistics (track_running_stats=False),"
                " so it normalises with batch statistics in eval mode too; train a BN with "
                "track_running_stats=True, or recompute its statistics, before freezing it")
        rm = bn.running_mean
        frozen = cls(bn.num_features, bn.eps, device=rm.device, dtype=rm.dtype)
        with torch.no_grad():
            frozen.running_mean.copy_(rm)
            frozen.running_var.copy_(bn.running_var)
            if bn.weight is not None:
                frozen.weight.copy_(bn.weight)
            if bn.bias is not None:
                frozen.bias.copy_(bn.bias)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        # A BN state dict counts its training batches; frozen statistics have nothing to count.
        state_dict.pop(prefix + "num_batches_tracked", None)
        # A BN without affine has no weight and bias: its map is gamma = 1, beta = 0.
        if prefix + "running_mean" in state_dict:
            for name, fill in (("weight", torch.ones_like), ("bias", torch.zeros_like)):
                state_dict.setdefault(prefix + name, fill(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

    def check_input(self, input: Tensor) -> None:
        """Raise a ValueError, saying what to change, unless ``input`` has an accepted rank and
        ``num_features`` channels."""
        if input.dim() not in self.accepted_dims:
            raise ValueError(
                f"{type(self).__name__} expected {self.input_description} input, got "
                f"{input.dim()}D input of shape {tuple(input.shape)}; reshape the input or use "
                "the frozen class that matches its rank.")
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expected {self.num_features} "
                f"channels in dim 1, got {input.shape[1]} (input shape {tuple(input.shape)}); "
                "freeze a BN layer with as many features as the input has channels.")

    def forward(self, input: Tensor) -> Tensor:
        self.check_input(input)
        return batch_norm_eval(input, self.running_mean, self.running_var, self.weight,
                               self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class FrozenBatchNorm1d(_FrozenBatchNorm):
    r"""BatchNorm1d with fixed statistics and affine parameters, in training and in eval mode.

    .. math::
        y = \frac{x - r_{mean}}{\sqrt{r_{var} + \epsilon}} \gamma + \beta

    the evaluation-mode map of :class:`bnlib.BatchNorm1d`, with :math:`\gamma` (``weight``),
    :math:`\beta` (``bias``) and the running statistics held as buffers.

    Args:
        num_features (int): number of channels :math:`C`.
        eps (float, optional): added to the variance for numerical stability. Default: ``1e-5``.
        device, dtype (optional): where and in which dtype the buffers are created.
            Default: ``None``.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, L)`.
        - Output: same shape as the input.
    """

    accepted_dims = (2, 3)
    input_description = "2D (N, C) or 3D (N, C, L)"


class FrozenBatchNorm2d(_FrozenBatchNorm):
    r"""BatchNorm2d with fixed statistics and affine parameters, like torchvision's.

    .. math::
        y = \frac{x - r_{mean}}{\sqrt{r_{var} + \epsilon}} \gamma + \beta

    the evaluation-mode map of :class:`bnlib.BatchNorm2d`, with :math:`\gamma` (``weight``),
    :math:`\beta` (``bias``) and the running statistics held as buffers.

    Args:
        num_features (int): number of channels :math:`C`.
        eps (float, optional): added to the variance for numerical stability. Default: ``1e-5``.
        device, dtype (optional): where and in which dtype the buffers are created.
            Default: ``None``.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: same shape as the input.
    """

    accepted_dims = (4,)
    input_description = "4D (N, C, H, W)"


def frozen_class(module: nn.Module) -> type[_FrozenBatchNorm] | None:
    """The frozen class that replaces ``module``, ``None`` for a module that is no BN layer.

    Raises:
        TypeError: ``module`` is a BN layer without a frozen counterpart here.
    """
    if isinstance(module, BATCH_NORM_1D_TYPES):
        return FrozenBatchNorm1d
    if isinstance(module, BATCH_NORM_2D_TYPES):
        return FrozenBatchNorm2d
    # Other BN layers (3d; statistics over processes, ghost batches or renormalised) have no
    # frozen counterpart: refused rather than left training.
    if isinstance(module, ANY_BATCH_NORM_TYPES):
        raise TypeError(
            f"freeze_batchnorm cannot freeze {type(module).__name__}: only BatchNorm1d and "
            "BatchNorm2d (torch's or bnlib's) have frozen counterparts; replace it by one of "
            "them first, or call set_batchnorm_eval instead.")
    return None


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BN layer of ``model`` by a frozen copy of its statistics and parameters.

    Every ``torch.nn.BatchNorm1d``/``2d`` and ``bnlib.BatchNorm1d``/``2d``, at any depth, becomes
    :class:`FrozenBatchNorm1d`/``2d`` built by their ``from_batchnorm``, as in
    detectron2's ``FrozenBatchNorm2d.convert_frozen_batchnorm``: containers are changed in
    place, and a BN layer passed itself comes back as a new frozen module. The frozen layers
    stay frozen through ``model.train()``, and their tensors are no longer ``parameters()``.

    Args:
        model: the model, or a single BN layer.

    Returns:
        ``model`` (changed in place), or the frozen layer when ``model`` is a BN layer.

    Raises:
        TypeError: the model holds a BN layer without a frozen counterpart (``BatchNorm3d``,
            ``SyncBatchNorm``, ``GhostBatchNorm``); nothing has been replaced then.
    """
    for module in model.modules():  # check everything before changing anything
        frozen_class(module)
    cls = frozen_class(model)
    if cls is not None:
        return cls.from_batchnorm(model)
    for name, child in model.named_children():
        frozen_child = freeze_batchnorm(child)
        if frozen_child is not child:
            setattr(model, name, frozen_child)
    return model


def set_batchnorm_eval(model: nn.Module) -> nn.Module:
    r"""Put every BN layer of ``model`` in eval mode, leaving every other module's mode alone.

    In eval mode a BN layer normalises with its running statistics and stops updating them,
    while :math:`\gamma` and :math:`\beta` still get gradients (set their ``requires_grad`` to
    ``False`` to fix them too). This lasts only until the next ``model.train()``, which puts the
    BN layers back in training mode: call it again after every ``model.train()``, for example
    at the start of every epoch, or use :func:`freeze_batchnorm`, which survives ``train()``.

    Args:
        model: the model; changed in place.

    Returns:
        ``model``.
    """
    for module in model.modules():
        if isinstance(module, ANY_BATCH_NORM_TYPES):
            module.eval()
    return model
