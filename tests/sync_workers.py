"""Cases and per-process workers for the SyncBatchNorm tests (a module, so spawned processes can
import the workers), plus the single-process reference they are compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from bnlib.nn import SyncBatchNorm


@dataclass(frozen=True)
class Case:
    """A global batch split into per-process slices of ``sizes`` examples, for ``steps`` steps."""

    name: str
    sizes: tuple[int, ...]
    trailing: tuple[int, ...] = ()  # dims after (N, C): () for 1d input, (H, W) for 2d
    channels: int = 3
    affine: bool = True
    momentum: float | None = 0.1
    offset: float = 0.0
    steps: int = 2
    seed: int = 0

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs and output gradients of every step, and an eval batch: the global batch."""
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.steps, sum(self.sizes), self.channels) + self.trailing
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * 3 + self.offset
        dy = torch.randn(shape, generator=generator, dtype=torch.float64)
        x_eval = torch.randn(shape[1:], generator=generator, dtype=torch.float64) + self.offset
        return x, dy, x_eval

    def parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed + 1)
        return (torch.randn(self.channels, generator=generator, dtype=torch.float64),
                torch.randn(self.channels, generator=generator, dtype=torch.float64))

    def slice(self, rank: int) -> slice:
        start = sum(self.sizes[:rank])
        return slice(start, start + self.sizes[rank])


def cases_for(world_size: int) -> list[Case]:
    """Unequal per-process batches (one process may hold a single example, or none)."""
    if world_size == 2:
        sizes, small = (2, 5), (1, 2)
    else:
        sizes, small = (3, 1, 4), (2, 0, 1)
    return [
        Case("1d", sizes),
        Case("2d", small, trailing=(4, 3)),
        Case("3d input (N, C, L)", sizes, trailing=(5,)),
        Case("no affine, cumulative average", sizes, affine=False, momentum=None, steps=3),
        Case("large mean", sizes, offset=1e6, seed=1),
    ]


def _layer(case: Case, layer_class) -> nn.Module:
    layer = layer_class(case.channels, momentum=case.momentum, affine=case.affine).double()
    if case.affine:
        weight, bias = case.parameters()
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    return layer


def _run(case: Case, layer: nn.Module, part: slice) -> dict[str, torch.Tensor]:
    """Train ``layer`` on the ``part`` of each step's batch, then evaluate it on its part."""
    x, dy, x_eval = case.tensors()
    outputs, grads = [], []
    for step in range(case.steps):
        inputs = x[step, part].clone().requires_grad_()
        output = layer(inputs)
        output.backward(dy[step, part])
        outputs.append(output.detach())
        grads.append(inputs.grad)
    layer.eval()
    result = {"output": torch.stack(outputs), "grad_input": torch.stack(grads),
              "eval_output": layer(x_eval[part]).detach(),
              "running_mean": layer.running_mean, "running_var": layer.running_var,
              "num_batches_tracked": layer.num_batches_tracked}
    if case.affine:
        result.update(grad_weight=layer.weight.grad, grad_bias=layer.bias.grad)
    return result


def reference(case: Case) -> dict[str, torch.Tensor]:
    """One torch BatchNorm over the concatenated batch of every process."""
    layer_class = nn.BatchNorm2d if len(case.trailing) == 2 else nn.BatchNorm1d
    return _run(case, _layer(case, layer_class), slice(None))


def sync_worker(rank: int, world_size: int, cases: list[Case]) -> list[dict[str, torch.Tensor]]:
    """On each process: SyncBatchNorm on this process's slice of every case."""
    assert dist.get_world_size() == world_size
    return [_run(case, _layer(case, SyncBatchNorm), case.slice(rank)) for case in cases]


def gpu_worker(rank: int, world_size: int) -> tuple[dict, dict]:
    """On GPU ``rank``: bnlib's and torch's SyncBatchNorm on unequal slices, results on the CPU."""
    device = torch.device("cuda", rank % torch.cuda.device_count())
    case = Case("gpu", (3, 5) if world_size == 2 else (2,) * world_size, trailing=(4, 4))
    x, dy, _ = case.tensors()
    part = case.slice(rank)
    results = []
    for layer_class in (SyncBatchNorm, nn.SyncBatchNorm):
        layer = _layer(case, layer_class).float().to(device)
        inputs = x[0, part].float().to(device).requires_grad_()
        output = layer(inputs)
        output.backward(dy[0, part].float().to(device))
        results.append({"output": output.detach().cpu(), "grad_input": inputs.grad.cpu(),
                        "grad_weight": layer.weight.grad.cpu(),
                        "running_var": layer.running_var.cpu()})
    return results[0], results[1]


def all_checks(rank: int, world_size: int, cases: list[Case], train_set, test_set,
               configs: list) -> dict:
    """One spawn, every multi-process check: the SyncBatchNorm cases and data-parallel runs."""
    from bnlib.training.data_parallel import data_parallel_runs

    return {"cases": sync_worker(rank, world_size, cases),
            "data_parallel": data_parallel_runs(rank, world_size, train_set, test_set, configs),
            "torch_refuses_cpu": torch_refuses_cpu()}


def torch_refuses_cpu() -> bool:
    """Whether torch's nn.SyncBatchNorm refuses a CPU batch in training within a process group."""
    try:
        nn.SyncBatchNorm(3)(torch.randn(4, 3))
    except ValueError as error:
        return "GPU" in str(error)
    return False
