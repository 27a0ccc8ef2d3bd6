"""Layers for the grader's tests: a correct batch norm written from scratch, with torch's
constructor, and variants that each make one mistake (by overriding one method)."""

import torch
from torch import nn


class ScratchBatchNorm(nn.Module):
    """A correct from-scratch BN for (N, C, *) inputs with torch's constructor; each mistake
    below overrides one method."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.eps, self.momentum, self.track_running_stats = eps, momentum, track_running_stats
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        tracked = {"running_mean": torch.zeros(num_features),
                   "running_var": torch.ones(num_features),
                   "num_batches_tracked": torch.tensor(0, dtype=torch.long)}
        for name, value in tracked.items():
            self.register_buffer(name, value if track_running_stats else None)

    def dims(self, x):
        return [0] + list(range(2, x.dim()))

    def batch_statistics(self, x):
        var, mean = torch.var_mean(x, dim=self.dims(x), correction=0)
        return mean, var

    def normalise(self, x, mean, var):
        return (x - mean) / torch.sqrt(var + self.eps)

    def uses_batch_statistics(self):
        return self.training or not self.track_running_stats

    def factor(self):
        self.num_batches_tracked += 1
        return 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum

    def stored_variance(self, x, var):
        count = x.numel() // x.shape[1]
        return var * count / (count - 1)

    @torch.no_grad()
    def update(self, x, mean, var):
        rho = self.factor()
        self.running_mean.mul_(1 - rho).add_(rho * mean)
        self.running_var.mul_(1 - rho).add_(rho * self.stored_variance(x, var))

    def forward(self, x):
        view = [1, -1] + [1] * (x.dim() - 2)
        if self.uses_batch_statistics():
            if x.numel() // x.shape[1] == 1:
                raise ValueError("Expected more than 1 value per channel when training")
            mean, var = self.batch_statistics(x)
            if self.training and self.track_running_stats:
                self.update(x, mean, var)
        else:
            mean, var = self.running_mean, self.running_var
        y = self.normalise(x, mean.view(view), var.view(view))
        weight, bias = self.affine_parameters()
        if weight is not None:
            y = y * weight.view(view) + bias.view(view)
        return y

    def affine_parameters(self):
        return self.weight, self.bias


class UnbiasedNormalisation(ScratchBatchNorm):
    def batch_statistics(self, x):
        var, mean = torch.var_mean(x, dim=self.dims(x))  # correction=1 by default
        return mean, var

    def stored_variance(self, x, var):
        return var


class BiasedRunningVar(ScratchBatchNorm):
    def stored_variance(self, x, var):
        return var


class KerasMomentum(ScratchBatchNorm):
    def factor(self):
        return 1 - super().factor()


class NoEvalMode(ScratchBatchNorm):
    def uses_batch_statistics(self):
        return True


class EpsOutsideSqrt(ScratchBatchNorm):
    def normalise(self, x, mean, var):
        return (x - mean) / (torch.sqrt(var) + self.eps)


class WrongDims(ScratchBatchNorm):
    def batch_statistics(self, x):
        # right for (N, C); for (N, C, H, W) each column mixes the channels
        var, mean = torch.var_mean(x.reshape(-1, x.shape[1]), dim=0, correction=0)
        return mean, var


class UpdatesInEval(ScratchBatchNorm):
    def forward(self, x):
        if not self.training:
            self.update(x, *self.batch_statistics(x))
        return super().forward(x)


class NoBatchCounter(ScratchBatchNorm):
    def __init__(self, num_features, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_batches_tracked = None
        self.batches = 0

    def factor(self):
        self.batches += 1
        return 1 / self.batches if self.momentum is None else self.momentum


class GradModeSwitch(ScratchBatchNorm):
    def uses_batch_statistics(self):
        return torch.is_grad_enabled()  # instead of self.training


class DetachedStatistics(ScratchBatchNorm):
    def batch_statistics(self, x):
        return tuple(statistic.detach() for statistic in super().batch_statistics(x))


class AcceptsBatchOfOne(ScratchBatchNorm):
    def forward(self, x):
        if self.training and x.numel() == x.shape[1]:
            return torch.zeros_like(x) + self.bias.view(1, -1)
        return super().forward(x)


class GammaBeta(ScratchBatchNorm):
    """The paper's names for the parameters; torch's are weight and bias."""

    def __init__(self, num_features, **kwargs):
        super().__init__(num_features, **kwargs)
        self.gamma, self.beta = self._parameters.pop("weight"), self._parameters.pop("bias")

    def affine_parameters(self):
        return self.gamma, self.beta


class EpsIgnored(ScratchBatchNorm):
    def __init__(self, num_features, eps=1e-5, **kwargs):
        super().__init__(num_features, **kwargs)


class EpsIgnoredInEval(ScratchBatchNorm):
    def forward(self, x):
        if self.training:
            return super().forward(x)
        eps, self.eps = self.eps, 1e-5
        try:
            return super().forward(x)
        finally:
            self.eps = eps


class RaisesInForward(ScratchBatchNorm):
    def forward(self, x):
        raise RuntimeError("forgot to write forward")


class OnlyNumFeatures(ScratchBatchNorm):
    def __init__(self, num_features):
        super().__init__(num_features)


class ReturnsNothing(ScratchBatchNorm):
    def forward(self, x):
        super().forward(x)
