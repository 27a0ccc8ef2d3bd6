"""Independent runs side by side: one forked process per core, each on one thread.

A small network's training step is mostly per-call overhead, which a second thread does not
shorten; a second *process* does. Seeds of an experiment are independent, so they can train at
the same time, one per core, and give exactly the results they give one after the other.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

from bnlib._checks import require_int

__all__ = ["can_fork", "map_in_processes"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def can_fork() -> bool:
    """Whether work can be handed to forked processes here: on Linux, before CUDA is initialised.

    Forking copies the parent's memory (data sets and functions defined in a notebook included)
    without pickling it. Elsewhere fork is unavailable (Windows) or unsafe (macOS), and a process
    that has initialised CUDA cannot use it in a forked child.
    """
    return sys.platform.startswith("linux") and not torch.cuda.is_initialized()


def map_in_processes(function: Callable[[ItemT], ResultT], items: Iterable[ItemT], *,
                     processes: int | None = None) -> list[ResultT]:
    """Return ``[function(item) for item in items]``, computed in forked processes where possible.

    Each item runs in a worker process forked from this one, so ``function`` (a closure too) may
    be defined in a notebook and may read the caller's data; its results are pickled back, in
    the order of ``items``. Workers keep this process's torch settings, but run on one thread
    each. Where :func:`can_fork` is false, or with one process, the items run here, one after
    the other.
    An exception raised by ``function`` is raised here.

    Args:
        function: what to compute for each item; must return something picklable.
        items: the inputs, for example seeds.
        processes: at most this many workers. Default: ``None`` (the number of CPU cores).

    Returns:
        The results, in the order of ``items``.
    """
    items = list(items)
    if processes is not None:
        require_int("processes", processes, 1,
                    message=f"processes must be a positive int or None, got {processes!r}")
    workers = min(len(items), processes or os.cpu_count() or 1)
    if workers <= 1 or not can_fork():
        return [function(item) for item in items]
    global _task
    _task = function  # forked workers find it here: it is copied with the process, not pickled
    try:
        # One thread per worker: the point is one process per core, and a forked child must not
        # enter the parent's OpenMP thread pool, which does not survive a fork.
        with multiprocessing.get_context("fork").Pool(
                workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return pool.map(_run_task, items, chunksize=1)
    finally:
        _task = None


_task: Callable | None = None


def _run_task(item):
    return _task(item)
