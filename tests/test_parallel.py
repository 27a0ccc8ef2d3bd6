"""bnlib.map_in_processes: the same results as a loop, in order, in other processes."""

from __future__ import annotations

import os

import pytest
import torch

from bnlib import build_mlp
from bnlib.training.processes import can_fork, map_in_processes

needs_fork = pytest.mark.skipif(not can_fork(), reason="needs fork (Linux, CUDA not initialised)")


def first_logits(seed: int) -> torch.Tensor:
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return build_mlp(norm="bnlib", seed=seed)(images).detach()


@pytest.mark.parametrize("processes", [None, 1, 2])
def test_results_equal_a_loop_in_order(processes):
    seeds = [3, 1, 2]
    expected = [first_logits(seed) for seed in seeds]
    results = map_in_processes(first_logits, seeds, processes=processes)
    assert len(results) == len(seeds)
    for result, reference in zip(results, expected):
        # Workers run one thread, this process maybe more: a matrix product split across
        # threads may round differently, so float32 rounding apart.
        torch.testing.assert_close(result, reference, rtol=1e-6, atol=1e-6)


@needs_fork
def test_work_runs_in_other_processes_and_sees_local_functions():
    offset = 10  # a closure: it cannot be pickled, only forked

    def pid_plus(item: int) -> tuple[int, int]:
        return os.getpid(), item + offset

    results = map_in_processes(pid_plus, [1, 2], processes=2)
    assert [value for _, value in results] == [11, 12]
    assert all(pid != os.getpid() for pid, _ in results)


def test_one_process_runs_here():
    assert map_in_processes(lambda item: os.getpid(), [0, 1], processes=1) == [os.getpid()] * 2


def test_errors_in_the_function_reach_the_caller():
    def fail(item: int) -> int:
        raise ArithmeticError(f"item {item}")

    with pytest.raises(ArithmeticError, match="item [01]"):
        map_in_processes(fail, [0, 1], processes=2)


@pytest.mark.parametrize("processes", [0, -1, 1.5, True])
def test_bad_process_counts_are_refused(processes):
    with pytest.raises(ValueError, match="processes must be a positive int"):
        map_in_processes(abs, [1], processes=processes)
