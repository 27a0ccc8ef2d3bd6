"""Training steps without autograd, for speed: the MLPs' forward and backward written out on
buffers allocated once, one network or K stacked networks at a time.

* :mod:`bnlib.engine.manual`: :class:`ManualEngine` and :class:`AutogradEngine`, and which one
  trains a model (:func:`engine_for`, :func:`make_engines`);
* :mod:`bnlib.engine.steps`: the layer steps of one network; :mod:`bnlib.engine.stacked`: the
  same on K networks at once (:class:`NetworkStack`);
* :mod:`bnlib.engine.support`: which models the manual step may train, and why not;
* :mod:`bnlib.engine.flat`: a model's parameters in one flat storage, for one optimizer call;
* :mod:`bnlib.engine.optim`: torch's optimiser for a model's parameters.
"""

from bnlib.engine.flat import flatten_parameters, separate_parameters
from bnlib.engine.manual import (
    ENGINES,
    AutogradEngine,
    ManualEngine,
    engine_for,
    make_engines,
    manual_engines,
)
from bnlib.engine.optim import make_optimizer
from bnlib.engine.stacked import NetworkStack
from bnlib.engine.support import observers_reason, unsupported_reason

__all__ = ["ENGINES", "AutogradEngine", "ManualEngine", "NetworkStack", "engine_for",
           "flatten_parameters", "make_engines", "make_optimizer", "manual_engines",
           "observers_reason", "separate_parameters", "unsupported_reason"]
