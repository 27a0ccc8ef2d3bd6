"""SyncBatchNorm in practice: conversion order, hangs, subgroups, traffic and DDP's buffers.

Every function here runs on each process of a gloo group started by
:func:`bnlib.training.distributed.run_on_processes` (they live in a module so that the new
processes can import them) and returns plain tensors and numbers for the calling notebook to
compare.
:func:`practice_demos` runs them all in one group of 4 processes, to start the processes once.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.algorithms import Join
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from bnlib.data import MNIST
from bnlib.models import build_cnn, build_mlp
from bnlib.nn.sync import SyncBatchNorm

__all__ = ["buffer_broadcast", "communication_per_step", "conversion_order", "count_collectives",
           "equal_batch_counts", "first_line", "join_with_sync_batchnorm", "pair_statistics",
           "practice_demos", "random_batches", "skipped_forward"]

WORLD_SIZE = 4  # practice_demos needs two pairs of processes: ranks (0, 1) and (2, 3)
PAIRS = ([0, 1], [2, 3])


def first_line(error: Exception) -> str:
    """The error's type and the first line of its message."""
    return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def random_batches(rank: int, count: int, size: int = 4) -> list[Tensor]:
    """Flattened image-sized random batches, different on every rank (an identity check only)."""
    generator = torch.Generator().manual_seed(100 + rank)
    return [torch.randn(size, 784, generator=generator) for _ in range(count)]


def _mlp_steps(model: nn.Module, batches: list[Tensor]) -> list[float]:
    """SGD steps on the mean square of the outputs: enough to run forward and backward."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for batch in batches:
        loss = model(batch).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def conversion_order(rank: int, group) -> dict:
    """``convert_sync_batchnorm`` before and after wrapping in DDP, torch's layer and bnlib's."""
    result = {}
    try:  # torch's layer, converted first, as its documentation asks
        DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(
            build_mlp(norm="torch", seed=0)), process_group=group)
        result["torch_before"] = "wrapped"
    except ValueError as error:
        result["torch_before"] = first_line(error)
    wrapped = DistributedDataParallel(build_mlp(norm="torch", seed=0), process_group=group)
    old_weight = wrapped.module[2].weight
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(wrapped, process_group=group)
    result["torch_after_returns_wrapper"] = converted is wrapped
    result["torch_after_layer"] = type(wrapped.module[2]).__name__
    result["torch_after_shares_weight"] = wrapped.module[2].weight is old_weight
    try:
        wrapped(random_batches(rank, 1)[0])
        result["torch_after_forward"] = "ran"
    except ValueError as error:
        result["torch_after_forward"] = first_line(error)
    batches = random_batches(rank, 3)
    before = DistributedDataParallel(SyncBatchNorm.convert_sync_batchnorm(
        build_mlp(norm="bnlib", seed=0), process_group=group), process_group=group)
    after = SyncBatchNorm.convert_sync_batchnorm(DistributedDataParallel(
        build_mlp(norm="bnlib", seed=0), process_group=group), process_group=group)
    result["bnlib_after_layer"] = type(after.module[2]).__name__
    result["bnlib_before_losses"] = _mlp_steps(before, batches)
    result["bnlib_after_losses"] = _mlp_steps(after, batches)
    result["bnlib_weights_equal"] = all(torch.equal(p, q) for p, q in zip(
        before.parameters(), after.parameters()))
    return result


def skipped_forward(rank: int, short_group) -> dict:
    """Rank 1 has one batch fewer than rank 0, whose last SyncBatchNorm forward waits for it.

    ``short_group`` should have a short timeout, after which gloo raises on rank 0. Rank 1,
    meanwhile, has returned and gone on to other work.
    """
    batches = random_batches(rank, 3 - rank)
    result: dict = {"batches": len(batches), "steps": 0}
    model = SyncBatchNorm.convert_sync_batchnorm(build_mlp(norm="bnlib", seed=0),
                                                 process_group=short_group)
    for batch in batches:
        started = time.perf_counter()
        try:
            model(batch).square().mean().backward()
        except RuntimeError as error:
            result["waited_s"] = time.perf_counter() - started
            result["error"] = first_line(error)
            break
        result["steps"] += 1
    return result


def equal_batch_counts(rank: int, group) -> dict:
    """The same uneven batches, trimmed first to the smallest count over the group."""
    batches = random_batches(rank, 3 - rank)
    count = torch.tensor(len(batches))
    dist.all_reduce(count, op=dist.ReduceOp.MIN, group=group)
    model = SyncBatchNorm.convert_sync_batchnorm(build_mlp(norm="bnlib", seed=0),
                                                 process_group=group)
    losses = _mlp_steps(DistributedDataParallel(model, process_group=group),
                        batches[:int(count)])
    return {"batches": len(batches), "steps": len(losses), "running_mean": model[2].running_mean}


def join_with_sync_batchnorm(rank: int, group) -> dict:
    """The uneven batches under ``Join(throw_on_early_termination=True)``: every rank raises."""
    model = DistributedDataParallel(SyncBatchNorm.convert_sync_batchnorm(
        build_mlp(norm="bnlib", seed=0), process_group=group), process_group=group)
    batches = random_batches(rank, 3 - rank)
    result: dict = {"batches": len(batches), "steps": 0}
    try:
        with Join([model], throw_on_early_termination=True):
            for batch in batches:
                model(batch).square().mean().backward()
                result["steps"] += 1
    except RuntimeError as error:
        result["error"] = first_line(error)
    return result


def pair_statistics(inputs: Tensor, pair_group) -> dict:
    """SyncBatchNorm over this process's pair and over every process, on its ``inputs``."""
    by_pair = SyncBatchNorm(inputs.shape[1], process_group=pair_group).double()
    by_world = SyncBatchNorm(inputs.shape[1]).double()
    return {"pair_output": by_pair(inputs).detach(), "pair_running_var": by_pair.running_var,
            "world_output": by_world(inputs).detach()}


@contextmanager
def count_collectives() -> Iterator[list[tuple[str, int]]]:
    """Record ``(name, bytes)`` for every ``all_gather`` and ``all_reduce`` called through
    :mod:`torch.distributed` while the block runs, as SyncBatchNorm's collectives are.

    The bytes are those of the tensor this process contributes. The functions are swapped back
    on exit; DDP's own gradient all-reduce runs in C++ and is not seen here.
    """
    records: list[tuple[str, int]] = []
    all_gather, all_reduce = dist.all_gather, dist.all_reduce

    def counted_gather(tensor_list, tensor, *args, **kwargs):
        records.append(("all_gather", tensor.numel() * tensor.element_size()))
        return all_gather(tensor_list, tensor, *args, **kwargs)

    def counted_reduce(tensor, *args, **kwargs):
        records.append(("all_reduce", tensor.numel() * tensor.element_size()))
        return all_reduce(tensor, *args, **kwargs)

    dist.all_gather, dist.all_reduce = counted_gather, counted_reduce
    try:
        yield records
    finally:
        dist.all_gather, dist.all_reduce = all_gather, all_reduce


def _counting_allreduce(state, bucket):
    """DDP communication hook: note the bucket's bytes, then all-reduce it as DDP would.

    Unannotated: DDP checks the annotations as objects, which postponed annotations are not.
    """
    bucket_bytes, group = state
    bucket_bytes.append(bucket.buffer().numel() * bucket.buffer().element_size())
    return allreduce_hook(group, bucket)


def communication_per_step(images: Tensor, group) -> dict:
    """Bytes this process contributes in one training step of the book's CNN on ``images``:
    SyncBatchNorm's collectives, and DDP's gradient all-reduce (with per-process BN)."""
    synced = SyncBatchNorm.convert_sync_batchnorm(build_cnn(seed=0), process_group=group)
    with count_collectives() as sync_calls:
        synced(images).square().mean().backward()
    plain = DistributedDataParallel(build_cnn(seed=0), process_group=group,
                                    forward_sync_buffers=False)
    bucket_bytes: list[int] = []
    plain.register_comm_hook((bucket_bytes, group), _counting_allreduce)
    plain(images).square().mean().backward()
    return {"sync_calls": sync_calls, "gradient_buckets": bucket_bytes,
            "bn_channels": [m.num_features for m in synced.modules()
                            if isinstance(m, SyncBatchNorm)],
            "parameter_bytes": sum(p.numel() * p.element_size() for p in plain.parameters()),
            "buffer_bytes": sum(b.numel() * b.element_size() for b in plain.buffers())}


def _running_means(model: nn.Module) -> Tensor:
    return torch.cat([m.running_mean for m in model.modules() if hasattr(m, "running_mean")])


def _running_vars(model: nn.Module) -> Tensor:
    return torch.cat([m.running_var for m in model.modules() if hasattr(m, "running_var")])


def _buffers_during_training(rank: int, group, train_set: MNIST, steps: int, batch_size: int,
                             seed: int, broadcast: bool) -> dict:
    model = build_mlp(norm="bnlib", seed=seed)
    trained = DistributedDataParallel(model, process_group=group, forward_sync_buffers=broadcast)
    before: list[Tensor] = []
    after: list[Tensor] = []
    hook = model.register_forward_pre_hook(
        lambda module, _, seen=before: seen.append(_running_means(module).clone()))
    optimizer = torch.optim.Adam(trained.parameters(), lr=0.01)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
    local = batch_size // dist.get_world_size(group)
    for step in range(steps):
        mine = order[step * batch_size + rank * local:step * batch_size + (rank + 1) * local]
        loss = F.cross_entropy(trained(train_set.images[mine]), train_set.labels[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        after.append(_running_means(model).clone())
    hook.remove()
    return {"before_forward": torch.stack(before), "after_step": torch.stack(after),
            "var": _running_vars(model)}


def buffer_broadcast(rank: int, group, train_set: MNIST, steps: int, batch_size: int,
                     seed: int) -> dict:
    """Per-process BN under DDP with ``forward_sync_buffers`` (formerly ``broadcast_buffers``)
    True and False.

    Returns, for each setting, the running means of both BN layers at every step as the
    module's forward starts (after DDP's broadcast, if any) and after the step, and the running
    variances at the end. All processes draw the same global batches (``steps * batch_size``
    examples of ``train_set`` at most); each takes its equal slice of every one.
    """
    if steps * batch_size > len(train_set):
        raise ValueError(f"{steps} steps of {batch_size} need {steps * batch_size} examples, "
                         f"the training set has {len(train_set)}.")
    return {broadcast: _buffers_during_training(rank, group, train_set, steps, batch_size, seed,
                                                broadcast)
            for broadcast in (True, False)}


def practice_demos(rank: int, world_size: int, train_set: MNIST, inputs: Tensor, images: Tensor,
                   steps: int, batch_size: int, seed: int, timeout_s: float) -> dict:
    """Every demonstration of this module, in one group of ``WORLD_SIZE`` processes.

    Only the first pair of processes runs the demonstrations with DDP (whose construction
    imports ``torch._dynamo``, seconds of work per process); both pairs run
    :func:`pair_statistics` on ``inputs[rank]``.
    """
    if world_size != WORLD_SIZE:
        raise ValueError(f"practice_demos runs on {WORLD_SIZE} processes, got {world_size}.")
    pairs = [dist.new_group(pair) for pair in PAIRS]  # every process creates every group, in order
    short = dist.new_group(PAIRS[0], timeout=datetime.timedelta(seconds=timeout_s))
    result = {"pairs": pair_statistics(inputs[rank], pairs[rank // 2])}
    if rank in PAIRS[0]:
        group = pairs[0]
        result.update(
            conversion=conversion_order(rank, group), skipped=skipped_forward(rank, short),
            equal_counts=equal_batch_counts(rank, group),
            join=join_with_sync_batchnorm(rank, group),
            communication=communication_per_step(images[rank], group),
            buffers=buffer_broadcast(rank, group, train_set, steps, batch_size, seed))
    dist.barrier()
    return result
