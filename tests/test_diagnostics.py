"""Tests for bnlib.diagnostics and its figures: every statistic against a direct computation."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from bnlib.diagnostics import (
    UpdateRatioTracker,
    dead_fraction,
    saturation_fraction,
    take_snapshot,
    update_ratio,
)
from bnlib.plotting import (
    plot_activation_histograms,
    plot_depth_sweep,
    plot_gradient_histograms,
    plot_saturation,
    plot_update_ratios,
)


def tiny_model(norm: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)]
    if norm:
        layers.insert(1, nn.BatchNorm1d(5))
    return nn.Sequential(*layers).double()


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(n, 3, generator=generator, dtype=torch.float64),
            torch.randint(0, 2, (n,), generator=generator))


def direct(model: nn.Sequential, inputs: torch.Tensor, targets: torch.Tensor):
    """The hidden activations, their gradients and the Linear weights' gradients, by hand."""
    hidden = model[1](model[0](inputs))
    second = model[3](model[2](hidden))
    loss = F.cross_entropy(model[4](second), targets)
    weights = [model[0].weight, model[2].weight, model[4].weight]
    grads = torch.autograd.grad(loss, [hidden, second, *weights])
    return [hidden, second], grads[:2], grads[2:], loss


def test_snapshot_records_the_activations_and_gradients_of_the_watched_modules():
    model, (inputs, targets) = tiny_model(), batch()
    snapshot = take_snapshot(model, inputs, targets, bins=7)
    outputs, output_grads, weight_grads, loss = direct(model, inputs, targets)
    assert [s.name for s in snapshot.activations] == ["1", "3"]
    assert [s.kind for s in snapshot.activations] == ["tanh", "relu"]
    for record, tensor in zip(snapshot.activations, outputs):
        assert record.mean == pytest.approx(tensor.mean().item(), rel=1e-12)
        assert record.std == pytest.approx(tensor.std(correction=0).item(), rel=1e-12)
        assert record.norm == pytest.approx(tensor.norm().item(), rel=1e-12)
    counts, edges = np.histogram(outputs[0].detach().numpy(), bins=7, range=(-1, 1))
    np.testing.assert_array_equal(snapshot.activations[0].histogram.counts, counts)
    np.testing.assert_allclose(snapshot.activations[0].histogram.edges, edges)
    assert snapshot.activations[1].saturation == (outputs[1] == 0).double().mean().item()
    assert snapshot.activations[1].dead == dead_fraction(outputs[1])
    assert snapshot.activations[0].dead is None
    for record, grad in zip(snapshot.activation_grads, output_grads):
        assert record.norm == pytest.approx(grad.norm().item(), rel=1e-12)
        assert record.std == pytest.approx(grad.std(correction=0).item(), rel=1e-12)
        # A gradient's histogram spans its own range, not the activation's.
        counts, edges = np.histogram(grad.numpy(), bins=7)
        np.testing.assert_array_equal(record.histogram.counts, counts)
        np.testing.assert_allclose(record.histogram.edges, edges)
    assert [s.name for s in snapshot.weight_grads] == ["0.weight", "2.weight", "4.weight"]
    for record, grad, layer in zip(snapshot.weight_grads, weight_grads, (0, 2, 4)):
        assert record.norm == pytest.approx(grad.norm().item(), rel=1e-12)
        assert record.data_norm == pytest.approx(model[layer].weight.norm().item(), rel=1e-12)
    assert snapshot.loss == pytest.approx(loss.item(), rel=1e-12)


def test_snapshot_leaves_no_trace_on_the_model():
    model, (inputs, targets) = tiny_model(norm=True), batch()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    take_snapshot(model.train(), inputs, targets)
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    assert all(param.grad is None for param in model.parameters())
    # nn.Module keeps its hooks in these dicts; there is no public accessor.
    assert all(not module._forward_hooks for module in model.modules())
    assert model.training


def test_snapshot_without_targets_has_activations_only_and_no_graph():
    model, (inputs, _) = tiny_model(), batch()
    snapshot = take_snapshot(model, inputs, watch=(nn.Linear,))
    assert [s.kind for s in snapshot.activations] == ["linear"] * 3
    assert snapshot.activations[0].saturation is None
    assert snapshot.activation_grads == snapshot.weight_grads == []
    assert snapshot.loss is None


def test_snapshot_names_each_call_of_a_shared_module():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 2)).double()
    snapshot = take_snapshot(model, *batch())
    assert [s.name for s in snapshot.activations] == ["1", "1 (call 2)"]
    assert [s.name for s in snapshot.activation_grads] == ["1", "1 (call 2)"]


def test_snapshot_errors_come_before_any_work():
    model, (inputs, _) = tiny_model(), batch()
    with pytest.raises(ValueError, match="watch="):
        take_snapshot(model, inputs, watch=(nn.Sigmoid,))
    with pytest.raises(ValueError, match="bins"):
        take_snapshot(model, inputs, bins=0)
    with pytest.raises(ValueError, match="threshold"):
        take_snapshot(model, inputs, threshold=1.5)
    with pytest.raises(ValueError, match="batch"):
        take_snapshot(model, inputs[:0])


def test_saturation_fraction_is_exact_on_constructed_outputs():
    tanh = torch.tensor([-0.99, -0.5, 0.0, 0.98, 0.97, 0.96])
    assert saturation_fraction(tanh, "tanh") == pytest.approx(2 / 6)
    assert saturation_fraction(tanh, "tanh", threshold=0.5) == pytest.approx(4 / 6)
    sigmoid = torch.tensor([0.995, 0.5, 0.005, 0.98])  # |2y - 1| = 0.99, 0, 0.99, 0.96
    assert saturation_fraction(sigmoid, "sigmoid") == pytest.approx(2 / 4)
    # The sigmoid rule is the tanh rule on the tanh scale: sigmoid(x) = (1 + tanh(x / 2)) / 2.
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    assert saturation_fraction(torch.sigmoid(x), "sigmoid") == saturation_fraction(
        torch.tanh(x / 2), "tanh")
    relu = torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    assert saturation_fraction(relu, "relu") == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="kind"):
        saturation_fraction(tanh, "gelu")
    with pytest.raises(ValueError, match="empty"):
        saturation_fraction(tanh[:0], "tanh")


def test_dead_fraction_counts_units_zero_on_every_example():
    outputs = torch.tensor([[0.0, 1.0, 0.0, 3.0], [0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    assert dead_fraction(outputs) == pytest.approx(1 / 4)
    images = torch.zeros(2, 3, 4, 4)
    images[1, 2, 3, 3] = 1.0
    assert dead_fraction(images) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape"):
        dead_fraction(torch.zeros(5))


def test_update_ratio_is_the_relative_norm_of_the_change():
    before, after = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.5])
    assert update_ratio(before, after) == pytest.approx(0.5 / 5)
    with pytest.raises(ValueError, match="shape"):
        update_ratio(before, after[:1])
    with pytest.raises(ValueError, match="zeros"):
        update_ratio(torch.zeros(2), after)


def train_steps(model, optimizer, steps, inputs, targets, between=None):
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        if between is not None:
            between()


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    lambda params: torch.optim.Adam(params, lr=0.01)], ids=["sgd", "adam"])
def test_tracker_ratios_equal_the_update_of_each_step_computed_by_hand(make_optimizer):
    model, (inputs, targets) = tiny_model(), batch()
    optimizer = make_optimizer(model.parameters())
    history = []
    with UpdateRatioTracker(model) as tracker:
        def keep_weights():
            history.append({name: p.detach().clone() for name, p in model.named_parameters()})
            take_snapshot(model, inputs, targets)  # autograd.grad: not a step for the tracker

        keep_weights()
        train_steps(model, optimizer, 4, inputs, targets, keep_weights)
        assert tracker.passes == 4
    assert set(tracker.ratios) == {"0.weight", "2.weight", "4.weight"}
    for name, ratios in tracker.ratios.items():
        expected = [(history[k + 1][name] - history[k][name]).norm() / history[k][name].norm()
                    for k in range(3)]
        np.testing.assert_allclose(ratios, expected, rtol=1e-10)
    train_steps(model, optimizer, 2, inputs, targets)
    assert all(len(ratios) == 3 for ratios in tracker.ratios.values())  # hooks are off


def test_tracker_every_and_biases():
    model, (inputs, targets) = tiny_model(), batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    start = model[0].bias.detach().clone()
    with UpdateRatioTracker(model, every=2, weights_only=False) as tracker:
        train_steps(model, optimizer, 2, inputs, targets)
        after_two = model[0].bias.detach().clone()
        train_steps(model, optimizer, 5, inputs, targets)
    assert "0.bias" in tracker.ratios
    assert all(len(ratios) == 3 for ratios in tracker.ratios.values())  # floor((7 - 1) / 2)
    expected = ((after_two - start).norm() / start.norm()).item()
    assert tracker.ratios["0.bias"][0] == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="every"):
        UpdateRatioTracker(model, every=0)
    with pytest.raises(ValueError, match="weights_only"):
        UpdateRatioTracker(nn.Sequential(nn.BatchNorm1d(3)))  # gamma and beta only
    with pytest.raises(ValueError, match="no trainable parameter"):
        UpdateRatioTracker(nn.Linear(3, 1).requires_grad_(False), weights_only=False)


def test_a_parameter_starting_at_zero_gets_nan_for_that_step_and_training_goes_on():
    model, (inputs, targets) = tiny_model(norm=True), batch()  # BN's beta starts at zero
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with UpdateRatioTracker(model, weights_only=False) as tracker:
        train_steps(model, optimizer, 3, inputs, targets)
    beta = tracker.ratios["1.bias"]
    assert len(beta) == 2 and np.isnan(beta[0]) and np.isfinite(beta[1]), beta
    assert all(np.isfinite(tracker.ratios["0.weight"]))


@pytest.fixture
def no_global_state():
    """A helper must leave rcParams and pyplot's figure list as they were."""
    params, figures = dict(matplotlib.rcParams), plt.get_fignums()
    yield
    assert dict(matplotlib.rcParams) == params
    assert plt.get_fignums() == figures


@pytest.mark.usefixtures("no_global_state")
def test_histogram_helpers_draw_one_density_per_layer_on_the_given_axes():
    snapshot = take_snapshot(tiny_model(), *batch())
    figure = Figure()
    ax = figure.subplots()
    assert plot_activation_histograms(snapshot.activations, ax=ax) is figure
    lines = ax.get_lines()
    assert [line.get_label().split(",")[0] for line in lines] == ["layer 1 (tanh)",
                                                                 "layer 2 (relu)"]
    assert "% zero" in lines[1].get_label()
    edges = snapshot.activations[0].histogram.edges
    assert np.sum(lines[0].get_ydata() * np.diff(edges)) == pytest.approx(1.0)
    assert isinstance(plot_gradient_histograms(snapshot.weight_grads), Figure)
    for helper in (plot_activation_histograms, plot_gradient_histograms):
        with pytest.raises(ValueError, match="empty"):
            helper([])


@pytest.mark.usefixtures("no_global_state")
def test_plot_saturation_draws_grouped_bars():
    figure = Figure()
    ax = figure.subplots()
    assert plot_saturation({"init": [0.1, 0.2, 0.3], "trained": [0.5, 0.6, 0.7]}, ax=ax) is figure
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == pytest.approx([0.1, 0.2, 0.3, 0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="empty"):
        plot_saturation({})
    with pytest.raises(ValueError, match="one value per layer"):
        plot_saturation({"a": [0.1], "b": [0.1, 0.2]})


@pytest.mark.usefixtures("no_global_state")
def test_plot_update_ratios_smooths_and_draws_the_reference():
    figure = Figure()
    ax = figure.subplots()
    ratios = {"0.weight": [1e-2, 3e-2, 2e-2, 4e-2]}
    assert plot_update_ratios(ratios, smooth=2, ax=ax) is figure
    line, reference = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [2e-2, 2.5e-2, 3e-2])
    np.testing.assert_array_equal(line.get_xdata(), [2, 3, 4])
    assert reference.get_ydata()[0] == 1e-3 and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="empty"):
        plot_update_ratios({"w": []})
    with pytest.raises(ValueError, match="smooth"):
        plot_update_ratios(ratios, smooth=0)


@pytest.mark.usefixtures("no_global_state")
def test_plot_depth_sweep_draws_the_geometric_mean_over_seeds():
    figure = Figure()
    ax = figure.subplots()
    values = {"BN": [[1.0, 10.0], [4.0, 1000.0]]}
    assert plot_depth_sweep([2, 5], values, ax=ax) is figure
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [2.0, 100.0])
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="empty"):
        plot_depth_sweep([], values)
    with pytest.raises(ValueError, match="positive rows of 3"):
        plot_depth_sweep([2, 5, 10], values)
