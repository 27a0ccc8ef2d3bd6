"""Tests for bnlib.engine.manual: the hand-written training step against autograd's, on every MLP
that build_mlp builds and every batch-norm option."""

from __future__ import annotations

import copy
import io
import itertools

import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_mnist
from torch import nn

from bnlib.data import Batches
from bnlib.engine import (
    AutogradEngine,
    ManualEngine,
    engine_for,
    make_engines,
    manual_engines,
    unsupported_reason,
)
from bnlib.models import NORMS_1D, SmallCNN, build_mlp
from bnlib.nn import BatchNorm1d
from bnlib.training import TrainConfig, compare, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN, TEST = synthetic_mnist(320, seed=1), synthetic_mnist(200, seed=2)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
MLP_OPTIONS = [dict(activation=a, norm=n, bn_position=p)
               for a, n, p in itertools.product(("relu", "sigmoid", "tanh"),
                                                ("none", "torch", "bnlib"), ("before", "after"))
               if not (n == "none" and p == "after")]
NORM_OPTIONS = [
    dict(eps=1e-3, momentum=None),
    dict(momentum=0.3, affine=False),
    dict(track_running_stats=False),
    dict(momentum=None, affine=False, track_running_stats=False),
]


def option_id(options: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in options.items())


def with_norms(norm_type: type, widths=(784, 24, 16, 10), **norm_options) -> nn.Sequential:
    """A relu MLP whose hidden layers have ``norm_type(width, **norm_options)`` after the Linear."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(fan_in, fan_out, bias=False), norm_type(fan_out, **norm_options),
                   nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


def autograd_step(model: nn.Module, images, labels):
    """One plain autograd step without an update: the loss, and the gradients by name."""
    loss = F.cross_entropy(model(images), labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss, dict(zip((name for name, _ in model.named_parameters()), grads))


def assert_one_step_matches_autograd(model: nn.Module) -> None:
    """Float64: the loss, every .grad and every buffer after one step equal autograd's."""
    model = model.double()
    reference = copy.deepcopy(model)
    images, labels = TRAIN.images[:48].double(), TRAIN.labels[:48]
    loss = ManualEngine(model, "sgd", lr=1e-3).step(images, labels)
    expected_loss, expected_grads = autograd_step(reference, images, labels)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=1e-12)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected_grads[name], rtol=1e-10, atol=1e-12)
    for (name, buffer), expected in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(buffer, expected, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("options", MLP_OPTIONS, ids=option_id)
@pytest.mark.parametrize("init_std", [None, 0.05])
def test_every_mlp_of_build_mlp_is_supported(options, init_std):
    for widths in [(784, 32, 32, 10), (784, 10), (20, 7, 5, 3, 4)]:
        assert unsupported_reason(build_mlp(widths, init_std=init_std, **options)) is None


@pytest.mark.parametrize("norm", sorted(set(NORMS_1D) - {"none", "torch", "bnlib"}))
def test_build_mlps_other_normalisations_get_a_reason_and_auto_picks_autograd(norm):
    model = build_mlp(norm=norm, seed=0)
    assert "is not a Linear, BatchNorm1d, ReLU, Sigmoid or Tanh" in unsupported_reason(model)
    assert engine_for(model, "auto") == "autograd"


@pytest.mark.parametrize("options", MLP_OPTIONS, ids=option_id)
def test_one_float64_step_gives_autograds_gradients_and_statistics(options):
    assert_one_step_matches_autograd(build_mlp((784, 24, 16, 10), seed=0, **options))


@pytest.mark.parametrize("norm_type", [nn.BatchNorm1d, BatchNorm1d])
@pytest.mark.parametrize("norm_options", NORM_OPTIONS, ids=option_id)
def test_one_float64_step_with_every_batch_norm_option(norm_type, norm_options):
    assert_one_step_matches_autograd(with_norms(norm_type, **norm_options))


def test_affine_weight_without_bias_and_a_norm_on_the_input():
    model = with_norms(BatchNorm1d, bias=False)
    model.insert(1, nn.BatchNorm1d(784))
    assert unsupported_reason(model) is None
    assert_one_step_matches_autograd(model)


@pytest.mark.parametrize("norm_type", [nn.BatchNorm1d, BatchNorm1d])
def test_cumulative_average_and_counter_follow_the_module_over_steps(norm_type):
    model = with_norms(norm_type, momentum=None).double()
    reference = copy.deepcopy(model)
    engine = ManualEngine(model, "sgd", lr=0.1)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for images, labels in itertools.islice(Batches(TRAIN, 30, shuffle=False), 7):
        engine.step(images.double(), labels)
        optimizer.zero_grad()
        F.cross_entropy(reference(images.double()), labels).backward()
        optimizer.step()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-12, atol=1e-12,
                                   msg=name)
    assert int(model[2].num_batches_tracked) == 7


def accuracies_within_one_example(first: list[float], second: list[float], examples: int) -> bool:
    """Whether two runs' accuracies (fractions of ``examples``) differ by at most one example
    each time: two code paths round differently, so an example whose two largest logits almost
    tie may be classified differently by them."""
    return len(first) == len(second) and all(
        abs(a - b) <= 1 / examples + 1e-12 for a, b in zip(first, second))


def float32_run(model: nn.Module, engine: str, optimizer: str, lr: float, momentum: float):
    config = TrainConfig(epochs=20, lr=lr, optimizer=optimizer, momentum=momentum, device="cpu",
                         progress=False, seed=4, engine=engine)
    return compare({"m": model}, TRAIN, TEST, config)["m"]


@pytest.mark.parametrize("options, optimizer, lr, momentum", [
    (dict(norm="torch"), "adam", 0.01, 0.0),
    (dict(norm="none"), "adam", 0.01, 0.0),
    (dict(norm="bnlib", bn_position="after", activation="tanh"), "adam", 0.01, 0.0),
    (dict(norm="torch", activation="sigmoid"), "sgd", 0.5, 0.0),
    (dict(norm="bnlib", activation="relu"), "sgd", 0.05, 0.9),
    (dict(norm="none", activation="tanh"), "sgd", 0.1, 0.0),
    (dict(norm="torch", bn_position="after", activation="sigmoid"), "sgd", 0.05, 0.9),
])
def test_float32_runs_match_autograd_step_by_step(options, optimizer, lr, momentum):
    """200 steps in float32: every step's loss within 1e-5 of autograd's, the accuracies within
    one example.

    The two engines add and multiply the same numbers in different orders, so each step's
    results differ by float32 rounding (relative 6e-8); training carries those differences on,
    and over these runs the losses (2.3 falling to 0.001) differ by at most 5e-7, a few units
    in the last place. 1e-5 leaves a margin of 20, and is far below what a wrong gradient does
    (a loss changed from the second step on, by 1e-3 or more).
    """
    manual_model, autograd_model = build_mlp(seed=0, **options), build_mlp(seed=0, **options)
    manual = float32_run(manual_model, "manual", optimizer, lr, momentum)
    autograd = float32_run(autograd_model, "autograd", optimizer, lr, momentum)
    assert len(manual.step_loss) == len(autograd.step_loss) == 200
    torch.testing.assert_close(torch.tensor(manual.step_loss), torch.tensor(autograd.step_loss),
                               rtol=0, atol=1e-5)
    assert accuracies_within_one_example(manual.train_acc, autograd.train_acc, len(TRAIN))
    assert accuracies_within_one_example(manual.test_acc, autograd.test_acc, len(TEST))
    assert manual.step_loss[-1] < 0.5 * manual.step_loss[0]
    for mine, theirs in zip(manual_model.state_dict().values(),
                            autograd_model.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3)


def test_flat_and_per_parameter_optimizers_take_the_same_steps():
    models = [build_mlp(norm="torch", seed=0).double() for _ in range(2)]
    engines = [ManualEngine(model, "adam", flat=flat) for model, flat in zip(models, (True, False))]
    assert len(engines[0].optimizer.param_groups[0]["params"]) == 1
    for images, labels in itertools.islice(Batches(TRAIN, 32, shuffle=False), 5):
        losses = [engine.step(images.double(), labels) for engine in engines]
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-14, atol=0)
    for first, second in zip(*(model.parameters() for model in models)):
        torch.testing.assert_close(first, second, rtol=1e-12, atol=1e-14)


def test_engines_sharing_one_optimizer_take_the_steps_of_one_optimizer_each():
    """The same float64 steps to the last bits of rounding, not to the bit.

    One fused Adam over both models' flat parameter (53,076 values) and one per model (26,506
    values each) do the same arithmetic per value, but the kernel splits a longer tensor into
    vectorised blocks and a scalar tail differently, and AVX-512 code then rounds a few values
    differently: on an AVX-512 AMD EPYC, 18 of 25,088 first-layer weights differed after 5 steps,
    by at most 2.2e-18 (relative 2e-12), while the gradients stayed bit-identical. torch
    guarantees bit equality only for the same kernel on the same inputs. A wrong step would be
    off by about the learning rate (1e-2); the tolerances below are 1e-12 relative, 1e-14
    absolute."""
    def models():
        return [build_mlp(norm="torch", seed=0).double(), build_mlp(activation="tanh", seed=1)
                .double()]

    shared, alone = models(), models()
    engines = manual_engines(shared, "adam", lr=0.01)
    assert engines[0].optimizer is engines[1].optimizer
    own = [ManualEngine(model, "adam", lr=0.01) for model in alone]
    for images, labels in itertools.islice(Batches(TRAIN, 32, shuffle=False), 5):
        images = images.double()
        losses = [engine.compute_gradients(images, labels) for engine in engines]
        engines[0].optimizer.step()
        alone_losses = [engine.step(images, labels) for engine in own]
        torch.testing.assert_close(losses, alone_losses, rtol=1e-12, atol=0)
    for model, model_alone in zip(shared, alone):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, model_alone.state_dict()[name], rtol=1e-12,
                                       atol=1e-14, msg=lambda text, name=name: f"{name}: {text}")


def test_sharing_one_optimizer_refuses_mixed_dtypes_and_a_model_given_twice():
    single, double = build_mlp(seed=0), build_mlp(seed=1).double()
    with pytest.raises(ValueError, match="differ in dtype or device"):
        manual_engines([single, double])
    with pytest.raises(ValueError, match="given twice"):
        manual_engines([single, single])
    assert next(single.parameters()).dtype == torch.float32  # refused before any change


def test_make_engines_groups_the_manual_models_by_dtype_and_gives_the_rest_autograd():
    models = {"a": build_mlp(seed=0), "cnn": SmallCNN(), "b": build_mlp(norm="torch", seed=1),
              "c": build_mlp(seed=2).double()}
    engines = make_engines(models, "auto", "sgd", lr=0.1)
    assert list(engines) == list(models)
    assert isinstance(engines["cnn"], AutogradEngine)
    assert engines["a"].optimizer is engines["b"].optimizer is not engines["c"].optimizer
    assert all(engine.optimizer.param_groups[0]["lr"] == 0.1 for engine in engines.values())
    assert make_engines(models, "autograd")["a"].optimizer is not engines["a"].optimizer


def test_the_trained_module_keeps_its_parameters_and_evaluates_saves_and_loads():
    model = build_mlp(norm="bnlib", seed=0)
    params = list(model.parameters())
    compare({"m": model}, TRAIN, TEST, TrainConfig(epochs=2, device="cpu", progress=False))
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert evaluate(model, TEST)[1] > 0.9
    file = io.BytesIO()
    torch.save(model.state_dict(), file)
    file.seek(0)
    loaded = build_mlp(norm="bnlib", seed=1)
    loaded.load_state_dict(torch.load(file))
    assert evaluate(loaded, TEST) == evaluate(model, TEST)
    assert int(loaded[2].num_batches_tracked) == 20


def test_zero_grad_between_steps_and_a_smaller_last_batch_are_fine():
    model = build_mlp(norm="torch", seed=0)
    engine = ManualEngine(model)
    engine.step(TRAIN.images[:32], TRAIN.labels[:32])
    engine.optimizer.zero_grad()
    model.zero_grad()
    for size in (7, 32, 2):
        loss = engine.step(TRAIN.images[:size], TRAIN.labels[:size])
        assert loss.shape == () and torch.isfinite(loss)
        assert engine.logits.shape == (size, 10)
        assert all(param.grad is not None for param in model.parameters())


def test_a_batch_of_one_and_eval_mode_are_refused_with_what_to_do():
    model = build_mlp(norm="torch", seed=0)
    engine = ManualEngine(model)
    with pytest.raises(ValueError, match="more than 1 value per channel.*at least 2"):
        engine.step(TRAIN.images[:1], TRAIN.labels[:1])
    model.eval()
    with pytest.raises(RuntimeError, match="eval mode.*model.train()"):
        engine.step(TRAIN.images[:8], TRAIN.labels[:8])


class Doubling(nn.Module):
    def forward(self, x):
        return 2 * x


def shared_weights() -> nn.Sequential:
    linear = nn.Linear(10, 10)
    return nn.Sequential(linear, nn.ReLU(), linear)


def frozen() -> nn.Sequential:
    model = build_mlp(seed=0)
    model[1].weight.requires_grad_(False)
    return model


def hooked() -> nn.Sequential:
    model = build_mlp(seed=0)
    model[2].register_forward_hook(lambda module, args, output: None)
    return model


@pytest.mark.parametrize("make, words", [
    (lambda: SmallCNN(), "SmallCNN, not an nn.Sequential"),
    (lambda: nn.Sequential(nn.Linear(784, 10), nn.ReLU()), "end with an nn.Linear"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Dropout(), nn.Linear(10, 10)),
     "layer 2 (Dropout) is not a Linear"),
    (lambda: nn.Sequential(nn.Linear(784, 10), Doubling(), nn.Linear(10, 10)), "(Doubling)"),
    (lambda: nn.Sequential(nn.Linear(784, 10), nn.Linear(12, 10)), "expects 12 features, gets 10"),
    (lambda: nn.Sequential(nn.Linear(784, 10), nn.BatchNorm1d(11), nn.Linear(10, 3)),
     "normalises 11 features, gets 10"),
    (lambda: nn.Sequential(nn.Flatten(0), nn.Linear(784, 10)), "default dims"),
    (lambda: nn.Sequential(nn.Linear(784, 10), nn.LeakyReLU(), nn.Linear(10, 3)), "LeakyReLU"),
    (lambda: nn.Sequential(nn.Linear(10, 10), nn.BatchNorm2d(10), nn.Linear(10, 3)), "BatchNorm2d"),
    (shared_weights, "shared"),
    (frozen, "requires_grad=False"),
    (hooked, "module '2' (ReLU) has a forward hook"),
    (lambda: build_mlp(seed=0).to(torch.float16), "float16"),
])
def test_other_models_get_a_reason_and_the_engine_refuses_them(make, words):
    model = make()
    reason = unsupported_reason(model)
    assert reason is not None and words in reason
    with pytest.raises(ValueError, match="use engine='autograd'") as error:
        ManualEngine(model)
    assert words in str(error.value)


@CUDA
@pytest.mark.parametrize("options", [dict(norm="torch"), dict(norm="bnlib", bn_position="after",
                                                                   activation="sigmoid")])
def test_cuda_steps_match_autograd(options):
    model = build_mlp(seed=0, **options).double().cuda()
    reference = copy.deepcopy(model)
    engines = [ManualEngine(model, "adam"), AutogradEngine(reference, "adam")]
    for images, labels in itertools.islice(Batches(TRAIN, 32, shuffle=False), 5):
        images, labels = images.double().cuda(), labels.cuda()
        losses = [engine.step(images, labels) for engine in engines]
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-12)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-9, atol=1e-11)
