"""bnlib: batch normalization from scratch in PyTorch, the tested library behind the book.

* :mod:`bnlib.functional` and :mod:`bnlib.batchnorm`: BN as a function and as drop-in modules for
  ``torch.nn.BatchNorm1d``/``BatchNorm2d``, with a hand-derived backward pass
  (:mod:`bnlib.manual_backward`) that also works under :mod:`torch.func` transforms, and
  statistics of float16 and bfloat16 input taken in float32, as torch's kernels take them;
* :mod:`bnlib.gradcheck`: a small finite-difference gradient checker;
* :mod:`bnlib.grading`: a from-scratch BN layer graded against torch's, check by check, with
  the mistake behind each failure;
* :mod:`bnlib.layers` and :mod:`bnlib.optim_steps`: every layer of the MLP, its loss, and the
  Adam and SGD steps written out by hand, each forward beside its backward;
* :mod:`bnlib.fusion`: BN folded into the layer before it, for inference (which BN kinds fold, and
  which have their statistics recomputed, is :mod:`bnlib.bn_registry`'s table);
* :mod:`bnlib.sync_batchnorm`, :mod:`bnlib.distributed` and :mod:`bnlib.data_parallel`: BN
  over a batch split across processes, a launcher for local CPU process groups, and data-parallel
  training of the book's MLP;
* :mod:`bnlib.ghost_batchnorm`: BN with statistics over virtual sub-batches;
* :mod:`bnlib.layernorm`, :mod:`bnlib.groupnorm` and :mod:`bnlib.batch_renorm`: the
  alternatives to BN for small batches, as drop-ins for torch's layers and BN's;
* :mod:`bnlib.frozen`: BN frozen to its evaluation-mode map, for fine-tuning;
* :mod:`bnlib.mnist_files` and :mod:`bnlib.data`: the MNIST files found, fetched and checked,
  and the in-memory set with its batch iterator;
* :mod:`bnlib.models`: the MLP and CNN builders used in the book, with torch's, He's or Glorot's
  initialisation;
* :mod:`bnlib.seeds`: the experiments' seeds, shifted by ``BNLIB_SEED_OFFSET``;
* :mod:`bnlib.training` and :mod:`bnlib.optim`: a training loop that returns its
  :class:`~bnlib.history.History`, and side-by-side comparisons on identical batches;
* :mod:`bnlib.engine`, :mod:`bnlib.engine_layers` and :mod:`bnlib.engine_support`: the training
  step of the MLPs written out by hand (forward, backward, torch's optimizer), without autograd's
  per-call overhead, and which models (without hooks) it may train;
* :mod:`bnlib.plotting`: figures of those histories;
* :mod:`bnlib.diagnostics` and :mod:`bnlib.plot_diagnostics`: activations, gradients and update
  ratios inside a network, layer by layer, and their figures;
* :mod:`bnlib.landscape`: noise injected after BN, internal covariate shift measured on the
  gradients, and the loss and gradient along the gradient direction;
* :mod:`bnlib.recalibrate` and :mod:`bnlib.shifts`: BN statistics recomputed after training or on
  new data (precise BN, AdaBN), and shifted copies of MNIST;
* :mod:`bnlib.parallel`: independent runs (seeds) side by side, one forked process per core;
* :mod:`bnlib.sweep` and :mod:`bnlib.batched`: K networks of one shape trained at once as
  batched matrix products, each with its own learning rate (seed, learning-rate and init sweeps).
"""

from bnlib.batch_renorm import BatchRenorm1d, BatchRenorm2d, RenormSchedule
from bnlib.batchnorm import BatchNorm1d, BatchNorm2d
from bnlib.data import MNIST, Batches, DataError, data_root, load_mnist
from bnlib.diagnostics import UpdateRatioTracker, take_snapshot
from bnlib.frozen import FrozenBatchNorm1d, FrozenBatchNorm2d, freeze_batchnorm, set_batchnorm_eval
from bnlib.functional import BatchNormFunction, batch_norm
from bnlib.fusion import fuse_bn, fuse_conv_bn_eval, fuse_linear_bn_eval
from bnlib.ghost_batchnorm import GhostBatchNorm
from bnlib.gradcheck import numerical_gradient, relative_error
from bnlib.grading import grade_batchnorm
from bnlib.groupnorm import GroupNorm, group_norm
from bnlib.history import History
from bnlib.layernorm import LayerNorm, layer_norm
from bnlib.models import PRACTITIONER_INIT, SmallCNN, build_cnn, build_mlp
from bnlib.parallel import map_in_processes
from bnlib.recalibrate import batch_norm_layers, recompute_bn_statistics
from bnlib.seeds import seeds
from bnlib.shifts import brightness, contrast, invert
from bnlib.sweep import SweepConfig, train_sweep
from bnlib.sync_batchnorm import SyncBatchNorm
from bnlib.training import TrainConfig, compare, default_device, evaluate, train

# The figures need matplotlib, whose import takes a while: the plotting names are imported at
# their first use (a module __getattr__, PEP 562), so that `import bnlib` does not import it.
_LAZY_NAMES = {
    "bnlib.plotting": ("plot_comparison", "plot_histories", "plot_seed_spread", "plot_step_loss",
                       "plot_sweep"),
    "bnlib.plot_diagnostics": ("plot_activation_histograms", "plot_depth_sweep",
                               "plot_gradient_histograms", "plot_saturation",
                               "plot_update_ratios"),
}


def __getattr__(name: str):
    for module_name, names in _LAZY_NAMES.items():
        if name in names:
            import importlib

            value = getattr(importlib.import_module(module_name), name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'bnlib' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormFunction",
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
    "MNIST",
    "PRACTITIONER_INIT",
    "RenormSchedule",
    "SmallCNN",
    "SweepConfig",
    "SyncBatchNorm",
    "TrainConfig",
    "UpdateRatioTracker",
    "batch_norm",
    "batch_norm_layers",
    "brightness",
    "build_cnn",
    "build_mlp",
    "compare",
    "contrast",
    "data_root",
    "default_device",
    "evaluate",
    "freeze_batchnorm",
    "fuse_bn",
    "fuse_conv_bn_eval",
    "fuse_linear_bn_eval",
    "grade_batchnorm",
    "group_norm",
    "invert",
    "layer_norm",
    "load_mnist",
    "map_in_processes",
    "numerical_gradient",
    "plot_activation_histograms",
    "plot_comparison",
    "plot_depth_sweep",
    "plot_gradient_histograms",
    "plot_histories",
    "plot_saturation",
    "plot_seed_spread",
    "plot_step_loss",
    "plot_sweep",
    "plot_update_ratios",
    "recompute_bn_statistics",
    "relative_error",
    "seeds",
    "set_batchnorm_eval",
    "take_snapshot",
    "train",
    "train_sweep",
]
