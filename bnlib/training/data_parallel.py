"""Data-parallel training of the book's MLP with per-process BN or with :class:`SyncBatchNorm`.

:func:`train_data_parallel` runs on every process of a group (started, for example, by
:func:`~bnlib.training.distributed.run_on_processes`) or alone. All processes draw the same
sequence of global batches and each takes its equal slice, so one process trained on the whole
batch sees exactly the examples that the group sees together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from bnlib.data.mnist import MNIST
from bnlib.models import build_mlp
from bnlib.nn.sync import SyncBatchNorm
from bnlib.training.loop import evaluate

__all__ = ["DataParallelConfig", "data_parallel_runs", "train_data_parallel"]

NORMS = ("local", "sync")


@dataclass(frozen=True)
class DataParallelConfig:
    """Settings of one data-parallel run.

    Args:
        norm: ``"local"`` (each process normalises with its own slice's statistics) or
            ``"sync"`` (:class:`SyncBatchNorm`, the whole batch's). Default: ``"sync"``.
        batch_size: examples per step over all processes together. Default: ``16``.
        steps: optimisation steps. Default: ``300``.
        lr: Adam's learning rate. Default: ``0.01``.
        eval_every: evaluate on the test set every this many steps. Default: ``50``.
        seed: seeds the initial weights and the batch order. Default: ``0``.
    """

    norm: str = "sync"
    batch_size: int = 16
    steps: int = 300
    lr: float = 0.01
    eval_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}.")
        for name in ("batch_size", "steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def mean_over_processes(value: torch.Tensor, world_size: int) -> float:
    """The mean of a scalar tensor over the processes of the group (``value`` itself alone)."""
    if world_size > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value.item() / world_size


def train_data_parallel(train_set: MNIST, test_set: MNIST, config: DataParallelConfig) -> dict:
    r"""Train the 784-32-32-10 MLP with BN on this process's slice of every global batch.

    With a process group of :math:`P` processes the model is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients, and each
    process takes :math:`B / P` examples of every global batch of :math:`B`. Without one the
    process trains alone on the whole batch (and :class:`SyncBatchNorm` is plain BN).

    Args:
        train_set (MNIST): training examples; the same on every process.
        test_set (MNIST): examples for the evaluations, in eval mode, which every process runs
            on its own copy of the model (with per-process BN the copies' running statistics
            differ by the last step's update).
        config (DataParallelConfig): the run's settings.

    Returns:
        dict: ``"loss"``, the training loss of every step averaged over the processes;
        ``"eval_step"`` and ``"test_acc"``, the test accuracy every ``config.eval_every`` steps.
    """
    rank, world_size = rank_and_world_size()
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} must split equally over "
                         f"{world_size} processes.")
    model = build_mlp(norm="bnlib", seed=config.seed)
    if config.norm == "sync":
        model = SyncBatchNorm.convert_sync_batchnorm(model)
    trained = DistributedDataParallel(model) if world_size > 1 else model
    optimizer = torch.optim.Adam(trained.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    local = config.batch_size // world_size
    history: dict[str, list] = {"loss": [], "eval_step": [], "test_acc": []}
    order = torch.empty(0, dtype=torch.long)
    for step in range(1, config.steps + 1):
        if len(order) < config.batch_size:  # a fresh permutation once the data run out
            order = torch.randperm(len(train_set), generator=generator)
        batch, order = order[:config.batch_size], order[config.batch_size:]
        mine = batch[rank * local:(rank + 1) * local]
        loss = F.cross_entropy(trained(train_set.images[mine]), train_set.labels[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history["loss"].append(mean_over_processes(loss.detach(), world_size))
        if step % config.eval_every == 0:
            history["eval_step"].append(step)
            history["test_acc"].append(evaluate(model, test_set)[1])
    return history


def data_parallel_runs(
    rank: int, world_size: int, train_set: MNIST, test_set: MNIST,
    configs: list[DataParallelConfig],
) -> list[dict]:
    """Worker for :func:`~bnlib.training.distributed.run_on_processes`: one run per config, in
    order."""
    del rank, world_size  # the process group already knows them
    return [train_data_parallel(train_set, test_set, config) for config in configs]
