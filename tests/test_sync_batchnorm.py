"""SyncBatchNorm: on 2 and 3 CPU processes (gloo) it equals one BN over the concatenated batch."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.distributed as dist
from sync_workers import all_checks, cases_for, reference, sync_worker
from synthetic import synthetic_mnist
from torch import nn

from bnlib import BatchNorm1d, BatchNorm2d, build_mlp
from bnlib.nn.sync import SyncBatchNorm, combine_statistics
from bnlib.training.data_parallel import DataParallelConfig, train_data_parallel
from bnlib.training.distributed import run_on_processes

TOL = {"rtol": 1e-10, "atol": 1e-10}
PER_PROCESS = ("output", "grad_input", "eval_output")
SHARED = ("running_mean", "running_var", "num_batches_tracked")


TRAIN, TEST = synthetic_mnist(96, seed=1), synthetic_mnist(40, seed=2)


def data_parallel_configs(world_size: int) -> list[DataParallelConfig]:
    return [DataParallelConfig(norm=norm, batch_size=4 * world_size, steps=12, eval_every=6)
            for norm in ("local", "sync")]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n} processes")
def spawned(request):
    """Every check run once on ``world_size`` spawned processes: (world size, results per rank)."""
    world_size = request.param
    configs = data_parallel_configs(world_size)
    return world_size, run_on_processes(all_checks, world_size, cases_for(world_size), TRAIN,
                                        TEST, configs)


def test_every_process_matches_one_bn_over_the_whole_batch(spawned):
    world_size, results = spawned
    cases, per_rank = cases_for(world_size), [result["cases"] for result in results]
    for index, case in enumerate(cases):
        expected = reference(case)
        parameter_grads = {"grad_weight": 0, "grad_bias": 0} if case.affine else {}
        for rank, results in enumerate(per_rank):
            got, part = results[index], case.slice(rank)
            for key in PER_PROCESS:
                torch.testing.assert_close(got[key], expected[key][:, part] if key != "eval_output"
                                           else expected[key][part], **TOL,
                                           msg=f"{case.name}, rank {rank}: {key}")
            for key in SHARED:
                torch.testing.assert_close(got[key], expected[key], **TOL,
                                           msg=f"{case.name}, rank {rank}: {key}")
            for key in parameter_grads:
                parameter_grads[key] = parameter_grads[key] + got[key]
        for key, summed in parameter_grads.items():
            torch.testing.assert_close(summed, expected[key], **TOL, msg=f"{case.name}: {key}")


def test_data_parallel_sync_bn_trains_as_one_process_on_the_whole_batch(spawned):
    """DDP with SyncBatchNorm follows the single-process run; with per-process BN (4 examples
    per process) it does not."""
    world_size, results = spawned
    local, sync = results[0]["data_parallel"]
    single = train_data_parallel(TRAIN, TEST, data_parallel_configs(world_size)[1])
    assert len(sync["loss"]) == 12 and sync["eval_step"] == [6, 12]
    torch.testing.assert_close(torch.tensor(sync["loss"]), torch.tensor(single["loss"]),
                               rtol=1e-4, atol=1e-5)
    # the two runs round differently: an example whose largest logits almost tie may flip
    assert all(abs(a - b) <= 1 / len(TEST) + 1e-12
               for a, b in zip(sync["test_acc"], single["test_acc"]))
    assert max(abs(a - b) for a, b in zip(local["loss"], single["loss"])) > 1e-3
    for other in results[1:]:  # every process reports the same averaged losses
        assert other["data_parallel"][1]["loss"] == sync["loss"]


def test_torch_sync_batchnorm_refuses_cpu_where_ours_runs(spawned):
    """The reason bnlib's layer exists for this book: torch's needs GPUs in a process group."""
    _, results = spawned
    assert all(result["torch_refuses_cpu"] for result in results)


def test_data_parallel_config_is_checked():
    with pytest.raises(ValueError, match="norm"):
        DataParallelConfig(norm="global")
    with pytest.raises(ValueError, match="steps"):
        DataParallelConfig(steps=0)


@pytest.mark.parametrize("layer_class, shape", [(BatchNorm1d, (6, 4)), (BatchNorm2d, (3, 4, 5, 5))])
def test_without_process_group_it_is_plain_bn(layer_class, shape):
    assert not dist.is_initialized()
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    sync, plain = SyncBatchNorm(4).double(), layer_class(4).double()
    for mode in ("train", "eval"):
        getattr(sync, mode)(), getattr(plain, mode)()
        torch.testing.assert_close(sync(x), plain(x))
        grad_sync, = torch.autograd.grad(sync(x).square().sum(), x)
        grad_plain, = torch.autograd.grad(plain(x).square().sum(), x)
        torch.testing.assert_close(grad_sync, grad_plain)
    torch.testing.assert_close(sync.running_var, plain.running_var)


def test_constructor_and_state_dict_match_torch():
    ours = inspect.signature(SyncBatchNorm.__init__).parameters
    theirs = inspect.signature(nn.SyncBatchNorm.__init__).parameters
    shared = [name for name in theirs if name in ours]
    assert shared == list(ours)[: len(shared)]
    assert {"num_features", "eps", "momentum", "affine", "track_running_stats",
            "process_group", "device", "dtype", "bias"} <= set(shared)
    assert list(SyncBatchNorm(5).state_dict()) == list(nn.SyncBatchNorm(5).state_dict())
    assert (list(SyncBatchNorm(5, bias=False).state_dict())
            == list(nn.SyncBatchNorm(5, bias=False).state_dict()))


def test_convert_keeps_a_bn_without_bias():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, bias=False)).double()
    converted = SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], SyncBatchNorm) and converted[1].bias is None
    x = torch.randn(6, 4, dtype=torch.float64)
    reference = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, bias=False)).double()
    reference.load_state_dict(converted.state_dict())
    torch.testing.assert_close(converted(x), reference(x))


@pytest.mark.parametrize("norm", ["torch", "bnlib"])
def test_convert_sync_batchnorm_shares_parameters_and_mode(norm):
    model = build_mlp((12, 8, 8, 3), norm=norm, seed=0).eval()
    originals = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, BatchNorm1d))]
    converted = SyncBatchNorm.convert_sync_batchnorm(model, process_group="group")
    layers = [m for m in converted.modules() if isinstance(m, SyncBatchNorm)]
    assert len(layers) == len(originals) == 2
    for old, new in zip(originals, layers):
        assert new.weight is old.weight and new.running_mean is old.running_mean
        assert not new.training and new.process_group == "group"
    x = torch.randn(4, 12)
    torch.testing.assert_close(converted(x), build_mlp((12, 8, 8, 3), norm=norm, seed=0).eval()(x))


def test_combined_statistics_are_exact_for_a_large_mean():
    torch.manual_seed(0)
    parts = [torch.randn(n, 2, dtype=torch.float64) + 1e8 for n in (1, 4, 7)]
    rows = [torch.stack([torch.full((2,), float(len(p)), dtype=torch.float64), p.mean(0),
                         (p - p.mean(0)).square().sum(0)]) for p in parts]
    count, mean, squares = combine_statistics(torch.stack(rows))
    whole = torch.cat(parts)
    torch.testing.assert_close(count, torch.full((2,), 12.0, dtype=torch.float64))
    torch.testing.assert_close(mean, whole.mean(0))
    # With a mean 1e8 times the spread, float64 data only hold ~8 exact digits of deviation:
    # the exact combination keeps them, while the one-pass sum of squares loses all of them.
    torch.testing.assert_close(squares / 11, whole.var(0), rtol=1e-6, atol=0)
    naive = (whole.square().sum(0) - 12 * whole.mean(0).square()) / 11
    assert ((naive - whole.var(0)).abs() / whole.var(0)).min() > 1e-3


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="channels"):
        SyncBatchNorm(3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="dims"):
        SyncBatchNorm(3)(torch.randn(3))
    with pytest.raises(ValueError, match="importable"):
        run_on_processes(lambda rank, size: rank, 2)
    with pytest.raises(ValueError, match="world_size"):
        run_on_processes(sync_worker, 0, [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_matches_torch_sync_batchnorm_on_gpus():
    from sync_workers import gpu_worker

    # NCCL wants one GPU per process; with a single GPU both processes share it through gloo.
    two_gpus = torch.cuda.device_count() >= 2 and dist.is_nccl_available()
    results = run_on_processes(gpu_worker, 2, backend="nccl" if two_gpus else "gloo")
    for ours, theirs in results:
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-5, msg=key)
