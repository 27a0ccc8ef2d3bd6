"""bnlib: batch normalization from scratch in PyTorch, the tested library behind the book.

The names a reader of the book uses are importable from here; everything else from its
sub-package:

* :mod:`bnlib.nn`: the normalisation layers (BN, ghost, sync and renormalised BN, LayerNorm,
  GroupNorm, frozen BN), drop-ins for ``torch.nn``'s, with BN as a function and its hand-derived
  backward pass (statistics of float16 and bfloat16 input taken in float32, as torch takes them),
  and masked BN for padded sequences;
* :mod:`bnlib.by_hand`: every layer of the MLP, its loss, and the Adam and SGD steps written out
  by hand, and a finite-difference gradient checker;
* :mod:`bnlib.engine`: training steps without autograd, for one network or K stacked ones;
* :mod:`bnlib.training`: the configs, the training loops and sweeps, their histories, and runs in
  several processes;
* :mod:`bnlib.data`: MNIST without torchvision, and shifted copies of it;
* :mod:`bnlib.inference`: BN folded into the layer before it, and its statistics recomputed;
* :mod:`bnlib.diagnostics`: activations, gradients and update ratios inside a network, and the
  probes of why BN works;
* :mod:`bnlib.plotting`: the figures (the top-level ``plot_*`` names are imported at their first
  use: matplotlib is slow to import);
* :mod:`bnlib.grading`: a from-scratch BN layer graded against torch's;
* :mod:`bnlib.models` (the book's MLP and CNN builders) and :mod:`bnlib.seeds` (the experiments'
  seeds, shifted by ``BNLIB_SEED_OFFSET``).

The flat module paths of bnlib 0.1 (``bnlib.layers``, ``bnlib.parallel``, ...) still import, with
a ``DeprecationWarning`` naming the new path (:mod:`bnlib._moved`).
"""

from bnlib import _moved
from bnlib.data import MNIST, Batches, DataError, load_mnist
from bnlib.diagnostics import UpdateRatioTracker, take_snapshot
from bnlib.grading import grade_batchnorm
from bnlib.inference import (
    batch_norm_layers,
    fuse_bn,
    fuse_conv_bn_eval,
    fuse_linear_bn_eval,
    recompute_bn_statistics,
)
from bnlib.models import PRACTITIONER_INIT, SmallCNN, build_cnn, build_mlp
from bnlib.nn import (
    BatchNorm1d,
    BatchNorm2d,
    BatchRenorm1d,
    BatchRenorm2d,
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    GhostBatchNorm,
    GroupNorm,
    LayerNorm,
    RenormSchedule,
    SyncBatchNorm,
    batch_norm,
    freeze_batchnorm,
    set_batchnorm_eval,
)
from bnlib.seeds import seeds
from bnlib.training import (
    History,
    SweepConfig,
    TrainConfig,
    compare,
    evaluate,
    map_in_processes,
    train,
    train_sweep,
)

_moved.install()


def __getattr__(name: str):
    # The figures, imported at their first use, and the names and module paths that moved to a
    # sub-package, with a warning (PEP 562). The name is then kept here, so that
    # `from bnlib import name` warns only once.
    value = _moved.moved_name(name)
    globals()[name] = value
    return value


__version__ = "0.2.0"

__all__ = [
    "MNIST",
    "PRACTITIONER_INIT",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "Batches",
    "DataError",
    "FrozenBatchNorm1d",
    "FrozenBatchNorm2d",
    "GhostBatchNorm",
    "GroupNorm",
    "History",
    "LayerNorm",
    "RenormSchedule",
    "SmallCNN",
    "SweepConfig",
    "SyncBatchNorm",
    "TrainConfig",
    "UpdateRatioTracker",
    "batch_norm",
    "batch_norm_layers",
    "build_cnn",
    "build_mlp",
    "compare",
    "evaluate",
    "freeze_batchnorm",
    "fuse_bn",
    "fuse_conv_bn_eval",
    "fuse_linear_bn_eval",
    "grade_batchnorm",
    "load_mnist",
    "map_in_processes",
    "plot_activation_histograms",
    "plot_comparison",
    "plot_depth_sweep",
    "plot_gradient_histograms",
    "plot_saturation",
    "plot_seed_spread",
    "plot_sweep",
    "plot_update_ratios",
    "recompute_bn_statistics",
    "seeds",
    "set_batchnorm_eval",
    "take_snapshot",
    "train",
    "train_sweep",
]
