"""The normalisation layers, drop-ins for ``torch.nn``'s, with their functional and autograd forms.

* :mod:`bnlib.nn.functional`: BN as a function (:func:`batch_norm`), its evaluation-mode map and
  the running-statistics update;
* :mod:`bnlib.nn.autograd`: the hand-derived backward pass as a ``torch.autograd.Function``;
* :mod:`bnlib.nn.batchnorm`, :mod:`~bnlib.nn.ghost`, :mod:`~bnlib.nn.renorm`,
  :mod:`~bnlib.nn.sync`: BN as modules, over ghost batches, renormalised, over processes;
* :mod:`bnlib.nn.layernorm`, :mod:`bnlib.nn.groupnorm`: the alternatives for small batches;
* :mod:`bnlib.nn.masked`: BN over the real positions of padded sequences;
* :mod:`bnlib.nn.frozen`: BN frozen to its evaluation-mode map, for fine-tuning;
* :mod:`bnlib.nn.registry`: which layer types each tool handles, in one table.
"""

from bnlib.nn.autograd import BatchNormFunction
from bnlib.nn.batchnorm import BatchNorm1d, BatchNorm2d
from bnlib.nn.frozen import (
           FrozenBatchNorm1d,
           FrozenBatchNorm2d,
           freeze_batchnorm,
           set_batchnorm_eval,
)
from bnlib.nn.functional import batch_norm
from bnlib.nn.ghost import GhostBatchNorm
from bnlib.nn.groupnorm import GroupNorm, group_norm
from bnlib.nn.layernorm import LayerNorm, layer_norm
from bnlib.nn.masked import MaskedBatchNorm1d, masked_batch_norm
from bnlib.nn.renorm import BatchRenorm1d, BatchRenorm2d, RenormSchedule
from bnlib.nn.sync import SyncBatchNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNormFunction", "BatchRenorm1d", "BatchRenorm2d",
           "FrozenBatchNorm1d", "FrozenBatchNorm2d", "GhostBatchNorm", "GroupNorm", "LayerNorm",
           "MaskedBatchNorm1d", "masked_batch_norm",
           "RenormSchedule", "SyncBatchNorm", "batch_norm", "freeze_batchnorm", "group_norm",
           "layer_norm", "set_batchnorm_eval"]
