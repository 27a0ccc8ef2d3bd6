r"""The running-statistics checks of :func:`bnlib.grade_batchnorm`: their values over several
training steps, their counter ``num_batches_tracked``, and that eval mode leaves them alone.

Four training batches go through the learner's layer and torch's; after each one the running
mean and variance are compared. When they differ, the learner's trajectory is compared with the
trajectories that known mistakes give on the same batches (biased variance, Keras's momentum,
no update, ...), simulated by :func:`bnlib.grading.probes.simulate_running`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnlib.grading.probes import (
    CHANNELS,
    TOLERANCE,
    Finding,
    Subject,
    biggest_gap,
    running_statistics,
    simulate_running,
)

__all__ = ["check_eval_leaves_statistics", "check_momentum", "check_momentum_none",
           "check_num_batches_tracked", "check_running_statistics"]

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


def check_eval_leaves_statistics(subject: Subject) -> Finding:
    """Two training steps, then two eval-mode passes: the running statistics must stay put."""
    layer = subject.build()
    for seed in range(2):
        layer(subject.batch(seed))
    before = running_statistics(layer)
    if before[0] is None or before[1] is None:
        return Finding(None, "no_running_statistics")
    layer.eval()
    for seed in (3, 4):
        layer(subject.batch(seed))
    after = running_statistics(layer)
    gap = max(biggest_gap(a, b) for a, b in zip(after, before))
    if gap == 0.0:
        return Finding(gap, None)
    with torch.no_grad():
        layer(subject.batch(5))
    moved_under_no_grad = any(biggest_gap(a, b) > 0
                              for a, b in zip(running_statistics(layer), after))
    return Finding(gap, "stats_updated_in_eval" if moved_under_no_grad else "grad_mode_switch")


def _count(layer) -> int | None:
    value = getattr(layer, "num_batches_tracked", None)
    return int(value) if isinstance(value, Tensor) and value.numel() == 1 else None


def check_num_batches_tracked(subject: Subject) -> Finding:
    """A long counter: 0 when built, +1 per training batch, unchanged in eval mode."""
    layer = subject.build()
    counts = [_count(layer)]
    if counts[0] is None:
        return Finding(None, "num_batches_tracked_missing")
    for seed in range(3):
        layer(subject.batch(seed))
        counts.append(_count(layer))
    layer.eval()
    layer(subject.batch(3))
    counts.append(_count(layer))
    dtype = layer.num_batches_tracked.dtype
    if counts == [0, 1, 2, 3, 3] and dtype == torch.long:
        return Finding(None, None)  # a count: nothing numeric to report
    return Finding(None, "num_batches_tracked_wrong",
                   f"Counts {counts} (dtype {dtype}) where torch has [0, 1, 2, 3, 3] "
                   "(torch.long) after building, three training batches and one eval batch.")
