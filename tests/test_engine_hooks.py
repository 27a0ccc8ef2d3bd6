"""Hooks and the choice of engine: engine="auto" trains a hooked model with autograd, so that
every hook runs; engine="manual" refuses it before training, naming the hook and where it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from synthetic import synthetic_mnist
from torch import nn
from torch.nn.modules import module as torch_module
from torch.nn.utils import parametrize

from bnlib.engine import engine_for, unsupported_reason
from bnlib.models import build_mlp
from bnlib.training import TrainConfig, compare, train

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing")]

TRAIN, TEST = synthetic_mnist(320, seed=1), synthetic_mnist(200, seed=2)
STEPS = 10  # 320 examples in batches of 32, one epoch


def config(engine: str = "auto") -> TrainConfig:
    return TrainConfig(epochs=1, device="cpu", progress=False, engine=engine)


def counter(calls: list, training_only: bool = False) -> Callable:
    """A hook of any signature that records a call; ``training_only`` leaves out the forward
    passes of evaluation (run under ``torch.no_grad``), which any engine makes."""
    def hook(*args, **kwargs):
        if not training_only or torch.is_grad_enabled():
            calls.append(1)
    return hook


class CountingIdentity(nn.Module):
    """A parametrization that leaves the weight as it is and counts its uses in training."""

    def __init__(self, calls: list) -> None:
        super().__init__()
        self.calls = calls

    def forward(self, weight):
        counter(self.calls, training_only=True)()
        return weight


def entered(context) -> Callable[[], None]:
    """Enter a context manager now; return what leaves it."""
    context.__enter__()
    return lambda: context.__exit__(None, None, None)


def parametrized(model: nn.Module, calls: list) -> Callable[[], None]:
    parametrize.register_parametrization(model[1], "weight", CountingIdentity(calls))
    calls.clear()  # registering evaluates it once, to check it
    return lambda: parametrize.remove_parametrizations(model[1], "weight")


def forward_replaced(model: nn.Module, calls: list) -> Callable[[], None]:
    original = model[3].forward

    def forward(x):
        counter(calls, training_only=True)()
        return original(x)

    model[3].forward = forward
    return lambda: delattr(model[3], "forward")


def saved_tensor_hooks(model: nn.Module, calls: list) -> Callable[[], None]:
    def pack(tensor):
        calls.append(1)
        return tensor
    return entered(torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor))


def handle(register, backward: bool = False) -> Callable[[nn.Module, list], Callable[[], None]]:
    """An installer from ``register(model, hook) -> RemovableHandle``; a ``backward`` hook runs
    in the backward pass (where grad mode is off), so all its calls count."""
    def install(model: nn.Module, calls: list) -> Callable[[], None]:
        return register(model, counter(calls, training_only=not backward)).remove
    return install


@dataclass
class Watcher:
    name: str
    install: Callable[[nn.Module, list], Callable[[], None]]  # returns what removes it
    words: str  # what the refusal must say


# The model is build_mlp(norm="torch"): 0 Flatten, 1 Linear, 2 BatchNorm1d, 3 ReLU, 4 Linear,
# 5 BatchNorm1d, 6 ReLU, 7 Linear.
WATCHERS = [
    Watcher("module forward hook", handle(lambda m, h: m[3].register_forward_hook(h)),
            "module '3' (ReLU) has a forward hook"),
    Watcher("module forward pre-hook", handle(lambda m, h: m[1].register_forward_pre_hook(h)),
            "module '1' (Linear) has a forward pre-hook"),
    Watcher("module full backward hook",
            handle(lambda m, h: m[2].register_full_backward_hook(h), backward=True),
            "module '2' (BatchNorm1d) has a backward hook"),
    Watcher("module full backward pre-hook",
            handle(lambda m, h: m[7].register_full_backward_pre_hook(h), backward=True),
            "module '7' (Linear) has a backward pre-hook"),
    Watcher("hook on the model itself", handle(lambda m, h: m.register_forward_hook(h)),
            "the model has a forward hook"),
    Watcher("global forward hook",
            handle(lambda m, h: torch_module.register_module_forward_hook(h)),
            "global module hook is registered (torch.nn.modules.module.register_module_forward_hook)"),
    Watcher("global forward pre-hook",
            handle(lambda m, h: torch_module.register_module_forward_pre_hook(h)),
            "register_module_forward_pre_hook"),
    Watcher("global full backward hook",
            handle(lambda m, h: torch_module.register_module_full_backward_hook(h), backward=True),
            "register_module_full_backward_hook"),
    Watcher("global full backward pre-hook",
            handle(lambda m, h: torch_module.register_module_full_backward_pre_hook(h), backward=True),
            "register_module_full_backward_pre_hook"),
    Watcher("tensor hook on a parameter", handle(lambda m, h: m[4].weight.register_hook(h), backward=True),
            "parameter '4.weight' has a gradient hook (Tensor.register_hook)"),
    Watcher("post-accumulate-grad hook",
            handle(lambda m, h: m[5].bias.register_post_accumulate_grad_hook(h), backward=True),
            "parameter '5.bias' has a post-accumulate-grad hook"),
    Watcher("multi-grad hook",
            handle(lambda m, h: torch.autograd.graph.register_multi_grad_hook(
                [m[1].weight, m[7].bias], h), backward=True),
            "parameter '1.weight' has a gradient hook"),
    Watcher("parametrization", parametrized,
            "module '1' (ParametrizedLinear) is parametrized (torch.nn.utils.parametrize)"),
    Watcher("forward replaced on an instance", forward_replaced,
            "module '3' (ReLU) has its forward replaced"),
    Watcher("saved-tensor hooks", saved_tensor_hooks,
            "saved-tensor hooks are active"),
    Watcher("anomaly detection",
            lambda model, calls: entered(torch.autograd.detect_anomaly(check_nan=False)),
            "anomaly detection is on"),
]


@pytest.fixture
def watched(request):
    """A model of build_mlp with the watcher installed, the list its calls go to, the watcher;
    the watcher is removed afterwards, even after a failure (a global hook would leak)."""
    watcher = request.param
    model, calls = build_mlp(norm="torch", seed=0), []
    remove = watcher.install(model, calls)
    try:
        yield model, calls, watcher
    finally:
        remove()


@pytest.mark.parametrize("watched", WATCHERS, ids=[w.name for w in WATCHERS], indirect=True)
def test_manual_refuses_a_watched_model_before_training_and_names_the_watcher(watched):
    model, calls, watcher = watched
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match="engine='manual' cannot train this model") as error:
        train(model, TRAIN, TEST, config("manual"))
    assert watcher.words in str(error.value)
    assert "use engine='autograd'" in str(error.value)
    assert calls == []  # refused before any pass
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())


@pytest.mark.parametrize("watched", WATCHERS, ids=[w.name for w in WATCHERS], indirect=True)
def test_auto_trains_a_watched_model_with_autograd_and_the_watcher_runs(watched):
    model, calls, watcher = watched
    assert engine_for(model, "auto") == "autograd"
    history = train(model, TRAIN, TEST, config("auto"))
    if watcher.name != "anomaly detection":  # it only checks; nothing to count
        assert len(history.step_loss) == STEPS
        assert len(calls) >= STEPS


@pytest.mark.parametrize("watcher", WATCHERS, ids=[w.name for w in WATCHERS])
def test_without_the_watcher_the_manual_engine_is_chosen_again(watcher):
    model = build_mlp(norm="torch", seed=0)
    watcher.install(model, [])()
    assert unsupported_reason(model) is None
    assert engine_for(model, "auto") == "manual"


def test_compare_gives_autograd_to_the_hooked_model_only():
    hooked, plain, calls = build_mlp(norm="torch", seed=0), build_mlp(norm="torch", seed=0), []
    with hooked[1].weight.register_hook(counter(calls)):
        assert [engine_for(m) for m in (hooked, plain)] == ["autograd", "manual"]
        histories = compare({"hooked": hooked, "plain": plain}, TRAIN, TEST, config())
    assert len(calls) == STEPS
    torch.testing.assert_close(torch.tensor(histories["hooked"].step_loss),
                               torch.tensor(histories["plain"].step_loss), rtol=0, atol=1e-5)


def test_a_hook_added_by_a_callback_during_training_stops_the_manual_engine():
    model, handles = build_mlp(norm="torch", seed=0), []

    def add_hook(epochs_done, histories):
        handles.append(model[3].register_forward_hook(counter([])))

    try:
        with pytest.raises(RuntimeError, match="after the manual engine was chosen, module '3' "
                                               r"\(ReLU\) has a forward hook.*engine='autograd'"):
            train(model, TRAIN, TEST, TrainConfig(epochs=2, device="cpu", progress=False),
                  on_epoch=add_hook)
    finally:
        for hook_handle in handles:
            hook_handle.remove()
    assert len(handles) == 1  # stopped after the first epoch
