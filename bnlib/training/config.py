"""The settings of a training run: what every loop shares (:class:`LoopConfig`), and the two loops'
own (:class:`TrainConfig` for :func:`bnlib.train`/:func:`bnlib.compare`, and
:class:`SweepConfig` for :func:`bnlib.train_sweep`), each checked when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnlib._checks import require_choice, require_int
from bnlib.engine.manual import ENGINES
from bnlib.training.device import check_device

__all__ = ["LoopConfig", "SweepConfig", "TrainConfig"]


@dataclass
class LoopConfig:
    """Settings every training loop shares, checked when the config is made.

    Args:
        epochs: passes over the training set, at least 1. Default: ``10``.
        batch_size: examples per step, at least 2 (batch normalisation needs two values per
            channel to estimate a variance). Default: ``32``.
        optimizer: ``"adam"`` (torch's defaults: betas ``(0.9, 0.999)``, eps ``1e-8``) or
            ``"sgd"``. Default: ``"adam"``.
        momentum: momentum of ``"sgd"``, in ``[0, 1)``. Default: ``0.0``.
        seed: seed of the generator that shuffles the batches. Default: ``0``.
        device: ``"cpu"``, ``"cuda"``, ... that this machine has. Default: ``None``
            (:func:`bnlib.training.default_device`).
        progress: show a progress bar (it stays silent when output is not a terminal).
            Default: ``True``.
        eval_every: also evaluate on the test set every this many steps. Default: ``None``.

    Raises:
        ValueError: a setting out of its range, or a device this machine lacks.
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    momentum: float = 0.0
    seed: int = 0
    device: str | None = None
    progress: bool = True
    eval_every: int | None = None

    def __post_init__(self) -> None:
        require_int("epochs", self.epochs, 1)
        require_int("batch_size", self.batch_size, 2,
                    " (batch normalisation needs more than one value per channel)")
        require_int("seed", self.seed, 0)
        if self.eval_every is not None:
            require_int("eval_every", self.eval_every, 1, " or None")
        require_choice("optimizer", self.optimizer, ("adam", "sgd"))
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.device is not None:
            check_device(self.device)


@dataclass
class TrainConfig(LoopConfig):
    """Settings of a training run: :class:`LoopConfig`'s, and

    Args:
        lr: learning rate, a positive finite number. Default: ``0.01``.
        engine: how a step is computed: ``"manual"`` with the hand-written forward and backward
            of :class:`bnlib.engine.ManualEngine` (the MLPs of :func:`bnlib.build_mlp`; another
            model, or one with hooks or parametrizations, which the manual step would skip,
            raises ``ValueError`` before training), ``"autograd"`` with the model's forward and
            ``loss.backward()``, or ``"auto"``: manual where the model is supported and nothing
            hooks into its forward or backward, else autograd. Both give the same results up to
            floating-point rounding. Default: ``"auto"``.
    """

    lr: float = 0.01
    engine: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, "
                             f"got {self.engine!r}")


@dataclass
class SweepConfig(LoopConfig):
    """Settings shared by every network of a sweep: :class:`LoopConfig`'s (the learning rates
    are given per network, to :func:`bnlib.train_sweep`)."""
