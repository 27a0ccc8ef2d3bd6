"""The network and its optimisers written out by hand: the book's maths, each forward beside its
backward (chapters by_hand and backprop).

* :mod:`bnlib.by_hand.layers`: every layer of the MLP and its loss, forward and backward;
* :mod:`bnlib.by_hand.optim`: the Adam and SGD steps; :mod:`bnlib.by_hand.stacked_optim`: the
  same for K stacked networks, each with its own learning rate;
* :mod:`bnlib.by_hand.gradcheck`: a small finite-difference gradient checker.
"""

from bnlib.by_hand.gradcheck import numerical_gradient, relative_error
from bnlib.by_hand.layers import mlp_backward, mlp_forward
from bnlib.by_hand.optim import AdamState, SGDState, adam_step, sgd_step
from bnlib.by_hand.stacked_optim import StackedAdam, StackedSGD

__all__ = ["AdamState", "SGDState", "StackedAdam", "StackedSGD", "adam_step", "mlp_backward",
           "mlp_forward", "numerical_gradient", "relative_error", "sgd_step"]
