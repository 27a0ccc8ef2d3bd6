"""bnlib: batch normalization from scratch in PyTorch, the tested library behind the book.

* :mod:`bnlib.functional` and :mod:`bnlib.batchnorm`: BN as a function and as drop-in modules for
  ``torch.nn.BatchNorm1d``/``BatchNorm2d``, with a hand-derived backward pass
  (:mod:`bnlib.manual_backward`) that also works under :mod:`torch.func` transforms;
* :mod:`bnlib.gradcheck`: a small finite-difference gradient checker;
* :mod:`bnlib.fusion`: BN folded into the layer before it, for inference;
* :mod:`bnlib.sync_batchnorm`, :mod:`bnlib.distributed` and :mod:`bnlib.data_parallel`: BN
  over a batch split across processes, a launcher for local CPU process groups, and data-parallel
  training of the book's MLP;
* :mod:`bnlib.ghost_batchnorm`: BN with statistics over virtual sub-batches;
* :mod:`bnlib.mnist_files` and :mod:`bnlib.data`: the MNIST files found, fetched and checked,
  and the in-memory set with its batch iterator;
* :mod:`bnlib.models`: the MLP and CNN builders used in the book;
* :mod:`bnlib.training` and :mod:`bnlib.optim`: a training loop that returns its
  :class:`~bnlib.history.History`, and side-by-side comparisons on identical batches;
* :mod:`bnlib.plotting`: figures of those histories;
* :mod:`bnlib.parallel`: independent runs (seeds) side by side, one forked process per core.
"""

from bnlib.batchnorm import BatchNorm1d, BatchNorm2d
from bnlib.data import MNIST, Batches, DataError, data_root, load_mnist
from bnlib.functional import BatchNormFunction, batch_norm
from bnlib.fusion import fuse_bn, fuse_conv_bn_eval, fuse_linear_bn_eval
from bnlib.ghost_batchnorm import GhostBatchNorm
from bnlib.gradcheck import numerical_gradient, relative_error
from bnlib.models import SmallCNN, build_cnn, build_mlp
from bnlib.parallel import map_in_processes
from bnlib.plotting import plot_comparison, plot_histories, plot_seed_spread, plot_step_loss
from bnlib.history import History
from bnlib.sync_batchnorm import SyncBatchNorm
from bnlib.training import TrainConfig, compare, default_device, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormFunction",
    "Batches",
    "DataError",
    "GhostBatchNorm",
    "History",
    "MNIST",
    "SmallCNN",
    "SyncBatchNorm",
    "TrainConfig",
    "batch_norm",
    "build_cnn",
    "build_mlp",
    "compare",
    "data_root",
    "default_device",
    "evaluate",
    "fuse_bn",
    "fuse_conv_bn_eval",
    "fuse_linear_bn_eval",
    "load_mnist",
    "map_in_processes",
    "numerical_gradient",
    "plot_comparison",
    "plot_histories",
    "plot_seed_spread",
    "plot_step_loss",
    "relative_error",
    "train",
]
