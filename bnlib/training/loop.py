"""Training and evaluating MNIST classifiers, one model or several in lockstep.

Every model is evaluated, on the test set, in eval mode; accuracy is the fraction classified
correctly. A small model's step is mostly per-call overhead, so the loop keeps it low: data sit on
the device as tensors, the MLPs of :func:`bnlib.build_mlp` train with the hand-written forward and
backward of :class:`bnlib.engine.ManualEngine` (others with autograd), and no step waits for a
result (losses and predictions stay tensors until the end of the epoch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bnlib._checks import require_int
from bnlib.data.mnist import MNIST, Batches
from bnlib.engine.flat import separate_parameters
from bnlib.engine.manual import (
    AutogradEngine,
    ManualEngine,
    engine_for,
    make_engines,
)
from bnlib.training.config import TrainConfig
from bnlib.training.device import check_device
from bnlib.training.history import History

__all__ = ["LockstepLoop", "ModelRun", "compare", "evaluate", "train"]

EvalCallback = Callable[[int, str, nn.Module], None]
EpochCallback = Callable[[int, Mapping[str, History]], None]


def evaluate(model: nn.Module, data: MNIST, batch_size: int = 10_000) -> tuple[float, float]:
    r"""Mean cross-entropy loss and accuracy of ``model`` on ``data``, in eval mode.

    Accuracy is the fraction of examples whose largest logit is the true label. The model runs
    under ``torch.no_grad`` in eval mode (BN uses its running statistics), then gets its previous
    mode back. Data are moved to the model's device if they are elsewhere.

    Args:
        model: a classifier returning logits.
        data: the examples.
        batch_size: examples per forward pass, which only bounds memory. Default: ``10_000``.

    Shape:
        - data.images: :math:`(N, 1, 28, 28)`; model output :math:`(N, C)`.
    """
    require_int("batch_size", batch_size, 1)
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                images = data.images[start:start + batch_size].to(device)
                labels = data.labels[start:start + batch_size].to(device)
                logits = model(images)
                total_loss += F.cross_entropy(logits, labels, reduction="sum").double()
                total_correct += (logits.argmax(dim=1) == labels).sum()
    finally:
        model.train(was_training)
    return total_loss.item() / len(data), total_correct.item() / len(data)


class ModelRun:
    """One model's training state inside :func:`compare`."""

    def __init__(self, model: nn.Module, engine: ManualEngine | AutogradEngine) -> None:
        self.model = model
        self.engine = engine
        self.history = History()
        self.step_losses: list[Tensor] = []
        self.step_predictions: list[Tensor] = []

    def step(self, images: Tensor, labels: Tensor) -> None:
        """Forward and backward; :class:`LockstepLoop` then calls the optimizers once for all."""
        self.step_losses.append(self.engine.compute_gradients(images, labels))
        # Kept as tensors: reading a value now would wait for the step (a GPU sync). The
        # predictions are taken now because the manual engine's next step overwrites its logits.
        self.step_predictions.append(self.engine.logits.argmax(dim=1))

    def close_epoch(self, labels: Tensor) -> None:
        """Record the epoch's step losses and training accuracy; ``labels`` in step order."""
        losses = torch.stack(self.step_losses).double()
        predictions = torch.cat(self.step_predictions)
        self.history.step_loss.extend(losses.tolist())
        self.history.train_loss.append(losses.mean().item())
        self.history.train_acc.append((predictions == labels).double().mean().item())
        self.step_losses.clear()
        self.step_predictions.clear()


@dataclass
class LockstepLoop:
    """What every epoch of :func:`compare` shares; ``step`` counts the steps taken so far."""

    runs: dict[str, ModelRun]
    batches: Batches
    test_set: MNIST
    config: TrainConfig
    on_eval: EvalCallback | None
    bar: tqdm
    step: int = 0
    results: dict[tuple[int, str], tuple[float, float]] = field(default_factory=dict)

    def evaluate(self, name: str, run: ModelRun) -> tuple[float, float]:
        """Evaluate on the test set, call ``on_eval`` in eval mode, return to train mode.

        A model is evaluated at most once per step: an epoch that ends on an ``eval_every`` step
        reuses that evaluation.
        """
        if (self.step, name) in self.results:
            return self.results[self.step, name]
        run.model.eval()
        try:
            result = evaluate(run.model, self.test_set)
            if self.on_eval is not None:
                self.on_eval(self.step, name, run.model)
                self.check_engines()
        finally:
            run.model.train()
        self.results = {key: value for key, value in self.results.items() if key[0] == self.step}
        self.results[self.step, name] = result
        return result

    def check_engines(self) -> None:
        """Stop if a callback added a hook that a manual engine would skip (see
        :meth:`bnlib.engine.ManualEngine.check_unobserved`)."""
        for run in self.runs.values():
            if isinstance(run.engine, ManualEngine):
                run.engine.check_unobserved()

    def epoch(self) -> None:
        """Train one epoch, then evaluate every model on the test set."""
        start = time.perf_counter()
        labels = self.train_epoch()
        for name, run in self.runs.items():
            run.close_epoch(labels)
            test_loss, test_acc = self.evaluate(name, run)
            run.history.test_loss.append(test_loss)
            run.history.test_acc.append(test_acc)
        seconds = time.perf_counter() - start
        for run in self.runs.values():
            run.history.epoch_seconds.append(seconds)
        self.bar.set_postfix({name: f"{run.history.test_acc[-1]:.4f}"
                              for name, run in self.runs.items()})

    def train_epoch(self) -> Tensor:
        """One pass over the batches; return the labels of all steps, in order."""
        seen_labels = []
        optimizers = {id(run.engine.optimizer): run.engine.optimizer for run in self.runs.values()}
        for images, labels in self.batches:
            for run in self.runs.values():
                run.step(images, labels)
            for optimizer in optimizers.values():
                optimizer.step()
            seen_labels.append(labels)
            self.step += 1
            self.bar.update()
            if self.config.eval_every is not None and self.step % self.config.eval_every == 0:
                for name, run in self.runs.items():
                    run.history.eval_step.append(self.step)
                    run.history.eval_test_acc.append(self.evaluate(name, run)[1])
        return torch.cat(seen_labels)


def compare(models: Mapping[str, nn.Module], train_set: MNIST, test_set: MNIST,
            config: TrainConfig, *, on_eval: EvalCallback | None = None,
            on_epoch: EpochCallback | None = None) -> dict[str, History]:
    """Train several models in lockstep on the identical sequence of batches.

    One :class:`bnlib.Batches` iterator, shuffled by a ``torch.Generator`` seeded with
    ``config.seed``, feeds every model the same batch at every step; each model is trained from
    its own loss and gradients, with its own optimizer state, by the engine ``config.engine``
    picks for it (:func:`bnlib.engine.make_engines`). Each epoch uses every example, except that a
    final batch of one example is dropped (batch normalisation cannot estimate a variance from one
    value per channel). After every epoch each model is evaluated on the whole test set in eval
    mode, then put back in train mode. The models are moved to ``config.device`` (else
    :func:`default_device`), the data once.

    Args:
        models: names and models; the models are trained in place.
        train_set: training examples, at least 2.
        test_set: examples for every evaluation.
        config: the run's settings.
        on_eval: called as ``on_eval(step, name, model)`` at every evaluation (every
            ``config.eval_every`` steps and at the end of every epoch) with the model in eval
            mode. Default: ``None``.
        on_epoch: called as ``on_epoch(epochs_done, histories)`` after every epoch, once every
            model's history holds that epoch (for example to keep the finished epochs when the
            run is interrupted). Default: ``None``.

    Returns:
        One :class:`History` per model name.
    """
    if not models or len(train_set) < 2:
        raise ValueError(f"compare needs at least one model and 2 training examples, got "
                         f"{len(models)} model(s) and {len(train_set)} example(s)")
    device = check_device(config.device)
    for model in models.values():  # refuse an unsupported engine before anything else
        engine_for(model, config.engine)
    train_set, test_set = train_set.to(device), test_set.to(device)
    engines = make_engines({name: model.to(device).train() for name, model in models.items()},
                           config.engine, config.optimizer, lr=config.lr, momentum=config.momentum)
    runs = {name: ModelRun(model, engines[name]) for name, model in models.items()}
    drop_last = len(train_set) % config.batch_size == 1
    batches = Batches(train_set, config.batch_size, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(config.seed))
    with torch.enable_grad(), tqdm(total=config.epochs * len(batches), unit="step",
                                   disable=None if config.progress else True) as bar:
        loop = LockstepLoop(runs, batches, test_set, config, on_eval, bar)
        try:
            for epoch in range(config.epochs):
                bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
                loop.epoch()
                if on_epoch is not None:
                    on_epoch(epoch + 1, {name: run.history for name, run in runs.items()})
                    loop.check_engines()
        finally:  # also after Ctrl-C: the models leave as ordinary, independent modules
            separate_parameters(models.values())
    return {name: run.history for name, run in runs.items()}


def train(model: nn.Module, train_set: MNIST, test_set: MNIST, config: TrainConfig, *,
          on_eval: EvalCallback | None = None,
          on_epoch: EpochCallback | None = None) -> History:
    """Train one model: :func:`compare` with the single model named ``"model"``.

    Args: as for :func:`compare`, with ``model`` (trained in place) instead of ``models``.

    Returns:
        The model's :class:`History`.
    """
    return compare({"model": model}, train_set, test_set, config, on_eval=on_eval,
                   on_epoch=on_epoch)["model"]
