r"""What :mod:`bnlib.grading.checks` needs around a learner's layer: building it next to torch's,
test batches, the layer's tensors found by name, and the outputs that known mistakes would give.

Everything runs in float64 on the CPU, so any difference larger than :data:`TOLERANCE` is a
difference in the arithmetic, not rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["CHANNELS", "SHAPES", "TOLERANCE", "Finding", "NotSupported", "Subject",
           "affine_tensors", "biggest_gap", "copy_affine", "find_statistic", "first_match",
           "matches", "normalise",
           "running_statistics", "scale_shift", "set_running_statistics", "simulate_running"]

CHANNELS = 3
TOLERANCE = 1e-6  # float64 arithmetic agrees to ~1e-15; float32 buffers still pass
MEAN_NAMES = ("running_mean", "moving_mean", "running_avg_mean", "moving_average_mean")
VAR_NAMES = ("running_var", "moving_var", "running_variance", "moving_variance")
# Per channel: a location and a scale. The middle channel's variance (1e-4) is close to eps, so
# where eps sits shows in the output.
LOCATIONS, SCALES = (2.0, -1.0, 0.5), (1.5, 0.01, 3.0)
SHAPES = {1: (8, CHANNELS), 2: (4, CHANNELS, 3, 2)}


class Finding(NamedTuple):
    """What one check saw: the largest difference from torch (None where nothing numeric was
    compared), the mistake recognised (None: the check passed) and an extra sentence."""

    gap: float | None
    diagnosis: str | None
    detail: str = ""


class NotSupported(Exception):
    """The layer's constructor does not accept a keyword argument."""


def _rejects_keyword(error: TypeError, kwargs: dict) -> bool:
    text = str(error)
    return "keyword" in text and any(f"'{name}'" in text for name in kwargs)


@dataclass
class Subject:
    """A learner's ``make_layer`` for one input rank (1: (N, C), 2: (N, C, H, W)), next to the
    torch class it is graded against."""

    make_layer: Callable[..., nn.Module]
    kind: int

    @property
    def reference_class(self) -> type[nn.Module]:
        return nn.BatchNorm1d if self.kind == 1 else nn.BatchNorm2d

    @property
    def shape(self) -> tuple[int, ...]:
        return SHAPES[self.kind]

    @property
    def reduce_dims(self) -> tuple[int, ...]:
        return (0,) if self.kind == 1 else (0, 2, 3)

    def build(self, **kwargs) -> nn.Module:
        """The learner's layer in float64, training mode; NotSupported for a refused keyword."""
        try:
            layer = self.make_layer(CHANNELS, **kwargs)
        except TypeError as error:
            if kwargs and _rejects_keyword(error, kwargs):
                raise NotSupported(", ".join(kwargs)) from None
            raise
        if not isinstance(layer, nn.Module):
            raise TypeError(f"make_layer returned a {type(layer).__name__}, not an nn.Module")
        return layer.double().train()

    def reference(self, **kwargs) -> nn.Module:
        return self.reference_class(CHANNELS, **kwargs).double().train()

    def pair(self, **kwargs) -> tuple[nn.Module, nn.Module]:
        """(learner's layer, torch's), with the same gamma and beta where both have them."""
        layer, reference = self.build(**kwargs), self.reference(**kwargs)
        copy_affine(reference, layer)
        return layer, reference

    def batch(self, seed: int, count: int | None = None) -> Tensor:
        """A float64 batch whose channels have different locations and scales; the location
        moves with ``seed`` so that successive batches differ."""
        shape = self.shape if count is None else (count, *self.shape[1:])
        generator = torch.Generator().manual_seed(1000 + seed)
        noise = torch.randn(shape, generator=generator, dtype=torch.float64)
        view = (1, CHANNELS) + (1,) * (len(shape) - 2)
        location = torch.tensor(LOCATIONS, dtype=torch.float64).view(view) + 0.5 * seed
        return location + noise * torch.tensor(SCALES, dtype=torch.float64).view(view)


def _per_channel(values: Sequence[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def affine_tensors(layer: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """(gamma, beta) of a layer: parameters named weight and bias, else its two parameters with
    one value per channel, in the order they were registered (gamma first, as in the paper)."""
    named = dict(layer.named_parameters())
    if "weight" in named or "bias" in named:
        return named.get("weight"), named.get("bias")
    per_channel = [p for p in layer.parameters() if p.numel() == CHANNELS]
    if len(per_channel) == 2:
        return per_channel[0], per_channel[1]
    return None, None


@torch.no_grad()
def copy_affine(reference: nn.Module, layer: nn.Module) -> None:
    """Give torch's layer a gamma and beta far from 1 and 0 (exact in float32) and the learner's
    the same values, where it has them; otherwise both keep their initial values."""
    gamma, beta = affine_tensors(layer)
    if reference.weight is not None and gamma is not None:
        reference.weight.copy_(_per_channel((1.5, 0.75, -2.0)))
        gamma.copy_(reference.weight.view_as(gamma))
    if reference.bias is not None and beta is not None:
        reference.bias.copy_(_per_channel((0.25, -1.0, 3.0)))
        beta.copy_(reference.bias.view_as(beta))


def find_statistic(layer: nn.Module, names: Sequence[str]) -> Tensor | None:
    """The first tensor attribute (buffer or plain) of ``layer`` with one of ``names``."""
    for name in names:
        value = getattr(layer, name, None)
        if isinstance(value, Tensor):
            return value
    return None


def running_statistics(layer: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """Copies of the running mean and variance as flat float64 vectors (None where missing)."""
    found = (find_statistic(layer, MEAN_NAMES), find_statistic(layer, VAR_NAMES))
    return tuple(None if t is None else t.detach().reshape(-1).double().clone() for t in found)


@torch.no_grad()
def set_running_statistics(layer: nn.Module, mean: Tensor, var: Tensor) -> bool:
    """Write ``mean`` and ``var`` into the layer's running statistics in place; False when it
    has none."""
    found = (find_statistic(layer, MEAN_NAMES), find_statistic(layer, VAR_NAMES))
    if any(t is None or t.numel() != CHANNELS for t in found):
        return False
    for target, value in zip(found, (mean, var)):
        target.copy_(value.view_as(target))
    return True


def normalise(x: Tensor, dims: Sequence[int], eps: float = 1e-5, *, correction: int = 0,
              eps_outside: bool = False, weight: Tensor | None = None,
              bias: Tensor | None = None) -> Tensor:
    """Batch statistics over ``dims``, then (optionally) gamma and beta: the training-mode
    transform, or one of its known variants."""
    var, mean = torch.var_mean(x, dim=tuple(dims), correction=correction, keepdim=True)
    denominator = var.sqrt() + eps if eps_outside else (var + eps).sqrt()
    return scale_shift((x - mean) / denominator, weight, bias)


def scale_shift(x_hat: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    view = (1, -1) + (1,) * (x_hat.dim() - 2)
    if weight is not None:
        x_hat = x_hat * weight.detach().reshape(view)
    if bias is not None:
        x_hat = x_hat + bias.detach().reshape(view)
    return x_hat


def simulate_running(batches: Sequence[Tensor], dims: Sequence[int], rho: float | None,
                     unbiased: bool) -> list[tuple[Tensor, Tensor]]:
    """Running (mean, var) after each batch under torch's rule with factor ``rho`` (``None``:
    the cumulative average), storing the unbiased or the biased batch variance."""
    mean = torch.zeros(CHANNELS, dtype=torch.float64)
    var = torch.ones(CHANNELS, dtype=torch.float64)
    trajectory = []
    for step, x in enumerate(batches, start=1):
        factor = 1.0 / step if rho is None else rho
        batch_var, batch_mean = torch.var_mean(x, dim=tuple(dims), correction=int(unbiased))
        mean = (1 - factor) * mean + factor * batch_mean
        var = (1 - factor) * var + factor * batch_var
        trajectory.append((mean, var))
    return trajectory


def biggest_gap(actual: Tensor | None, expected: Tensor) -> float:
    """Largest absolute difference; infinity when ``actual`` is missing, not a tensor or has
    another size."""
    if not isinstance(actual, Tensor) or actual.numel() != expected.numel():
        return float("inf")
    actual = actual.detach().double().reshape(expected.shape)
    gap = (actual - expected.detach()).abs().max().item()
    return float("inf") if gap != gap else gap  # NaN counts as the largest difference


def matches(actual: Tensor | None, expected: Tensor) -> bool:
    return biggest_gap(actual, expected) <= TOLERANCE


def first_match(gap: float, actual: Tensor,
                hypotheses: Iterable[tuple[str, Tensor, str]]) -> Finding:
    """A failed check's Finding, diagnosed by the first (mistake, predicted value, detail) whose
    prediction ``actual`` matches; "unexplained" when none does."""
    for diagnosis, predicted, detail in hypotheses:
        if matches(actual, predicted):
            return Finding(gap, diagnosis, detail)
    return Finding(gap, "unexplained")
