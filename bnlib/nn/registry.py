r"""The normalisation layer types, one table read by every tool that looks at a built network.

- :data:`BATCH_NORM_1D_TYPES`, :data:`BATCH_NORM_2D_TYPES`: torch's and bnlib's plain BN layers,
  which the engines, the sweeps, the landscape probes and :func:`bnlib.freeze_batchnorm` treat
  alike.
- :data:`ANY_BATCH_NORM_TYPES`: every layer with BN's evaluation mode (bnlib's ghost, sync and
  renorm layers and torch's 3d and sync layers included), which :func:`bnlib.set_batchnorm_eval`
  switches to eval mode and :func:`bnlib.freeze_batchnorm` refuses when it has no frozen
  counterpart.
- :data:`FOLDABLE_TYPES`, for :func:`bnlib.fuse_bn` and the ``fuse_*_eval`` functions: layers
  that in eval mode, with running statistics, compute
  :math:`y = \gamma (x - r_{mean}) / \sqrt{r_{var} + \epsilon} + \beta`, an affine map per
  channel. Batch renormalisation is one of them: its evaluation is BN's, with its running
  :math:`\sigma` stored as ``running_var`` :math:`= \sigma^2 - \epsilon`.
- :data:`RECOMPUTABLE_TYPES`, for :func:`bnlib.recompute_bn_statistics`: layers whose
  training-mode forward normalises with the batch statistics and, with ``momentum=None``,
  keeps the plain average of the batch means and unbiased variances. Batch renormalisation is
  not: its running :math:`\sigma` averages the batch standard deviations (not the variances),
  and in training mode its output is corrected towards the running statistics, which a
  recomputation has just reset, so the layers after it would see other inputs than BN's
  (:data:`RENORM_TYPES`, which :func:`bnlib.recompute_bn_statistics` refuses by name).
- :data:`ACTIVATIONS` and :data:`ACTIVATION_NAMES`: the activations the builders use, by name
  and back, for the tools that read a built network layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from bnlib.nn.batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm
from bnlib.nn.ghost import GhostBatchNorm
from bnlib.nn.renorm import BatchRenorm1d, BatchRenorm2d
from bnlib.nn.sync import SyncBatchNorm

__all__ = ["ACTIVATIONS", "ACTIVATION_NAMES", "ANY_BATCH_NORM_TYPES", "BATCH_NORM_1D_TYPES",
           "BATCH_NORM_2D_TYPES", "FOLDABLE_TYPES", "RECOMPUTABLE_TYPES", "RENORM_TYPES"]

BATCH_NORM_1D_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, BatchNorm1d)
BATCH_NORM_2D_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm2d, BatchNorm2d)
# Everything deriving from torch's or bnlib's BN base class.
ANY_BATCH_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, _BatchNorm,
)
RENORM_TYPES: tuple[type[nn.Module], ...] = (BatchRenorm1d, BatchRenorm2d)
RECOMPUTABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    BatchNorm1d, BatchNorm2d, SyncBatchNorm, GhostBatchNorm,
)
FOLDABLE_TYPES: tuple[type[nn.Module], ...] = RECOMPUTABLE_TYPES + RENORM_TYPES

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}
ACTIVATION_NAMES: dict[type, str] = {factory: name for name, factory in ACTIVATIONS.items()}
