"""Looking inside a network: activations and gradients layer by layer
(:mod:`bnlib.diagnostics.snapshot`), the relative size of each weight's updates while it trains
(:mod:`bnlib.diagnostics.updates`), and noise after BN, internal covariate shift and the loss
along the gradient (:mod:`bnlib.diagnostics.landscape`, chapter why_bn_works)."""

from bnlib.diagnostics.snapshot import (
    Histogram,
    LayerStats,
    Snapshot,
    dead_fraction,
    saturation_fraction,
    take_snapshot,
)
from bnlib.diagnostics.updates import UpdateRatioTracker, update_ratio

__all__ = ["Histogram", "LayerStats", "Snapshot", "UpdateRatioTracker", "dead_fraction",
           "saturation_fraction", "take_snapshot", "update_ratio"]
