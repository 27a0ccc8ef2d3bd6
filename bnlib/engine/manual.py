r"""Training the MLPs of :func:`bnlib.build_mlp` without autograd: a step written out by hand.

A training step of a small network on the CPU is mostly per-call overhead: eager autograd records
a graph for every operation and replays it backwards. :class:`ManualEngine` recognises the layers
of an ``nn.Sequential`` (``Flatten``, ``Linear``, ``BatchNorm1d``, ``ReLU``/``Sigmoid``/``Tanh``,
a final ``Linear``) and runs their forward and backward passes written out
(:mod:`bnlib.engine.steps`) on buffers allocated once, writes the gradients into each
parameter's ``.grad`` and calls ``optimizer.step()`` of torch's own Adam or SGD. Batch norm uses
the batch statistics, as in training mode, and updates the module's running statistics as the
module itself would, so the trained module is the one to evaluate, save and load.

:func:`unsupported_reason` (:mod:`bnlib.engine.support`) says why a model cannot be trained so
(``None`` when it can): a layer it does not know, or anything that the skipped forward and
autograd would have run (module hooks, global module hooks, gradient hooks on a parameter,
parametrizations). A caller then falls back to :class:`AutogradEngine`, the textbook step;
:func:`engine_for` and :func:`make_engines` make that choice for ``TrainConfig(engine=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnlib.engine.flat import flatten_parameters
from bnlib.engine.optim import make_optimizer
from bnlib.engine.steps import ActivationStep, BatchNormStep, LinearStep, SoftmaxCrossEntropyStep
from bnlib.engine.support import observers_reason, unsupported_reason
from bnlib.nn.registry import ACTIVATION_NAMES, BATCH_NORM_1D_TYPES

__all__ = ["ENGINES", "AutogradEngine", "ManualEngine", "engine_for", "make_engines",
           "manual_engines"]

ENGINES = ("auto", "manual", "autograd")

class ManualEngine:
    r"""Train a supported ``nn.Sequential`` MLP in place, with hand-written forward and backward.

    Every :meth:`step` computes the mean cross-entropy of the logits, writes the gradients into
    the parameters' ``.grad`` and calls :attr:`optimizer`'s ``step()``. Batch norm runs as in
    training mode and updates the modules' running statistics, as their forward would; the model
    itself is never called, so evaluating it (in eval mode, through its forward) sees the trained
    weights and statistics. See :func:`unsupported_reason` for the supported models.

    Args:
        model: the model; it must be in training mode while it is trained.
        optimizer: ``"adam"`` or ``"sgd"`` (:func:`bnlib.engine.make_optimizer`), or an optimizer
            shared with other engines (:func:`manual_engines`). Default: ``"adam"``.
        lr: learning rate. Default: ``0.01``.
        momentum: momentum of ``"sgd"``. Default: ``0.0``.
        flat: optimise one flat parameter holding all of the model's (see
            :func:`~bnlib.engine.flatten_parameters`; the same update, in one call); ``False``
            optimises the model's parameters one by one. Default: ``True``.

    Shape:
        - images: :math:`(N, *)`, flattened to :math:`(N, D)` when the model starts with
          ``nn.Flatten``, else :math:`(N, D)`; labels: :math:`(N,)`, ``int64``; :math:`N \ge 2`
          with batch norm.
    """

    def __init__(self, model: nn.Module, optimizer: str | torch.optim.Optimizer = "adam", *,
                 lr: float = 0.01, momentum: float = 0.0, flat: bool = True) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the manual engine cannot train this model: {reason}; "
                             "use engine='autograd'")
        self.model = model
        params = list(model.parameters())
        if isinstance(optimizer, torch.optim.Optimizer):  # shared: see manual_engines
            trained = [param for group in optimizer.param_groups for param in group["params"]]
            self.optimizer = optimizer
        else:
            if flat:
                trained = [flatten_parameters(params)]
            else:
                for param in params:
                    param.grad = torch.zeros_like(param)
                trained = params
            self.optimizer = make_optimizer(trained, optimizer, lr=lr, momentum=momentum)
        self.grads = [(param, param.grad) for param in (*params, *trained)]
        self.flattens = type(model[0]) is nn.Flatten
        self.layers = self.build_layers([layer for layer in model if type(layer) is not nn.Flatten],
                                        like=params[0])
        self.norms = [layer for layer in model if type(layer) in BATCH_NORM_1D_TYPES]
        self.loss = SoftmaxCrossEntropyStep(params[0])
        self.shape: tuple[int, int] | None = None

    def check_unobserved(self) -> None:
        """Raise ``RuntimeError`` if something that the manual step would skip (a hook, see
        :func:`bnlib.engine.observers_reason`) was added since the engine was made, for
        example by a callback between steps."""
        reason = observers_reason(self.model)
        if reason is not None:
            raise RuntimeError(f"after the manual engine was chosen, {reason}; train this model "
                               "with engine='autograd', or add the hook before training (then "
                               "engine='auto' picks autograd)")

    @staticmethod
    def build_layers(layers: list[nn.Module], like: Tensor) -> list:
        steps = []
        for index, layer in enumerate(layers):
            if type(layer) is nn.Linear:
                steps.append(LinearStep(layer, needs_input_grad=index > 0))
            elif type(layer) in BATCH_NORM_1D_TYPES:
                steps.append(BatchNormStep(layer, like))
            else:
                steps.append(ActivationStep(ACTIVATION_NAMES[type(layer)], like))
        return steps

    def resize(self, batch_size: int, features: int) -> None:
        """Switch every layer to the buffers of this batch size (allocated on first use)."""
        for layer in self.layers:
            if isinstance(layer, LinearStep):
                layer.resize(batch_size)
                features = layer.weight.shape[0]
            elif isinstance(layer, BatchNormStep):
                layer.resize(batch_size)
            else:
                layer.resize(batch_size, features)
        self.loss.resize(batch_size, features)
        self.shape = (batch_size, features)

    @property
    def logits(self) -> Tensor:
        """The logits of the last step, a buffer that the next step overwrites."""
        return self.layers[-1].output

    def step(self, images: Tensor, labels: Tensor) -> Tensor:
        """One training step on a batch; return the batch's mean cross-entropy (a 0-dim tensor,
        computed before the update)."""
        loss = self.compute_gradients(images, labels)
        self.optimizer.step()
        return loss

    def compute_gradients(self, images: Tensor, labels: Tensor) -> Tensor:
        """Forward and backward on a batch, gradients into ``.grad``, no update; return the
        batch's mean cross-entropy (a 0-dim tensor)."""
        x = images.reshape(len(images), -1) if self.flattens else images
        if self.shape is None or self.shape[0] != len(x):
            self.resize(len(x), x.shape[1])
        if not all(norm.training for norm in self.norms):
            raise RuntimeError("a batch-norm layer is in eval mode; call model.train() to train")
        for param, grad in self.grads:
            if param.grad is not grad:  # someone set it to None (zero_grad): put it back
                param.grad = grad
        for layer in self.layers:
            x = layer.forward(x)
        loss = self.loss.forward(x, labels)
        grad = self.loss.backward()
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return loss


def manual_engines(models: list[nn.Module], optimizer: str = "adam", *, lr: float = 0.01,
                   momentum: float = 0.0) -> list[ManualEngine]:
    """One :class:`ManualEngine` per model, all sharing one optimizer over one flat parameter.

    Adam and SGD update each value from its own gradient and state alone, so one optimizer over
    the parameters of several models takes the steps that one optimizer per model would, up to
    the last bit of rounding (the fused kernel may split a longer flat tensor differently, and
    vectorised code may then round a few values differently), in one call instead of several (a
    call costs more than the update of a small network). Train them in lockstep: every engine's
    :meth:`~ManualEngine.compute_gradients` on its batch, then the shared ``optimizer.step()``
    once.

    Args:
        models: supported models (see :func:`unsupported_reason`), with parameters of one dtype
            and device.
        optimizer, lr, momentum: as for :class:`ManualEngine`.
    """
    for model in models:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the manual engine cannot train this model: {reason}; "
                             "use engine='autograd'")
    params = [param for model in models for param in model.parameters()]
    if len({id(param) for param in params}) != len(params):
        raise ValueError("the models share a parameter (the same model given twice?); pass "
                         "distinct models")
    if len({(param.dtype, param.device) for param in params}) > 1:
        raise ValueError("the models' parameters differ in dtype or device, and one flat "
                         "parameter would convert them; move them to one with model.to(...), or "
                         "use make_engines, which groups them")
    flat = flatten_parameters(params)
    shared = make_optimizer([flat], optimizer, lr=lr, momentum=momentum)
    return [ManualEngine(model, shared) for model in models]


def engine_for(model: nn.Module, engine: str = "auto") -> str:
    """The engine that trains ``model`` when ``engine`` is asked for: ``"manual"`` or
    ``"autograd"``.

    ``"auto"`` picks ``"manual"`` only when :func:`unsupported_reason` finds nothing: a model
    with hooks, or while global module hooks are registered, trains with autograd, so that the
    hooks run.

    Raises:
        ValueError: ``engine="manual"`` and :class:`bnlib.engine.ManualEngine` cannot train the
            model (the message says why: for a hook, its kind and the module or parameter that
            holds it), or ``engine`` is not one of :data:`ENGINES`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    if engine == "autograd":
        return engine
    reason = unsupported_reason(model)
    if reason is None:
        return "manual"
    if engine == "manual":
        raise ValueError(f"engine='manual' cannot train this model: {reason}; use "
                         "engine='autograd' (or 'auto', which picks autograd for such models)")
    return "autograd"


class AutogradEngine:
    """The textbook step: forward, ``loss.backward()``, ``optimizer.step()``.

    Args:
        model: the model, trained in place.
        optimizer: ``"adam"`` or ``"sgd"``. Default: ``"adam"``.
        lr: learning rate. Default: ``0.01``.
        momentum: momentum of ``"sgd"``. Default: ``0.0``.
    """

    def __init__(self, model: nn.Module, optimizer: str = "adam", *, lr: float = 0.01,
                 momentum: float = 0.0) -> None:
        self.model = model
        self.optimizer = make_optimizer(model, optimizer, lr=lr, momentum=momentum)
        self.logits: Tensor | None = None

    def step(self, images: Tensor, labels: Tensor) -> Tensor:
        """One training step; return the batch's mean cross-entropy before the update."""
        loss = self.compute_gradients(images, labels)
        self.optimizer.step()
        return loss

    def compute_gradients(self, images: Tensor, labels: Tensor) -> Tensor:
        """Forward, ``zero_grad()`` and backward, no update; return the mean cross-entropy."""
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.logits = logits.detach()
        return loss.detach()


def make_engines(models: Mapping[str, nn.Module], engine: str = "auto", optimizer: str = "adam",
                 *, lr: float = 0.01,
                 momentum: float = 0.0) -> dict[str, ManualEngine | AutogradEngine]:
    """The engine of every model (see :func:`engine_for`), for training in lockstep.

    The models that the manual engine trains share one optimizer per dtype and device
    (:func:`manual_engines`); each other model gets an :class:`AutogradEngine` of its own.

    Args:
        models: names and models, trained in place.
        engine: ``"auto"``, ``"manual"`` or ``"autograd"``, as for :func:`engine_for`.
        optimizer, lr, momentum: as for :class:`ManualEngine`.
    """
    manual: dict[tuple[torch.dtype, torch.device], dict[str, nn.Module]] = {}
    engines: dict[str, ManualEngine | AutogradEngine] = {}
    for name, model in models.items():
        if engine_for(model, engine) == "manual":
            first = next(model.parameters())
            manual.setdefault((first.dtype, first.device), {})[name] = model
        else:
            engines[name] = AutogradEngine(model, optimizer, lr=lr, momentum=momentum)
    for group in manual.values():
        engines.update(zip(group, manual_engines(list(group.values()), optimizer, lr=lr,
                                                 momentum=momentum)))
    return {name: engines[name] for name in models}
