"""Figures of what :mod:`bnlib.diagnostics.snapshot` records inside a network.

As in :mod:`bnlib.plotting.histories`, every helper takes the data and an optional Axes, draws
on it (or on a new ``matplotlib.figure.Figure``, which pyplot does not track), and returns the
Figure; none shows a window, changes rcParams or touches pyplot's current figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnlib._checks import require_int
from bnlib.diagnostics.snapshot import LayerStats
from bnlib.plotting.histories import _moving_average, _new_axes

__all__ = ["plot_activation_histograms", "plot_gradient_histograms", "plot_saturation",
           "plot_update_ratios", "plot_depth_sweep"]


def _plot_histograms(stats: Sequence[LayerStats], ax: Axes | None, xlabel: str) -> Figure:
    if not stats:
        raise ValueError("stats is empty: pass the per-layer LayerStats of a Snapshot, "
                         "for example snapshot.activations")
    ax = _new_axes(ax)
    for layer, record in enumerate(stats, start=1):
        counts, edges = record.histogram.counts, record.histogram.edges
        density = counts / max(counts.sum(), 1) / np.diff(edges)
        label = f"layer {layer} ({record.kind})"
        if record.saturation is not None:
            label += f", {100 * record.saturation:.0f}% " + (
                "zero" if record.kind == "relu" else "saturated")
        ax.plot((edges[:-1] + edges[1:]) / 2, density, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return ax.figure


def plot_activation_histograms(stats: Sequence[LayerStats], *, ax: Axes | None = None) -> Figure:
    """Plot the histogram of each layer's activations as a density curve, input side first.

    Args:
        stats: per-layer records, such as ``snapshot.activations`` of
            :func:`bnlib.take_snapshot`; the legend gives each layer's saturated
            (tanh, sigmoid) or zero (ReLU) fraction.
        ax: Axes to draw on. Default: ``None`` (a new Figure).

    Returns:
        The Figure that holds the Axes.
    """
    return _plot_histograms(stats, ax, "activation")


def plot_gradient_histograms(stats: Sequence[LayerStats], *, ax: Axes | None = None) -> Figure:
    """Plot the histogram of each layer's gradients as a density curve, input side first.

    Args:
        stats: per-layer records, such as ``snapshot.activation_grads`` or
            ``snapshot.weight_grads`` of :func:`bnlib.take_snapshot`.
        ax: Axes to draw on. Default: ``None`` (a new Figure).

    Returns:
        The Figure that holds the Axes.
    """
    return _plot_histograms(stats, ax, "gradient")


def plot_saturation(saturation: Mapping[str, Sequence[float]], *, ax: Axes | None = None,
                    ylabel: str = "saturated fraction") -> Figure:
    """Plot per-layer fractions as grouped bars: one group per layer, one bar per series.

    Args:
        saturation: series name -> one fraction per layer (all series equally long), such as
            ``[s.saturation for s in snapshot.activations]``.
        ax: Axes to draw on. Default: ``None`` (a new Figure).
        ylabel: label of the vertical axis. Default: ``"saturated fraction"``.

    Returns:
        The Figure that holds the Axes.
    """
    if not saturation or any(len(values) == 0 for values in saturation.values()):
        raise ValueError("saturation is empty: pass {name: [fraction per layer], ...}")
    lengths = {len(values) for values in saturation.values()}
    if len(lengths) != 1:
        raise ValueError(f"every series needs one value per layer; got lengths {sorted(lengths)}")
    ax = _new_axes(ax)
    layers = np.arange(1, lengths.pop() + 1)
    width = 0.8 / len(saturation)
    for index, (name, values) in enumerate(saturation.items()):
        ax.bar(layers + (index - (len(saturation) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(layers)
    ax.set_xlabel("hidden layer")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    return ax.figure


def plot_update_ratios(ratios: Mapping[str, Sequence[float]], *, smooth: int = 1,
                       reference: float | None = 1e-3, ax: Axes | None = None) -> Figure:
    r"""Plot update-to-data ratios :math:`\lVert \Delta w \rVert / \lVert w \rVert` per step.

    Args:
        ratios: parameter (or layer) name -> its ratio at every step, such as
            :attr:`bnlib.UpdateRatioTracker.ratios`.
        smooth: window of a moving average, in steps; 1 draws every step. Default: ``1``.
        reference: draw a dashed horizontal line at this ratio; ``None`` draws none.
            Default: ``1e-3``.
        ax: Axes to draw on. Default: ``None`` (a new Figure).

    Returns:
        The Figure that holds the Axes (logarithmic vertical axis).
    """
    if not ratios or any(len(values) == 0 for values in ratios.values()):
        raise ValueError("ratios is empty: pass {name: [ratio per step], ...}, for example "
                         "UpdateRatioTracker.ratios after training")
    require_int("smooth", smooth, 1, " (1 = no smoothing)")
    ax = _new_axes(ax)
    for name, values in ratios.items():
        averaged = _moving_average(values, smooth)
        ax.plot(np.arange(len(values) - len(averaged) + 1, len(values) + 1), averaged, label=name)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1,
                   label=f"{reference:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("update / weight norm" + (f" ({smooth}-step mean)" if smooth > 1 else ""))
    ax.legend(fontsize="small")
    return ax.figure


def plot_depth_sweep(depths: Sequence[int], values: Mapping[str, Sequence[Sequence[float]]], *,
                     ax: Axes | None = None,
                     ylabel: str = "gradient norm, first layer's weights") -> Figure:
    """Plot a positive quantity against depth: geometric mean over seeds, band from min to max.

    Args:
        depths: the depths swept.
        values: series name -> one row per seed, each with one value per depth.
        ax: Axes to draw on. Default: ``None`` (a new Figure).
        ylabel: label of the vertical axis. Default: ``"gradient norm, first layer's weights"``.

    Returns:
        The Figure that holds the Axes (logarithmic vertical axis).
    """
    if len(depths) == 0 or not values:
        raise ValueError("depths and values must not be empty: pass the depths and "
                         "{name: [[value per depth] per seed], ...}")
    ax = _new_axes(ax)
    for name, rows in values.items():
        rows = np.asarray(rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != len(depths) or not (rows > 0).all():
            raise ValueError(f"values[{name!r}] must hold positive rows of {len(depths)} "
                             f"values (one per depth), got shape {rows.shape}")
        (line,) = ax.plot(depths, np.exp(np.log(rows).mean(axis=0)), marker="o",
                          label=f"{name} (geometric mean of {len(rows)})")
        ax.fill_between(depths, rows.min(axis=0), rows.max(axis=0), color=line.get_color(),
                        alpha=0.25, linewidth=0)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("hidden layers")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    return ax.figure
