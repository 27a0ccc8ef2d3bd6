r"""Which batch-norm layers each tool handles: one table, with the reason for each answer.

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
"""

from __future__ import annotations

from torch import nn

from bnlib.batch_renorm import BatchRenorm1d, BatchRenorm2d
from bnlib.batchnorm import BatchNorm1d, BatchNorm2d
from bnlib.ghost_batchnorm import GhostBatchNorm
from bnlib.sync_batchnorm import SyncBatchNorm

__all__ = ["FOLDABLE_TYPES", "RECOMPUTABLE_TYPES", "RENORM_TYPES"]

RENORM_TYPES: tuple[type[nn.Module], ...] = (BatchRenorm1d, BatchRenorm2d)
RECOMPUTABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    BatchNorm1d, BatchNorm2d, SyncBatchNorm, GhostBatchNorm,
)
FOLDABLE_TYPES: tuple[type[nn.Module], ...] = RECOMPUTABLE_TYPES + RENORM_TYPES
