"""Training loops, their settings and records, and running them in several processes.

* :mod:`bnlib.training.config`: :class:`TrainConfig` and :class:`SweepConfig`, on one
  :class:`LoopConfig`;
* :mod:`bnlib.training.loop`: :func:`train`, :func:`compare` (models in lockstep on identical
  batches) and :func:`evaluate`; :mod:`bnlib.training.sweep`: :func:`train_sweep`, K networks
  trained at once;
* :mod:`bnlib.training.history`: a run's :class:`History`; :mod:`bnlib.training.device`: which
  device a run uses;
* :mod:`bnlib.training.processes`: independent runs (seeds) side by side, one forked process per
  core (:func:`map_in_processes`);
* :mod:`bnlib.training.distributed` and :mod:`bnlib.training.data_parallel`: a launcher for
  local ``torch.distributed`` process groups, and data-parallel training of the book's MLP.
"""

from bnlib.training.config import LoopConfig, SweepConfig, TrainConfig
from bnlib.training.device import check_device, default_device
from bnlib.training.history import History
from bnlib.training.loop import compare, evaluate, train
from bnlib.training.processes import map_in_processes
from bnlib.training.sweep import train_sweep

__all__ = ["History", "LoopConfig", "SweepConfig", "TrainConfig", "check_device", "compare",
           "default_device", "evaluate", "map_in_processes", "train", "train_sweep"]
