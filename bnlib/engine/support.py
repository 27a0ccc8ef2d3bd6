r"""Which models :class:`bnlib.engine.ManualEngine` may train: what it can run, and that nothing
is watching.

The manual engine never calls a module's forward and never runs autograd, so anything that would
run inside them is skipped: module hooks (the model's own or torch's global ones), gradient hooks
on the parameters, parametrizations, a ``forward`` replaced on an instance, anomaly detection,
saved-tensor hooks. Training would go on with no error and the hooks simply not called (a
diagnostics tracker recording nothing, a gradient clipped by a hook left unclipped).
:func:`unsupported_reason` therefore accepts a model only when it can see that none of these is
there, and names the first one it finds; ``engine="auto"`` then trains with autograd and
``engine="manual"`` refuses.

torch offers no public way to list the hooks of a module or a tensor, so the checks read the
attributes that torch's own ``register_*`` methods write (``Module._forward_hooks``,
``Tensor._backward_hooks``, the ``_global_*_hooks`` of ``torch.nn.modules.module``, ...); the
tests register every kind through the public methods and check that it is seen, so a torch that
renames one fails them. Should an attribute be missing, the model counts as watched (autograd is
always right). Two things stay invisible from Python, and need ``engine="autograd"`` from
whoever uses them: hooks put on autograd's graph nodes themselves
(``torch.autograd.graph.get_gradient_edge(p).node.register_hook``), and torch function or
dispatch modes (which see the manual engine's operations too, but not the ones autograd runs).
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.nn.utils import parametrize

from bnlib.nn.registry import ACTIVATION_NAMES, BATCH_NORM_1D_TYPES

__all__ = ["observers_reason", "unsupported_reason"]

LAYER_TYPES = (nn.Linear, *BATCH_NORM_1D_TYPES, *ACTIVATION_NAMES)
MISSING = object()

# The nn.Module attribute that each public registration writes to (state-dict hooks do not run
# during training, so they do not count).
MODULE_HOOKS = {
    "_forward_pre_hooks": "a forward pre-hook (register_forward_pre_hook)",
    "_forward_hooks": "a forward hook (register_forward_hook)",
    "_backward_pre_hooks": "a backward pre-hook (register_full_backward_pre_hook)",
    "_backward_hooks": "a backward hook (register_full_backward_hook or register_backward_hook)",
}
GLOBAL_MODULE_HOOKS = {
    "_global_forward_pre_hooks": "torch.nn.modules.module.register_module_forward_pre_hook",
    "_global_forward_hooks": "torch.nn.modules.module.register_module_forward_hook",
    "_global_backward_pre_hooks":
        "torch.nn.modules.module.register_module_full_backward_pre_hook",
    "_global_backward_hooks": "torch.nn.modules.module.register_module_full_backward_hook "
                              "(or register_module_backward_hook)",
}
TENSOR_HOOKS = {
    "_backward_hooks": "a gradient hook (Tensor.register_hook)",
    "_post_accumulate_grad_hooks":
        "a post-accumulate-grad hook (Tensor.register_post_accumulate_grad_hook)",
}
SKIPPED = "which the manual engine, calling neither forward nor autograd, would skip"


def unseen(where: str, attribute: str) -> str:
    """The reason given when torch no longer has an attribute the checks read."""
    return (f"cannot check {where} for hooks: torch {torch.__version__} has no {attribute} "
            "attribute there")


def global_hooks_reason() -> str | None:
    """Why global module hooks or autograd-wide settings rule the manual engine out, or None."""
    for attribute, registration in GLOBAL_MODULE_HOOKS.items():
        hooks = getattr(torch_module, attribute, MISSING)
        if hooks is MISSING:
            return unseen("torch.nn.modules.module", attribute)
        if hooks:
            return f"a global module hook is registered ({registration}), {SKIPPED}"
    if torch.is_anomaly_enabled():
        return f"anomaly detection is on (torch.autograd.detect_anomaly), {SKIPPED}"
    top_saved_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", MISSING)
    if top_saved_hooks is MISSING:
        return unseen("torch._C._autograd", "_top_saved_tensors_default_hooks")
    if top_saved_hooks(True) is not None:
        return ("saved-tensor hooks are active (torch.autograd.graph.saved_tensors_hooks), "
                f"{SKIPPED}")
    return None


def module_reason(name: str, module: nn.Module) -> str | None:
    """Why ``module`` (called ``name`` in the model) is watched or changed, or None."""
    where = "the model" if not name else f"module {name!r} ({type(module).__name__})"
    if parametrize.is_parametrized(module):
        return f"{where} is parametrized (torch.nn.utils.parametrize), {SKIPPED}"
    if "forward" in vars(module):
        return f"{where} has its forward replaced on the instance, {SKIPPED}"
    for attribute, kind in MODULE_HOOKS.items():
        hooks = getattr(module, attribute, MISSING)
        if hooks is MISSING:
            return unseen(where, attribute)
        if hooks:
            return f"{where} has {kind}, {SKIPPED}"
    return None


def parameter_reason(name: str, param: torch.Tensor) -> str | None:
    """Why parameter ``name`` is watched (a tensor hook on it), or None."""
    for attribute, kind in TENSOR_HOOKS.items():
        hooks = getattr(param, attribute, MISSING)
        if hooks is MISSING:
            return unseen(f"parameter {name!r}", attribute)
        if hooks:
            return f"parameter {name!r} has {kind}, {SKIPPED}"
    return None


def observers_reason(model: nn.Module) -> str | None:
    """What would observe or change ``model``'s forward or backward and be skipped by the manual
    engine (the first one found, by kind and module or parameter name), or ``None`` when the
    checks see nothing (see the module's docstring for what they cannot see)."""
    reasons = chain([global_hooks_reason()],
                    (module_reason(name, module) for name, module in model.named_modules()),
                    (parameter_reason(name, param) for name, param in model.named_parameters()))
    return next((reason for reason in reasons if reason is not None), None)


def layer_reason(index: int, layer: nn.Module, features: int | None) -> tuple[str | None, int]:
    """Why layer ``index`` cannot be run (or ``None``), and the features it outputs."""
    where = f"layer {index} ({type(layer).__name__})"
    if type(layer) not in LAYER_TYPES:
        return f"{where} is not a Linear, BatchNorm1d, ReLU, Sigmoid or Tanh", 0
    if type(layer) is nn.Linear:
        if features is not None and layer.in_features != features:
            return f"{where} expects {layer.in_features} features, gets {features}", 0
        return None, layer.out_features
    if (type(layer) in BATCH_NORM_1D_TYPES and features is not None
            and layer.num_features != features):
        return f"{where} normalises {layer.num_features} features, gets {features}", 0
    return None, features


def parameters_reason(model: nn.Module) -> str | None:
    """Why the parameters cannot be trained by :class:`bnlib.engine.ManualEngine` (or ``None``)."""
    params = [p for _, p in model.named_parameters(remove_duplicate=False)]
    if not params:
        return "the model has no parameters"
    if len({id(p) for p in params}) != len(params):
        return "a parameter is shared between layers"
    if any(type(p) is not nn.Parameter for p in params):  # a subclass may override operations
        return "a parameter is not a plain nn.Parameter"
    first = params[0]
    if any(p.dtype != first.dtype or p.device != first.device for p in params):
        return "its parameters differ in dtype or device"
    if first.dtype not in (torch.float32, torch.float64):
        return f"its parameters are {first.dtype}; the manual engine runs float32 and float64"
    if not all(p.requires_grad for p in params):
        return "a parameter has requires_grad=False (frozen)"
    return None


def unsupported_reason(model: nn.Module) -> str | None:
    """Why :class:`bnlib.engine.ManualEngine` cannot train ``model``, or ``None`` when it can.

    Supported: an ``nn.Sequential`` (the class itself, whose forward is known) of an optional
    leading ``nn.Flatten()``, then ``nn.Linear`` (with or without bias), ``nn.BatchNorm1d`` or
    ``bnlib.BatchNorm1d`` (any ``eps``, ``momentum`` including ``None``, ``affine``,
    ``track_running_stats``), ``nn.ReLU``, ``nn.Sigmoid`` and ``nn.Tanh`` in any order, ending
    with an ``nn.Linear`` that outputs the logits: every model :func:`bnlib.build_mlp` builds
    with ``norm`` ``"none"``, ``"torch"`` or ``"bnlib"``. Anything that would observe or change
    the forward or backward passes (:func:`observers_reason`: module hooks, global module hooks,
    tensor hooks on a parameter, parametrizations, ...) makes it unsupported, since the engine
    calls neither the model's forward nor autograd. Layers are numbered as in the model.
    """
    reason = observers_reason(model)
    if reason is not None:
        return reason
    if type(model) is not nn.Sequential:
        return f"the model is a {type(model).__name__}, not an nn.Sequential of known layers"
    layers = list(model)
    start = 0
    if layers and type(layers[0]) is nn.Flatten:
        if (layers[0].start_dim, layers[0].end_dim) != (1, -1):
            return "its Flatten is not nn.Flatten() with the default dims"
        start = 1
    if len(layers) == start or type(layers[-1]) is not nn.Linear:
        return "the model does not end with an nn.Linear giving the logits"
    features = None
    for index in range(start, len(layers)):
        reason, features = layer_reason(index, layers[index], features)
        if reason is not None:
            return reason
    return parameters_reason(model)
