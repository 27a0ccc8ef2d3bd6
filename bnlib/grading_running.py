r"""The running-statistics checks of :func:`bnlib.grade_batchnorm`.

Four training batches go through the learner's layer and torch's; after each one the running
mean and variance are compared. When they differ, the learner's trajectory is compared with the
trajectories that known mistakes give on the same batches (biased variance, Keras's momentum,
no update, ...), simulated by :func:`bnlib.grading_probes.simulate_running`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnlib.grading_probes import (CHANNELS, TOLERANCE, Finding, Subject, biggest_gap,
                                  running_statistics, simulate_running)

__all__ = ["check_momentum", "check_momentum_none", "check_running_statistics"]

STEPS = 4


def _trajectory_gap(trajectory, expected) -> float:
    return max(biggest_gap(ours, theirs)
               for step_ours, step_theirs in zip(trajectory, expected)
               for ours, theirs in zip(step_ours, step_theirs))


def _mistaken_trajectories(batches, dims, rho: float | None):
    """(mistake, trajectory) pairs: what the running statistics would be after each batch."""
    constant = [(torch.zeros(CHANNELS, dtype=torch.float64),
                 torch.ones(CHANNELS, dtype=torch.float64))] * len(batches)
    if rho is None:
        return [("cumulative_missing", simulate_running(batches, dims, 0.1, True)),
                ("cumulative_missing", simulate_running(batches, dims, 1.0, True)),
                ("biased_running_var", simulate_running(batches, dims, None, False)),
                ("stats_not_updated", constant)]
    mistakes = [("biased_running_var", simulate_running(batches, dims, rho, False)),
                ("keras_momentum", simulate_running(batches, dims, 1 - rho, True)),
                ("keras_momentum_biased_var", simulate_running(batches, dims, 1 - rho, False)),
                ("stats_not_updated", constant),
                ("stats_replaced", simulate_running(batches, dims, 1.0, True)),
                ("stats_replaced", simulate_running(batches, dims, 1.0, False))]
    if rho != 0.1:
        mistakes.append(("momentum_ignored", simulate_running(batches, dims, 0.1, True)))
    return mistakes


def _shape_problem(layer, subject: Subject) -> Finding | None:
    mean, var = running_statistics(layer)
    if mean is None or var is None:
        return Finding(None, "no_running_statistics")
    if mean.numel() != CHANNELS or var.numel() != CHANNELS:
        return Finding(None, "wrong_dims", f"running_mean holds {mean.numel()} values and "
                                           f"running_var {var.numel()}, not one per channel "
                                           f"({CHANNELS}).")
    return None


def check_running_statistics(subject: Subject, **kwargs) -> Finding:
    """running_mean and running_var after each of four training batches."""
    layer, reference = subject.pair(**kwargs)
    batches = [subject.batch(seed) for seed in range(STEPS)]
    ours: list[tuple[Tensor, Tensor]] = []
    theirs: list[tuple[Tensor, Tensor]] = []
    for x in batches:
        layer(x), reference(x)
        problem = _shape_problem(layer, subject)
        if problem is not None:
            return problem
        ours.append(running_statistics(layer))
        theirs.append(running_statistics(reference))
    gap = _trajectory_gap(ours, theirs)
    if gap <= TOLERANCE:
        return Finding(gap, None)
    for diagnosis, trajectory in _mistaken_trajectories(batches, subject.reduce_dims,
                                                         reference.momentum):
        if _trajectory_gap(ours, trajectory) <= TOLERANCE:
            return Finding(gap, diagnosis)
    return Finding(gap, "unexplained")


def check_momentum(subject: Subject) -> Finding:
    """momentum=0.3: the running statistics follow torch's rule with that factor."""
    return check_running_statistics(subject, momentum=0.3)


def check_momentum_none(subject: Subject) -> Finding:
    """momentum=None: the running statistics are the cumulative average."""
    return check_running_statistics(subject, momentum=None)
