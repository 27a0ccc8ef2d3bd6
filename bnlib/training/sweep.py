r"""Train K networks of one shape at once, as batched matrix products: a sweep.

A learning-rate or initialisation sweep trains many small networks that differ only in their
numbers. :func:`train_sweep` stacks their parameters along a leading dim of size K
(:mod:`bnlib.engine.stacked`), so one ``torch.baddbmm`` runs a layer of all K networks, the
backward pass is written out by hand (no autograd), and one optimizer step updates every network
with its own learning rate. A step then costs a few dozen calls for all K networks instead of a
few dozen per network, which is what a small network's step mostly costs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from bnlib.by_hand.stacked_optim import StackedAdam, StackedSGD
from bnlib.data.mnist import MNIST, Batches
from bnlib.engine.stacked import NetworkStack, cross_entropy_with_grad
from bnlib.nn.registry import ACTIVATION_NAMES, BATCH_NORM_1D_TYPES
from bnlib.training.config import SweepConfig
from bnlib.training.device import check_device
from bnlib.training.history import History

__all__ = ["stack_networks", "structure_of", "train_sweep"]


def _describe(module: nn.Module) -> tuple:
    """What must agree between the K networks for one layer, or a ValueError for the unsupported."""
    if isinstance(module, nn.Linear):
        return ("Linear", module.in_features, module.out_features, module.bias is not None)
    if isinstance(module, BATCH_NORM_1D_TYPES):
        if not module.track_running_stats:
            raise ValueError(f"{module} has track_running_stats=False; train_sweep supports "
                             "batch norm with running statistics only")
        return (type(module).__name__, module.num_features, module.eps, module.momentum,
                module.weight is not None, module.bias is not None)
    if type(module) in ACTIVATION_NAMES:
        return (ACTIVATION_NAMES[type(module)],)
    raise ValueError(f"unsupported layer {module!r}: a stacked network may hold nn.Linear, "
                     "BatchNorm1d (torch's or bnlib's), ReLU, Sigmoid and Tanh after a leading "
                     "nn.Flatten, as bnlib.build_mlp builds")


def structure_of(model: nn.Module) -> tuple[tuple, ...]:
    """The layer-by-layer description that must be equal for every network in a stack.

    Raises:
        ValueError: ``model`` is not an ``nn.Sequential`` of an ``nn.Flatten`` followed by
            supported layers.
    """
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    if not layers or not isinstance(layers[0], nn.Flatten) or (
            layers[0].start_dim, layers[0].end_dim) != (1, -1):
        raise ValueError(f"expected an nn.Sequential starting with nn.Flatten() as "
                         f"bnlib.build_mlp builds, got {type(model).__name__}")
    if not any(isinstance(layer, nn.Linear) for layer in layers):
        raise ValueError("the network has no nn.Linear layer to train")
    return tuple(_describe(layer) for layer in layers[1:])


def stack_networks(models: Sequence[nn.Module], device: torch.device) -> NetworkStack:
    """Check that ``models`` can be trained as one stack, move them to ``device`` in train mode,
    and stack their tensors there.

    Raises:
        ValueError: fewer than one model, the same module given twice, a structure that differs
            between models, an unsupported layer, or parameters of several dtypes.
    """
    if len(models) == 0:
        raise ValueError("need at least one model")
    reference = structure_of(models[0])
    for index, model in enumerate(models[1:], start=1):
        structure = structure_of(model)
        if structure != reference:
            diff = next((i, a, b) for i, (a, b) in enumerate(zip(reference, structure)) if a != b)\
                if len(structure) == len(reference) else None
            where = (f"layer {diff[0] + 1} is {diff[2]} instead of {diff[1]}" if diff else
                     f"it has {len(structure)} layers after Flatten instead of {len(reference)}")
            raise ValueError(f"model {index} differs from model 0: {where}; every model of a "
                             "sweep needs the same structure (build them with the same "
                             "build_mlp arguments, changing only seed and init_std)")
    tensors = [t for model in models for t in [*model.parameters(), *model.buffers()]]
    if len({id(t) for t in tensors}) < len(tensors):
        raise ValueError("the models share a parameter or buffer (the same module given twice?); "
                         "pass K distinct models")
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if len(dtypes) != 1:
        raise ValueError(f"all models must have one floating dtype, got "
                         f"{sorted(map(str, dtypes))}; use model.to(dtype)")
    return NetworkStack([model.to(device).train() for model in models])


def _check_lrs(lrs: Sequence[float] | float, count: int) -> list[float]:
    values = [float(lrs)] * count if isinstance(lrs, (int, float)) else [float(v) for v in lrs]
    if len(values) != count:
        raise ValueError(f"got {len(values)} learning rates for {count} models; pass one per "
                         "model, or a single number for all")
    for index, value in enumerate(values):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lrs[{index}] must be a positive finite number, got {value!r}")
    return values


@torch.no_grad()
def evaluate_stack(stack: NetworkStack, data: MNIST, chunk: int = 2000) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy of each network on ``data`` in eval mode, shape (K,)."""
    count = len(stack.models)
    total_loss = torch.zeros(count, dtype=torch.float64, device=data.images.device)
    correct = torch.zeros(count, dtype=torch.int64, device=data.images.device)
    for start in range(0, len(data), chunk):
        labels = data.labels[start:start + chunk]
        logits = stack.forward(data.images[start:start + chunk], training=False)
        losses, _ = cross_entropy_with_grad(logits, labels)
        total_loss += losses.double() * len(labels)
        correct += (logits.argmax(dim=2) == labels).sum(dim=1)
    return total_loss / len(data), correct.double() / len(data)


class SweepRecorder:
    """The K histories: step losses and predictions kept as tensors until an epoch ends."""

    def __init__(self, count: int, device: torch.device) -> None:
        self.histories = [History() for _ in range(count)]
        self.diverged = torch.zeros(count, dtype=torch.bool, device=device)
        self.losses: list[Tensor] = []
        self.predictions: list[Tensor] = []
        self.labels: list[Tensor] = []

    def record_step(self, losses: Tensor, logits: Tensor, labels: Tensor) -> None:
        self.losses.append(losses.detach())
        self.predictions.append(logits.argmax(dim=2))
        self.labels.append(labels)

    def finite_or_nan(self, values: Tensor) -> list[float]:
        """``values`` per network, NaN for a network whose loss has not been finite at some step."""
        if self.losses:
            seen = torch.stack(self.losses)
            self.diverged |= ~torch.isfinite(seen).all(dim=0)
        return torch.where(self.diverged, math.nan, values.double()).tolist()

    def record_eval(self, step: int, test_acc: Tensor) -> None:
        for history, value in zip(self.histories, self.finite_or_nan(test_acc)):
            history.eval_step.append(step)
            history.eval_test_acc.append(value)

    def close_epoch(self, test_loss: Tensor, test_acc: Tensor, seconds: float) -> None:
        losses = torch.stack(self.losses).double()  # (steps, K)
        correct = torch.cat(self.predictions, dim=1) == torch.cat(self.labels)
        train_acc = self.finite_or_nan(correct.double().mean(dim=1))
        columns = zip(losses.T.tolist(), losses.mean(dim=0).tolist(), train_acc,
                      self.finite_or_nan(test_loss), self.finite_or_nan(test_acc))
        for history, (steps, mean, acc, loss, t_acc) in zip(self.histories, columns):
            history.step_loss.extend(steps)
            history.train_loss.append(mean)
            history.train_acc.append(acc)
            history.test_loss.append(loss)
            history.test_acc.append(t_acc)
            history.epoch_seconds.append(seconds)
        self.losses, self.predictions, self.labels = [], [], []


def train_sweep(models: Sequence[nn.Module], lrs: Sequence[float] | float, train_set: MNIST,
                test_set: MNIST, config: SweepConfig) -> list[History]:
    r"""Train K networks of one structure together, each with its own learning rate.

    The networks (built by :func:`bnlib.build_mlp` with the same arguments; seeds and ``init_std``
    may differ) are stacked, and every step runs all K on the same batch with one batched matrix
    product per layer, a hand-written backward pass and one vectorised Adam or SGD update. The
    batches come from one :class:`bnlib.Batches` seeded with ``config.seed``, exactly as
    :func:`bnlib.compare` draws them, so network k follows the steps that ``compare`` (with
    ``lr=lrs[k]``) would take, up to rounding. Batch norm layers normalise with batch statistics
    and update their running statistics as ``nn.BatchNorm1d`` does. After every epoch each
    network is evaluated on ``test_set`` in eval mode (running statistics).

    At the end the trained parameters, running statistics and ``num_batches_tracked`` are written
    back into each module, which is left in train mode on ``config.device``, ready for
    :func:`bnlib.evaluate`. A network that diverges (a NaN or infinite loss) does not stop the
    sweep or change the others: its losses are recorded as they are (NaN or infinite), and from
    that step on its accuracies and test losses are recorded as NaN.

    Args:
        models: K networks of identical structure: ``nn.Flatten`` followed by ``nn.Linear``,
            ``BatchNorm1d`` (torch's or bnlib's, with running statistics), ReLU, Sigmoid or Tanh,
            all of one dtype. Trained in place.
        lrs: one learning rate per network, or one number for all.
        train_set: training examples, at least 2.
        test_set: examples for every evaluation.
        config: settings shared by all networks.

    Returns:
        One :class:`bnlib.History` per network, in the order of ``models``.

    Raises:
        ValueError: before any training, for structures that differ, unsupported layers, a shared
            module, bad learning rates, or too few examples.
    """
    lr_values = _check_lrs(lrs, len(models))
    if len(train_set) < 2 or len(test_set) < 1:
        raise ValueError(f"need at least 2 training examples and 1 test example, got "
                         f"{len(train_set)} and {len(test_set)}")
    device = check_device(config.device)
    stack = stack_networks(models, device)
    train_set, test_set = train_set.to(device), test_set.to(device)
    if config.optimizer == "adam":
        optimizer = StackedAdam(stack.flat_params, lr_values)
    else:
        optimizer = StackedSGD(stack.flat_params, lr_values, config.momentum)
    batches = Batches(train_set, config.batch_size,
                      drop_last=len(train_set) % config.batch_size == 1,
                      generator=torch.Generator().manual_seed(config.seed))
    recorder = SweepRecorder(len(models), device)
    step = 0
    with tqdm(total=config.epochs * len(batches), unit="step",
              disable=None if config.progress else True) as bar:
        for _ in range(config.epochs):
            start = time.perf_counter()
            for images, labels in batches:
                logits = stack.forward(images, training=True)
                losses, grad_logits = cross_entropy_with_grad(logits, labels)
                stack.backward(grad_logits)
                optimizer.step(stack.flat_grads)
                recorder.record_step(losses, logits, labels)
                step += 1
                bar.update()
                if config.eval_every is not None and step % config.eval_every == 0:
                    recorder.record_eval(step, evaluate_stack(stack, test_set)[1])
            test_loss, test_acc = evaluate_stack(stack, test_set)
            recorder.close_epoch(test_loss, test_acc, time.perf_counter() - start)
    stack.write_back()
    return recorder.histories
