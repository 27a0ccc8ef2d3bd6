"""Tests for the plotting helpers: what they draw, where, and that they touch no global state."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from bnlib.plotting import (
    plot_comparison,
    plot_histories,
    plot_seed_spread,
    plot_step_loss,
)
from bnlib.training import History


def history(offset: float = 0.0, epochs: int = 3, steps: int = 120) -> History:
    return History(
        step_loss=list(2.0 - offset - np.linspace(0, 1, steps)),
        train_loss=[1.0 - offset, 0.5, 0.3][:epochs], train_acc=[0.7 + offset, 0.8, 0.9][:epochs],
        test_loss=[0.9 - offset, 0.6, 0.4][:epochs], test_acc=[0.75 + offset, 0.85, 0.88][:epochs],
        eval_step=[50, 100], eval_test_acc=[0.5 + offset, 0.6 + offset],
        epoch_seconds=[1.0] * epochs)


HISTORIES = {"BN": history(0.05), "no BN": history()}


@pytest.fixture(autouse=True)
def no_global_state():
    """Every helper must leave rcParams and pyplot's figure list as they were."""
    params, figures = dict(matplotlib.rcParams), plt.get_fignums()
    yield
    assert dict(matplotlib.rcParams) == params
    assert plt.get_fignums() == figures


def test_plot_histories_draws_test_solid_and_train_dashed_per_model():
    figure = plot_histories(HISTORIES)
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"BN (test)", "BN (train)", "no BN (test)", "no BN (train)"}
    assert lines["BN (train)"].get_linestyle() == "--"
    assert lines["BN (test)"].get_linestyle() == "-"
    assert lines["BN (train)"].get_color() == lines["BN (test)"].get_color()
    np.testing.assert_allclose(lines["BN (test)"].get_ydata(), HISTORIES["BN"].test_acc)
    np.testing.assert_array_equal(lines["BN (test)"].get_xdata(), [1, 2, 3])
    assert ax.get_ylabel() == "accuracy"


def test_plot_histories_draws_on_the_given_axes():
    figure = Figure()
    ax = figure.subplots()
    assert plot_histories(HISTORIES, metric="loss", ax=ax) is figure
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), HISTORIES["BN"].test_loss)
    with pytest.raises(ValueError, match="metric"):
        plot_histories(HISTORIES, metric="f1")
    with pytest.raises(ValueError, match="empty"):
        plot_histories({})


def test_plot_comparison_is_loss_then_accuracy():
    figure = plot_comparison(HISTORIES)
    assert [ax.get_ylabel() for ax in figure.axes] == ["loss", "accuracy"]
    given = Figure().subplots(1, 2)
    assert plot_comparison(HISTORIES, axes=given) is given[0].figure
    with pytest.raises(ValueError, match="2 Axes"):
        plot_comparison(HISTORIES, axes=[given[0]])


def test_plot_step_loss_draws_the_moving_average():
    figure = plot_step_loss(HISTORIES, smooth=10)
    line = figure.axes[0].get_lines()[1]
    raw = np.asarray(HISTORIES["no BN"].step_loss)
    expected = np.convolve(raw, np.ones(10) / 10, mode="valid")
    np.testing.assert_allclose(line.get_ydata(), expected)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(10, 121))
    unsmoothed = plot_step_loss(HISTORIES, smooth=1).axes[0].get_lines()[1]
    np.testing.assert_allclose(unsmoothed.get_ydata(), raw)
    with pytest.raises(ValueError, match="smooth"):
        plot_step_loss(HISTORIES, smooth=0)


def test_plot_seed_spread_draws_mean_and_min_max_band():
    per_seed = [{"BN": history(0.0), "no BN": history(0.1)},
                {"BN": history(0.02), "no BN": history(0.2)}]
    figure = plot_seed_spread(per_seed)
    ax = figure.axes[0]
    mean = ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(mean, [0.76, 0.85, 0.88])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    band_y = bands[0].get_paths()[0].vertices[:, 1]
    assert (band_y.min(), band_y.max()) == pytest.approx((0.75, 0.88))


def test_plot_seed_spread_eval_curve_uses_steps_and_validates():
    per_seed = [{"BN": history(0.0)}, {"BN": history(0.1)}]
    ax = plot_seed_spread(per_seed, metric="eval_test_acc").axes[0]
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [50, 100])
    assert ax.get_xlabel() == "step"
    with pytest.raises(ValueError, match="same models|models"):
        plot_seed_spread([{"BN": history()}, {"other": history()}])
    with pytest.raises(ValueError, match="different lengths"):
        plot_seed_spread([{"BN": history()}, {"BN": history(epochs=2)}])
    with pytest.raises(ValueError, match="metric"):
        plot_seed_spread(per_seed, metric="speed")


def test_figures_render_to_png():
    buffer = io.BytesIO()
    plot_comparison(HISTORIES).savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")
