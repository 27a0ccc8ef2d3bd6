r"""Batch normalisation with statistics over the processes of a :mod:`torch.distributed` group.

Each process holds a slice of the global batch. :class:`SyncBatchNorm` normalises every slice with
the mean and variance of the whole batch: the per-process counts, means and sums of squared
deviations are gathered and combined exactly, and the backward pass all-reduces the two
per-channel gradient sums. It runs on CPU with the gloo backend (torch's own
:class:`torch.nn.SyncBatchNorm` refuses CPU tensors in training) and on GPUs with NCCL.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bnlib.nn.batchnorm import _BatchNorm

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "combine_statistics"]


def channel_view(vector: Tensor, like: Tensor) -> Tensor:
    """View a per-channel vector of shape :math:`(C,)` as :math:`(1, C, 1, ...)`, to broadcast
    against ``like``."""
    return vector.view([1, -1] + [1] * (like.dim() - 2))


def _local_statistics(input: Tensor) -> Tensor:
    """Rows count, mean and sum of squared deviations per channel of this process's slice."""
    dims = [0] + list(range(2, input.dim()))
    channels = input.shape[1]
    count = input.numel() // channels if channels else 0
    if count == 0:
        return input.new_zeros(3, channels)
    mean = input.mean(dims)
    centered = input - channel_view(mean, input)
    squares = (centered * centered).sum(dims)
    return torch.stack([torch.full_like(mean, count), mean, squares])


def combine_statistics(stats: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Combine per-process statistics exactly (Chan, Golub and LeVeque's parallel formula).

    With counts :math:`n_k`, means :math:`\mu_k` and sums of squared deviations :math:`M_k`,

    .. math::
        n = \sum_k n_k, \quad \mu = \frac{1}{n}\sum_k n_k \mu_k, \quad
        M = \sum_k M_k + \sum_k n_k (\mu_k - \mu)^2,

    which avoids the cancellation of :math:`\sum x^2 - n\mu^2` when the mean is large.

    Args:
        stats (Tensor): rows ``(count, mean, sum of squared deviations)`` of each process.

    Shape:
        - Input: :math:`(P, 3, C)` for :math:`P` processes.
        - Output: count, mean and sum of squared deviations, each :math:`(C,)`.
    """
    counts, means, squares = stats.unbind(1)
    count = counts.sum(0)
    mean = (counts * means).sum(0) / count
    spread = (counts * (means - mean) ** 2).sum(0)
    return count, mean, squares.sum(0) + spread


def _gather_statistics(input: Tensor, group) -> tuple[Tensor, Tensor, Tensor]:
    """Global count, mean and sum of squared deviations, combined in float64."""
    local = _local_statistics(input).to(torch.float64)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    return combine_statistics(torch.stack(gathered))


@torch.no_grad()
def _update_running(module_buffers, mean, var_unbiased, momentum) -> None:
    running_mean, running_var = module_buffers
    if running_mean is not None:
        running_mean.lerp_(mean.to(running_mean.dtype), momentum)
        running_var.lerp_(var_unbiased.to(running_var.dtype), momentum)


class SyncBatchNormFunction(torch.autograd.Function):
    r"""Training-mode BN over the batch split across a process group, with a hand-derived backward.

    Forward: the global count :math:`m`, mean :math:`\mu` and biased variance :math:`\sigma^2`
    come from :func:`combine_statistics`, and :math:`y = \gamma \hat{x} + \beta` with
    :math:`\hat{x} = (x - \mu)/\sqrt{\sigma^2 + \epsilon}` on each process's slice.

    Backward: the gradient of BN (see :class:`bnlib.nn.BatchNormFunction`) needs only two sums over
    the *whole* batch, so each process all-reduces its partial sums and then computes its slice:

    .. math::
        \frac{\partial L}{\partial x_i} = \frac{\gamma}{m\sqrt{\sigma^2 + \epsilon}}
            \Big(m\,dy_i - \sum_j dy_j - \hat{x}_i \sum_j dy_j \hat{x}_j\Big).

    The parameter gradients returned are the local sums; data parallelism then reduces them
    across processes as for any other parameter.

    Args (of ``apply``, positional):
        input (Tensor): this process's slice, shape :math:`(N_k, C, *)`; :math:`N_k` may differ
            between processes and may be 0.
        weight, bias (Tensor or None): :math:`\gamma` and :math:`\beta`, shape :math:`(C,)`.
        running_mean, running_var (Tensor or None): updated in place with the global statistics.
        eps (float), momentum (float): as in :func:`bnlib.batch_norm`.
        group: the process group whose processes share the batch.

    Shape:
        - Input: :math:`(N_k, C, *)` on process :math:`k`.
        - Output: same shape as the input.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, group):
        count, mean, squares = _gather_statistics(input, group)
        total = int(count[0].item()) if count.numel() else 0
        if total < 2:
            raise ValueError(
                f"SyncBatchNorm expected more than 1 value per channel over the whole group when "
                f"training, got {total}; use larger batches, or call model.eval()."
            )
        _update_running((running_mean, running_var), mean, squares / (total - 1), momentum)
        inv_std = torch.rsqrt(squares / total + eps).to(input.dtype)
        mean = mean.to(input.dtype)
        x_hat = (input - channel_view(mean, input)) * channel_view(inv_std, input)
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.total, ctx.group = total, group
        output = x_hat if weight is None else x_hat * channel_view(weight, input)
        return output if bias is None else output + channel_view(bias, input)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x_hat, inv_std, weight = ctx.saved_tensors
        dims = [0] + list(range(2, grad_output.dim()))
        local = torch.stack([grad_output.sum(dims), (grad_output * x_hat).sum(dims)])
        summed = local.clone()
        dist.all_reduce(summed, group=ctx.group)  # every process must join, even with N_k = 0
        sum_dy, sum_dy_xhat = summed.unbind(0)
        scale = inv_std if weight is None else weight * inv_std
        grad_input = channel_view(scale, x_hat) * (
            grad_output
            - channel_view(sum_dy / ctx.total, x_hat)
            - x_hat * channel_view(sum_dy_xhat / ctx.total, x_hat)
        )
        grad_weight = local[1] if ctx.needs_input_grad[1] else None
        grad_bias = local[0] if ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def group_is_active(group) -> bool:
    """Whether a process group of more than one process is there to share statistics with."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(group) > 1


class SyncBatchNorm(_BatchNorm):
    r"""Batch normalisation of a batch split across processes, a drop-in for ``nn.SyncBatchNorm``.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    In training, with an initialised process group of more than one process, the mean and
    variance are those of the concatenation of every process's batch (see
    :class:`SyncBatchNormFunction`); the per-process batches may differ in size. The running
    statistics are updated with the global mean and unbiased variance, identically on every
    process. In eval mode, or without a process group, it is plain BN (:class:`bnlib.BatchNorm1d`,
    :class:`bnlib.BatchNorm2d`).

    Args:
        num_features (int): number of channels :math:`C`.
        eps (float, optional): added to the variance for numerical stability. Default: ``1e-5``.
        momentum (float or None, optional): running-statistics update factor; ``None`` gives a
            cumulative moving average. Default: ``0.1``.
        affine (bool, optional): learn :math:`\gamma` and :math:`\beta`. Default: ``True``.
        track_running_stats (bool, optional): keep running statistics for evaluation.
            Default: ``True``.
        process_group (optional): the processes whose batches are normalised together.
            Default: ``None`` (the default group, every process).
        device, dtype (optional): where and in which dtype the tensors are created.
            Default: ``None``.
        bias (bool, keyword-only, optional): with ``affine=True``, learn :math:`\beta` too;
            ``False`` keeps :math:`\gamma` only, as in torch. Default: ``True``.

    Shape:
        - Input: :math:`(N, C, *)`, for example :math:`(N, C)` or :math:`(N, C, H, W)`.
        - Output: same shape as the input.
    """

    accepted_dims = (2, 3, 4, 5)
    input_description = "(N, C, *) with 2 to 5 dims"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        self.check_input(input)
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        if not (self.training and group_is_active(group)):
            return super().forward(input)
        factor = self.next_average_factor()
        return SyncBatchNormFunction.apply(
            input, self.weight, self.bias, self.running_mean, self.running_var, self.eps,
            factor, group,
        )

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        r"""Return ``module`` with every BatchNorm (torch's or bnlib's) replaced by ``cls``.

        The new layers share the old ones' parameters and buffers, and keep their mode, as in
        :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`.

        Args:
            module (nn.Module): a module, or a BatchNorm layer itself.
            process_group (optional): passed to every new layer. Default: ``None``.
        """
        output = module
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, _BatchNorm)):
            output = cls(module.num_features, module.eps, module.momentum, module.affine,
                         module.track_running_stats, process_group, bias=module.bias is not None)
            if module.affine:
                output.weight, output.bias = module.weight, module.bias
            output.running_mean, output.running_var = module.running_mean, module.running_var
            output.num_batches_tracked = module.num_batches_tracked
            output.train(module.training)
        for name, child in module.named_children():
            output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return output
