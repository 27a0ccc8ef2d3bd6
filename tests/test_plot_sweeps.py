"""Tests for plot_sweep: the mean and band over seeds, the crosses for diverged runs, bad input."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import bnlib
from bnlib.plotting import plot_sweep

LRS = [1e-3, 1e-2, 1e-1, 1.0]
# Two seeds; the first diverges at lr 1 and both diverge at lr 1 for "no BN".
BN = np.array([[0.5, 0.8, 0.9, np.nan], [0.3, 0.7, 0.9, 0.6]])
PLAIN = np.array([[0.2, 0.6, 0.4, np.nan], [0.4, 0.8, 0.2, np.inf]])


@pytest.fixture(autouse=True)
def no_global_state():
    params, figures = dict(matplotlib.rcParams), plt.get_fignums()
    yield
    assert dict(matplotlib.rcParams) == params
    assert plt.get_fignums() == figures


def mean_lines(ax):
    return [line for line in ax.get_lines() if line.get_marker() == "o"]


def test_plot_sweep_draws_the_mean_over_the_seeds_that_did_not_diverge():
    figure = plot_sweep(LRS, {"BN": BN, "no BN": PLAIN})
    ax = figure.axes[0]
    bn_line, plain_line = mean_lines(ax)
    np.testing.assert_allclose(bn_line.get_xdata(), LRS)
    np.testing.assert_allclose(bn_line.get_ydata(), [0.4, 0.75, 0.9, 0.6])
    # Every seed diverged at lr 1: no mean there, a gap in the line.
    np.testing.assert_allclose(plain_line.get_ydata()[:3], [0.3, 0.7, 0.3])
    assert np.isnan(plain_line.get_ydata()[3])
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "learning rate" and ax.get_ylabel() == "test accuracy"


def test_plot_sweep_band_spans_min_to_max_over_seeds():
    ax = plot_sweep(LRS, {"BN": BN}).axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    vertices = band.get_paths()[0].vertices
    inside = vertices[np.isclose(vertices[:, 0], 1e-2)]
    np.testing.assert_allclose(sorted(set(inside[:, 1])), [0.7, 0.8])


def test_plot_sweep_marks_a_setting_where_any_seed_diverged_with_a_cross():
    ax = plot_sweep(LRS, {"BN": BN, "no BN": PLAIN}).axes[0]
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 2
    for line in crosses:
        np.testing.assert_allclose(line.get_xdata(), [1.0])
        assert line.get_color() in {m.get_color() for m in mean_lines(ax)}
    assert "a seed diverged" in " ".join(t.get_text() for t in ax.get_legend().get_texts())


def test_plot_sweep_marks_runs_the_caller_says_diverged_but_keeps_them_in_the_mean():
    blew_up = np.zeros(BN.shape, dtype=bool)
    blew_up[1, 0] = True
    ax = plot_sweep(LRS, {"BN": BN}, diverged={"BN": blew_up}).axes[0]
    (crosses,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    np.testing.assert_allclose(crosses.get_xdata(), [1e-3, 1.0])
    np.testing.assert_allclose(mean_lines(ax)[0].get_ydata()[0], 0.4)


def test_plot_sweep_draws_no_cross_when_nothing_diverged():
    ax = plot_sweep(LRS, {"BN": np.nan_to_num(BN, nan=0.5)}).axes[0]
    assert not [line for line in ax.get_lines() if line.get_marker() == "x"]


def test_plot_sweep_draws_on_a_given_axes_with_given_labels():
    figure = Figure()
    ax = figure.subplots()
    assert plot_sweep(LRS, {"BN": BN}, xlabel="init std", ylabel="loss", ax=ax) is figure
    assert ax.get_xlabel() == "init std" and ax.get_ylabel() == "loss"


def test_plot_sweep_is_exported_by_bnlib():
    assert bnlib.plot_sweep is plot_sweep and "plot_sweep" in bnlib.__all__


@pytest.mark.parametrize("values, results, message", [
    ([], {"BN": np.zeros((1, 0))}, "non-empty"),
    ([0.0, 1.0], {"BN": np.zeros((1, 2))}, "positive"),
    (LRS, {}, "results is empty"),
    (LRS, {"BN": np.zeros((2, 3))}, r"expected \(seeds, 4\)"),
    (LRS, {"BN": np.zeros(4)}, r"expected \(seeds, 4\)"),
    (LRS, {"BN": np.zeros((2, 4))}, r"diverged\['BN'\] has shape \(4,\)"),
])
def test_plot_sweep_rejects_bad_input_with_a_clear_error(values, results, message):
    diverged = {"BN": np.zeros(4, dtype=bool)} if "diverged" in message else None
    with pytest.raises(ValueError, match=message):
        plot_sweep(values, results, diverged=diverged)
